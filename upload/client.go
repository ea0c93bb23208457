// Package upload streams a converted image into an S3-compatible multipart
// upload (the target cloud's OSS): parts go up K at a time while the pass
// runs, part 1 is held until Commit so a QCOW2 header can be patched in,
// whole parts of zeros are copied server-side from a zero object, and the
// upload is recorded in a state file so that a killed run can be resumed.
//
// It drives aws-sdk-go-v2's service/s3 directly: feature/s3/manager and
// transfermanager can neither send part 1 last, nor resume, nor copy parts.
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
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/logging"
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
	// exponential backoff up to MaxBackoff, no retry quota).
	MaxAttempts int
	// MaxBackoff is the longest wait between attempts (default 30 s).
	MaxBackoff time.Duration
	// Conns is the number of connections to keep open (default 16).
	Conns int
	// HTTPClient replaces the SDK's client (tests count bytes with it).
	HTTPClient aws.HTTPClient
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
}

// Client is an S3 client set up for multipart uploads to S3-compatible
// stores.
type Client struct {
	S3 *s3.Client
	// Endpoint is the base URL in use; nil for AWS's own endpoints.
	Endpoint *url.URL
	Region   string
	// JDCloudRegion is the target cloud's region, if known.
	JDCloudRegion string
	PathStyle     bool
	creds         aws.CredentialsProvider
	awsCfg        aws.Config
	s3opts        func(*s3.Options)
	// retryer decides the retries of the upload's requests (retrying);
	// once makes each of them once.
	retryer aws.Retryer
	once    *s3.Client
	// reached is set once the store answered a request (firstContact).
	reached *atomic.Bool
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
	cl := &Client{JDCloudRegion: c.JDCloudRegion, PathStyle: c.PathStyle, reached: new(atomic.Bool)}
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
	attempts := c.MaxAttempts
	if attempts <= 0 {
		attempts = 12
	}
	backoff := c.MaxBackoff
	if backoff <= 0 {
		backoff = 30 * time.Second
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
		// Hours-long uploads: see newRetryer. The upload's own requests
		// go through Client.store, which retries the same way.
		config.WithRetryer(func() aws.Retryer { return cl.newRetryer(attempts, backoff) }),
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
	cl.S3 = s3.NewFromConfig(awsCfg, cl.s3opts)
	cl.retryer = cl.newRetryer(attempts, backoff)
	cl.once = s3.NewFromConfig(awsCfg, cl.s3opts, func(o *s3.Options) { o.Retryer = aws.NopRetryer{} })
	return cl, nil
}

// newRetryer is the SDK's standard retryer with many attempts, a long
// backoff, and no retry quota (the default token bucket gives up for good
// after a burst of failures, which a flaky link produces), except while the
// store has never answered (firstContact): then a connection that cannot be
// made is given up in about a second.
func (c *Client) newRetryer(attempts int, backoff time.Duration) aws.Retryer {
	return firstContact{RetryerV2: retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = attempts
		o.MaxBackoff = backoff
		o.RateLimiter = ratelimit.None
	}), reached: c.reached}
}

// store is the objectStore of bucket the upload uses: each call made once
// by the SDK, tried again by retrying.
func (c *Client) store(bucket string) objectStore {
	return retrying{store: s3Store{api: c.once, bucket: bucket}, r: c.retryer}
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
// (the intranet host, for presigning).
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

// Close closes the client's idle connections: a finished upload's last
// requests no longer hold their connections (nor, through them, part
// buffers) until the idle time-out. The client stays usable.
func (c *Client) Close() {
	if h, ok := c.awsCfg.HTTPClient.(interface{ CloseIdleConnections() }); ok {
		h.CloseIdleConnections()
	}
}

// Preflight checks, before any of the source is read, that credentials
// resolve, that the bucket exists and is reachable, that it lies in
// --jdcloud-region if given, and that it takes multipart uploads (one is
// created and aborted under key+".convert-preflight"). Each failure is one
// line.
func (c *Client) Preflight(ctx context.Context, bucket, key string) error {
	if _, err := c.Credentials(ctx); err != nil {
		return err
	}
	// The preflight requests fail fast (preflight_diag.go): an endpoint
	// that cannot be reached is reported in seconds.
	if _, err := c.S3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)}, failFast); err != nil {
		e := &Error{Op: fmt.Sprintf("bucket %q at %s", bucket, c.Where()), Err: err}
		if ctx.Err() == nil {
			// In the store's own terms; the cause stays for errors.As.
			e.Msg = c.bucketError(ctx, bucket, err).Error()
		}
		return e
	}
	if c.JDCloudRegion != "" {
		loc, err := c.S3.GetBucketLocation(ctx, &s3.GetBucketLocationInput{Bucket: aws.String(bucket)}, failFast)
		if err != nil {
			return &Error{Op: fmt.Sprintf("bucket %q: reading its region", bucket), Err: err}
		}
		if got := string(loc.LocationConstraint); got != "" && got != c.JDCloudRegion {
			return fmt.Errorf("bucket %q is in region %s, not %s: the image must be in the region it is imported into", bucket, got, c.JDCloudRegion)
		}
	}
	probe := key + ".convert-preflight"
	cr, err := c.S3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(probe)}, failFast)
	if err != nil {
		return &Error{Op: fmt.Sprintf("bucket %q is not writable (starting a multipart upload failed)", bucket), Key: probe, Err: err}
	}
	// Abort it even if ctx was cancelled meanwhile (Ctrl-C): no probe may stay.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := c.S3.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(probe), UploadId: cr.UploadId}); err != nil {
		return &Error{Op: fmt.Sprintf("bucket %q: aborting the test upload %s", bucket, aws.ToString(cr.UploadId)), Key: probe, Err: err}
	}
	return nil
}
