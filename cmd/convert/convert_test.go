package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vmimport/internal/testkit"
	"vmimport/job"
)

// convertCLI runs the command in-process and returns its exit code and
// stderr.
func convertCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, &stdout, &stderr)
	code := exitCode(context.Background(), err)
	if err != nil {
		stderr.WriteString("convert: " + err.Error() + "\n")
	}
	return code, stdout.String(), stderr.String()
}

func mustConvert(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := convertCLI(t, args...)
	if code != 0 {
		t.Fatalf("convert %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// noLeftovers fails if dir holds the output or a temporary file.
func noLeftovers(t *testing.T, dir, out string) {
	t.Helper()
	if _, err := os.Stat(out); err == nil {
		t.Errorf("output %s exists after a failed run", out)
	}
	m, _ := filepath.Glob(filepath.Join(dir, ".*.partial"))
	if len(m) > 0 {
		t.Errorf("temporary files left: %v", m)
	}
}

var sharedDisk string

func disk(t *testing.T) string {
	t.Helper()
	if sharedDisk == "" {
		dir, err := os.MkdirTemp("", "convert-test-")
		if err != nil {
			t.Fatal(err)
		}
		sharedDisk = testkit.MakeDisk(t, dir, testkit.DiskOptions{SizeMiB: 48, Tail: true})
	}
	return sharedDisk
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedDisk != "" {
		os.RemoveAll(filepath.Dir(sharedDisk))
	}
	os.Exit(code)
}

// TestQCOW2ToRaw is the oracle test of the first slice: every QCOW2 variant
// qemu-img writes converts to the same RAW bytes as qemu-img's, sparse.
func TestQCOW2ToRaw(t *testing.T) {
	src := disk(t)
	want := testkit.FileSHA256(t, src)
	cases := []struct {
		name string
		opts []string
	}{
		{"compat-0.10", []string{"-o", "compat=0.10"}},
		{"compat-1.1", []string{"-o", "compat=1.1"}},
		{"cluster-512", []string{"-o", "cluster_size=512"}},
		{"cluster-64k", []string{"-o", "cluster_size=64k"}},
		{"cluster-2M", []string{"-o", "cluster_size=2M"}},
		{"zlib", []string{"-c", "-o", "compression_type=zlib"}},
		{"zstd", []string{"-c", "-o", "compression_type=zstd"}},
		{"extended-l2", []string{"-o", "extended_l2=on"}},
		{"lazy-refcounts", []string{"-o", "lazy_refcounts=on"}},
		{"prealloc-metadata", []string{"-o", "preallocation=metadata"}},
		{"refcount-1", []string{"-o", "refcount_bits=1"}},
		{"refcount-64", []string{"-o", "refcount_bits=64"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			q := testkit.Convert(t, src, filepath.Join(dir, "in.qcow2"), "qcow2", c.opts...)
			if got := testkit.RawSHA256(t, q); got != want {
				t.Fatalf("qemu-img itself reads %s differently", c.name)
			}
			out := filepath.Join(dir, "out.raw")
			mustConvert(t, q, "-O", "raw", "-o", out, "--progress", "never")
			if got := testkit.FileSHA256(t, out); got != want {
				t.Fatalf("our RAW differs from qemu-img's")
			}
			fi, _ := os.Stat(out)
			if alloc := testkit.AllocatedBytes(t, out); alloc > fi.Size()*3/4 {
				t.Errorf("output is not sparse: %d of %d bytes allocated", alloc, fi.Size())
			}
		})
	}
}

// TestBackingChain reads a two-deep chain base <- mid <- top, with writes at
// each level, only when --allow-backing is given.
func TestBackingChain(t *testing.T) {
	testkit.Need(t, "qemu-io")
	dir := t.TempDir()
	base := testkit.Convert(t, disk(t), filepath.Join(dir, "base.qcow2"), "qcow2")
	testkit.QemuImg(t, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", filepath.Join(dir, "mid.qcow2"))
	testkit.Run(t, "qemu-io", "-c", "write -P 0xab 1M 192k", "-c", "write -z 2M 64k", filepath.Join(dir, "mid.qcow2"))
	testkit.QemuImg(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=16k", "-b", "mid.qcow2", "-F", "qcow2", filepath.Join(dir, "top.qcow2"))
	testkit.Run(t, "qemu-io", "-c", "write -P 0xcd 1100k 8k", "-c", "write -P 0xef 40M 1M", filepath.Join(dir, "top.qcow2"))
	_ = base
	top := filepath.Join(dir, "top.qcow2")
	out := filepath.Join(dir, "out.raw")

	code, _, errOut := convertCLI(t, top, "-o", out)
	if code != exitBadInput || !strings.Contains(errOut, "--allow-backing") {
		t.Fatalf("without --allow-backing: exit %d, %q; want exit 3 naming --allow-backing", code, errOut)
	}
	noLeftovers(t, dir, out)

	mustConvert(t, top, "-o", out, "--allow-backing")
	if got, want := testkit.FileSHA256(t, out), testkit.RawSHA256(t, top); got != want {
		t.Fatal("backing chain read differs from qemu-img's")
	}
	info := mustConvertInfo(t, top, "--allow-backing")
	if info.Backing == nil || info.Backing.Backing == nil || info.Backing.Backing.Format != "qcow2" {
		t.Fatalf("info does not show the two-deep chain: %+v", info)
	}
}

func mustConvertInfo(t *testing.T, args ...string) job.Inspection {
	t.Helper()
	out := mustConvert(t, append([]string{"info", "--json"}, args...)...)
	var r job.Inspection
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("info --json: %v\n%s", err, out)
	}
	return r
}

// TestBadInput: each bad image gives one line naming the file, the offset
// and the rule, exit code 3, and no output.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	good := testkit.Convert(t, disk(t), filepath.Join(dir, "good.qcow2"), "qcow2")
	goodBytes, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	patch := func(name string, f func(b []byte) []byte) string {
		b := f(append([]byte(nil), goodBytes...))
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	iso := make([]byte, 64<<10)
	copy(iso[0x8001:], "CD001")
	if err := os.WriteFile(filepath.Join(dir, "cd.iso"), iso, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty.img"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	testkit.QemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-b", "../../etc/passwd", "-F", "raw", filepath.Join(dir, "escape.qcow2"), "64M")
	cases := []struct {
		name  string
		path  string
		extra []string
		want  []string // substrings of the error
	}{
		{"empty", filepath.Join(dir, "empty.img"), nil, []string{"empty.img", "empty file"}},
		{"truncated header", patch("trunc.qcow2", func(b []byte) []byte { return b[:50] }), nil, []string{"trunc.qcow2", "offset 0", "72-byte"}},
		{"L1 past the end", patch("l1.qcow2", func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[40:], 1<<40)
			return b
		}), nil, []string{"l1.qcow2", "offset 40", "L1 table", "past the end"}},
		{"virtual size 2^63", patch("huge.qcow2", func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[24:], 1<<63)
			return b
		}), nil, []string{"huge.qcow2", "offset 24", "virtual size"}},
		{"backing escapes, not allowed", filepath.Join(dir, "escape.qcow2"), nil, []string{"escape.qcow2", "../../etc/passwd", "--allow-backing"}},
		{"backing escapes, allowed", filepath.Join(dir, "escape.qcow2"), []string{"--allow-backing"}, []string{"escape.qcow2", "outside the image's folder"}},
		{"directory", dir, nil, []string{dir, "directory"}},
		{"ISO 9660", filepath.Join(dir, "cd.iso"), nil, []string{"cd.iso", "ISO 9660", "not supported"}},
		{"disk size not a multiple of 10", good, []string{"--system-disk-size-gb", "45"}, []string{"multiple of 10", "use 50"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, "out.raw")
			code, _, errOut := convertCLI(t, append([]string{c.path, "-o", out}, c.extra...)...)
			if code != exitBadInput {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, exitBadInput, errOut)
			}
			if n := strings.Count(strings.TrimSpace(errOut), "\n"); n != 0 {
				t.Errorf("error is %d lines, want one:\n%s", n+1, errOut)
			}
			for _, w := range c.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("error %q does not mention %q", errOut, w)
				}
			}
			noLeftovers(t, dir, out)
		})
	}
}

