package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"vmimport/internal/units"
	"vmimport/job"
	"vmimport/reader"
	"vmimport/reader/remote"
)

// sourceOptions are the flags of remote sources (https://, http://,
// s3://BUCKET/KEY): every command that reads an image takes them.
type sourceOptions struct {
	headers   []string
	endpoint  string
	region    string
	profile   string
	pathStyle bool
	retries   int
	vsphere   vsphereOptions // vsphere:// sources (vsphere_cli.go)
}

// sourceFlags are the names of the flags above.
var sourceFlags = []string{"source-header", "source-endpoint", "source-region", "source-profile", "source-path-style", "source-retries"}

func (so *sourceOptions) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&so.headers, "source-header", nil, "extra HTTP header for an http(s):// source, 'Name: value', or @FILE of such lines, kept out of ps (repeatable; sent to the source's host only; never recorded or printed)")
	fs.StringVar(&so.endpoint, "source-endpoint", "", "S3 endpoint URL of an s3:// source (default: --endpoint, --jdcloud-region's, AWS_ENDPOINT_URL_S3, ...)")
	fs.StringVar(&so.region, "source-region", "", "signing region of an s3:// source (default: --region, ...)")
	fs.StringVar(&so.profile, "source-profile", "", "AWS profile for the credentials of an s3:// source (default: --profile, AWS_PROFILE)")
	fs.BoolVar(&so.pathStyle, "source-path-style", false, "address an s3:// source's bucket in the path (default: --path-style)")
	fs.IntVar(&so.retries, "source-retries", remote.DefaultRetries, "retries of one range of a remote source after a dropped connection, a short body or a 5xx, with backoff (0..100)")
	so.vsphere.register(fs, true)
}

// headerLines returns the --source-header values, with @FILE read: one
// header a line, blank lines and # comments skipped.
func (so *sourceOptions) headerLines() ([]string, error) {
	var out []string
	for _, h := range so.headers {
		name, ok := strings.CutPrefix(h, "@")
		if !ok {
			out = append(out, h)
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("--source-header @%s: %w", name, err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line != "" && !strings.HasPrefix(line, "#") {
				out = append(out, line)
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("--source-header @%s: %w", name, err)
		}
	}
	return out, nil
}

// spec fills the remote settings of s (whose Source is set), from these
// flags and, for an s3:// source's store, from the upload's flags where
// these are not given. The flags are refused for a local source unless a
// batch's command line gave them to every record.
func (so *sourceOptions) spec(fs *pflag.FlagSet, s *job.Spec, given func(*pflag.FlagSet, string) bool, up job.Store) error {
	s.SplitSourceCredentials()
	if err := so.vsphere.spec(fs, s, given); err != nil {
		return err
	}
	if !s.IsRemote() {
		for _, name := range sourceFlags {
			if given(fs, name) {
				return fmt.Errorf("--%s applies to remote sources (https://, http://, s3://)", name)
			}
		}
		return nil
	}
	headers, err := so.headerLines()
	if err != nil {
		return err
	}
	s.Remote.Headers = append(s.Remote.Headers, headers...)
	if strings.HasPrefix(strings.ToLower(s.Source), "s3://") {
		s.Remote.Store = job.Store{Endpoint: so.endpoint, Region: so.region, Profile: so.profile, PathStyle: so.pathStyle}
		if so.endpoint == "" {
			s.Remote.Store.Endpoint, s.Remote.Store.JDCloudRegion = up.Endpoint, up.JDCloudRegion
		}
		if so.region == "" {
			s.Remote.Store.Region = up.Region
		}
		if so.profile == "" {
			s.Remote.Store.Profile = up.Profile
		}
		s.Remote.Store.PathStyle = so.pathStyle || up.PathStyle
	}
	if so.retries < 0 || so.retries > 100 {
		return fmt.Errorf("--source-retries %d: use 0..100", so.retries)
	}
	if s.Remote.Retries = so.retries; so.retries == 0 {
		s.Remote.Retries = -1 // none
	}
	if !fs.Changed("workers") {
		s.Workers = 0 // the job's default for a remote source: more reads in flight
	}
	return nil
}

// open opens src for info and check: a file, or a URL with the
// --source-* flags.
func (r *readerOptions) open(ctx context.Context, src string, stderr io.Writer) (im reader.Image, op *remote.Opener, err error) {
	o := r.options(stderr)
	spec := job.Spec{Source: src}
	if err := r.source.spec(r.fs, &spec, func(fs *pflag.FlagSet, name string) bool { return fs.Changed(name) }, job.Store{}); err != nil {
		return nil, nil, usageError{err}
	}
	if spec.IsVSphere() {
		im, err := r.openVSphere(ctx, spec, stderr)
		return im, nil, err
	}
	ro, err := spec.RemoteOptions(o.Warn)
	if err != nil {
		return nil, nil, usageError{err}
	}
	op = remote.New(ctx, ro)
	o.Remote = op
	im, err = reader.Open(spec.Source, o)
	if err != nil {
		return nil, nil, inputError{err}
	}
	return im, op, nil
}

// remoteSizes are the file size and allocated size info reports for a
// remote source: the object's size, all of it.
func remoteSizes(op *remote.Opener, src string) (int64, bool) {
	spec := job.Spec{Source: src}
	spec.SplitSourceCredentials()
	id, ok := op.Pinned(spec.Source)
	return id.Size, ok
}

// remoteLine is the summary line of what a remote source cost.
func remoteLine(res *job.Result) string {
	r := res.Remote
	if r == nil {
		return ""
	}
	s := fmt.Sprintf("fetched %s of %s in %d requests", units.Bytes(r.Fetched.Bytes), units.Bytes(r.Source.Size), r.Fetched.Requests)
	if r.Fetched.Retries > 0 {
		s += fmt.Sprintf(" (%d retried)", r.Fetched.Retries)
	}
	return s + "\n"
}
