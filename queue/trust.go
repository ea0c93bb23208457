package queue

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"vmimport/batch"
	"vmimport/internal/ident"
	"vmimport/job"
	"vmimport/reader/image"
)

// Limits are what a worker lets a message make it do. A message is input
// from the network: whoever may publish on the queue's subjects may send
// one. Besides the checks every spec passes (Admit), nothing is read or
// written outside the worker's own limits, which come from its command
// line or its environment, never from a message. Empty limits allow
// nothing: a worker reads and writes only where it was told it may.
type Limits struct {
	// Sources are folders a local source (and its backing files and
	// extents) may be read from, and URL prefixes (https://host/path/,
	// s3://bucket/prefix) a remote one may; a vsphere:// VM may be read
	// when its vCenter, datacenter or folder is one (vsphere://host/,
	// vsphere://host/DC/vm/FOLDER/) or its vCenter one of Endpoints.
	Sources []string
	// Outputs are folders a file output may be written into, and
	// s3://bucket/prefix an upload may go to.
	Outputs []string
	// Endpoints are the store and API endpoints a message may name
	// (--endpoint, --source-endpoint, --jdcloud-api-endpoint). A message
	// that names none uses the worker's own (its environment, or the
	// target cloud's endpoint of --jdcloud-region): always allowed.
	Endpoints []string
	// CAFiles are the PEM files a message may name as the authorities of
	// a vsphere:// source's vCenter (--source-ca-file); Insecure lets a
	// message skip the check of its certificate (--source-insecure).
	// Without them a message may ask for neither, and vCenter's
	// certificate is checked against the system's authorities: a message
	// cannot make the worker trust a server it would not, nor have it read
	// a file of its node as a CA bundle.
	CAFiles  []string
	Insecure bool
}

// ErrRefused: a worker refused a message: it broke a rule every spec
// follows, or asked for something outside the worker's limits. The disk
// fails at once, for good.
var ErrRefused = errors.New("refused by the worker")

// Validate checks the limits themselves: folders absolute, URL prefixes
// and endpoints parseable.
func (l *Limits) Validate() error {
	for _, p := range l.Sources {
		if err := checkLimit("--allow-source", p, true); err != nil {
			return err
		}
	}
	for _, p := range l.Outputs {
		if image.IsURL(p) && !strings.HasPrefix(strings.ToLower(p), "s3://") {
			return fmt.Errorf("--allow-output %s: give a folder or s3://BUCKET/PREFIX", p)
		}
		if err := checkLimit("--allow-output", p, false); err != nil {
			return err
		}
	}
	for _, e := range l.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--allow-endpoint %s: give an endpoint URL, https://HOST[:PORT]", e)
		}
	}
	for _, f := range l.CAFiles {
		if !filepath.IsAbs(f) {
			return fmt.Errorf("--allow-ca-file %s: give an absolute path", f)
		}
	}
	return nil
}

func checkLimit(flag, p string, urls bool) error {
	switch {
	case urls && strings.HasPrefix(strings.ToLower(p), "vsphere://"):
		// A vCenter (vsphere://HOST/), or a datacenter or folder of it.
		auth, rest, _ := strings.Cut(p[len("vsphere://"):], "/")
		_, _, _, err := job.VSphereLocation("vsphere://" + auth + "/DC")
		if err == nil && strings.Trim(rest, "/") != "" {
			_, _, _, err = job.VSphereLocation(p)
		}
		if err != nil {
			return fmt.Errorf("%s %s: give vsphere://HOST/, vsphere://HOST/DC or vsphere://HOST/DC/vm/FOLDER/", flag, p)
		}
	case image.IsURL(p):
		if !urls && !strings.HasPrefix(strings.ToLower(p), "s3://") {
			return fmt.Errorf("%s %s: give a folder or s3://BUCKET/PREFIX", flag, p)
		}
		u, err := url.Parse(p)
		if err != nil || u.Host == "" {
			return fmt.Errorf("%s %s: not a usable URL prefix", flag, p)
		}
	case !filepath.IsAbs(p):
		return fmt.Errorf("%s %s: give an absolute folder", flag, p)
	}
	return nil
}

