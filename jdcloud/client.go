// Package jdcloud is a client of the target cloud's OpenAPI for what the
// image import needs: the JDCLOUD2-HMAC-SHA256 signer, ImportImage,
// DescribeImageTasks and a wait on image tasks.
//
// The official Go SDK is not served by the module proxy, and the import
// needs two calls of it; the signer is small and is proved byte for byte
// against the official JavaScript SDK's (jdcloud-sdk-js, src/lib/signers/
// v2.js) in the tests.
//
// Every call takes a context, signs each attempt afresh (new date and
// nonce), has a time-out per attempt, and retries with exponential backoff
// on HTTP 429 and 5xx and on connection errors when the call is safe to
// repeat: reads, and ImportImage with a client token (the API then returns
// the first call's result). Errors match the sentinels of errors.go with
// errors.Is.
package jdcloud

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultEndpoint is the OpenAPI endpoint of the vm service.
const DefaultEndpoint = "https://vm.jdcloud-api.com"

// Service is the service name in the signature scope.
const Service = "vm"

// Config says how to reach the API.
type Config struct {
	// Endpoint is the API's base URL (default DefaultEndpoint); another one
	// for private deployments and tests.
	Endpoint string
	// Region is the region the calls are about (cn-north-1, ...): it goes
	// into the path and the signature scope.
	Region string
	// Credentials sign the requests.
	Credentials CredentialsProvider
	// HTTPClient sends the requests (default: a client with sane
	// connection time-outs).
	HTTPClient *http.Client
	// Timeout bounds each attempt (default 30 s).
	Timeout time.Duration
	// MaxAttempts bounds the attempts of a call that may be retried
	// (default 6).
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the wait between attempts (default
	// 500 ms and 20 s); the wait doubles from one to the other, with
	// jitter, and a Retry-After header is honoured up to MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// UserAgent is sent but not signed.
	UserAgent string
	// Log receives a line for every retry. May be nil.
	Log func(string)
	// Now and Nonce replace the clock and the UUIDv4 generator (tests).
	Now   func() time.Time
	Nonce func() string
}

// Client calls the OpenAPI. It is safe for concurrent use.
type Client struct {
	cfg  Config
	base *url.URL
	http *http.Client
}

// New checks the configuration and makes a client.
func New(cfg Config) (*Client, error) {
	if cfg.Endpoint == "" {
		cfg.Endpoint = DefaultEndpoint
	}
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("API endpoint %q: give a URL such as %s", cfg.Endpoint, DefaultEndpoint)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	if cfg.Region == "" {
		return nil, errors.New("no region for the cloud's API")
	}
	if strings.ContainsAny(cfg.Region, "/?#% ") {
		return nil, fmt.Errorf("region %q: not a region id", cfg.Region)
	}
	if cfg.Credentials == nil {
		return nil, ErrNoCredentials
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 6
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 20 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Nonce == nil {
		cfg.Nonce = NewNonce
	}
	if cfg.Log == nil {
		cfg.Log = func(string) {}
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   15 * time.Second,
			ResponseHeaderTimeout: cfg.Timeout,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		}}
	}
	return &Client{cfg: cfg, base: u, http: hc}, nil
}

// Region is the region the client calls about.
func (c *Client) Region() string { return c.cfg.Region }

// Endpoint is the API's base URL.
func (c *Client) Endpoint() string { return c.base.String() }