// TestTooLarge: a 600 GiB virtual disk is refused unless --force.
func TestTooLarge(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.qcow2")
	testkit.QemuImg(t, "create", "-q", "-f", "qcow2", big, "600G")
	out := filepath.Join(dir, "big.raw")
	code, _, errOut := convertCLI(t, big, "-o", out)
	if code != exitBadInput || !strings.Contains(errOut, "500 GiB") {
		t.Fatalf("exit %d, %q; want exit 3 naming the 500 GiB limit", code, errOut)
	}
	noLeftovers(t, dir, out)
	if testing.Short() {
		return
	}
	mustConvert(t, big, "-o", out, "--force")
	fi, err := os.Stat(out)
	if err != nil || fi.Size() != 600<<30 || testkit.AllocatedBytes(t, out) > 1<<20 {
		t.Fatalf("forced 600 GiB sparse output: %v, %v", fi, err)
	}
}

func TestWorkersAndStdoutGiveTheSameBytes(t *testing.T) {
	dir := t.TempDir()
	src := testkit.Convert(t, disk(t), filepath.Join(dir, "z.qcow2"), "qcow2", "-c", "-o", "compression_type=zstd")
	want := testkit.FileSHA256(t, disk(t))
	for _, w := range []string{"1", "8"} {
		out := filepath.Join(dir, "w"+w+".raw")
		mustConvert(t, src, "-o", out, "--workers", w, "--block-size", "64k")
		if got := testkit.FileSHA256(t, out); got != want {
			t.Fatalf("--workers %s gives different bytes", w)
		}
	}
	code, stdout, errOut := convertCLI(t, src, "-o", "-", "--json")
	if code != 0 {
		t.Fatalf("stdout: exit %d: %s", code, errOut)
	}
	p := filepath.Join(dir, "stdout.raw")
	os.WriteFile(p, []byte(stdout), 0o644)
	if got := testkit.FileSHA256(t, p); got != want {
		t.Fatal("-o - gives different bytes")
	}
	var sum job.Result
	if err := json.Unmarshal([]byte(errOut[:strings.LastIndex(errOut, "}")+1]), &sum); err != nil || sum.Stats.Size != 48<<20 {
		t.Fatalf("--json with -o - goes to stderr: %v %q", err, errOut)
	}
}

