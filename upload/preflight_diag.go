package upload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithy "github.com/aws/smithy-go"
)

// ErrUnreachable marks a store that could not be reached at all: the
// connection was refused, the host name does not resolve, the network is
// down. Preflight fails on it within seconds; the long retry budget is for
// the faults of a transfer under way.
var ErrUnreachable = errors.New("cannot reach the object store")

// preflightAttempts and preflightBackoff bound the retries of the preflight
// requests: a closed port or an unknown host fails in about a second
// instead of the minute the transfer's budget (12 attempts) would take.
const (
	preflightAttempts = 3
	preflightBackoff  = 500 * time.Millisecond
)

// failFast is a request option for the preflight requests: few attempts,
// short waits.
func failFast(o *s3.Options) {
	o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
		so.MaxAttempts = preflightAttempts
		so.MaxBackoff = preflightBackoff
		so.RateLimiter = ratelimit.None
	})
}

// firstContact is the retryer of a Client: the transfer's (many attempts,
// long backoff), except while the store has never answered: then a
// connection that cannot be made (refused, host not found, no route) is
// given up after preflightAttempts, preflightBackoff apart. A mistyped
// endpoint or a stopped store is told in about a second by whatever request
// comes first (a preflight, convert uploads ls, convert import); the long
// budget stays for the faults of a transfer under way.
type firstContact struct {
	aws.RetryerV2
	reached *atomic.Bool
}

// GetAttemptToken notes every attempt that got an answer.
func (f firstContact) GetAttemptToken(ctx context.Context) (func(error) error, error) {
	release, err := f.RetryerV2.GetAttemptToken(ctx)
	if err != nil {
		return release, err
	}
	return func(err error) error {
		if err == nil || !connectionFailed(err) {
			f.reached.Store(true)
		}
		return release(err)
	}, nil
}

// RetryDelay gives up early on a store never reached.
func (f firstContact) RetryDelay(attempt int, err error) (time.Duration, error) {
	d, derr := f.RetryerV2.RetryDelay(attempt, err)
	if f.reached.Load() || !connectionFailed(err) {
		return d, derr
	}
	if attempt >= preflightAttempts {
		return 0, err
	}
	return min(d, preflightBackoff), derr
}

// connectionFailed tells an error of a request that got no connection.
func connectionFailed(err error) bool {
	var dns *net.DNSError
	var op *net.OpError
	return errors.As(err, &dns) || (errors.As(err, &op) && op.Op == "dial" && httpStatus(err) == 0)
}

// unreachable says why no answer came from the store, in one line, or ""
// when err is not a connection failure.
func (c *Client) unreachable(err error) error {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return fmt.Errorf("%w at %s: host %s not found (check --endpoint or --jdcloud-region)", ErrUnreachable, c.Where(), dns.Name)
	}
	var op *net.OpError
	if errors.As(err, &op) && httpStatus(err) == 0 {
		why := op.Err.Error()
		var se interface{ Unwrap() error }
		if errors.As(op.Err, &se) && se.Unwrap() != nil {
			why = se.Unwrap().Error() // "connection refused", not "connect: connection refused"
		}
		return fmt.Errorf("%w at %s: %s (check --endpoint, and that the store is running)", ErrUnreachable, c.Where(), why)
	}
	return nil
}

