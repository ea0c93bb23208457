// Package upload streams a converted image into an S3-compatible multipart
// upload (the target cloud's OSS): parts go up K at a time while the pass
// runs, part 1 is held until Commit so a QCOW2 header can be patched in,
// whole parts of zeros are copied server-side from a zero object, and the
// upload is recorded in a state file so that a killed run can be resumed.
//
// Every call to the store goes through objstore.Store (Client.Bucket): the
// SDK's service/s3 driven directly (feature/s3/manager and transfermanager
// can neither send part 1 last, nor resume, nor copy parts), retried and
// paced by objstore.Retrying.
package upload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/logging"

	"vmimport/internal/objstore"
)

// Config says how to reach the object store.
type Config struct {
	// Endpoint is the store's base URL. Empty means --jdcloud-region's
	// endpoint, then AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL, then AWS.
	Endpoint string
	// Region signs the requests. Empty means JDCloudRegion, then the AWS
	// chain (AWS_REGION, the profile), then us-east-1.
	Region string
	// JDCloudRegion (cn-north-1, ...) selects the target cloud's endpoint
	// https://s3.<region>.jdcloud-oss.com and checks the bucket is there.
	JDCloudRegion string
	// PathStyle puts the bucket in the path, not in the host name. It is
	// forced on for IP addresses and localhost.
	PathStyle bool
	// Profile is the shared config profile (empty: AWS_PROFILE or default).
	Profile string
	// MaxAttempts bounds the attempts per request (default 12, with
	// exponential backoff up to MaxBackoff).
	MaxAttempts int
	// MaxBackoff is the longest wait between attempts (default 30 s).
	MaxBackoff time.Duration
	// MaxPacing is the most the store's pacer spaces calls while the
	// store pushes back (default 2 s).
	MaxPacing time.Duration
	// Conns is the number of connections to keep open (default 16).
	Conns int
	// HTTPClient replaces the SDK's client (tests count bytes with it).
	HTTPClient aws.HTTPClient
	// Credentials replace the AWS chain, if set.
	Credentials aws.CredentialsProvider
	// Backend, if set, is the store of a bucket instead of the SDK's (a
	// memory store, in tests): every call goes to it, retried and paced
	// as the SDK's would be.
	Backend func(bucket string) objstore.Store
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
}

// Client is a client of one S3-compatible store, set up for multipart
// uploads. Every call to the store goes through Bucket (an
// objstore.Store), tried again and paced there, with one pacer for the
// client: share a client (Clients) to share the pacer.
type Client struct {
	// Endpoint is the base URL in use; nil for AWS's own endpoints.
	Endpoint *url.URL
	Region   string
	// JDCloudRegion is the target cloud's region, if known.
	JDCloudRegion string
	PathStyle     bool
	creds         aws.CredentialsProvider
	awsCfg        aws.Config
	s3opts        func(*s3.Options)
	// once makes each request once: objstore.Retrying repeats them.
	once    *s3.Client
	backend func(string) objstore.Store
	policy  objstore.Policy
	pacer   *objstore.Pacer
}

// JDCloudEndpoint is the internet endpoint of the target cloud's OSS.
func JDCloudEndpoint(region string) string {
	return "https://s3." + region + ".jdcloud-oss.com"
}

// NewClient builds the client. It reads credentials lazily: Preflight
// checks they resolve.
func NewClient(ctx context.Context, c Config) (*Client, error) {
	getenv := c.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	endpoint := c.Endpoint
	if endpoint == "" && c.JDCloudRegion != "" {
		endpoint = JDCloudEndpoint(c.JDCloudRegion)
	}
	if endpoint == "" {
		endpoint = getenv("AWS_ENDPOINT_URL_S3")
	}
	if endpoint == "" {
		endpoint = getenv("AWS_ENDPOINT_URL")
	}
	cl := &Client{JDCloudRegion: c.JDCloudRegion, PathStyle: c.PathStyle, backend: c.Backend,
		policy: objstore.Policy{Attempts: c.MaxAttempts, MaxBackoff: c.MaxBackoff}, pacer: objstore.NewPacer(c.MaxPacing)}
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("endpoint %q: give a URL such as https://s3.cn-north-1.jdcloud-oss.com", endpoint)
		}
		u.Path, u.RawQuery, u.Fragment = strings.TrimSuffix(u.Path, "/"), "", ""
		cl.Endpoint = u
		if cl.JDCloudRegion == "" {
			cl.JDCloudRegion = jdcloudRegionOf(u.Hostname())
		}
		h := u.Hostname()
		if h == "localhost" || net.ParseIP(h) != nil {
			cl.PathStyle = true
		}
	}
	conns := c.Conns
	if conns <= 0 {
		conns = 16
	}
	opts := []func(*config.LoadOptions) error{
		// The SDK's own log lines ("WARN falling back to IMDSv1") are not
		// for our users: what fails comes back as an error.
		config.WithLogger(logging.Nop{}),
		// S3-compatible stores reject the SDK's default trailing CRC32;
		// parts carry Content-MD5 instead.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
		// Each request once: objstore.Retrying is where they are repeated.
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
	}
	if c.HTTPClient != nil {
		opts = append(opts, config.WithHTTPClient(c.HTTPClient))
	} else {
		// A BuildableClient, so that config applies AWS_CA_BUNDLE to it.
		opts = append(opts, config.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConns = 2 * conns
			t.MaxIdleConnsPerHost = conns
			t.ResponseHeaderTimeout = 5 * time.Minute
		})))
	}
	if c.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(c.Credentials))
	}
	if c.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(c.Profile))
	}
	region := c.Region
	if region == "" {
		region = cl.JDCloudRegion
	}
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("loading the AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	cl.Region = awsCfg.Region
	cl.creds = awsCfg.Credentials
	cl.awsCfg = awsCfg
	ep := cl.Endpoint
	pathStyle := cl.PathStyle
	cl.s3opts = func(o *s3.Options) {
		if ep != nil {
			o.BaseEndpoint = aws.String(ep.String())
		}
		o.UsePathStyle = pathStyle
	}
	cl.once = s3.NewFromConfig(awsCfg, cl.s3opts)
	return cl, nil
}

