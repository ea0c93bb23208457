// Package batchtest runs `convert batch` (the real binary) on manifests of
// many disks in every source format, to files and to a real S3 server
// (versitygw on 127.0.0.1): outputs equal the single runs', broken disks
// fail alone, a killed batch resumes, memory stays within the budget.
package batchtest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"vmimport/batch"
	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
)

var (
	srv *s3test.Server
	bin string
)

func TestMain(m *testing.M) { os.Exit(s3test.MainWithConvert(m, &srv, &bin)) }

const mib = int64(1) << 20

// randomDisk writes a sparse RAW disk of size bytes with random data in
// runs of n bytes every stride bytes, from off.
func randomDisk(t *testing.T, path string, size, off, n, stride int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	for o := off; o+n <= size; o += stride {
		rand.Read(buf)
		if _, err := f.WriteAt(buf, o); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// ova packs a streamOptimized VMDK of raw into an OVA with its OVF.
func ova(t *testing.T, dir, raw string) string {
	t.Helper()
	vmdk := testkit.Convert(t, raw, filepath.Join(dir, "ova-disk1.vmdk"), "vmdk", "-o", "subformat=streamOptimized")
	fi, _ := os.Stat(raw)
	ovf := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:id="file1" ovf:href="ova-disk1.vmdk"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="%d" ovf:capacityAllocationUnits="byte" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="vm"><Info>A VM</Info><Name>vm</Name></VirtualSystem>
</Envelope>
`, fi.Size())
	p := filepath.Join(dir, "vm.ova")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	add := func(name string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Format: tar.FormatUSTAR}); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	add("vm.ovf", []byte(ovf))
	b, err := os.ReadFile(vmdk)
	if err != nil {
		t.Fatal(err)
	}
	add("ova-disk1.vmdk", b)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// disks makes one small disk in every source format qemu-img writes, and
// an OVA; it returns them by name, and the SHA-256 of their guest bytes.
func disks(t *testing.T, dir string) (map[string]string, string) {
	t.Helper()
	testkit.Need(t, "qemu-img")
	raw := randomDisk(t, filepath.Join(dir, "base.raw"), 24*mib, 512<<10, 300<<10, 2*mib)
	want := testkit.RawSHA256(t, raw)
	conv := func(name, format string, opts ...string) string {
		return testkit.Convert(t, raw, filepath.Join(dir, name), format, opts...)
	}
	return map[string]string{
		"raw":         raw,
		"qcow2":       conv("d.qcow2", "qcow2"),
		"qcow2-zlib":  conv("z.qcow2", "qcow2", "-c"),
		"qcow2-zstd":  conv("zs.qcow2", "qcow2", "-c", "-o", "compression_type=zstd"),
		"vmdk-sparse": conv("s.vmdk", "vmdk"),
		"vmdk-stream": conv("so.vmdk", "vmdk", "-o", "subformat=streamOptimized"),
		"vmdk-flat":   conv("f.vmdk", "vmdk", "-o", "subformat=monolithicFlat"),
		"vhd-dynamic": conv("d.vhd", "vpc"),
		"vhd-fixed":   conv("f.vhd", "vpc", "-o", "subformat=fixed,force_size=on"),
		"vhdx":        conv("d.vhdx", "vhdx"),
		"vdi":         conv("d.vdi", "vdi"),
		"ova":         ova(t, dir, raw),
	}, want
}

// result is one run of the binary.
type result struct {
	code           int
	stdout, stderr string
	maxRSS         int64
}

type env struct {
	t      *testing.T
	bucket string
	home   string
	proxy  *s3test.Proxy
	bin    string // the binary it runs
}

func newEnv(t *testing.T) *env {
	s3test.Need(t, srv)
	e := &env{t: t, bucket: srv.Bucket(t), home: t.TempDir(), proxy: s3test.NewProxy(srv), bin: bin}
	t.Cleanup(e.proxy.Close)
	return e
}

func (e *env) command(args ...string) *exec.Cmd {
	// The test disks hold no operating system: no import check.
	args = append(args, "--endpoint", e.proxy.URL, "--progress", "never", "--check", "off")
	cmd := exec.Command(e.bin, args...)
	cmd.Env = srv.Env(e.home)
	return cmd
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	cmd := e.command(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if cmd.ProcessState == nil {
		e.t.Fatal(err)
	}
	r.code = cmd.ProcessState.ExitCode()
	r.maxRSS = testkit.MaxRSS(cmd.ProcessState)
	return r
}

// parse reads --json output (batch.ReadJSON), the disks by output.
func parse(t *testing.T, stdout string) (map[string]batch.Outcome, batch.Summary) {
	t.Helper()
	outs, sum, err := batch.ReadJSON(strings.NewReader(stdout))
	if err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	return batch.ByOutput(outs), sum
}

func writeManifest(t *testing.T, path string, lines []string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func jsonLine(kv ...any) string {
	var b strings.Builder
	b.WriteString("{")
	for i := 0; i < len(kv); i += 2 {
		if i > 0 {
			b.WriteString(", ")
		}
		k, _ := json.Marshal(kv[i])
		v, _ := json.Marshal(kv[i+1])
		fmt.Fprintf(&b, "%s: %s", k, v)
	}
	b.WriteString("}")
	return b.String()
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return hashReader(t, f)
}

func hashReader(t *testing.T, r io.Reader) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (e *env) objectSHA(key string) string {
	e.t.Helper()
	out, err := srv.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key)})
	if err != nil {
		e.t.Fatalf("object %s: %v", key, err)
	}
	defer out.Body.Close()
	return hashReader(e.t, out.Body)
}

// TestBatchEveryFormat: twelve disks in every source format, half to files
// and half to the bucket, RAW and QCOW2, three at a time: every output has
// the bytes of the single run, and a rerun skips them all.
func TestBatchEveryFormat(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	srcs, base := disks(t, dir)
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	var lines []string
	type expect struct{ name, format, dest string }
	var exp []expect
	i := 0
	for name, src := range srcs {
		format := []string{"raw", "qcow2"}[i%2]
		dest := filepath.Join(out, name+"."+format)
		if i%4 >= 2 {
			dest = "s3://" + e.bucket + "/" + name + "." + format
		}
		if strings.HasPrefix(dest, "s3://") && format == "qcow2" {
			// Byte for byte as the single run to a file: no --compress
			// auto, whose choices follow the link.
			lines = append(lines, jsonLine("source", src, "output", dest, "output-format", format, "compress", "never"))
		} else {
			lines = append(lines, jsonLine("source", src, "output", dest, "output-format", format))
		}
		exp = append(exp, expect{name, format, dest})
		i++
	}
	manifest := writeManifest(t, filepath.Join(dir, "disks.jsonl"), lines)
	state := filepath.Join(dir, "state")
	r := e.run("batch", manifest, "--jobs", "3", "--json", "--state-dir", state)
	if r.code != 0 {
		t.Fatalf("batch: exit %d\n%s", r.code, r.stderr)
	}
	got, sum := parse(t, r.stdout)
	if sum.Disks != len(srcs) || sum.Done != len(srcs) {
		t.Fatalf("summary %+v\n%s", sum, r.stdout)
	}
	for _, x := range exp {
		single := filepath.Join(dir, "single-"+x.name+"."+x.format)
		if s := e.run(srcs[x.name], "-O", x.format, "-o", single); s.code != 0 {
			t.Fatalf("single run of %s: exit %d\n%s", x.name, s.code, s.stderr)
		}
		// qemu-img reads each source as we do, but a fixed VHD (read as
		// RAW, footer included, unless told -f vpc) and an OVA (a tar):
		// their guest bytes are the base disk's.
		want := base
		if x.name != "vhd-fixed" && x.name != "ova" {
			want = testkit.RawSHA256(t, srcs[x.name])
		}
		if x.format == "raw" && testkit.RawSHA256(t, single) != want {
			t.Errorf("%s: the single run differs from qemu-img", x.name)
		}
		var sha string
		if strings.HasPrefix(x.dest, "s3://") {
			sha = e.objectSHA(strings.TrimPrefix(x.dest, "s3://"+e.bucket+"/"))
		} else {
			sha = fileSHA(t, x.dest)
		}
		if sha != fileSHA(t, single) {
			t.Errorf("%s -> %s: differs from the single run", x.name, x.dest)
		}
		if o := got[x.dest]; o.Status != "done" || o.Bytes == 0 || o.Image == nil {
			t.Errorf("%s: outcome %+v", x.name, o)
		}
	}
	if p := srv.Pending(t, e.bucket); len(p) != 0 {
		t.Errorf("incomplete uploads left: %v", p)
	}

	// The rerun finds everything done.
	start := time.Now()
	r = e.run("batch", manifest, "--jobs", "3", "--json", "--state-dir", state)
	got, sum = parse(t, r.stdout)
	if r.code != 0 || sum.Skipped != len(srcs) {
		t.Fatalf("rerun: exit %d, %+v\n%s", r.code, sum, r.stderr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a rerun with nothing to do took %s", d)
	}
	for _, o := range got {
		if !strings.Contains(o.SkippedBecause, "same source") {
			t.Errorf("skipped because %q", o.SkippedBecause)
		}
	}
	// A changed source is redone, and only it.
	os.Chtimes(srcs["vdi"], time.Now(), time.Now())
	r = e.run("batch", manifest, "--json", "--state-dir", state)
	_, sum = parse(t, r.stdout)
	if r.code != 0 || sum.Done != 1 || sum.Skipped != len(srcs)-1 {
		t.Errorf("after touching one source: %+v\n%s", sum, r.stderr)
	}
}

// TestBatchBrokenDisks: a corrupt image and a missing file in the middle
// fail alone; a malformed manifest is refused before anything starts.
func TestBatchBrokenDisks(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	raw := randomDisk(t, filepath.Join(dir, "a.raw"), 8*mib, 0, 256<<10, mib)
	q := testkit.Convert(t, raw, filepath.Join(dir, "a.qcow2"), "qcow2")
	b, _ := os.ReadFile(q)
	bad := filepath.Join(dir, "bad.qcow2")
	os.WriteFile(bad, b[:len(b)/2], 0o644)
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	csv := "source,output,output-format\n" +
		raw + "," + filepath.Join(out, "1.raw") + ",\n" +
		bad + "," + filepath.Join(out, "bad.raw") + ",\n" +
		filepath.Join(dir, "missing.vmdk") + "," + filepath.Join(out, "missing.raw") + ",\n" +
		q + ",s3://" + e.bucket + "/q.qcow2,qcow2\n"
	manifest := filepath.Join(dir, "disks.csv")
	os.WriteFile(manifest, []byte(csv), 0o644)
	r := e.run("batch", manifest, "--json", "--no-state")
	got, sum := parse(t, r.stdout)
	if r.code != 1 || sum.Done != 2 || sum.Failed != 2 {
		t.Fatalf("exit %d, %+v\n%s\n%s", r.code, sum, r.stdout, r.stderr)
	}
	if o := got[filepath.Join(out, "bad.raw")]; o.Status != "failed" || !strings.Contains(o.Error, "bad.qcow2") || o.Line != 3 {
		t.Errorf("corrupt disk: %+v", o)
	}
	if o := got[filepath.Join(out, "missing.raw")]; o.Status != "failed" || !strings.Contains(o.Error, "missing.vmdk") {
		t.Errorf("missing disk: %+v", o)
	}
	for _, p := range []string{"bad.raw", "missing.raw"} {
		if _, err := os.Stat(filepath.Join(out, p)); !os.IsNotExist(err) {
			t.Errorf("%s exists after its disk failed", p)
		}
	}
	if !strings.Contains(r.stderr, "2 of 4 disks failed") {
		t.Errorf("stderr: %s", r.stderr)
	}

	// Malformed manifests: refused with the line, nothing done.
	for _, c := range []struct{ name, text, want string }{
		{"bad JSON", jsonLine("source", raw, "output", filepath.Join(out, "x.raw")) + "\n{\"source\": \n", "m.jsonl:2:"},
		{"unknown key", jsonLine("source", raw, "output", filepath.Join(out, "x.raw")) + "\n" + jsonLine("source", raw, "ouput", "y.raw") + "\n", `m.jsonl:2: unknown key "ouput"`},
		{"bad value", "\n\n" + jsonLine("source", raw, "output", filepath.Join(out, "x.raw"), "workers", "many") + "\n", "m.jsonl:3: key \"workers\""},
		{"same output twice", jsonLine("source", raw, "output", filepath.Join(out, "x.raw")) + "\n" + jsonLine("source", q, "output", filepath.Join(out, "x.raw")) + "\n", "also the output of the disk on line 1"},
		{"qcow2 to stdout", jsonLine("source", raw, "output", "-") + "\n", "m.jsonl:1:"},
	} {
		m := filepath.Join(dir, "m.jsonl")
		os.WriteFile(m, []byte(c.text), 0o644)
		r := e.run("batch", m, "--no-state")
		if r.code != 2 || !strings.Contains(r.stderr, c.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("%s: exit %d, want 2 and one line with %q:\n%s", c.name, r.code, c.want, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(out, "x.raw")); !os.IsNotExist(err) {
			t.Errorf("%s: a disk was converted", c.name)
		}
	}
}

// TestBatchKillThenRerun: kill -9 while a disk uploads; the rerun skips the
// finished disk, resumes the upload (fewer parts sent) and does the rest;
// the object is the one an uninterrupted run makes.
func TestBatchKillThenRerun(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	small := randomDisk(t, filepath.Join(dir, "small.raw"), 8*mib, 0, 256<<10, mib)
	big := randomDisk(t, filepath.Join(dir, "big.raw"), 96*mib, 0, 7*mib, 8*mib)
	other := testkit.Convert(t, small, filepath.Join(dir, "other.vhdx"), "vhdx")
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	manifest := writeManifest(t, filepath.Join(dir, "disks.jsonl"), []string{
		jsonLine("source", small, "output", filepath.Join(out, "small.raw")),
		jsonLine("source", big, "output", "s3://"+e.bucket+"/big.qcow2"),
		jsonLine("source", other, "output", filepath.Join(out, "other.qcow2"), "output-format", "qcow2"),
	})
	state := filepath.Join(dir, "state")
	e.proxy.Inject(400*time.Millisecond, func(op string, n int) s3test.Fault {
		if op == "UploadPart" {
			return s3test.SlowOnReply
		}
		return s3test.Pass
	})
	cmd := e.command("batch", manifest, "--jobs", "1", "--state-dir", state, "--upload-concurrency", "2")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for e.proxy.Done("UploadPart") < 4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if n := e.proxy.Done("UploadPart"); n < 4 {
		t.Fatalf("the upload did not get going: %d parts", n)
	}
	if p := srv.Pending(t, e.bucket); len(p) != 1 {
		t.Fatalf("after kill -9: incomplete uploads %v, want 1", p)
	}
	e.proxy.Inject(0, nil)

	r := e.run("batch", manifest, "--jobs", "1", "--json", "--state-dir", state)
	got, sum := parse(t, r.stdout)
	if r.code != 0 || sum.Skipped != 1 || sum.Done != 2 {
		t.Fatalf("rerun: exit %d, %+v\n%s", r.code, sum, r.stderr)
	}
	if o := got[filepath.Join(out, "small.raw")]; o.Status != "skipped" {
		t.Errorf("finished disk: %+v", o)
	}
	o := got["s3://"+e.bucket+"/big.qcow2"]
	if o.Status != "done" || o.Target == nil || o.Target.PartsReused < 4 {
		t.Errorf("interrupted upload not resumed: %+v\n%s", o, r.stderr)
	}
	if p := srv.Pending(t, e.bucket); len(p) != 0 {
		t.Errorf("incomplete uploads left: %v", p)
	}
	// The object holds the disk an uninterrupted single run uploads (a
	// QCOW2 object, compressed where the link was the bottleneck: the
	// bytes may differ, the disk may not).
	single := e.run(big, "-o", "s3://"+e.bucket+"/single.qcow2")
	want := testkit.RawSHA256(t, big)
	if single.code != 0 || srv.GuestSHA256(t, e.bucket, "big.qcow2", "qcow2") != want || srv.GuestSHA256(t, e.bucket, "single.qcow2", "qcow2") != want {
		t.Errorf("the resumed object differs from an uninterrupted run's (exit %d)", single.code)
	}
}
