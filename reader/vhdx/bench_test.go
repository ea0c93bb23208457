package vhdx_test

import (
	"testing"

	"vmimport/reader"
	"vmimport/reader/image"

	"vmimport/reader/readertest"
)

// BenchmarkRead reads a qemu-made dynamic image of a 48 MiB ext4 disk
// from start to end in 1 MiB reads.
func BenchmarkRead(b *testing.B) {
	readertest.BenchmarkRead(b, open, "vhdx", "-o", "subformat=dynamic")
}

func open(p string) (image.Image, error) { return reader.Open(p, reader.Options{}) }
