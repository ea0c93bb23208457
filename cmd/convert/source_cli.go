package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"vmimport/internal/units"
	"vmimport/job"
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
	minRate   string
	vsphere   vsphereOptions // vsphere:// sources (vsphere_cli.go)
}

// sourceFlags are the names of the flags above.
var sourceFlags = []string{"source-header", "source-endpoint", "source-region", "source-profile", "source-path-style", "source-retries", "source-min-rate"}

func (so *sourceOptions) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&so.headers, "source-header", nil, "extra HTTP header for an http(s):// source, 'Name: value', or @FILE of such lines, kept out of ps (repeatable; sent to the source's host only; never recorded or printed)")
	fs.StringVar(&so.endpoint, "source-endpoint", "", "S3 endpoint URL of an s3:// source (default: --endpoint, --jdcloud-region's, AWS_ENDPOINT_URL_S3, ...)")
	fs.StringVar(&so.region, "source-region", "", "signing region of an s3:// source (default: --region, ...)")
	fs.StringVar(&so.profile, "source-profile", "", "AWS profile for the credentials of an s3:// source (default: --profile, AWS_PROFILE)")
	fs.BoolVar(&so.pathStyle, "source-path-style", false, "address an s3:// source's bucket in the path (default: --path-style)")
	fs.IntVar(&so.retries, "source-retries", job.DefaultSourceRetries, "retries of one range of a remote source after a dropped connection, a short body or a 5xx, with backoff (0..100)")
	fs.StringVar(&so.minRate, "source-min-rate", "64K/60s", "a range of a remote source that brings less than this `RATE` (bytes a second, over a window: 64K/60s) is dropped and retried as a stall; 0: no minimum")
	so.vsphere.register(fs, true)
}

// parseMinRate reads RATE[/WINDOW]: 64K/60s, 1M, 0 (none: -1).
func parseMinRate(v string) (int64, time.Duration, error) {
	bad := fmt.Errorf("--source-min-rate %s: give RATE[/WINDOW], such as 64K/60s (0: no minimum)", v)
	rate, win, hasWin := strings.Cut(strings.TrimSpace(v), "/")
	n, err := units.Parse(rate)
	if err != nil || n < 0 {
		return 0, 0, bad
	}
	var d time.Duration
	if hasWin {
		if d, err = time.ParseDuration(win); err != nil || d < time.Second {
			return 0, 0, bad
		}
	}
	if n == 0 {
		return -1, 0, nil
	}
	return n, d, nil
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
	if so.minRate != "" {
		var err error
		if s.Remote.MinRate, s.Remote.RateWindow, err = parseMinRate(so.minRate); err != nil {
			return err
		}
	}
	if !fs.Changed("workers") {
		s.Workers = 0 // the job's default for a remote source: more reads in flight
	}
	return nil
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
