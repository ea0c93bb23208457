package remote_test

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/internal/webtest"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/remote"
	"vmimport/stream"
)

// guestSHA256 reads im as the conversion pass does (4 workers, blocks of
// 1 MiB, zero runs skipped) and hashes the guest bytes.
func guestSHA256(t *testing.T, im image.Image) string {
	t.Helper()
	h := sha256.New()
	zero := make([]byte, 1<<20)
	_, err := stream.Run(context.Background(), im, stream.SinkFunc(func(_ context.Context, b *stream.Block) error {
		if !b.Zero {
			h.Write(b.Data[:b.Len])
			return nil
		}
		for n := b.Len; n > 0; n -= min(n, int64(len(zero))) {
			h.Write(zero[:min(n, int64(len(zero)))])
		}
		return nil
	}), stream.Options{Workers: 4, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := image.Verify(im); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// remoteCase is one image in one format: its files (the first is the one
// opened) in a folder the web server serves.
type remoteCase struct {
	name   string
	files  []string
	sparse bool // the file holds the allocated data only
	opts   reader.Options
}

// buildCases makes every source format from one test disk.
func buildCases(t *testing.T, dir string) (raw string, cases []remoteCase) {
	testkit.Need(t, "qemu-img", "sfdisk", "mkfs.ext4")
	raw = testkit.MakeDisk(t, t.TempDir(), testkit.DiskOptions{SizeMiB: 48, DataMiB: 9, Tail: true})
	conv := func(name, format string, opts ...string) string {
		return testkit.Convert(t, raw, filepath.Join(dir, name), format, opts...)
	}
	add := func(name string, sparse bool, files ...string) {
		var rel []string
		for _, f := range files {
			rel = append(rel, filepath.Base(f))
		}
		cases = append(cases, remoteCase{name: name, files: rel, sparse: sparse})
	}
	add("raw", false, conv("disk.raw", "raw"))
	add("qcow2", true, conv("disk.qcow2", "qcow2"))
	add("qcow2 zlib", true, conv("disk-z.qcow2", "qcow2", "-c"))
	add("qcow2 4k clusters", true, conv("disk-4k.qcow2", "qcow2", "-o", "cluster_size=4096"))
	add("vmdk monolithicSparse", true, conv("disk-sparse.vmdk", "vmdk"))
	add("vmdk streamOptimized", true, conv("disk-stream.vmdk", "vmdk", "-o", "subformat=streamOptimized"))
	flat := conv("disk-flat.vmdk", "vmdk", "-o", "subformat=monolithicFlat")
	add("vmdk monolithicFlat (descriptor + extent)", false, flat, strings.TrimSuffix(flat, ".vmdk")+"-flat.vmdk")
	split := conv("disk-split.vmdk", "vmdk", "-o", "subformat=twoGbMaxExtentSparse")
	add("vmdk twoGbMaxExtentSparse (descriptor + extent)", true, split, strings.TrimSuffix(split, ".vmdk")+"-s001.vmdk")
	add("vhd dynamic", true, conv("disk-dyn.vhd", "vpc", "-o", "subformat=dynamic"))
	add("vhd fixed", false, conv("disk-fixed.vhd", "vpc", "-o", "subformat=fixed"))
	add("vhdx dynamic", true, conv("disk.vhdx", "vhdx", "-o", "block_size=1M"))
	add("vdi", true, conv("disk.vdi", "vdi"))
	stream := filepath.Join(dir, "disk-stream.vmdk")
	add("ova (streamOptimized, manifest)", true, makeOVA(t, dir, stream))
	return raw, cases
}

// makeOVA packs a streamOptimized VMDK into an OVA with a SHA-256
// manifest.
func makeOVA(t *testing.T, dir, vmdk string) string {
	data, err := os.ReadFile(vmdk)
	if err != nil {
		t.Fatal(err)
	}
	ovf := `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:id="file1" ovf:href="disk1.vmdk"/></References>
  <DiskSection><Info>disks</Info><Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="50331648" ovf:capacityAllocationUnits="byte"/></DiskSection>
</Envelope>
`
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	mf := fmt.Sprintf("SHA256(vm.ovf)= %s\nSHA256(disk1.vmdk)= %s\n", sum([]byte(ovf)), sum(data))
	p := filepath.Join(dir, "vm.ova")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, m := range [][2]string{{"vm.ovf", ovf}, {"vm.mf", mf}, {"disk1.vmdk", string(data)}} {
		tw.WriteHeader(&tar.Header{Name: m[0], Mode: 0o644, Size: int64(len(m[1])), Format: tar.FormatUSTAR})
		tw.Write([]byte(m[1]))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFormatsOverHTTP reads every source format from a local web server:
// the same guest bytes as read from the file, and the bytes served stay
// within 1.3x of the image's files (the data a sparse format does not
// hold is never fetched: its files are far smaller than the disk). The
// cache is scaled down with the disk (2 MiB for files of 5 to 48 MiB, as
// the default 32 MiB is for images of a few GiB), so that it is under
// pressure as it is on real images.
func TestFormatsOverHTTP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a disk in every format")
	}
	dir := t.TempDir()
	raw, cases := buildCases(t, dir)
	virtual := fileSize(t, raw)
	srv := webtest.Start(t, dir)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var files int64
			for _, f := range c.files {
				files += fileSize(t, filepath.Join(dir, f))
			}
			local, err := reader.Open(filepath.Join(dir, c.files[0]), c.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer local.Close()
			want := guestSHA256(t, local)
			srv.Reset()
			op := remote.New(context.Background(), remote.Options{ChunkSize: 256 << 10, CacheChunks: 8})
			o := c.opts
			o.Remote = op
			im, err := reader.Open(srv.URL+"/"+c.files[0], o)
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			if got := guestSHA256(t, im); got != want {
				t.Fatalf("remote read: %s, want %s", got, want)
			}
			st := op.Stats()
			served := srv.Settle(st.Bytes)
			ratio := float64(served) / float64(files)
			t.Logf("%s: files %d bytes, served %d (%.2fx) in %d requests (%d cache hits, %d misses)", c.name, files, served, ratio, st.Requests, st.Hits, st.Misses)
			if ratio > 1.3 {
				t.Errorf("served %.2fx the image's files (%d of %d bytes): more than 1.3x", ratio, served, files)
			}
			if c.sparse && served > virtual/2 {
				t.Errorf("a sparse format fetched %d bytes of a %d-byte disk", served, virtual)
			}
			if st.Bytes != served {
				t.Errorf("counted %d bytes, the server sent %d", st.Bytes, served)
			}
		})
	}
}

// TestMultiFileRules: a descriptor's extents and a QCOW2's backing file
// resolve against the URL, inside the image's folder unless --allow-path
// names a URL prefix.
func TestMultiFileRules(t *testing.T) {
	testkit.Need(t, "qemu-img")
	root := t.TempDir()
	dir := filepath.Join(root, "exports", "vm")
	shared := filepath.Join(root, "exports", "shared")
	os.MkdirAll(dir, 0o755)
	os.MkdirAll(shared, 0o755)
	raw := filepath.Join(root, "disk.raw")
	b := make([]byte, 4<<20)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	os.WriteFile(raw, b, 0o644)
	testkit.Convert(t, raw, filepath.Join(dir, "base.qcow2"), "qcow2")
	testkit.Convert(t, raw, filepath.Join(shared, "base.qcow2"), "qcow2")
	testkit.QemuImg(t, "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", filepath.Join(dir, "top.qcow2"))
	testkit.QemuImg(t, "create", "-f", "qcow2", "-b", "../shared/base.qcow2", "-F", "qcow2", filepath.Join(dir, "escape.qcow2"))
	testkit.Convert(t, raw, filepath.Join(dir, "flat.vmdk"), "vmdk", "-o", "subformat=monolithicFlat")
	desc, _ := os.ReadFile(filepath.Join(dir, "flat.vmdk"))
	for name, extent := range map[string]string{"up.vmdk": "../shared/flat-flat.vmdk", "abs.vmdk": "/etc/passwd", "host.vmdk": "https://example.invalid/x-flat.vmdk"} {
		os.WriteFile(filepath.Join(dir, name), []byte(strings.Replace(string(desc), `"flat-flat.vmdk"`, `"`+extent+`"`, 1)), 0o644)
	}
	os.Rename(filepath.Join(dir, "flat-flat.vmdk"), filepath.Join(shared, "flat-flat.vmdk"))
	os.WriteFile(filepath.Join(dir, "flat-flat.vmdk"), b, 0o644)
	srv := webtest.Start(t, root)
	base := srv.URL + "/exports/vm/"
	allowShared := []string{srv.URL + "/exports/shared/"}
	cases := []struct {
		name  string
		opts  reader.Options
		err   error // nil: reads the disk
		words string
	}{
		{"top.qcow2", reader.Options{AllowBacking: true}, nil, ""},
		{"top.qcow2", reader.Options{}, image.ErrNotAllowed, "--allow-backing"},
		{"escape.qcow2", reader.Options{AllowBacking: true}, image.ErrNotAllowed, "outside the image's folder " + base},
		{"escape.qcow2", reader.Options{AllowBacking: true, AllowPaths: allowShared}, nil, ""},
		{"escape.qcow2", reader.Options{AllowBacking: true, AllowPaths: []string{"/"}}, image.ErrNotAllowed, "outside"}, // a local folder allows no URL
		{"flat.vmdk", reader.Options{}, nil, ""},
		{"up.vmdk", reader.Options{}, image.ErrNotAllowed, "outside the image's folder"},
		{"up.vmdk", reader.Options{AllowPaths: allowShared}, nil, ""},
		{"abs.vmdk", reader.Options{}, image.ErrNotAllowed, srv.URL + "/etc/passwd"},
		{"host.vmdk", reader.Options{}, image.ErrNotAllowed, "another host"},
	}
	for _, c := range cases {
		o := c.opts
		o.Remote = remote.New(context.Background(), remote.Options{})
		im, err := reader.Open(base+c.name, o)
		if c.err != nil {
			if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.words) {
				t.Errorf("%s %+v: error %v, want %v with %q", c.name, c.opts, err, c.err, c.words)
			}
			if im != nil {
				im.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %+v: %v", c.name, c.opts, err)
			continue
		}
		got := make([]byte, len(b))
		if _, err := im.ReadAt(got, 0); err != nil || string(got) != string(b) {
			t.Errorf("%s: wrong bytes (%v)", c.name, err)
		}
		im.Close()
	}
}

func fileSize(t testing.TB, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

var _ hash.Hash = sha256.New()