func TestJSONSummary(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "o.raw")
	stdout := mustConvert(t, disk(t), "-o", out, "--json", "--system-disk-size-gb", "60")
	var sum job.Result
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Source.Format != "raw" || sum.SystemDiskSizeGB != 60 || sum.OutputBytes != 48<<20 ||
		sum.Stats.Data+sum.Stats.Skipped+sum.Stats.Detected != 48<<20 {
		t.Fatalf("summary %+v", sum)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"a.img"},
		{"a.img", "b.img", "-o", "x"},
		{"a.img", "-o", "x", "-O", "vmdk"},
		{"a.img", "-o", "x", "--progress", "sometimes"},
		{"a.img", "-o", "x", "--block-size", "lots"},
		{"--no-such-flag"},
	} {
		if code, _, _ := convertCLI(t, args...); code != exitUsage {
			t.Errorf("convert %v: exit %d, want %d", args, code, exitUsage)
		}
	}
	if code, out, _ := convertCLI(t, "--help"); code != 0 || !strings.Contains(out, "Exit codes") {
		t.Errorf("--help: exit %d, %q", code, out)
	}
	// Every subcommand's flag set builds (pflag panics on a flag defined
	// twice) and its --help succeeds.
	for _, sub := range []string{"info", "check", "bench", "uploads"} {
		code, _, errOut := convertCLI(t, sub, "--help")
		if code != 0 {
			t.Errorf("%s --help: exit %d: %s", sub, code, errOut)
		}
	}
}

// TestInterrupt sends SIGINT to a running conversion: exit 130, and neither
// the output nor a temporary file remains.
func TestInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "convert")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// 768 MiB of non-zero data: long enough to be caught mid-run.
	src := filepath.Join(dir, "big.raw")
	f, _ := os.Create(src)
	block := bytes.Repeat([]byte("interrupt me "), 1<<20/13+1)[:1<<20]
	for range 768 {
		f.Write(block)
	}
	f.Close()
	out := filepath.Join(dir, "out.raw")
	cmd := exec.Command(bin, src, "-o", out, "--workers", "1", "--progress", "never")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !testkit.Writing(cmd.Process.Pid, dir, "big.raw") {
		if time.Now().After(deadline) {
			t.Fatal("the conversion never started writing")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitCancelled {
		t.Fatalf("exit: %v (stderr %q); want %d", err, stderr.String(), exitCancelled)
	}
	noLeftovers(t, dir, out)

	// The real binary's exit codes for the other outcomes.
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{src, "-o", out, "-O", "nonsense"}, exitUsage},
		{[]string{filepath.Join(dir, "missing.img"), "-o", out}, exitBadInput},
		{[]string{src, "-o", filepath.Join(dir, "no", "such", "dir", "x.raw")}, exitFailure},
		{[]string{"info", src}, exitOK},
	} {
		err := exec.Command(bin, c.args...).Run()
		got := 0
		if errors.As(err, &ee) {
			got = ee.ExitCode()
		}
		if got != c.code {
			t.Errorf("convert %v: exit %d, want %d", c.args, got, c.code)
		}
	}
}

// TestBlockDevice reads a loop device as a RAW source. It needs root and
// loop devices, and skips where the machine has neither.
func TestBlockDevice(t *testing.T) {
	dir := t.TempDir()
	backing := filepath.Join(dir, "dev.img")
	testkit.Run(t, "cp", "--sparse=always", disk(t), backing)
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", backing).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device here: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	info := mustConvertInfo(t, dev)
	if info.Format != "raw" || info.Subformat != "block device" || info.VirtualSize != 48<<20 || info.FileSize != 48<<20 {
		t.Fatalf("info of %s: %+v", dev, info)
	}
	raw := filepath.Join(dir, "out.raw")
	mustConvert(t, dev, "-o", raw)
	if testkit.FileSHA256(t, raw) != testkit.FileSHA256(t, backing) {
		t.Fatal("block device read differs from its backing file")
	}
}