// Admit checks a message's spec as a worker must before it does anything
// with it: the rules Prepare enforces on the submitting side (absolute
// paths, no state file, no secret in an endpoint URL), the checks of every
// spec (batch.Validate), and the worker's limits. The error wraps
// ErrRefused and says what to change.
func Admit(s job.Spec, l Limits) error {
	if err := admit(s, l); err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return nil
}

func admit(s job.Spec, l Limits) error {
	if !s.IsRemote() && !filepath.IsAbs(s.Source) {
		return fmt.Errorf("the source %s is not an absolute path", s.Source)
	}
	for _, p := range s.AllowPaths {
		if !image.IsURL(p) && !filepath.IsAbs(p) {
			return fmt.Errorf("--allow-path %s is not an absolute path", p)
		}
	}
	if s.Kind() == job.ToFile && !filepath.IsAbs(s.Output) {
		return fmt.Errorf("the output %s is not an absolute path", s.Output)
	}
	if err := checkPrepared(&s); err != nil {
		return err
	}
	if err := batch.Validate([]batch.Item{{Spec: s}}); err != nil {
		return err
	}
	// The source, and every folder it may read besides its own.
	if err := l.source(&s); err != nil {
		return err
	}
	if err := l.vsphereTLS(&s); err != nil {
		return err
	}
	for _, p := range s.AllowPaths {
		if !l.allowsRead(p, true) {
			return fmt.Errorf("--allow-path %s: outside the worker's --allow-source", image.Redact(p))
		}
	}
	if err := l.output(&s); err != nil {
		return err
	}
	for flag, e := range map[string]string{"--endpoint": s.Upload.Endpoint, "--source-endpoint": s.Remote.Store.Endpoint, "--jdcloud-api-endpoint": s.Import.APIEndpoint} {
		if e != "" && !l.allowsEndpoint(e) {
			return fmt.Errorf("%s %s: not one of the worker's --allow-endpoint", flag, e)
		}
	}
	return nil
}

// checkPrepared holds the rules of Prepare that a spec must already
// follow: no state file, no credentials in an endpoint or source URL, no
// header (a secret, which does not travel).
func checkPrepared(s *job.Spec) error {
	if s.Upload.StateFile != "" {
		return errors.New("--state-file does not apply under a queue: the upload state is kept in the queue's bucket")
	}
	for flag, u := range map[string]string{"--endpoint": s.Upload.Endpoint, "--source-endpoint": s.Remote.Store.Endpoint, "--jdcloud-api-endpoint": s.Import.APIEndpoint} {
		if u == "" {
			continue
		}
		pu, err := url.Parse(u)
		if err != nil {
			return fmt.Errorf("%s %q: %v", flag, image.Redact(u), err)
		}
		if pu.User != nil || pu.RawQuery != "" {
			return fmt.Errorf("%s: the URL carries credentials or a query; messages carry no secrets: give the workers their credentials in their environment", flag)
		}
	}
	if s.IsVSphere() {
		if _, user, _, err := job.VSphereLocation(s.Source); err == nil && user != "" {
			return fmt.Errorf("the source %s names a user: the workers log in as their own VSPHERE_USER with their own VSPHERE_PASSWORD; drop %s@ from the URL", image.Redact(s.Source), user)
		}
		if s.VSphere.Password != "" {
			return errors.New("--source-password-file: passwords do not travel in queue messages: give the workers VSPHERE_USER and VSPHERE_PASSWORD in their environment")
		}
	} else if s.IsRemote() {
		if u, err := url.Parse(s.Source); err == nil && u.User != nil {
			return fmt.Errorf("the source %s carries credentials in its URL; messages carry no secrets: give the workers a URL that needs none (a presigned URL)", image.Redact(s.Source))
		}
	}
	if len(s.Remote.Headers) > 0 {
		return errors.New("--source-header (or credentials in the source URL): headers may hold secrets and do not travel in queue messages: give the workers a URL that needs none (a presigned URL)")
	}
	return nil
}

