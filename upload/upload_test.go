package upload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"vmimport/internal/bufpool"
	"vmimport/internal/s3test"
)

var srv *s3test.Server

func TestMain(m *testing.M) { os.Exit(s3test.Main(m, &srv)) }

// env is one test's client, bucket and state folder.
type env struct {
	t      *testing.T
	c      *Client
	bucket string
	dir    string
	proxy  *s3test.Proxy
}

func newEnv(t *testing.T, proxy bool) *env {
	s3test.Need(t, srv)
	e := &env{t: t, bucket: srv.Bucket(t), dir: t.TempDir()}
	endpoint := srv.Endpoint
	if proxy {
		e.proxy = s3test.NewProxy(srv)
		t.Cleanup(e.proxy.Close)
		endpoint = e.proxy.URL
	}
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true") // no traffic off the loopback
	c, err := NewClient(context.Background(), Config{Endpoint: endpoint, Region: srv.Region, MaxAttempts: 8, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	return e
}

func (e *env) start(key string, o Options) *Target {
	e.t.Helper()
	o.Bucket, o.Key = e.bucket, key
	if o.StateFile == "" {
		o.StateFile = filepath.Join(e.dir, "state.json")
	}
	o.Log = func(s string) { e.t.Log(s) }
	tg, err := Start(context.Background(), e.c, o)
	if err != nil {
		e.t.Fatal(err)
	}
	return tg
}

func (e *env) objectSHA(key string) string {
	e.t.Helper()
	out, err := srv.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key)})
	if err != nil {
		e.t.Fatal(err)
	}
	defer out.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, out.Body); err != nil {
		e.t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// pattern writes a deterministic mix of data and zero runs to w (a Target
// or the local model) and returns the local copy's digest.
type op struct {
	zero bool
	n    int64
	seed uint64
}

func replay(t *testing.T, tg *Target, ops []op) string {
	t.Helper()
	h := sha256.New()
	for _, o := range ops {
		if o.zero {
			if err := tg.Skip(o.n); err != nil {
				t.Fatal(err)
			}
			io.Copy(h, &zeroReader{n: o.n})
			continue
		}
		b := randBytes(o.n, o.seed)
		h.Write(b)
		// Write in odd pieces, as a stream of blocks would.
		for len(b) > 0 {
			k := min(len(b), 700<<10)
			if _, err := tg.Write(b[:k]); err != nil {
				t.Fatal(err)
			}
			b = b[k:]
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func randBytes(n int64, seed uint64) []byte {
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

const mib = 1 << 20

var sparsePattern = []op{
	{n: 3 * mib, seed: 1},       // part 1: data then zeros
	{zero: true, n: 13 * mib},   // rest of part 1, part 2 whole zero, part 3 begins
	{n: 1 * mib, seed: 2},       // data inside part 3
	{zero: true, n: 22*mib + 5}, // parts 4..7 whole zeros, odd end
	{n: 5*mib - 5, seed: 3},     // a data run crossing a part edge
	{zero: true, n: 7 * mib},    // last part: partial, zero
}

func patternSize(ops []op) int64 {
	var n int64
	for _, o := range ops {
		n += o.n
	}
	return n
}

func TestUploadSparseParts(t *testing.T) {
	e := newEnv(t, true)
	size := patternSize(sparsePattern)
	tg := e.start("disk.raw", Options{SizeHint: size, PartSize: 5 * mib, Verify: true, Concurrency: 3})
	want := replay(t, tg, sparsePattern)
	if err := tg.Commit(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got := e.objectSHA("disk.raw"); got != want {
		t.Fatalf("object sha256 %s, want %s", got, want)
	}
	r := tg.Report()
	if r.PartsCopied < 3 || !r.Verified || r.Size != size {
		t.Errorf("report: %+v", r)
	}
	if n := e.proxy.Count("UploadPartCopy"); n != r.PartsCopied {
		t.Errorf("%d copies seen, report says %d", n, r.PartsCopied)
	}
	// Nothing but the object remains: no zero object, no state file, no upload.
	if keys := srv.Keys(t, e.bucket); !slices.Equal(keys, []string{"disk.raw"}) {
		t.Errorf("bucket holds %v", keys)
	}
	if p := srv.Pending(t, e.bucket); len(p) != 0 {
		t.Errorf("incomplete uploads left: %v", p)
	}
	if _, err := os.Stat(tg.StateFile()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file left: %v", err)
	}
	// The presigned URL downloads the same bytes.
	resp, err := http.Get(r.PresignedURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	io.Copy(h, resp.Body)
	if resp.StatusCode != 200 || hex.EncodeToString(h.Sum(nil)) != want {
		t.Errorf("presigned download: status %d, sha %x", resp.StatusCode, h.Sum(nil))
	}
	if !strings.Contains(r.ImportCommand, "jdc vm import-image") || r.ImportImage.ImageURL != r.PresignedURL || r.ImportImage.DiskFormat != "raw" {
		t.Errorf("import: %s / %+v", r.ImportCommand, r.ImportImage)
	}
}

// A QCOW2 encoder hands its header to Commit: it lands at offset 0, in
// part 1, which goes up last.
func TestCommitPatchesHead(t *testing.T) {
	for _, zeroFirst := range []bool{false, true} {
		e := newEnv(t, true)
		ops := []op{{n: 12 * mib, seed: 9}, {zero: true, n: 6 * mib}}
		if zeroFirst {
			ops = []op{{zero: true, n: 7 * mib}, {n: 4 * mib, seed: 10}}
		}
		size := patternSize(ops)
		tg := e.start("disk.qcow2", Options{SizeHint: size, PartSize: 5 * mib, Output: "qcow2"})
		replay(t, tg, ops)
		head := randBytes(64<<10, 11)
		if err := tg.Commit(context.Background(), head); err != nil {
			t.Fatal(err)
		}
		var local bytes.Buffer
		for _, o := range ops {
			if o.zero {
				local.Write(make([]byte, o.n))
			} else {
				local.Write(randBytes(o.n, o.seed))
			}
		}
		b := local.Bytes()
		copy(b, head)
		sum := sha256.Sum256(b)
		if got := e.objectSHA("disk.qcow2"); got != hex.EncodeToString(sum[:]) {
			t.Fatalf("zeroFirst=%v: object differs from the patched local copy", zeroFirst)
		}
		// Part 1 was the last part sent.
		if n := e.proxy.Count("UploadPart"); n == 0 {
			t.Fatal("no parts sent")
		}
	}
}

// Parts larger than the 8 MiB seed need the zero object grown by copies.
func TestZeroObjectGrows(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	e := newEnv(t, true)
	ops := []op{{n: 1 * mib, seed: 4}, {zero: true, n: 50 * mib}, {n: 2 * mib, seed: 5}}
	tg := e.start("big.raw", Options{SizeHint: patternSize(ops), PartSize: 20 * mib})
	want := replay(t, tg, ops)
	if err := tg.Commit(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got := e.objectSHA("big.raw"); got != want {
		t.Fatal("object differs")
	}
	if e.proxy.Sent.Load() > 1*mib+8*mib+2*20*mib+mib {
		t.Errorf("%d bytes sent", e.proxy.Sent.Load())
	}
	if keys := srv.Keys(t, e.bucket); !slices.Equal(keys, []string{"big.raw"}) {
		t.Errorf("bucket holds %v", keys)
	}
}

func TestRefusedCopyFallsBack(t *testing.T) {
	e := newEnv(t, true)
	e.proxy.Inject(300*time.Millisecond, func(op string, n int) s3test.Fault {
		if op == "UploadPartCopy" {
			return s3test.Refuse501
		}
		return s3test.Pass
	})
	tg := e.start("disk.raw", Options{SizeHint: patternSize(sparsePattern), PartSize: 5 * mib})
	want := replay(t, tg, sparsePattern)
	if err := tg.Commit(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got := e.objectSHA("disk.raw"); got != want {
		t.Fatal("object differs")
	}
	if r := tg.Report(); r.PartsCopied != 0 || r.PartsSent != r.Parts {
		t.Errorf("report %+v", r)
	}
	if keys := srv.Keys(t, e.bucket); !slices.Equal(keys, []string{"disk.raw"}) {
		t.Errorf("bucket holds %v", keys)
	}
}

func TestFaultsAreRetried(t *testing.T) {
	e := newEnv(t, true)
	e.proxy.Inject(150*time.Millisecond, func(op string, n int) s3test.Fault {
		switch {
		case op == "UploadPart" && n%4 == 1:
			return s3test.Fail500
		case op == "UploadPart" && n%4 == 2:
			return s3test.Drop
		case op == "UploadPart" && n%4 == 3:
			return s3test.Slow
		case op == "UploadPartCopy" && n%3 == 1:
			return s3test.Fail500
		case op == "CompleteMultipartUpload" && n == 1:
			return s3test.Drop
		}
		return s3test.Pass
	})
	tg := e.start("disk.raw", Options{SizeHint: patternSize(sparsePattern), PartSize: 5 * mib, Verify: true})
	want := replay(t, tg, sparsePattern)
	if err := tg.Commit(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got := e.objectSHA("disk.raw"); got != want {
		t.Fatal("object differs")
	}
	if e.proxy.Count("UploadPart") <= e.proxy.Done("UploadPart") {
		t.Error("no fault was injected")
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	e := newEnv(t, true)
	tg := e.start("disk.raw", Options{SizeHint: 64 * mib, PartSize: 5 * mib})
	replay(t, tg, sparsePattern[:4])
	if err := tg.Abort(context.Background()); err != nil {
		t.Fatal(err)
	}
	if keys := srv.Keys(t, e.bucket); len(keys) != 0 {
		t.Errorf("bucket holds %v", keys)
	}
	if p := srv.Pending(t, e.bucket); len(p) != 0 {
		t.Errorf("incomplete uploads left: %v", p)
	}
	if _, err := os.Stat(tg.StateFile()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file left: %v", err)
	}
}

// A fatal error (the store denies a part) stops the pass and aborts.
func TestFatalErrorAborts(t *testing.T) {
	e := newEnv(t, true)
	e.proxy.Inject(300*time.Millisecond, func(op string, n int) s3test.Fault {
		if op == "UploadPart" && n >= 2 {
			return s3test.Deny403
		}
		return s3test.Pass
	})
	tg := e.start("disk.raw", Options{SizeHint: 64 * mib, PartSize: 5 * mib})
	var err error
	b := randBytes(mib, 1)
	for i := 0; i < 60 && err == nil; i++ {
		_, err = tg.Write(b)
	}
	if err == nil {
		err = tg.Commit(context.Background(), nil)
	}
	if err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("err = %v, want AccessDenied", err)
	}
	if err := tg.Abort(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := srv.Pending(t, e.bucket); len(p) != 0 {
		t.Errorf("incomplete uploads left: %v", p)
	}
	if keys := srv.Keys(t, e.bucket); len(keys) != 0 {
		t.Errorf("bucket holds %v", keys)
	}
}

// Resume: an upload interrupted after some parts continues, reusing the
// parts whose MD5 matches and replacing one that does not.
func TestResume(t *testing.T) {
	e := newEnv(t, false)
	ops := []op{{n: 9 * mib, seed: 20}, {zero: true, n: 10 * mib}, {n: 12 * mib, seed: 21}}
	id := SourceID{Path: "/src", Size: 1, Head: "x"}
	o := Options{SizeHint: patternSize(ops), PartSize: 5 * mib, Resume: true, Source: id, Output: "raw"}
	tg := e.start("disk.raw", o)
	replay(t, tg, ops[:2])
	// Simulate kill -9: stop the workers, leave the upload and the state.
	tg.send.close()
	uploadID := tg.UploadID()

	// Without --resume: refused, pointing at the recorded upload.
	o2 := o
	o2.Resume = false
	o2.Bucket, o2.Key, o2.StateFile = e.bucket, "disk.raw", filepath.Join(e.dir, "state.json")
	if _, err := Start(context.Background(), e.c, o2); !errors.Is(err, ErrUploadExists) {
		t.Fatalf("start over a recorded upload: %v", err)
	}
	// Another source: refused.
	o3 := o
	o3.Source.Size = 2
	o3.Bucket, o3.Key, o3.StateFile = e.bucket, "disk.raw", o2.StateFile
	if _, err := Start(context.Background(), e.c, o3); err == nil || !strings.Contains(err.Error(), "changed size") {
		t.Fatalf("resume with another source: %v", err)
	}
	tg2 := e.start("disk.raw", o)
	if tg2.UploadID() != uploadID {
		t.Fatalf("resumed %s, want %s", tg2.UploadID(), uploadID)
	}
	if len(tg2.parts.existing) == 0 {
		t.Fatal("no parts found to resume")
	}
	want := replay(t, tg2, ops)
	if err := tg2.Commit(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got := e.objectSHA("disk.raw"); got != want {
		t.Fatal("object differs")
	}
	if r := tg2.Report(); r.PartsReused == 0 {
		t.Errorf("no part reused: %+v", r)
	}
	if p := srv.Pending(t, e.bucket); len(p) != 0 {
		t.Errorf("incomplete uploads left: %v", p)
	}
}

func TestPreflight(t *testing.T) {
	e := newEnv(t, false)
	o := Options{Bucket: "no-such-bucket-x", Key: "k", SizeHint: mib, PartSize: 8 * mib, StateFile: filepath.Join(e.dir, "s")}
	_, err := Start(context.Background(), e.c, o)
	var ue *Error
	if err == nil || !strings.Contains(err.Error(), "does not exist") || strings.Contains(err.Error(), "\n") || !errors.As(err, &ue) || httpStatus(err) != http.StatusNotFound {
		t.Errorf("missing bucket: %v", err)
	}
	// The cause stays: a cancelled run is context.Canceled to its caller.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	o.Bucket = e.bucket
	if _, err := Start(ctx, e.c, o); !errors.Is(err, context.Canceled) || !errors.As(err, &ue) {
		t.Errorf("cancelled: %v (%T)", err, err)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	c, err := NewClient(context.Background(), Config{Endpoint: srv.Endpoint, Region: srv.Region, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Preflight(context.Background(), e.bucket, "k")
	if err == nil || strings.Contains(err.Error(), "wrong") {
		t.Errorf("bad secret: %v", err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	c, _ = NewClient(context.Background(), Config{Endpoint: srv.Endpoint, Region: srv.Region})
	if err := c.Preflight(context.Background(), e.bucket, "k"); err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Errorf("no credentials: %v", err)
	}
}

// Memory: the pool never holds more than Concurrency+1 buffers.
func TestPoolBound(t *testing.T) {
	e := newEnv(t, true)
	e.proxy.Inject(50*time.Millisecond, func(op string, n int) s3test.Fault {
		if op == "UploadPart" {
			return s3test.Slow
		}
		return s3test.Pass
	})
	bufs := bufpool.New(1 << 30)
	tg := e.start("disk.raw", Options{SizeHint: 80 * mib, PartSize: 5 * mib, Concurrency: 2, Buffers: bufs})
	b := randBytes(mib, 3)
	for range 80 {
		if _, err := tg.Write(b); err != nil {
			t.Fatal(err)
		}
		// Part 1 (5 MiB here) and three parts: two in flight, one filling.
		if lent := bufs.Stats().Lent; lent > 4*5*mib {
			t.Fatalf("%d MiB of part buffers lent, the bound is 20", lent>>20)
		}
	}
	if err := tg.Commit(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if s := bufs.Stats(); s.Lent != 0 || s.Peak > 4*5*mib {
		t.Fatalf("after Commit: %+v", s)
	}
}

func urlParse(s string) (*url.URL, error) { return url.Parse(s) }
