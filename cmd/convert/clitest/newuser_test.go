package clitest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
)

// qcow2Magic starts every QCOW2 image.
var qcow2Magic = []byte("QFI\xfb")

// TestFormatFromExtension: without -O the output's extension tells the
// format (.qcow2 QCOW2, .raw and .img RAW, for files and for uploads);
// -O qcow2 with .img is no conflict.
func TestFormatFromExtension(t *testing.T) {
	dir := t.TempDir()
	sampleDisk(t, dir)
	for _, c := range []struct {
		args  []string
		out   string
		qcow2 bool
	}{
		{[]string{"disk.qcow2", "web01.qcow2"}, "web01.qcow2", true},
		{[]string{"disk.qcow2", "-o", "web01.IMG"}, "web01.IMG", false},
		{[]string{"disk.qcow2", "web02.img", "-O", "qcow2"}, "web02.img", true},
		{[]string{"disk.qcow2", "web01.raw"}, "web01.raw", false},
	} {
		if r := convert(t, dir, append(c.args, "-q")...); r.code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, r.code, r.stderr)
		}
		b, err := os.ReadFile(filepath.Join(dir, c.out))
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.HasPrefix(b, qcow2Magic); got != c.qcow2 || !got && len(b) != 64<<20 {
			t.Errorf("%v: QCOW2 %v (%d bytes), want QCOW2 %v", c.args, got, len(b), c.qcow2)
		}
	}
	s3test.Need(t, srv)
	bucket := srv.Bucket(t)
	// The README's own example: a .raw key gets RAW, not QCOW2.
	if r := convert(t, dir, "disk.qcow2", "-o", "s3://"+bucket+"/web01.raw", "--endpoint", srv.Endpoint, "-q", "--check", "off"); r.code != 0 {
		t.Fatalf("upload: exit %d: %s", r.code, r.stderr)
	}
	h, err := srv.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("web01.raw")})
	if err != nil || aws.ToInt64(h.ContentLength) != 64<<20 {
		t.Errorf("s3://%s/web01.raw: %v bytes (%v), want the RAW disk's 64 MiB", bucket, aws.ToInt64(h.ContentLength), err)
	}
}

// TestInfoCheckS3Endpoint: info and check of an s3:// source take
// --endpoint, as the conversion does.
func TestInfoCheckS3Endpoint(t *testing.T) {
	s3test.Need(t, srv)
	dir := t.TempDir()
	b, err := os.ReadFile(sampleDisk(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	bucket := srv.Bucket(t)
	if _, err := srv.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("exports/web01.qcow2"), Body: bytes.NewReader(b)}); err != nil {
		t.Fatal(err)
	}
	src := "s3://" + bucket + "/exports/web01.qcow2"
	if r := convert(t, dir, "info", src, "--endpoint", srv.Endpoint); r.code != 0 || !strings.Contains(r.stdout, "virtual size:      64.0 MiB") {
		t.Errorf("info %s --endpoint: exit %d\n%s%s", src, r.code, r.stdout, r.stderr)
	}
	if r := convert(t, dir, "check", src, "--endpoint", srv.Endpoint, "--json"); (r.code != 0 && r.code != 4) || !strings.Contains(r.stdout, `"partition_table": "mbr"`) {
		t.Errorf("check %s --endpoint: exit %d\n%s%s", src, r.code, r.stdout, r.stderr)
	}
}

