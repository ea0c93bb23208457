// Package s3test gives tests a real S3 server on the loopback interface
// (versitygw, as .ci/versitygw.sh starts it, or started here), buckets on
// it, and a reverse proxy that counts bytes and injects faults. Only tests
// import it. No traffic ever leaves 127.0.0.1.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"vmimport/internal/testkit"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Server is a running S3 server.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Region    string
	cmd       *exec.Cmd
	dir       string
}

// Env is the environment a subprocess needs to reach the server (and
// nothing else: AWS_CONFIG_FILE and friends point nowhere).
func (s *Server) Env(home string) []string {
	env := []string{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") || k == "HOME" || k == "XDG_CACHE_HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+home, "XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"AWS_ACCESS_KEY_ID="+s.AccessKey, "AWS_SECRET_ACCESS_KEY="+s.SecretKey, "AWS_REGION="+s.Region,
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true",
	)
}

// versitygwVersion is the server the tests run against; .ci/versitygw.sh
// installs the same one.
const versitygwVersion = "v1.8.0"

// cacheDir is where versitygw is installed: $VERSITYGW_CACHE, or the
// folder .ci/versitygw.sh uses under the user's cache.
func cacheDir() string {
	if c := os.Getenv("VERSITYGW_CACHE"); c != "" {
		return c
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "vmimport", "versitygw-"+versitygwVersion)
	}
	return ""
}

// binary finds versitygw: $VERSITYGW_BIN, the cache folder of
// .ci/versitygw.sh, PATH; failing those, it installs it into the cache
// folder with go install (about 100 s, once per machine). It returns ""
// when there is no way to get one (no go command, no module proxy).
func binary() (string, error) {
	if b := os.Getenv("VERSITYGW_BIN"); b != "" {
		return b, nil
	}
	cache := cacheDir()
	if cache != "" {
		if b := filepath.Join(cache, "versitygw"); isExec(b) {
			return b, nil
		}
	}
	if b, err := exec.LookPath("versitygw"); err == nil {
		return b, nil
	}
	if cache == "" || os.Getenv("VMIMPORT_NO_VERSITYGW_INSTALL") != "" {
		return "", nil
	}
	return install(cache)
}

// install builds versitygw into cache with go install. The test binaries
// of several packages may start at once: a lock file lets one build while
// the others wait for it.
func install(cache string) (string, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(cache, ".install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	unlock, err := testkit.Lock(lock)
	if err != nil {
		return "", err
	}
	defer unlock()
	bin := filepath.Join(cache, "versitygw")
	if isExec(bin) {
		return bin, nil // built by another test binary meanwhile
	}
	fmt.Fprintf(os.Stderr, "s3test: installing versitygw %s into %s (go install, once)\n", versitygwVersion, cache)
	cmd := exec.Command(gobin, "install", "github.com/versity/versitygw/cmd/versitygw@"+versitygwVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+cache, "GOFLAGS=-mod=mod")
	cmd.Dir = cache // outside any module: go install pkg@version
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install versitygw %s: %v\n%s", versitygwVersion, err, out)
	}
	return bin, nil
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Start finds the server: CONVERT_TEST_S3_ENDPOINT with AWS_ACCESS_KEY_ID
// and AWS_SECRET_ACCESS_KEY, or a versitygw it starts on the loopback
// interface (installed on first use, see binary). It returns nil, nil when
// there is neither.
func Start() (*Server, error) {
	if ep := os.Getenv("CONVERT_TEST_S3_ENDPOINT"); ep != "" {
		u, err := url.Parse(ep)
		if err != nil || (u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost" && u.Hostname() != "::1") {
			return nil, fmt.Errorf("CONVERT_TEST_S3_ENDPOINT=%s: tests only talk to the loopback interface", ep)
		}
		s := &Server{Endpoint: strings.TrimSuffix(ep, "/"), AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"), SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), Region: os.Getenv("AWS_REGION")}
		if s.AccessKey == "" || s.SecretKey == "" {
			return nil, errors.New("CONVERT_TEST_S3_ENDPOINT is set but AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is not")
		}
		if s.Region == "" {
			s.Region = "us-east-1"
		}
		return s, nil
	}
	bin, err := binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "s3test: %v\n", err)
		return nil, nil
	}
	if bin == "" {
		return nil, nil
	}
	dir, err := os.MkdirTemp("", "versitygw-test-")
	if err != nil {
		return nil, err
	}
	s := &Server{AccessKey: "test" + randHex(4), SecretKey: randHex(20), Region: "us-east-1", dir: dir}
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		log, err := os.Create(filepath.Join(dir, "versitygw.log"))
		if err != nil {
			return nil, err
		}
		os.MkdirAll(filepath.Join(dir, "data"), 0o755)
		cmd := exec.Command(bin, "--port", fmt.Sprintf("127.0.0.1:%d", port), "--health", "/healthz", "posix", filepath.Join(dir, "data"))
		cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			log.Close()
			return nil, err
		}
		log.Close()
		s.cmd = cmd
		s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", port)
		if waitHealthy(s.Endpoint, 20*time.Second) {
			return s, nil
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
	b, _ := os.ReadFile(filepath.Join(dir, "versitygw.log"))
	return nil, fmt.Errorf("versitygw did not start: %s", b)
}

