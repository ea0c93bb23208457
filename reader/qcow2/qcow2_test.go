package qcow2_test

import (
	"path/filepath"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/reader/readertest"
)

// TestAgainstQemu converts one partitioned ext4 disk into every QCOW2 variant
// qemu-img writes and checks our reader against qemu-img's RAW of each.
func TestAgainstQemu(t *testing.T) {
	dir := t.TempDir()
	disk := testkit.MakeDisk(t, dir, testkit.DiskOptions{SizeMiB: 32, Tail: true})
	cases := []struct {
		name string
		opts []string
	}{
		{"compat-0.10", []string{"-o", "compat=0.10"}},
		{"compat-1.1", []string{"-o", "compat=1.1"}},
		{"cluster-512", []string{"-o", "cluster_size=512"}},
		{"cluster-2M", []string{"-o", "cluster_size=2M"}},
		{"zlib", []string{"-c", "-o", "compression_type=zlib"}},
		{"zstd", []string{"-c", "-o", "compression_type=zstd"}},
		{"zlib-compat-0.10", []string{"-c", "-o", "compat=0.10"}},
		{"extended-l2", []string{"-o", "extended_l2=on,cluster_size=128k"}},
		{"lazy-refcounts", []string{"-o", "lazy_refcounts=on"}},
		{"prealloc-metadata", []string{"-o", "preallocation=metadata"}},
		{"refcount-1", []string{"-o", "refcount_bits=1"}},
		{"refcount-64", []string{"-o", "refcount_bits=64"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := testkit.Convert(t, disk, filepath.Join(t.TempDir(), "x.qcow2"), "qcow2", c.opts...)
			im, err := reader.Open(q, reader.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			if f := im.Info().Format; f != "qcow2" {
				t.Fatalf("format %q", f)
			}
			readertest.Check(t, im, disk)
		})
	}
}
