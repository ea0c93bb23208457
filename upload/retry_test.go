package upload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// flaky fails its first calls with an HTTP status, then reads the body it
// was given, to show the body was rewound.
type flaky struct {
	objectStore
	fails  int
	status int
	calls  int
	got    []string
}

func (f *flaky) UploadPart(_ context.Context, _, _ string, _ int32, body io.ReadSeeker, _ int64, _ [16]byte) (string, error) {
	f.calls++
	b, _ := io.ReadAll(body)
	f.got = append(f.got, string(b))
	if f.calls <= f.fails {
		return "", &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: f.status}}, Err: errors.New("boom"),
		}}
	}
	return "etag", nil
}

func TestRetrying(t *testing.T) {
	for _, c := range []struct {
		name          string
		fails, status int
		calls         int
		ok            bool
	}{
		{"503 twice then success", 2, http.StatusServiceUnavailable, 3, true},
		{"503 past the attempts", 9, http.StatusServiceUnavailable, 4, false},
		{"403 is final", 1, http.StatusForbidden, 1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &flaky{fails: c.fails, status: c.status}
			s := retrying{store: f, r: (&Client{reached: new(atomic.Bool)}).newRetryer(4, time.Millisecond)}
			etag, err := s.UploadPart(context.Background(), "k", "u", 1, bytes.NewReader([]byte("part")), 4, [16]byte{})
			if (err == nil) != c.ok || f.calls != c.calls {
				t.Fatalf("err %v after %d calls; want ok=%v after %d", err, f.calls, c.ok, c.calls)
			}
			if c.ok && etag != "etag" {
				t.Errorf("etag %q", etag)
			}
			for i, b := range f.got {
				if b != "part" {
					t.Errorf("call %d read %q: the body was not rewound", i+1, b)
				}
			}
			if !c.ok && httpStatus(err) != c.status {
				t.Errorf("the last error lost its status: %v", err)
			}
			if !c.ok && c.calls > 1 && !strings.Contains(err.Error(), fmt.Sprintf("(%d attempts)", c.calls)) {
				t.Errorf("the error does not say how many attempts were made: %v", err)
			}
		})
	}
	// A cancelled context stops the retries.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f := &flaky{fails: 9, status: http.StatusServiceUnavailable}
	s := retrying{store: f, r: (&Client{reached: new(atomic.Bool)}).newRetryer(4, time.Second)}
	if _, err := s.UploadPart(ctx, "k", "u", 1, bytes.NewReader(nil), 0, [16]byte{}); err == nil || f.calls != 1 {
		t.Errorf("cancelled: %v after %d calls", err, f.calls)
	}
}