// source checks the source against Sources: a local path by the real path
// of what it reads, a URL by its prefix, a vsphere:// VM by its vCenter,
// datacenter or folder (or its vCenter among Endpoints).
func (l *Limits) source(s *job.Spec) error {
	if s.IsVSphere() {
		return l.vsphereSource(s)
	}
	if !l.allowsRead(s.Source, false) {
		what := "folder"
		if s.IsRemote() {
			what = "URL prefix"
		}
		return fmt.Errorf("the source %s is in no %s the worker allows (--allow-source)", image.Redact(s.Source), what)
	}
	return nil
}

// vsphereSource checks a vsphere:// source: the worker logs in there with
// its own VSPHERE_PASSWORD, so only to a vCenter it was told to trust.
func (l *Limits) vsphereSource(s *job.Spec) error {
	host, _, _, err := job.VSphereLocation(s.Source)
	if err != nil {
		return err
	}
	for _, a := range l.Sources {
		if job.VSphereWithin(s.Source, a) {
			return nil
		}
	}
	if l.allowsEndpoint("https://" + host) {
		return nil
	}
	return fmt.Errorf("the source %s is on a vCenter, datacenter or folder the worker does not allow (--allow-source vsphere://HOST/..., or its vCenter as --allow-endpoint https://HOST): the worker's vSphere password goes to no other", image.Redact(s.Source))
}

// vsphereTLS checks how a message asks to trust a vsphere:// source's
// vCenter: --source-insecure only if the worker allows it, a CA file only
// one of the worker's --allow-ca-file (the same file, however spelt).
func (l *Limits) vsphereTLS(s *job.Spec) error {
	v := s.VSphere
	if v.Insecure && !l.Insecure {
		return errors.New("--source-insecure: the worker does not skip the check of a vCenter's certificate (--allow-insecure)")
	}
	if v.CAFile == "" {
		return nil
	}
	if !filepath.IsAbs(v.CAFile) {
		return fmt.Errorf("--source-ca-file %s is not an absolute path", v.CAFile)
	}
	id, err := ident.Target(v.CAFile)
	if err == nil {
		for _, a := range l.CAFiles {
			if aid, err := ident.Target(a); err == nil && aid == id {
				return nil
			}
		}
	}
	return fmt.Errorf("--source-ca-file %s: not one of the worker's --allow-ca-file", v.CAFile)
}

// allowsRead tells whether p (a path, or a URL) lies within Sources. A
// local path is taken with every link followed, so that a link inside an
// allowed folder cannot lead out of it; folder says p names a folder.
func (l *Limits) allowsRead(p string, folder bool) bool {
	if image.IsURL(p) {
		for _, a := range l.Sources {
			if image.IsURL(a) && urlWithin(p, a) {
				return true
			}
		}
		return false
	}
	id, err := ident.Target(p)
	if err != nil {
		return false
	}
	for _, a := range l.Sources {
		if !image.IsURL(a) && pathWithin(id, a, folder) {
			return true
		}
	}
	return false
}

// output checks the output against Outputs.
func (l *Limits) output(s *job.Spec) error {
	if s.Kind() == job.ToBucket {
		b, k, err := s.Destination()
		if err != nil {
			return err
		}
		obj := "s3://" + b + "/" + k
		for _, a := range l.Outputs {
			if strings.HasPrefix(strings.ToLower(a), "s3://") && urlWithin(obj, a) {
				return nil
			}
		}
		return fmt.Errorf("the output %s is in no bucket and prefix the worker allows (--allow-output)", obj)
	}
	id, err := ident.File(s.Output)
	if err != nil {
		return fmt.Errorf("the output %s: %v", s.Output, err)
	}
	for _, a := range l.Outputs {
		if !image.IsURL(a) && pathWithin(id, a, false) {
			return nil
		}
	}
	return fmt.Errorf("the output %s is in no folder the worker allows (--allow-output)", s.Output)
}