// TestOVADigest: an OVA whose manifest matches converts like qemu-img reads
// its disk; one whose disk digest does not match fails with exit 3 after the
// pass, and nothing is committed.
func TestOVADigest(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile("../../reader/ova/testdata/small.ova")
	if err != nil {
		t.Fatal(err)
	}
	goodPath := filepath.Join(dir, "good.ova")
	os.WriteFile(goodPath, good, 0o644)
	out := filepath.Join(dir, "out.raw")
	mustConvert(t, goodPath, "-o", out)
	disk := filepath.Join(dir, "disk.vmdk")
	testkit.Run(t, "tar", "-xf", goodPath, "-C", dir, "small-disk1.vmdk")
	os.Rename(filepath.Join(dir, "small-disk1.vmdk"), disk)
	if testkit.FileSHA256(t, out) != testkit.RawSHA256(t, disk) {
		t.Fatal("the OVA's disk converts differently from qemu-img's reading of it")
	}
	os.Remove(out)

	i := bytes.Index(good, []byte("SHA1(small-disk1.vmdk)= "))
	if i < 0 {
		t.Fatal("fixture has no disk digest")
	}
	bad := append([]byte(nil), good...)
	d := i + len("SHA1(small-disk1.vmdk)= ")
	bad[d] ^= 1 // another hex digit
	badPath := filepath.Join(dir, "bad.ova")
	os.WriteFile(badPath, bad, 0o644)
	code, _, errOut := convertCLI(t, badPath, "-o", out)
	if code != exitBadInput || !strings.Contains(errOut, "bad.ova") || !strings.Contains(strings.ToLower(errOut), "digest") {
		t.Fatalf("bad digest: exit %d, %q", code, errOut)
	}
	noLeftovers(t, dir, out)
}

// TestQCOW2Output converts sources of several formats to QCOW2 with the
// CLI: qemu-img check finds no errors or leaks, qemu-img compare finds the
// output identical to the source, and qemu-img's RAW of it hashes like the
// source disk.
func TestQCOW2Output(t *testing.T) {
	dir := t.TempDir()
	raw := disk(t)
	want := testkit.FileSHA256(t, raw)
	sources := map[string]string{
		"raw":           raw,
		"qcow2-zstd":    testkit.Convert(t, raw, filepath.Join(dir, "src.qcow2"), "qcow2", "-c", "-o", "compression_type=zstd"),
		"vmdk-stream":   testkit.Convert(t, raw, filepath.Join(dir, "src.vmdk"), "vmdk", "-o", "subformat=streamOptimized"),
		"vmdk-sparse2M": testkit.Convert(t, raw, filepath.Join(dir, "src2.vmdk"), "vmdk", "-o", "subformat=twoGbMaxExtentSparse"),
	}
	options := map[string][]string{
		"default":     nil,
		"compat-0.10": {"--qcow2-compat", "0.10", "--cluster-size", "4k"},
		"zlib":        {"-c"},
		"zstd-2M":     {"-c", "--compression", "zstd", "--cluster-size", "2M"},
	}
	for sname, src := range sources {
		for oname, opts := range options {
			if testing.Short() && oname != "default" {
				continue
			}
			t.Run(sname+"/"+oname, func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "out.qcow2")
				mustConvert(t, append([]string{src, "-O", "qcow2", "-o", out, "--check", "off"}, opts...)...)
				testkit.QemuImg(t, "check", out)
				testkit.QemuImg(t, "compare", src, out)
				if got := testkit.RawSHA256(t, out); got != want {
					t.Fatal("qemu-img reads our QCOW2 differently from the source")
				}
			})
		}
	}
}

func TestQCOW2OutputRefusals(t *testing.T) {
	src := disk(t)
	for _, args := range [][]string{
		{src, "-O", "qcow2", "-o", "-"},
		{src, "-O", "qcow2", "-o", "x.qcow2", "--cluster-size", "3k"},
		{src, "-O", "qcow2", "-o", "x.qcow2", "-c", "--compression", "zstd", "--qcow2-compat", "0.10"},
		{src, "-O", "raw", "-o", "x.raw", "-c"},
	} {
		if code, _, errOut := convertCLI(t, args...); code != exitUsage {
			t.Errorf("convert %v: exit %d, want %d: %s", args, code, exitUsage, errOut)
		}
	}
}
