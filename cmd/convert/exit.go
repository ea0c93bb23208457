package main

import (
	"context"
	"errors"
	"flag"

	"github.com/spf13/pflag"

	"vmimport/job"
)

// Exit codes, as documented in --help and the README.
const (
	exitOK       = 0
	exitFailure  = 1 // the conversion or upload failed (I/O, network, server)
	exitUsage    = 2 // bad command line
	exitBadInput = 3 // the image is unreadable, unsupported, or breaks an import rule
	// The import into the cloud (--import, convert import, import-status).
	exitImportFailed = 5   // the import task failed
	exitRefused      = 6   // the cloud's API refused the request (HTTP 400, 404, 409)
	exitCredentials  = 7   // the cloud's API refused the credentials (HTTP 401, 403), or there were none
	exitWaitTimeout  = 8   // --wait-timeout came before the task ended
	exitCancelled    = 130 // interrupted (SIGINT, SIGTERM, SIGHUP)
	exitPipe         = 141 // stdout's reader went away (128 + SIGPIPE, as a shell reports it)
)

const exitCodesHelp = `Exit codes:
  0    success
  1    the conversion, upload or API call failed (I/O error, full disk, network, server)
  2    usage error (bad flags or arguments)
  3    bad input: unreadable, corrupt or unsupported image, or an import rule broken
  5    the import task failed: the cloud's errorInfo is printed (the object stays uploaded)
  6    the cloud's API refused the import request as invalid (HTTP 400, 404, 409)
  7    the cloud's API refused the credentials (HTTP 401, 403), or none were found
  8    --wait-timeout came first: the import goes on in the cloud (see import-status)
  130  interrupted (Ctrl-C, SIGTERM, SIGHUP): nothing was left under the output name
  141  -o -: the reader of stdout closed the pipe before the image was complete
`

// usageError marks errors in the command line.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// inputError marks problems with the input image.
type inputError struct{ error }

func (e inputError) Unwrap() error { return e.error }

// exitCoder errors carry their own exit code (convert check's findings).
type exitCoder interface{ ExitCode() int }

func exitCode(ctx context.Context, err error) int {
	var ue usageError
	var ie inputError
	var ec exitCoder
	var impErr *job.ImportError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ec):
		return ec.ExitCode()
	case errors.As(err, &impErr):
		return importError{impErr.Err}.ExitCode()
	case errors.Is(err, pflag.ErrHelp), errors.Is(err, flag.ErrHelp):
		return exitOK
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		return exitCancelled
	case isBrokenPipe(err):
		return exitPipe
	case errors.As(err, &ue), job.BadSpec(err):
		return exitUsage
	case errors.As(err, &ie), job.BadInput(err):
		return exitBadInput
	}
	return exitFailure
}