func waitHealthy(endpoint string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	c := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		if r, err := c.Get(endpoint + "/healthz"); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Stop stops a server this package started.
func (s *Server) Stop() {
	if s == nil || s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	os.RemoveAll(s.dir)
}

// Main runs the tests of a package around a server: *srv is nil when none
// is available (tests then skip, or fail under CI=true).
func Main(m *testing.M, srv **Server) int {
	s, err := Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "s3test: %v\n", err)
		return 1
	}
	*srv = s
	defer s.Stop()
	return m.Run()
}

// Need skips the test when there is no server (fails under CI).
func Need(t testing.TB, s *Server) {
	t.Helper()
	if s == nil {
		if os.Getenv("CI") != "" {
			t.Fatal("no S3 server: CI must run .ci/versitygw.sh and export its environment")
		}
		t.Skip("no S3 server: versitygw could not be installed (no go command?); run `eval \"$(.ci/versitygw.sh)\"`, or put versitygw on PATH")
	}
}

// Client is a plain SDK client of the server, for checks.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region: s.Region, BaseEndpoint: aws.String(s.Endpoint), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// Bucket creates a new bucket for one test.
func (s *Server) Bucket(t testing.TB) string {
	t.Helper()
	name := "t-" + randHex(6)
	if _, err := s.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("creating bucket %s: %v", name, err)
	}
	t.Cleanup(func() { s.dropBucket(name) })
	return name
}

// dropBucket empties and deletes a test bucket, so that test runs do not
// fill the server's disk.
func (s *Server) dropBucket(name string) {
	ctx := context.Background()
	c := s.Client()
	if out, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(name)}); err == nil {
		for _, u := range out.Uploads {
			c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(name), Key: u.Key, UploadId: u.UploadId})
		}
	}
	if out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(name)}); err == nil {
		for _, o := range out.Contents {
			c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(name), Key: o.Key})
		}
	}
	c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(name)})
}

// Pending lists the incomplete uploads of a bucket.
func (s *Server) Pending(t testing.TB, bucket string) []string {
	t.Helper()
	out, err := s.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range out.Uploads {
		ids = append(ids, aws.ToString(u.Key)+" "+aws.ToString(u.UploadId))
	}
	return ids
}

// Keys lists the objects of a bucket.
func (s *Server) Keys(t testing.TB, bucket string) []string {
	t.Helper()
	out, err := s.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

// MainWithConvert is Main for the tests that drive the real binary: it
// builds cmd/convert into a temporary folder (BuildConvert: with the race
// detector when the tests run with it), sets *bin to it, and removes it at
// the end. go test does not see changes to the binary: run these with
// -count=1.
func MainWithConvert(m *testing.M, srv **Server, bin *string) int {
	dir, err := os.MkdirTemp("", "convert-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	if *bin, err = BuildConvert(dir, Race); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if !Race {
		plainOnce.Do(func() { plainBin = *bin })
	}
	return Main(m, srv)
}

// Race tells whether the tests run with the race detector: the binary
// they drive is then built with it too, so that it watches the real paths
// (an upload's senders, a batch's jobs, a worker's deliveries).
const Race = raceEnabled

// BuildConvert builds cmd/convert into dir, with the race detector if
// race, and returns its path.
func BuildConvert(dir string, race bool) (string, error) {
	name, args := "convert", []string{"build"}
	if race {
		name, args = "convert-race", append(args, "-race")
	}
	bin := filepath.Join(dir, name)
	if out, err := exec.Command("go", append(args, "-o", bin, "vmimport/cmd/convert")...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("building convert: %v\n%s", err, out)
	}
	return bin, nil
}

var (
	binDir    string // MainWithConvert's folder
	plainOnce sync.Once
	plainBin  string
	plainErr  error
)

// PlainConvert is the binary built without the race detector, for the
// tests that measure memory (the detector multiplies it): MainWithConvert's
// own when the tests run without it, else built once, on first use.
func PlainConvert(t testing.TB) string {
	t.Helper()
	plainOnce.Do(func() {
		if binDir == "" {
			plainErr = errors.New("PlainConvert needs MainWithConvert")
			return
		}
		plainBin, plainErr = BuildConvert(binDir, false)
	})
	if plainErr != nil {
		t.Fatal(plainErr)
	}
	return plainBin
}

// GuestSHA256 is the SHA-256 of the guest bytes of an object: of the
// object itself when it is RAW, of its disk as qemu-img reads it (after
// qemu-img check passed) when it is QCOW2, as uploads are by default.
// format, if set, is the format the object must have.
func (s *Server) GuestSHA256(t testing.TB, bucket, key, format string) string {
	t.Helper()
	out, err := s.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("object %s: %v", key, err)
	}
	p := filepath.Join(t.TempDir(), "object")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(f, out.Body)
	out.Body.Close()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("object %s: %v", key, err)
	}
	defer os.Remove(p)
	head := make([]byte, 4)
	if f, err := os.Open(p); err == nil {
		io.ReadFull(f, head)
		f.Close()
	}
	got := "raw"
	if string(head) == "QFI\xfb" {
		got = "qcow2"
		testkit.QemuImg(t, "check", p)
	}
	if format != "" && got != format {
		t.Errorf("object %s is %s, want %s", key, got, format)
	}
	return testkit.RawSHA256(t, p)
}
