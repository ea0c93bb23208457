package remote_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"vmimport/internal/objstore"
	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/remote"
)

var srv *s3test.Server

func TestMain(m *testing.M) { os.Exit(s3test.Main(m, &srv)) }

// stores are the stores of endpoint's buckets (the server, or a proxy in
// front), each call made once, as remote.Options.S3 gives them.
func stores(endpoint, secret string) func(context.Context, string) (objstore.Store, error) {
	api := s3.New(s3.Options{
		Region: srv.Region, BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(srv.AccessKey, secret, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		Retryer:                    aws.NopRetryer{},
	})
	return func(_ context.Context, bucket string) (objstore.Store, error) {
		return objstore.NewS3(api, bucket), nil
	}
}

func put(t *testing.T, bucket, key, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(b)}); err != nil {
		t.Fatal(err)
	}
}

// TestFormatsOverS3 reads images from the local S3 server through a
// proxy that counts the bytes it serves and cuts answers mid-body: the
// same guest bytes as read from the files, a descriptor's extent found
// beside it in the bucket, and the bytes served within 1.3x.
func TestFormatsOverS3(t *testing.T) {
	s3test.Need(t, srv)
	testkit.Need(t, "qemu-img", "sfdisk", "mkfs.ext4")
	dir := t.TempDir()
	raw := testkit.MakeDisk(t, t.TempDir(), testkit.DiskOptions{SizeMiB: 32, DataMiB: 6, Tail: true})
	files := map[string]string{
		"vm/disk.qcow2":       testkit.Convert(t, raw, filepath.Join(dir, "disk.qcow2"), "qcow2", "-c"),
		"vm/disk-stream.vmdk": testkit.Convert(t, raw, filepath.Join(dir, "disk-stream.vmdk"), "vmdk", "-o", "subformat=streamOptimized"),
		"vm/disk.vmdk":        testkit.Convert(t, raw, filepath.Join(dir, "disk.vmdk"), "vmdk", "-o", "subformat=monolithicFlat"),
		"vm/disk-flat.vmdk":   filepath.Join(dir, "disk-flat.vmdk"),
	}
	files["vm/vm.ova"] = makeOVA(t, dir, files["vm/disk-stream.vmdk"])
	bucket := srv.Bucket(t)
	for k, f := range files {
		put(t, bucket, k, f)
	}
	proxy := s3test.NewProxy(srv)
	defer proxy.Close()
	for _, c := range []struct {
		key   string
		files []string
	}{
		{"vm/disk.qcow2", []string{"vm/disk.qcow2"}},
		{"vm/disk-stream.vmdk", []string{"vm/disk-stream.vmdk"}},
		{"vm/disk.vmdk", []string{"vm/disk.vmdk", "vm/disk-flat.vmdk"}},
		{"vm/vm.ova", []string{"vm/vm.ova"}},
	} {
		t.Run(c.key, func(t *testing.T) {
			local, err := reader.Open(files[c.key], reader.Options{})
			if err != nil {
				t.Fatal(err)
			}
			want := guestSHA256(t, local)
			local.Close()
			var size int64
			for _, f := range c.files {
				size += fileSize(t, files[f])
			}
			// Every 5th GET is cut mid-body: retried, never wrong.
			proxy.Inject(0, func(op string, n int) s3test.Fault {
				if op == "Get" && n%5 == 0 {
					return s3test.CutReply
				}
				return s3test.Pass
			})
			proxy.Served.Store(0)
			op := remote.New(context.Background(), remote.Options{ChunkSize: 256 << 10, CacheChunks: 8, MinBackoff: 1,
				S3: stores(proxy.URL, srv.SecretKey)})
			im, err := reader.Open("s3://"+bucket+"/"+c.key, reader.Options{Remote: op})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			if got := guestSHA256(t, im); got != want {
				t.Fatal("remote read differs from the local one")
			}
			st := op.Stats()
			// Cut answers are retried from their start: count what the
			// successful answers brought against the bound.
			t.Logf("%s: files %d bytes, proxy served %d, fetched %d in %d requests (%d retried)", c.key, size, proxy.Served.Load(), st.Bytes, st.Requests, st.Retries)
			if st.Retries == 0 {
				t.Error("no answer was cut")
			}
			useful := st.Bytes
			if ratio := float64(useful) / float64(size); ratio > 1.3+float64(st.Retries)*float64(256<<10)/float64(size) {
				t.Errorf("fetched %.2fx the files", ratio)
			}
		})
	}
	proxy.Inject(0, nil)

	// Unreadable: the object changes mid-read, wrong credentials, no key.
	op := remote.New(context.Background(), remote.Options{MinBackoff: 1, S3: stores(srv.Endpoint, srv.SecretKey)})
	src, closer, err := op.OpenRemote("s3://" + bucket + "/vm/disk.qcow2")
	if err != nil {
		t.Fatal(err)
	}
	put(t, bucket, "vm/disk.qcow2", files["vm/disk-stream.vmdk"])
	_, err = src.R.ReadAt(make([]byte, 100), 2<<20)
	if !errors.Is(err, remote.ErrChanged) {
		t.Errorf("read of a replaced object: %v", err)
	}
	closer.Close()
	bad := remote.New(context.Background(), remote.Options{MinBackoff: 1, S3: stores(srv.Endpoint, "wrong")})
	_, _, err = bad.OpenRemote("s3://" + bucket + "/vm/disk.qcow2")
	var e *remote.Error
	if !errors.As(err, &e) || e.Status != 403 || e.Attempts != 1 || strings.Contains(err.Error(), "\n") {
		t.Errorf("wrong secret: %v", err)
	}
	_, _, err = op.OpenRemote("s3://" + bucket + "/vm/none.qcow2")
	if !errors.As(err, &e) || e.Status != 404 || !strings.Contains(err.Error(), "no such object") {
		t.Errorf("missing key: %v", err)
	}
	// A descriptor may not reach into another bucket.
	desc, _ := os.ReadFile(files["vm/disk.vmdk"])
	os.WriteFile(filepath.Join(dir, "x.vmdk"), bytes.Replace(desc, []byte(`"disk-flat.vmdk"`), []byte(`"s3://other/disk-flat.vmdk"`), 1), 0o644)
	put(t, bucket, "vm/x.vmdk", filepath.Join(dir, "x.vmdk"))
	if _, err := reader.Open("s3://"+bucket+"/vm/x.vmdk", reader.Options{Remote: op}); !errors.Is(err, image.ErrNotAllowed) {
		t.Errorf("extent in another bucket: %v", err)
	}
}