// bucketError explains a failed HeadBucket in the store's own terms. A HEAD
// answer has no body, so an ambiguous status (400, 301) is asked again with
// a GET, whose error body names the code (InvalidBucketName, ...).
func (c *Client) bucketError(ctx context.Context, bucket string, err error) error {
	if u := c.unreachable(err); u != nil {
		return u
	}
	status := httpStatus(err)
	if status == http.StatusMovedPermanently {
		if region := headerOf(err, "X-Amz-Bucket-Region"); region != "" {
			return fmt.Errorf("bucket %q is in region %s, not %s: give --region %s (or the --jdcloud-region it lies in)", bucket, region, c.Region, region)
		}
	}
	code, msg := apiCode(err), apiMessage(err)
	if status == http.StatusBadRequest || status == http.StatusMovedPermanently || status == http.StatusForbidden || code == "" || code == "BadRequest" || code == "Forbidden" {
		_, gerr := c.S3.GetBucketLocation(ctx, &s3.GetBucketLocationInput{Bucket: aws.String(bucket)}, failFast)
		if gerr != nil && httpStatus(gerr) == status && apiCode(gerr) != "" {
			code, msg = apiCode(gerr), apiMessage(gerr)
		}
	}
	switch {
	case code == "NoSuchBucket" || (status == http.StatusNotFound && (code == "" || code == "NotFound")):
		return fmt.Errorf("bucket %q does not exist at %s (NoSuchBucket): create it, or check the name and --endpoint", bucket, c.Where())
	case code == "AccessDenied" || (status == http.StatusForbidden && (code == "" || code == "Forbidden")):
		return fmt.Errorf("bucket %q at %s: access denied (AccessDenied): check the credentials and the bucket policy", bucket, c.Where())
	case code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch":
		return fmt.Errorf("bucket %q at %s: the store refused the credentials (%s: %s): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --profile", bucket, c.Where(), code, strings.TrimSuffix(orDefault(msg, "bad credentials"), "."))
	case code == "InvalidBucketName":
		return fmt.Errorf("bucket %q at %s: %s: %s", bucket, c.Where(), code, orDefault(msg, "the bucket name is not valid"))
	case code == "AuthorizationHeaderMalformed" || code == "PermanentRedirect" || code == "IncorrectEndpoint":
		return fmt.Errorf("bucket %q is not in region %s at %s (%s): give the bucket's region (--region or --jdcloud-region)", bucket, c.Region, c.Where(), code)
	case code != "" && code != "BadRequest" && code != "MovedPermanently":
		if msg != "" {
			return fmt.Errorf("bucket %q at %s: %s: %s", bucket, c.Where(), code, msg)
		}
		return fmt.Errorf("bucket %q at %s: %s", bucket, c.Where(), code)
	}
	return fmt.Errorf("bucket %q at %s: HTTP %d %s", bucket, c.Where(), status, http.StatusText(status))
}

// noCredentials words a credential chain that found nothing: the SDK's
// error is its last link (the EC2 instance metadata service, which
// answers 403 or not at all off EC2), not what the user must do.
func noCredentials(err error) error {
	if s := err.Error(); strings.Contains(s, "IMDS") || strings.Contains(s, "no EC2") {
		return errors.New("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give --profile (the environment, ~/.aws/credentials and ~/.aws/config were looked at, and the EC2 instance metadata)")
	}
	return fmt.Errorf("no usable credentials (env AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, --profile): %s", firstLine(err.Error()))
}

// apiMessage is the message of an S3 error, one line.
func apiMessage(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return firstLine(ae.ErrorMessage())
	}
	return ""
}

// headerOf is a header of the HTTP answer behind err.
func headerOf(err error, name string) string {
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.Header.Get(name)
	}
	return ""
}

// checkBucketName refuses what no S3 store takes as a bucket name, before
// a request is sent: 3 to 63 characters, letters, digits, dots and
// hyphens. (S3 itself is stricter: lower case, no "..", ... Stores differ
// there, so the rest is left to the store, whose answer is shown.)
func checkBucketName(b string) error {
	if n := len(b); n < 3 || n > 63 {
		return fmt.Errorf("bucket name %q: %d characters; bucket names have 3 to 63", b, n)
	}
	if i := strings.IndexFunc(b, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_')
	}); i >= 0 {
		return fmt.Errorf("bucket name %q: %q is not allowed; bucket names have letters, digits, dots and hyphens", b, b[i:i+1])
	}
	return nil
}
