// Package testkit builds test disk images at test time with the real tools
// (sfdisk, mkfs.ext4, qemu-img) and compares our output with qemu-img's.
// Only tests import it.
package testkit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Need skips the test when a tool is missing, unless running in CI, where
// a missing tool is a failure (.ci/run installs them).
func Need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed (CI must install it)", tool)
			}
			t.Skipf("%s is not installed", tool)
		}
	}
}

// Run runs a command and fails the test with its output if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// QemuImg runs qemu-img.
func QemuImg(t testing.TB, args ...string) string {
	t.Helper()
	Need(t, "qemu-img")
	return Run(t, "qemu-img", args...)
}

// Convert runs qemu-img convert -O format [opts...] src dst and returns dst.
func Convert(t testing.TB, src, dst, format string, opts ...string) string {
	t.Helper()
	args := append([]string{"convert", "-O", format}, opts...)
	args = append(args, src, dst)
	QemuImg(t, args...)
	return dst
}

// RawSHA256 is the SHA-256 of qemu-img's RAW conversion of path: the oracle
// every reader is checked against.
func RawSHA256(t testing.TB, path string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "oracle.raw")
	QemuImg(t, "convert", "-O", "raw", path, dst)
	return FileSHA256(t, dst)
}

// FileSHA256 hashes a file.
func FileSHA256(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// AllocatedBytes is the space a file really takes on disk.
func AllocatedBytes(t testing.TB, path string) int64 {
	t.Helper()
	return allocated(t, path)
}

// DiskOptions shape a test disk.
type DiskOptions struct {
	SizeMiB int64 // whole disk (default 64)
	PartMiB int64 // the ext4 partition, starting at 1 MiB (default SizeMiB/2)
	// DataMiB is roughly how much file data to put in the file system
	// (default PartMiB/3): half compressible text, half random bytes.
	DataMiB int64
	Seed    uint64
	// Tail, if set, fills the last MiB of the disk with random bytes, so
	// data sits after a long zero gap.
	Tail bool
}

// MakeDisk builds a RAW disk image with an MBR partition table, one active
// Linux partition holding an ext4 file system full of files, and zero gaps.
// It needs sfdisk and mkfs.ext4, but not root.
func MakeDisk(t testing.TB, dir string, o DiskOptions) string {
	t.Helper()
	Need(t, "sfdisk", "mkfs.ext4")
	if o.SizeMiB == 0 {
		o.SizeMiB = 64
	}
	if o.PartMiB == 0 {
		o.PartMiB = o.SizeMiB / 2
	}
	if o.DataMiB == 0 {
		o.DataMiB = max(1, o.PartMiB/3)
	}
	rng := rand.New(rand.NewPCG(o.Seed, 42))
	files := filepath.Join(dir, "rootfs")
	for _, d := range []string{"etc", "usr/bin", "var/log", "home/user"} {
		if err := os.MkdirAll(filepath.Join(files, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(files, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/os-release", []byte("NAME=\"Test Linux\"\nID=testlinux\nVERSION_ID=\"1.0\"\n"))
	write("etc/fstab", []byte("UUID=0000 / ext4 defaults 0 1\n"))
	budget := o.DataMiB << 20
	for i := 0; budget > 0; i++ {
		n := min(budget, int64(64<<10+rng.IntN(1<<20)))
		b := make([]byte, n)
		if i%2 == 0 {
			var text bytes.Buffer
			for text.Len() < int(n) {
				fmt.Fprintf(&text, "line %d of file %d: the quick brown fox %d jumps over the lazy dog\n", text.Len(), i, rng.IntN(1000))
			}
			copy(b, text.Bytes())
			write(fmt.Sprintf("var/log/log%03d.txt", i), b)
		} else {
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
			write(fmt.Sprintf("usr/bin/prog%03d", i), b)
		}
		budget -= n
	}
	fs := filepath.Join(dir, "part.ext4")
	Run(t, "mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0,lazy_itable_init=0", "-U", "6f1ed6a1-0b32-4e4b-8f43-1d2b51e3a1c0", "-d", files, fs, fmt.Sprintf("%dM", o.PartMiB))
	disk := filepath.Join(dir, "disk.raw")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(o.SizeMiB << 20); err != nil {
		t.Fatal(err)
	}
	pf, err := os.Open(fs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.NewOffsetWriter(f, 1<<20), sparseReader{pf}); err != nil {
		t.Fatal(err)
	}
	pf.Close()
	if o.Tail {
		b := make([]byte, 1<<20)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(b, (o.SizeMiB-1)<<20); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	cmd := exec.Command("sfdisk", "-q", disk)
	cmd.Stdin = strings.NewReader(fmt.Sprintf("label: dos\nlabel-id: 0x12345678\nstart=2048, size=%d, type=83, bootable\n", o.PartMiB<<11))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	os.RemoveAll(files)
	os.Remove(fs)
	return disk
}

// sparseReader hides io.WriterTo/ReaderFrom fast paths so io.Copy copies
// plainly; zeros are written as zeros (the test disk need not be sparse).
type sparseReader struct{ r io.Reader }

func (s sparseReader) Read(p []byte) (int, error) { return s.r.Read(p) }