// pathWithin tells whether the file (or with folder, the folder) id lies
// inside the folder dir, both with their links followed.
func pathWithin(id ident.ID, dir string, folder bool) bool {
	d, err := ident.Target(dir)
	if err != nil {
		return false
	}
	base := strings.TrimSuffix(string(d), string(filepath.Separator))
	p := string(id)
	if folder && p == base {
		return true
	}
	return strings.HasPrefix(p, base+string(filepath.Separator))
}

// urlWithin tells whether the URL u lies under the URL prefix: the same
// scheme and host (case aside), and a path under the prefix's (at a /, or
// at the prefix's end when it ends in /). Dot segments are cleaned first.
func urlWithin(u, prefix string) bool {
	pu, err1 := parseLoose(u)
	pp, err2 := parseLoose(prefix)
	if err1 != nil || err2 != nil {
		return false
	}
	if !strings.EqualFold(pu.Scheme, pp.Scheme) || !strings.EqualFold(pu.Host, pp.Host) {
		return false
	}
	p, dir := cleanPath(pu.Path), cleanPath(pp.Path)
	if !strings.HasSuffix(dir, "/") {
		if p == dir {
			return true
		}
		dir += "/"
	}
	return strings.HasPrefix(p, dir)
}

// parseLoose parses a URL, an s3://bucket/key taken literally.
func parseLoose(s string) (*url.URL, error) {
	if rest, ok := strings.CutPrefix(s, "s3://"); ok || strings.HasPrefix(strings.ToLower(s), "s3://") {
		if !ok {
			rest = s[len("s3://"):]
		}
		bucket, key, _ := strings.Cut(rest, "/")
		return &url.URL{Scheme: "s3", Host: bucket, Path: "/" + key}, nil
	}
	return url.Parse(s)
}

// cleanPath cleans a URL path, keeping a trailing slash.
func cleanPath(p string) string {
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// allowsEndpoint tells whether an endpoint a message names is one of
// Endpoints: the same scheme, and the same place normalised
// (ident.Endpoint: case, default port, trailing slash).
func (l *Limits) allowsEndpoint(e string) bool {
	eu, err := url.Parse(e)
	if err != nil {
		return false
	}
	for _, a := range l.Endpoints {
		au, err := url.Parse(a)
		if err == nil && strings.EqualFold(au.Scheme, eu.Scheme) && ident.Endpoint(a, "") == ident.Endpoint(e, "") {
			return true
		}
	}
	return false
}

// leaseName is what the lease of a disk's output is named after: the
// output's identity (a file by its resolved folder and name, an object by
// its normalised endpoint, bucket and key), so that two spellings of one
// output are one lease.
func leaseName(s *job.Spec) string {
	if id, err := s.OutputIdentity(); err == nil && id != "" {
		return string(id)
	}
	if s.Kind() == job.ToBucket {
		if b, k, err := s.Destination(); err == nil {
			return "s3://" + b + "/" + k
		}
	}
	return s.Output
}

// refuse fails a message the worker will not run, at once and for good:
// its status says why; nothing else is touched (not even an upload the
// message's endpoint would name).
func (w *worker) refuse(ctx context.Context, msg jetstream.Msg, st *Status, why error, logf func(string, ...any), ended func(*batch.Outcome)) {
	oc := &batch.Outcome{Line: st.Line, Source: st.Source, Output: st.Output, Status: batch.Failed, Error: why.Error(), Err: why}
	st.State, st.Note, st.Outcome = Failed, "", oc
	if err := w.settle(ctx, func(ctx context.Context) error { return putStatus(ctx, w.store, st) }); err != nil {
		logf("status: %v", err)
	}
	msg.TermWithReason(firstLine(why.Error()))
	ended(oc)
}
