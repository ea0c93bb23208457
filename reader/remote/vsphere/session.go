package vsphere

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
)

// Config says how to reach vCenter and what to do with the VM.
type Config struct {
	// URL is the vsphere:// URL of the VM (or, to list, of a folder).
	URL string
	// Password is the account's password (read from a file by the
	// caller); empty: the environment's VSPHERE_PASSWORD. Never shown.
	Password string
	// Insecure skips the verification of the server's certificate (a lab
	// vCenter with a self-signed one); CAFile, if set, is a PEM bundle of
	// the authorities that signed it.
	Insecure bool
	CAFile   string
	// Disk picks the disk, from 0, in the order Disks lists them (the
	// boot disk first).
	Disk int
	// Snapshot reads a running VM as of a snapshot taken for the read and
	// removed after it. Without it a running VM is refused.
	Snapshot bool
	// Getenv reads the environment (VSPHERE_USER, VSPHERE_PASSWORD);
	// nil: os.Getenv.
	Getenv func(string) string
}

// Environment variables of the credentials.
const (
	EnvUser     = "VSPHERE_USER"
	EnvPassword = "VSPHERE_PASSWORD"
)

// ErrLogin is wrapped by a refused login or missing credentials.
var ErrLogin = errors.New("vSphere login failed")

func (c *Config) getenv(k string) string {
	if c.Getenv != nil {
		return c.Getenv(k)
	}
	return os.Getenv(k)
}

// Session is a logged-in connection to vCenter or an ESXi host.
type Session struct {
	loc    Location
	client *vim25.Client
	mgr    *session.Manager
	tls    *tls.Config
	// origin is scheme://host of the API: the datastore's files are read
	// there, and only there does the session cookie go.
	origin *url.URL
}

// Login connects and logs in with the user of the URL (or VSPHERE_USER)
// and the password of the config (or VSPHERE_PASSWORD). Errors never carry
// the password.
func Login(ctx context.Context, cfg Config) (*Session, error) {
	loc, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	user := loc.User
	if user == "" {
		user = cfg.getenv(EnvUser)
	}
	if user == "" {
		return nil, fmt.Errorf("%w: %s: no user: give vsphere://USER@%s/... or set %s", ErrLogin, loc.String(), loc.Host, EnvUser)
	}
	pw := cfg.Password
	if pw == "" {
		pw = cfg.getenv(EnvPassword)
	}
	if pw == "" {
		return nil, fmt.Errorf("%w: %s: no password: set %s or give --source-password-file FILE", ErrLogin, loc.String(), EnvPassword)
	}
	tc, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	u, err := soap.ParseURL(loc.Host)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: host %q: %v", ErrURL, loc.String(), loc.Host, err)
	}
	u.User = nil
	sc := soap.NewClient(u, cfg.Insecure)
	sc.DefaultTransport().TLSClientConfig = tc.Clone()
	// The API's calls follow no redirect: a 302 would take them (as a
	// GET) to a host nobody said to trust, a 307 the Login's body, the
	// password, where Go can send it again.
	sc.Client.CheckRedirect = refuseRedirect
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("%s: connecting to %s: %w", loc.String(), loc.Host, cleanErr(err, pw))
	}
	mgr := session.NewManager(vc)
	if err := mgr.Login(ctx, url.UserPassword(user, pw)); err != nil {
		return nil, fmt.Errorf("%w: %s as %s: %v", ErrLogin, loc.Host, user, cleanErr(err, pw))
	}
	origin := &url.URL{Scheme: u.Scheme, Host: u.Host}
	return &Session{loc: loc, client: vc, mgr: mgr, tls: tc, origin: origin}, nil
}

// refuseRedirect refuses every redirect of the API's client, naming it
// (without the query) in the error.
func refuseRedirect(req *http.Request, _ []*http.Request) error {
	to := url.URL{Scheme: req.URL.Scheme, Host: req.URL.Host, Path: req.URL.Path}
	return fmt.Errorf("the vSphere API redirected to %s: not followed (the API's calls and the login's password go to the vCenter named, nowhere else); give the vCenter's own address", to.String())
}

// tlsConfig is the TLS configuration of both the API and the file reads.
func tlsConfig(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{InsecureSkipVerify: cfg.Insecure, MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--source-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--source-ca-file %s: no PEM certificate in it", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// cleanErr drops anything that could echo the password from an error's
// text (a SOAP fault never should, but a proxy's page might).
func cleanErr(err error, pw string) error {
	msg := err.Error()
	if pw != "" && strings.Contains(msg, pw) {
		return errors.New(strings.ReplaceAll(msg, pw, "REDACTED"))
	}
	if strings.Contains(msg, "x509:") || strings.Contains(msg, "certificate") {
		return fmt.Errorf("%v (a self-signed vCenter: give its CA with --source-ca-file, or --source-insecure in a lab)", msg)
	}
	return err
}

// Location is what the session's URL names.
func (s *Session) Location() Location { return s.loc }

// Client is the API client, for the inventory calls.
func (s *Session) Client() *vim25.Client { return s.client }

// Logout ends the session, under a fresh deadline: it runs after a
// cancelled read too.
func (s *Session) Logout(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return s.mgr.Logout(ctx)
}

// cookie is the session cookie header value for the datastore's files.
func (s *Session) cookie() string {
	var parts []string
	for _, c := range s.client.Client.Jar.Cookies(s.client.URL()) {
		parts = append(parts, c.Name+"="+c.Value)
	}
	if len(parts) == 0 {
		if h := s.client.SessionCookie(); h != nil {
			parts = append(parts, soap.SessionCookieName+"="+h.Value)
		}
	}
	return strings.Join(parts, "; ")
}

// HTTPClient is a client for the datastore's files: the API's TLS
// settings, HTTP/1.1 (parallel ranges on parallel connections), enough idle
// connections for the reads in flight, no transparent gzip. Its redirects
// are the remote opener's to decide (it replaces CheckRedirect): within
// the vCenter's origin only, with the cookie; to another origin without
// it, and only under an --allow-path URL prefix; never a Referer.
func (s *Session) HTTPClient(idle time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ForceAttemptHTTP2 = false
	t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	t.TLSClientConfig = s.tls.Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	if idle > 0 {
		t.ResponseHeaderTimeout = idle
	}
	t.DisableCompression = true
	return &http.Client{Transport: t}
}