// Bucket is the store of bucket: every call tried again on a failure
// worth it (12 attempts, backoff up to 30 s by default), paced with the
// client's other calls.
func (c *Client) Bucket(bucket string) objstore.Store {
	return objstore.NewRetrying(c.raw(bucket), c.policy, c.pacer)
}

// BucketOnce is the store of bucket with every call made once, but paced
// with the client's other calls: for callers that retry on their own (the
// reader of an s3:// source retries a range).
func (c *Client) BucketOnce(bucket string) objstore.Store {
	return objstore.NewRetrying(c.raw(bucket), objstore.Policy{Attempts: 1}, c.pacer)
}

// fast is the store of bucket whose calls give up soon: the preflight's.
func (c *Client) fast(bucket string) objstore.Store {
	return objstore.NewRetrying(c.raw(bucket), objstore.Policy{Attempts: preflightAttempts, MaxBackoff: preflightBackoff}, c.pacer)
}

func (c *Client) raw(bucket string) objstore.Store {
	if c.backend != nil {
		return c.backend(bucket)
	}
	return objstore.NewS3(c.once, bucket)
}

// jdcloudRegionOf reads the region out of s3[-internal].<region>.jdcloud-oss.com.
func jdcloudRegionOf(host string) string {
	for _, p := range []string{"s3.", "s3-internal."} {
		if r, ok := strings.CutPrefix(host, p); ok {
			if r, ok := strings.CutSuffix(r, ".jdcloud-oss.com"); ok && !strings.Contains(r, ".") {
				return r
			}
		}
	}
	return ""
}

// withEndpoint is a client of the same store reached at another base URL
// (the intranet host, for presigning: no request is made with it).
func (c *Client) withEndpoint(u *url.URL) *s3.Client {
	return s3.NewFromConfig(c.awsCfg, c.s3opts, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(u.String())
	})
}

// Credentials resolves the credentials; it never returns the secret in an
// error.
func (c *Client) Credentials(ctx context.Context) (aws.Credentials, error) {
	if c.creds == nil {
		return aws.Credentials{}, errNoCredentials
	}
	cr, err := c.creds.Retrieve(ctx)
	if err != nil {
		return aws.Credentials{}, &Error{Op: "looking for credentials", Err: err, Msg: noCredentials(err).Error()}
	}
	if cr.AccessKeyID == "" || cr.SecretAccessKey == "" {
		return aws.Credentials{}, errNoCredentials
	}
	return cr, nil
}

var errNoCredentials = errors.New("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE / --profile")

// Where names the store for messages.
func (c *Client) Where() string {
	if c.Endpoint != nil {
		return c.Endpoint.String()
	}
	return "AWS S3 (" + c.Region + ")"
}

// Close closes the client's idle connections. The client stays usable.
func (c *Client) Close() {
	if h, ok := c.awsCfg.HTTPClient.(interface{ CloseIdleConnections() }); ok {
		h.CloseIdleConnections()
	}
}

// Preflight checks, before any of the source is read, that credentials
// resolve, that the bucket exists and is reachable, that it lies in
// --jdcloud-region if given, and that it takes multipart uploads (one is
// created and aborted under key+".convert-preflight"). Each failure is one
// line. Its calls give up soon (preflight_diag.go): an endpoint that cannot
// be reached is reported in seconds.
func (c *Client) Preflight(ctx context.Context, bucket, key string) error {
	if _, err := c.Credentials(ctx); err != nil {
		return err
	}
	s := c.fast(bucket)
	if err := s.Stat(ctx); err != nil {
		e := fail(fmt.Sprintf("bucket %q at %s", bucket, c.Where()), "", 0, err).(*Error)
		if ctx.Err() == nil {
			// In the store's own terms; the cause stays for errors.As.
			e.Msg = c.bucketError(ctx, bucket, err).Error()
		}
		return e
	}
	if c.JDCloudRegion != "" {
		loc, err := s.Location(ctx)
		if err != nil {
			return fail(fmt.Sprintf("bucket %q: reading its region", bucket), "", 0, err)
		}
		if loc != "" && loc != c.JDCloudRegion {
			return fmt.Errorf("bucket %q is in region %s, not %s: the image must be in the region it is imported into", bucket, loc, c.JDCloudRegion)
		}
	}
	probe := key + ".convert-preflight"
	id, err := s.CreateUpload(ctx, probe, nil)
	if err != nil {
		return fail(fmt.Sprintf("bucket %q is not writable (starting a multipart upload failed)", bucket), probe, 0, err)
	}
	// Abort it even if ctx was cancelled meanwhile (Ctrl-C): no probe may stay.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.AbortUpload(actx, probe, id); err != nil {
		return fail(fmt.Sprintf("bucket %q: aborting the test upload %s", bucket, id), probe, 0, err)
	}
	return nil
}
