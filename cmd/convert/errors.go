package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"

	"vmimport/job"
)

// Errors are told in the user's terms, at this boundary: the packages
// below wrap their errors with context (%w); what is printed is one line
// that names the flag, the file, the bucket or the server's answer, and
// what to do. Never a Go package prefix, a temporary file's name or the
// SDK's retry chain.

// interrupted is the cause of a run stopped by a signal.
type interrupted struct{ sig os.Signal }

func (i interrupted) Error() string { return "interrupted by " + signalName(i.sig) }

func signalName(s os.Signal) string {
	switch s {
	case os.Interrupt:
		return "Ctrl-C (SIGINT)"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	if s == nil {
		return "a signal"
	}
	if n := s.String(); n == "hangup" {
		return "SIGHUP (the terminal went away)"
	}
	return s.String()
}

// outputError is a failed conversion, with the output it was making: its
// message speaks of the output, never of the temporary file behind it.
type outputError struct {
	err  error
	spec job.Spec
}

func (e *outputError) Error() string { return e.err.Error() }
func (e *outputError) Unwrap() error { return e.err }

// withOutput attaches the conversion's output to its error.
func withOutput(err error, spec job.Spec) error {
	if err == nil {
		return nil
	}
	return &outputError{err: err, spec: spec}
}

// messages are the lines main prints for a failed run, each after
// "convert: ": one, but for a manifest with bad lines, one a line.
func messages(ctx context.Context, code int, err error) []string {
	var bl badLines
	if errors.As(err, &bl) {
		lines := bl.lines()
		for i, l := range lines {
			lines[i] = plain(l)
		}
		return lines
	}
	return []string{message(ctx, code, err)}
}

// message is what main prints for a failed run, after "convert: ".
func message(ctx context.Context, code int, err error) string {
	var oe *outputError
	hasOutput := errors.As(err, &oe)
	switch {
	case code == exitCancelled:
		why := "interrupted"
		var in interrupted
		if c := context.Cause(ctx); errors.As(c, &in) {
			why = in.Error()
		}
		if hasOutput {
			return why + ": " + cleanedUp(oe.spec)
		}
		return why
	case code == exitPipe:
		return "the reader of stdout closed the pipe before the image was complete: what it got is cut short"
	}
	if hasOutput {
		if m := outputMessage(oe); m != "" {
			return m
		}
	}
	return plain(err.Error())
}

// cleanedUp says what an interrupted conversion left.
func cleanedUp(s job.Spec) string {
	switch s.Kind() {
	case job.ToStdout:
		return "the image written to stdout is cut short"
	case job.ToBucket:
		if s.Upload.Keep {
			return "the upload is kept: run the same command with --resume to continue it"
		}
		return "the upload was aborted; nothing was left in the bucket"
	}
	return "nothing was left under " + s.Output
}

// outputMessage words the failures of a file output that the OS reports
// about its temporary file: a folder that does not exist, no permission to
// create a file there. "" for the others.
func outputMessage(e *outputError) string {
	if e.spec.Kind() != job.ToFile {
		return ""
	}
	var pe *fs.PathError
	if !errors.As(e.err, &pe) || pe.Op != "open" || !isTempOf(pe.Path, e.spec.Output) {
		return ""
	}
	dir := filepath.Dir(e.spec.Output)
	switch {
	case errors.Is(pe.Err, fs.ErrNotExist):
		return fmt.Sprintf("-o %s: there is no folder %s: create it first, or give another output", e.spec.Output, dir)
	case errors.Is(pe.Err, fs.ErrPermission):
		return fmt.Sprintf("-o %s: no permission to create a file in %s", e.spec.Output, dir)
	case errors.Is(pe.Err, syscall.ENOTDIR):
		return fmt.Sprintf("-o %s: %s is not a folder", e.spec.Output, dir)
	case errors.Is(pe.Err, syscall.EROFS):
		return fmt.Sprintf("-o %s: %s is on a read-only file system", e.spec.Output, dir)
	}
	return fmt.Sprintf("-o %s: cannot create a file in %s: %v", e.spec.Output, dir, pe.Err)
}

// tempName matches the temporary names of outputs (writer.CreateFile:
// .NAME.RANDOM.partial beside NAME).
var tempName = regexp.MustCompile(`((?:[^\s"']*[/\\])?)\.([^/\\\s"']+)\.\d+\.partial\b`)

// isTempOf reports whether path is a temporary file of output.
func isTempOf(path, output string) bool {
	// An anonymous output (O_TMPFILE) is opened on its folder.
	if filepath.Clean(path) == filepath.Dir(filepath.Clean(output)) {
		return true
	}
	m := tempName.FindStringSubmatch(path)
	return m != nil && m[0] == path && filepath.Clean(m[1]+m[2]) == filepath.Clean(output)
}

var (
	// Go package prefixes at the start of a message or of one of its parts.
	pkgPrefix = regexp.MustCompile(`(^|: )(?:stream|writer|upload|kv|reader|job): `)
	// The AWS SDK's error chain: operation, attempts, HTTP status, ids.
	sdkChain = regexp.MustCompile(`operation error S3: (\w+), (?:exceeded maximum number of attempts, (\d+), )?(?:https? response error StatusCode: (\d+), RequestID: [^,]*, HostID: [^,]*, )?`)
	// What a request that got no answer says: the method and the whole URL.
	sendFailed = regexp.MustCompile(`request send failed, \w+ "[^"]*": `)
	// An S3 error answer, as the SDK words it.
	apiError = regexp.MustCompile(`api error (\w+): `)
	dialFail = regexp.MustCompile(`dial tcp (\S+): connect: `)
	dnsFail  = regexp.MustCompile(`dial tcp: lookup (\S+?)(?: on \S+)?: no such host`)
	// A failed system call on a file: "open PATH: ..." says PATH: ...
	pathOp = regexp.MustCompile(`(^|: )(?:open|stat|lstat|read|write|seek) (/?[^\s:]+(?:[^:]*?[^\s:])?): `)
)

// plain rewrites an error message into the user's terms: temporary names
// become the output's, package prefixes go, the SDK's chain becomes the
// operation, the server's code and message, and the attempts.
func plain(msg string) string {
	msg = tempName.ReplaceAllString(msg, "$1$2")
	msg = pkgPrefix.ReplaceAllString(msg, "$1")
	if m := sdkChain.FindStringSubmatch(msg); m != nil {
		tail := ""
		if m[2] != "" {
			tail = " (after " + m[2] + " attempts)"
		}
		head := "S3 " + m[1] + ": "
		if m[3] != "" && m[3] != "0" && !apiError.MatchString(msg) {
			head += "HTTP " + m[3] + " "
		}
		msg = strings.Replace(msg, m[0], head, 1) + tail
	}
	msg = sendFailed.ReplaceAllString(msg, "")
	msg = apiError.ReplaceAllString(msg, "$1: ")
	msg = dnsFail.ReplaceAllString(msg, "host $1 not found")
	msg = dialFail.ReplaceAllString(msg, "cannot connect to $1: ")
	msg = pathOps(msg)
	// "Forbidden: Forbidden" says it once.
	msg = strings.Join(slices.Compact(strings.Split(msg, ": ")), ": ")
	return oneLine(msg)
}

// pathOps rewrites "open PATH: why" as "PATH: why", and drops it where the
// message named PATH just before ("writing PATH: write PATH: why").
func pathOps(msg string) string {
	var b strings.Builder
	last := 0
	for _, m := range pathOp.FindAllStringSubmatchIndex(msg, -1) {
		path := msg[m[4]:m[5]]
		b.WriteString(msg[last:m[0]])
		b.WriteString(msg[m[2]:m[3]]) // the ": " before, if any
		if !strings.HasSuffix(msg[:m[0]], path) {
			b.WriteString(path + ": ")
		}
		last = m[1]
	}
	b.WriteString(msg[last:])
	s := b.String()
	return strings.ReplaceAll(s, ": : ", ": ")
}