// NewNonce is a random UUIDv4, the x-jdcloud-nonce of a request.
func NewNonce() string {
	var b [16]byte
	crand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// call is one API operation.
type call struct {
	op     string     // for messages: ImportImage
	method string     // GET, POST
	path   string     // unescaped, below the endpoint: /v1/regions/cn-north-1/images:import
	query  url.Values // nil for none
	body   []byte     // nil for none
	retry  bool       // safe to repeat
}

// envelope is every answer of the API.
type envelope struct {
	RequestID string          `json:"requestId"`
	Error     *apiErrorBody   `json:"error"`
	Result    json.RawMessage `json:"result"`
}

type apiErrorBody struct {
	Code    flexInt `json:"code"`
	Status  string  `json:"status"`
	Message string  `json:"message"`
}

// maxAnswer bounds the answer read into memory.
const maxAnswer = 8 << 20

// Request builds the signed request of a call: method, path below the
// endpoint (not escaped; each segment is escaped as the SDKs do, so
// "images:import" goes out as "images%3Aimport"), query and body, signed
// with cred at now with nonce. The calls use it for every attempt; it is
// exported for callers that send requests of their own the same way.
func (c *Client) Request(ctx context.Context, method, path string, query url.Values, body []byte, cred Credentials, now time.Time, nonce string) (*http.Request, Signature, error) {
	u := *c.base
	u.Path = c.base.Path + path
	u.RawPath = c.base.EscapedPath() + EscapePath(path)
	u.RawQuery = EncodeQuery(query)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, Signature{}, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/json")
	sig := Sign(SignInput{
		Method: method, URL: req.URL, Header: req.Header, Body: body, Credentials: cred,
		Region: c.cfg.Region, Service: Service, Time: now, Nonce: nonce,
	})
	sig.Apply(req.Header)
	if c.cfg.UserAgent != "" {
		req.Header.Set("User-Agent", c.cfg.UserAgent)
	}
	return req, sig, nil
}

// do runs a call with its retries and decodes the result into out.
func (c *Client) do(ctx context.Context, cl call, out any) (requestID string, err error) {
	for attempt := 1; ; attempt++ {
		rid, retryAfter, err := c.attempt(ctx, cl, out)
		if err == nil {
			return rid, nil
		}
		if ctx.Err() != nil {
			return rid, fmt.Errorf("%s: %w", cl.op, context.Cause(ctx))
		}
		var ae *APIError
		temporary := errors.As(err, &ae) && ae.Temporary()
		var ne *NetError
		if errors.As(err, &ne) {
			temporary = true
			ne.Attempts = attempt
		}
		if !temporary || !cl.retry || attempt >= c.cfg.MaxAttempts {
			return rid, err
		}
		d := c.backoff(attempt, retryAfter)
		c.cfg.Log(fmt.Sprintf("%s; retrying in %s (attempt %d of %d)", err, d.Round(10*time.Millisecond), attempt+1, c.cfg.MaxAttempts))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return rid, fmt.Errorf("%s: %w", cl.op, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// backoff is the wait before the next attempt: MinBackoff doubled per
// attempt up to MaxBackoff, half of it random; or the server's Retry-After.
func (c *Client) backoff(attempt int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, c.cfg.MaxBackoff)
	}
	d := c.cfg.MinBackoff << min(attempt-1, 20)
	if d <= 0 || d > c.cfg.MaxBackoff {
		d = c.cfg.MaxBackoff
	}
	return d/2 + rand.N(d/2+1)
}

// attempt sends a call once.
func (c *Client) attempt(ctx context.Context, cl call, out any) (string, time.Duration, error) {
	cred, err := c.cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return "", 0, err
	}
	if cred.AccessKeyID == "" || cred.SecretAccessKey == "" {
		return "", 0, ErrNoCredentials
	}
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, _, err := c.Request(actx, cl.method, cl.path, cl.query, cl.body, cred, c.cfg.Now(), c.cfg.Nonce())
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", cl.op, err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "", 0, ctx.Err()
		}
		return "", 0, &NetError{Operation: cl.op, URL: c.base.String(), Attempts: 1, Err: stripURL(err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		if ctx.Err() != nil {
			return "", 0, ctx.Err()
		}
		return "", 0, &NetError{Operation: cl.op, URL: c.base.String(), Attempts: 1, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	retryAfter := parseRetryAfter(resp.Header.Get("Retry-After"))
	rid := resp.Header.Get("x-jdcloud-request-id")
	if len(data) > maxAnswer {
		return rid, 0, fmt.Errorf("%s: %w: answer larger than %d MiB", cl.op, ErrBadResponse, maxAnswer>>20)
	}
	var env envelope
	jerr := json.Unmarshal(data, &env)
	if env.RequestID != "" {
		rid = env.RequestID
	}
	if env.Error != nil || resp.StatusCode >= 300 {
		ae := &APIError{Operation: cl.op, HTTPStatus: resp.StatusCode, RequestID: rid}
		if env.Error != nil {
			ae.Code, ae.Status, ae.Message = int(env.Error.Code), env.Error.Status, env.Error.Message
		}
		if ae.Message == "" {
			ae.Message = bodyExcerpt(data, resp.Status)
		}
		return rid, retryAfter, ae
	}
	if jerr != nil {
		return rid, 0, fmt.Errorf("%s: %w: %v: %s", cl.op, ErrBadResponse, jerr, bodyExcerpt(data, resp.Status))
	}
	if len(env.Result) == 0 || string(env.Result) == "null" {
		return rid, 0, fmt.Errorf("%s: %w: no result in the answer (requestId %s)", cl.op, ErrBadResponse, rid)
	}
	if out != nil {
		if err := json.Unmarshal(env.Result, out); err != nil {
			return rid, 0, fmt.Errorf("%s: %w: %v (requestId %s)", cl.op, ErrBadResponse, err, rid)
		}
	}
	return rid, 0, nil
}

// stripURL drops the *url.Error wrapper: its message repeats the method
// and the URL.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("no answer in time: %w", ue.Err)
		}
		return ue.Err
	}
	return err
}

func parseRetryAfter(s string) time.Duration {
	if s == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(s); err == nil {
		return max(0, time.Until(t))
	}
	return 0
}

// bodyExcerpt is the start of a non-JSON answer, on one line.
func bodyExcerpt(data []byte, status string) string {
	s := strings.TrimSpace(string(data))
	if s == "" {
		return status
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return oneLine(strings.ToValidUTF8(s, "?"))
}

// flexInt reads a JSON number, or a string holding one, or null.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*f = 0
		return nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		*f = flexInt(n)
		return nil
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("%s is not a number", b)
	}
	*f = flexInt(x)
	return nil
}
