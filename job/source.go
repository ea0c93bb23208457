package job

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"path/filepath"
	"strings"
	"time"

	"vmimport/internal/objstore"
	"vmimport/reader/image"
	"vmimport/reader/remote"
	"vmimport/upload"
)

// RemoteSpec says how to read a source that is a URL: https://, http://
// or s3://BUCKET/KEY.
type RemoteSpec struct {
	// Store reaches s3:// sources. Its empty fields are taken from the
	// upload's store (Upload.Store), as --source-endpoint defaults to
	// --endpoint.
	Store Store `json:"store,omitzero"`
	// Headers are extra HTTP headers ("Name: value") for http(s)
	// sources, sent to the source's host only. They may carry tokens, so
	// they are secrets like credentials: never marshalled (a spec written
	// down or sent to another node carries none, and whoever runs it
	// there must give them again) and never printed. A source URL's user
	// info becomes one of them (SplitSourceCredentials).
	Headers []string `json:"-"`
	// Retries bounds the retries of one range (default 5; -1: none).
	Retries int `json:"retries,omitempty"`
	// MinRate and RateWindow: a range whose body brings less than MinRate
	// bytes a second over a RateWindow is retried as a stall (default 64
	// KiB/s over 60 s; MinRate -1: no minimum).
	MinRate    int64         `json:"min_rate,omitempty"`
	RateWindow time.Duration `json:"rate_window,omitempty"`
}

// Remote default: blocks in flight for a remote source, whose reads wait
// on the network rather than on a core.
const DefaultRemoteWorkers = 8

// DefaultSourceRetries is how many times a range of a remote source is
// tried again (--source-retries).
const DefaultSourceRetries = remote.DefaultRetries

// IsRemote reports whether the source is a URL (vsphere:// too).
func (s *Spec) IsRemote() bool { return image.IsURL(s.Source) || s.IsVSphere() }

// SplitSourceCredentials moves the user info of a source URL
// (https://user:password@host/...) into an Authorization header, so that
// the spec's Source carries no password. Run does it too; callers that
// record or show a spec do it first.
func (s *Spec) SplitSourceCredentials() {
	if !s.IsRemote() || !strings.Contains(s.Source, "@") {
		return
	}
	u, err := url.Parse(s.Source)
	if err != nil || u.User == nil || (u.Scheme != "http" && u.Scheme != "https") {
		return
	}
	pw, _ := u.User.Password()
	basic := base64.StdEncoding.EncodeToString([]byte(u.User.Username() + ":" + pw))
	s.Remote.Headers = append(s.Remote.Headers, "Authorization: Basic "+basic)
	u.User = nil
	s.Source = u.String()
}

// validate checks the remote settings.
func (r *RemoteSpec) validate(s *Spec) error {
	if r.Retries < -1 || r.Retries > 100 {
		return fmt.Errorf("--source-retries %d: use 0..100", r.Retries)
	}
	if r.MinRate < -1 || r.RateWindow < 0 || r.RateWindow != 0 && r.RateWindow < time.Second {
		return errors.New("--source-min-rate: give RATE[/WINDOW], such as 64K/60s, a window of at least 1s (0: no minimum)")
	}
	if s.IsVSphere() {
		return nil // VSphereSpec.validate
	}
	if !s.IsRemote() {
		if len(r.Headers) > 0 || r.Retries != 0 || r.Store != (Store{}) || r.MinRate != 0 || r.RateWindow != 0 {
			return errors.New("--source-header, --source-retries, --source-min-rate and --source-endpoint, --source-region, --source-profile, --source-path-style apply to remote sources (https://, http://, s3://)")
		}
		return nil
	}
	for _, h := range r.Headers {
		if _, _, err := parseHeader(h); err != nil {
			return err
		}
	}
	if strings.HasPrefix(strings.ToLower(s.Source), "s3://") {
		if len(r.Headers) > 0 {
			return errors.New("--source-header applies to http(s):// sources; an s3:// source is read with the store's credentials")
		}
		_, key, err := upload.ParseS3URL(s.Source)
		if err != nil {
			return err
		}
		if key == "" || strings.HasSuffix(key, "/") {
			return fmt.Errorf("%s: give the key of an object, s3://BUCKET/KEY", s.Source)
		}
	}
	return s.refuseSourceAsOutput()
}

// parseHeader splits "Name: value".
func parseHeader(h string) (name, value string, err error) {
	name, value, ok := strings.Cut(h, ":")
	name, value = strings.TrimSpace(name), strings.TrimSpace(value)
	if !ok || !validHeaderName(name) || strings.ContainsAny(value, "\r\n\x00") {
		// Never echo the value: it may be a token. Without a valid name
		// before a colon, all of it may be (a bare token): nothing of it.
		what := "--source-header"
		if ok && validHeaderName(name) {
			what = fmt.Sprintf("--source-header %q", name+": ...")
		}
		return "", "", fmt.Errorf("%s: give 'Name: value' (a header name, a colon, a value without line breaks); the value is not shown", what)
	}
	return name, value, nil
}