// TestInfoJSONTyped: info --json gives the format's facts typed: numbers
// as numbers, flags as booleans, a geometry as an object.
func TestInfoJSONTyped(t *testing.T) {
	dir := t.TempDir()
	sampleDisk(t, dir)
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "vdi", filepath.Join(dir, "d.vdi"), "8M")
	facts := func(name string) map[string]any {
		r := convert(t, dir, "info", "--json", name)
		var v struct {
			Fields []struct {
				Name  string `json:"name"`
				Value any    `json:"value"`
			} `json:"fields"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &v); r.code != 0 || err != nil {
			t.Fatalf("info --json %s: exit %d, %v\n%s%s", name, r.code, err, r.stdout, r.stderr)
		}
		m := map[string]any{}
		for _, f := range v.Fields {
			m[f.Name] = f.Value
		}
		return m
	}
	q := facts("disk.qcow2")
	if q["refcount bits"] != 16.0 || q["lazy refcounts"] != false || q["extended l2"] != false {
		t.Errorf("qcow2 facts: %#v", q)
	}
	v := facts("d.vdi")
	if v["block size"] != float64(1<<20) || v["blocks allocated"] == nil {
		t.Errorf("vdi facts: %#v", v)
	}
	if b, ok := v["blocks allocated"].(map[string]any); !ok || b["total"] != 8.0 || b["allocated"] != 0.0 {
		t.Errorf("vdi blocks allocated: %#v", v["blocks allocated"])
	}
}

// TestRootReason: a disk whose only file system is no system's root is
// told why it was not taken, not only that no root was found.
func TestRootReason(t *testing.T) {
	testkit.Need(t, "mkfs.ext4")
	dir := t.TempDir()
	testkit.MakeRootDisk(t, dir, testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
		{SizeMiB: 8, FS: "ext4", Bootable: true, Files: map[string]string{"data/readme.txt": "not a system"}},
	}})
	r := convert(t, dir, "check", "disk.raw")
	want := "fs.root: no root file system was found (partition 1 (ext4) holds none of /etc/fstab, /etc/os-release, /bin/sh and /usr/bin (a data or /boot file system?))"
	if r.code != 3 || !strings.Contains(r.stdout, want) {
		t.Errorf("check: exit %d, want 3 and %q:\n%s%s", r.code, want, r.stdout, r.stderr)
	}
}

// makeOVA packs the sample disk, as a streamOptimized VMDK, into an OVA
// whose manifest gives the disk the SHA-256 digest sum (the right one when
// sum is "").
func makeOVA(t *testing.T, dir, name, sum string) string {
	t.Helper()
	vmdk := filepath.Join(dir, name+".vmdk")
	testkit.Run(t, "qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", sampleDisk(t, dir), vmdk)
	b, err := os.ReadFile(vmdk)
	if err != nil {
		t.Fatal(err)
	}
	if sum == "" {
		h := sha256.Sum256(b)
		sum = hex.EncodeToString(h[:])
	}
	ovf := `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:id="file1" ovf:href="disk1.vmdk"/></References>
  <DiskSection><Info>disks</Info><Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20"/></DiskSection>
  <VirtualSystem ovf:id="vm"><Info>A VM</Info><Name>vm</Name></VirtualSystem>
</Envelope>
`
	p := filepath.Join(dir, name+".ova")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, m := range []struct {
		name string
		b    []byte
	}{{"vm.ovf", []byte(ovf)}, {"vm.mf", []byte("SHA256(disk1.vmdk)= " + sum + "\n")}, {"disk1.vmdk", b}} {
		if err := tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.b)), Format: tar.FormatUSTAR}); err != nil {
			t.Fatal(err)
		}
		tw.Write(m.b)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCheckOVADigest: convert check of an OVA checks the disk's digest
// against the manifest, as the conversion does at its end: a wrong one is
// an error (exit 3), a right one is said to match.
func TestCheckOVADigest(t *testing.T) {
	dir := t.TempDir()
	makeOVA(t, dir, "bad", strings.Repeat("ab", 32))
	makeOVA(t, dir, "good", "")
	r := convert(t, dir, "check", "bad.ova")
	if r.code != 3 || !strings.Contains(r.stdout, "error   image.digest: ") || !strings.Contains(r.stdout, "but the manifest says abab") {
		t.Errorf("check bad.ova: exit %d, want 3 and an image.digest error\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = convert(t, dir, "check", "good.ova")
	if r.code == 3 || !strings.Contains(r.stdout, "image.digest: the disk's bytes match the SHA256 digest of the OVA's manifest") {
		t.Errorf("check good.ova: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestDryRun: --dry-run checks the store (credentials, bucket, a test
// upload aborted), the rules and the output's folder, prints the plan and
// writes nothing.
func TestDryRun(t *testing.T) {
	s3test.Need(t, srv)
	dir := t.TempDir()
	sampleDisk(t, dir)
	bucket := srv.Bucket(t)
	r := convert(t, dir, "disk.qcow2", "-o", "s3://"+bucket+"/web01.qcow2", "--endpoint", srv.Endpoint, "--dry-run")
	for _, want := range []string{"dry run: disk.qcow2 -> s3://" + bucket + "/web01.qcow2: nothing was written", "  upload:       parts of 8.0 MiB, at most ", "  import check: pass", "  checked:      the store at " + srv.Endpoint + " took the credentials, and bucket"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("dry run of an upload: exit %d, no %q:\n%s%s", r.code, want, r.stdout, r.stderr)
		}
	}
	if keys, pending := srv.Keys(t, bucket), srv.Pending(t, bucket); len(keys)+len(pending) != 0 {
		t.Errorf("a dry run left objects %v and uploads %v", keys, pending)
	}
	r = convert(t, dir, "disk.qcow2", "out.raw", "--dry-run", "--json")
	var v struct {
		DryRun bool `json:"dry_run"`
		Plan   struct {
			Format string `json:"output_format"`
			Memory int64  `json:"memory"`
		} `json:"plan"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); r.code != 0 || err != nil || !v.DryRun || v.Plan.Format != "raw" || v.Plan.Memory == 0 {
		t.Errorf("--dry-run --json: exit %d, %v: %+v\n%s", r.code, err, v, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out.raw")); !os.IsNotExist(err) {
		t.Errorf("a dry run wrote out.raw: %v", err)
	}
	if r := convert(t, dir, "disk.qcow2", "no/such/x.raw", "--dry-run"); r.code != 1 || !strings.Contains(r.stderr, "convert: -o no/such/x.raw: there is no folder no/such") {
		t.Errorf("dry run into a missing folder: exit %d\n%s", r.code, r.stderr)
	}
}

// TestProgressLines: with stderr no terminal (a log), progress comes as
// plain lines with the time, never cursor escapes: every
// --progress-interval the phase, bytes, rate; with -p a line at each phase
// too.
func TestProgressLines(t *testing.T) {
	s3test.Need(t, srv)
	dir := t.TempDir()
	sampleDisk(t, dir)
	bucket := srv.Bucket(t)
	proxy := s3test.NewProxy(srv)
	defer proxy.Close()
	// A slow store: the upload's last steps take a few intervals.
	proxy.Inject(300*time.Millisecond, func(op string, _ int) s3test.Fault {
		switch op {
		case "UploadPart", "UploadPartCopy", "CompleteMultipartUpload":
			return s3test.Slow
		}
		return s3test.Pass
	})
	line := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} convert: disk\.qcow2: (.+)$`)
	for _, c := range []struct {
		flag   string
		phases bool
	}{{"--progress=auto", false}, {"-p", true}} {
		r := convert(t, dir, "disk.qcow2", "s3://"+bucket+"/disk.raw", "--endpoint", proxy.URL, "--upload-concurrency", "1", "--progress-interval", "100ms", c.flag)
		if r.code != 0 || strings.Contains(r.stderr, "\x1b[") {
			t.Fatalf("%s: exit %d, or escapes on stderr:\n%q", c.flag, r.code, r.stderr)
		}
		var ticks, phases []string
		for _, l := range strings.Split(r.stderr, "\n") {
			m := line.FindStringSubmatch(l)
			switch {
			case m == nil:
			case strings.Contains(m[1], " (for ") || strings.Contains(m[1], "%)"):
				ticks = append(ticks, m[1])
			default:
				phases = append(phases, m[1])
			}
		}
		if len(ticks) == 0 {
			t.Errorf("%s: no progress line every 100ms:\n%s", c.flag, r.stderr)
		}
		want := []string{"opening", "checking the bucket", "checking import rules", "converting", "verifying digests", "finishing"}
		if c.phases && (len(phases) < len(want) || !slices.Equal(phases[:len(want)], want)) {
			t.Errorf("%s: the phases told %q, want %q first", c.flag, phases, want)
		}
		if !c.phases && len(phases) > 0 {
			t.Errorf("%s: phase lines without -p: %q", c.flag, phases)
		}
	}
}
