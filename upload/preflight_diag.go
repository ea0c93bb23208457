package upload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"vmimport/internal/objstore"
)

// ErrUnreachable marks a store that could not be reached at all: the
// connection was refused, the host name does not resolve, the network is
// down. Preflight fails on it within seconds; the long retry budget is for
// the faults of a transfer under way.
var ErrUnreachable = errors.New("cannot reach the object store")

// preflightAttempts and preflightBackoff bound the retries of the preflight
// requests: a closed port or an unknown host fails in about a second
// instead of the minute the transfer's budget (12 attempts) would take.
// (A store never reached at all gives up as soon, whatever the request:
// objstore.Retrying's first contact rule.)
const (
	preflightAttempts = 3
	preflightBackoff  = 500 * time.Millisecond
)

// unreachable says why no answer came from the store, in one line, or ""
// when err is not a connection failure.
func (c *Client) unreachable(err error) error {
	if objstore.Status(err) != 0 {
		return nil
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return fmt.Errorf("%w at %s: host %s not found (check --endpoint or --jdcloud-region)", ErrUnreachable, c.Where(), dns.Name)
	}
	var op *net.OpError
	if errors.As(err, &op) {
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
	status := objstore.Status(err)
	if status == http.StatusMovedPermanently {
		if region := regionOf(err); region != "" {
			return fmt.Errorf("bucket %q is in region %s, not %s: give --region %s (or the --jdcloud-region it lies in)", bucket, region, c.Region, region)
		}
	}
	code, msg := objstore.Code(err), apiMessage(err)
	if status == http.StatusBadRequest || status == http.StatusMovedPermanently || status == http.StatusForbidden || code == "" || code == "BadRequest" || code == "Forbidden" {
		_, gerr := c.fast(bucket).Location(ctx)
		if gerr != nil && objstore.Status(gerr) == status && objstore.Code(gerr) != "" {
			code, msg = objstore.Code(gerr), apiMessage(gerr)
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

// apiMessage is the message of a store's error, one line.
func apiMessage(err error) string {
	var e *objstore.Error
	if errors.As(err, &e) {
		return firstLine(e.Message)
	}
	return ""
}

// regionOf is the bucket's region an answer told (X-Amz-Bucket-Region).
func regionOf(err error) string {
	var e *objstore.Error
	if errors.As(err, &e) {
		return e.Region
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
