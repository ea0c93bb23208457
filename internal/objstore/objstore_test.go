package objstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"vmimport/internal/objstore"
	"vmimport/internal/objstore/storetest"
	"vmimport/internal/s3test"
)

var srv *s3test.Server

func TestMain(m *testing.M) { os.Exit(s3test.Main(m, &srv)) }

func TestMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store {
		return (&objstore.Memory{}).Bucket("b")
	})
}

// TestS3: the SDK's store against a real S3 server.
func TestS3(t *testing.T) {
	s3test.Need(t, srv)
	api := s3.New(s3.Options{
		Region: srv.Region, BaseEndpoint: aws.String(srv.Endpoint), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		Retryer:                    aws.NopRetryer{},
	})
	storetest.Run(t, func(t *testing.T) objstore.Store { return objstore.NewS3(api, srv.Bucket(t)) })
}

// TestRetryingOverFaults: the retrying store over a memory store that
// refuses one call in three (503 SlowDown, 500, or no answer at all) still
// passes the suite.
func TestRetryingOverFaults(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store {
		var n atomic.Int64
		m := &objstore.Memory{Fault: func(op, key string, _ int) error {
			switch n.Add(1) % 3 {
			case 0:
				return objstore.Injected(op, 503, "SlowDown")
			case 1:
				if n.Load()%2 == 0 {
					return objstore.Injected(op, 500, "InternalError")
				}
				return &objstore.Error{Op: op, Err: &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}}
			}
			return nil
		}}
		return objstore.NewRetrying(m.Bucket("b"), objstore.Policy{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}, objstore.NewPacer(10*time.Millisecond))
	})
}

// The flattened errors of the SDK hold no request: their chain is plain.
func TestS3ErrorsAreFlat(t *testing.T) {
	s3test.Need(t, srv)
	api := s3.New(s3.Options{
		Region: srv.Region, BaseEndpoint: aws.String(srv.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, ""),
		Retryer:     aws.NopRetryer{},
	})
	s := objstore.NewS3(api, srv.Bucket(t))
	_, err := s.ListParts(context.Background(), "k", "no-such-upload")
	var e *objstore.Error
	if !errors.As(err, &e) || e.Status != 404 || e.Code != "NoSuchUpload" || e.Err != nil {
		t.Fatalf("ListParts of no upload: %#v", err)
	}
	dead := objstore.NewS3(s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String("http://127.0.0.1:1"), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("a", "b", ""), Retryer: aws.NopRetryer{}}), "x")
	_, err = dead.Head(context.Background(), "k")
	if !errors.As(err, &e) || e.Status != 0 || e.Err == nil {
		t.Fatalf("Head at a closed port: %#v", err)
	}
	for _, err := range []error{err, e} {
		for u := err; u != nil; u = errors.Unwrap(u) {
			if name := fmt.Sprintf("%T", u); strings.Contains(name, "smithy") || strings.Contains(name, "aws") || strings.Contains(name, "http.") {
				t.Errorf("the error holds a %s: %v", name, u)
			}
		}
	}
}