// validHeaderName reports whether name is an HTTP token (RFC 9110 5.6.2).
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range []byte(name) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// store is the store of an s3:// source: RemoteSpec.Store, with the
// upload's settings where it has none.
func (r *RemoteSpec) store(s *Spec) Store {
	st, up := r.Store, s.Upload.Store
	if st.Endpoint == "" && st.JDCloudRegion == "" {
		st.Endpoint, st.JDCloudRegion = up.Endpoint, up.JDCloudRegion
	}
	if st.Region == "" {
		st.Region = up.Region
	}
	if st.Profile == "" {
		st.Profile = up.Profile
	}
	st.PathStyle = st.PathStyle || up.PathStyle
	return st
}

// RemoteOptions are the reader options of the spec's remote sources;
// warn, if set, hears the reader's findings; clients give the store of an
// s3:// source.
func (s *Spec) RemoteOptions(warn func(string), clients *Clients) (remote.Options, error) {
	o := remote.Options{Retries: s.Remote.Retries, Warn: warn, AllowPaths: s.AllowPaths, MinRate: s.Remote.MinRate, RateWindow: s.Remote.RateWindow}
	for _, h := range s.Remote.Headers {
		name, value, err := parseHeader(h)
		if err != nil {
			return o, err
		}
		if o.Header == nil {
			o.Header = http.Header{}
		}
		o.Header.Add(name, value)
	}
	st := s.Remote.store(s)
	o.S3 = func(ctx context.Context, bucket string) (objstore.Store, error) {
		c, err := clients.Get(ctx, st.config())
		if err != nil {
			return nil, err
		}
		// A missing credential is one clear line, not a retried request.
		if _, err := c.Credentials(ctx); err != nil {
			return nil, err
		}
		return c.BucketOnce(bucket), nil // the reader retries a range itself
	}
	return o, nil
}

// RemoteResult is what reading a remote source did.
type RemoteResult struct {
	// Source is the version of the source that was read.
	Source remote.Identity `json:"source"`
	// Fetched counts the requests and the bytes they brought.
	Fetched remote.Stats `json:"fetched"`
}

// sourceID identifies a remote source by the version read.
func sourceID(id remote.Identity) upload.SourceID {
	return upload.SourceID{URL: id.URL, Size: id.Size, MTime: id.LastModified, ETag: id.ETag}
}

// SourceID identifies the version of the source that was read.
func (r *RemoteResult) SourceID() upload.SourceID { return sourceID(r.Source) }

// IdentifySource identifies the spec's source as it is now: a file by its
// path, size, time and first MiB; a remote file by its URL, size, ETag and
// Last-Modified (one small request; the first MiB too when the server
// gives neither). The batch compares it with the source of an earlier run.
func IdentifySource(ctx context.Context, s *Spec) (upload.SourceID, error) {
	if !s.IsRemote() {
		return upload.IdentifySource(s.Source)
	}
	if s.IsVSphere() {
		return identifyVSphere(ctx, s)
	}
	spec := *s
	spec.SplitSourceCredentials()
	clients := NewClients()
	defer clients.Close()
	o, err := spec.RemoteOptions(nil, clients)
	if err != nil {
		return upload.SourceID{}, err
	}
	op := remote.New(ctx, o)
	defer op.Close()
	id, err := op.Identify(spec.Source)
	if err != nil {
		return upload.SourceID{}, err
	}
	sid := sourceID(id)
	if id.ETag == "" && id.LastModified.IsZero() {
		if sid.Head, err = headDigest(op, spec.Source); err != nil {
			return upload.SourceID{}, err
		}
	}
	return sid, nil
}

// headDigest is the SHA-256 of the first MiB of a remote file.
func headDigest(op *remote.Opener, u string) (string, error) {
	src, c, err := op.OpenRemote(u)
	if err != nil {
		return "", err
	}
	defer c.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(src.R, 0, min(src.Size, 1<<20))); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// SourceName is the source's name for keys and state: its absolute path,
// or its URL without credentials or query.
func (s *Spec) SourceName() string {
	if !s.IsRemote() {
		abs, err := filepath.Abs(s.Source)
		if err != nil {
			return s.Source
		}
		return abs
	}
	if s.IsVSphere() {
		return vsphereName(s)
	}
	if strings.HasPrefix(strings.ToLower(s.Source), "s3://") {
		return "s3://" + s.Source[len("s3://"):]
	}
	u, err := url.Parse(s.Source)
	if err != nil {
		return strings.SplitN(image.Redact(s.Source), "?", 2)[0]
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment = nil, "", false, ""
	return u.String()
}

// shown is the source as messages name it: a URL's credentials redacted.
func (s *Spec) shown() string {
	if s.IsVSphere() {
		return vsphereName(s)
	}
	return image.Redact(s.Source)
}

// sourceBase is the file name of the source, for naming outputs.
func (s *Spec) sourceBase() string {
	if !s.IsRemote() {
		return filepath.Base(s.Source)
	}
	p := s.SourceName()
	if i := strings.Index(p, "://"); i >= 0 {
		p = p[i+3:]
	}
	if u, err := url.PathUnescape(p); err == nil && !strings.HasPrefix(strings.ToLower(s.Source), "s3://") {
		p = u
	}
	return path.Base(p)
}
