package vhd_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/stream"
)

// TestMeasureAgainstQemu times "qemu-img convert -O raw" against our
// reader driven by stream.Run into a discarding sink, for a dynamic VHD,
// VHDX and VDI of a disk holding about 512 MiB of data. It takes minutes
// and disk space, so it runs only with VMIMPORT_MEASURE=1:
//
//	VMIMPORT_MEASURE=1 go test -run MeasureAgainstQemu -v ./reader/vhd/
func TestMeasureAgainstQemu(t *testing.T) {
	if os.Getenv("VMIMPORT_MEASURE") == "" {
		t.Skip("set VMIMPORT_MEASURE=1 to measure against qemu-img")
	}
	dir := t.TempDir()
	disk := testkit.MakeDisk(t, dir, testkit.DiskOptions{SizeMiB: 800, PartMiB: 720, DataMiB: 512, Tail: true})
	for _, c := range []struct{ name, fmt, opts string }{
		{"vhd", "vpc", "subformat=dynamic"},
		{"vhdx", "vhdx", "subformat=dynamic"},
		{"vdi", "vdi", "static=off"},
	} {
		src := testkit.Convert(t, disk, filepath.Join(dir, "x."+c.name), c.fmt, "-o", c.opts)
		out := filepath.Join(dir, "out.raw")
		qemu := func() time.Duration {
			os.Remove(out)
			start := time.Now()
			testkit.QemuImg(t, "convert", "-f", c.fmt, "-O", "raw", src, out)
			return time.Since(start)
		}
		ours := func() (time.Duration, stream.Stats) {
			start := time.Now()
			im, err := reader.Open(src, reader.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			st, err := stream.Run(context.Background(), im, stream.SinkFunc(func(context.Context, *stream.Block) error { return nil }), stream.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return time.Since(start), st
		}
		// Warm the page cache, then take the best of three of each.
		qemu()
		ours()
		bestQ, bestO := time.Hour, time.Hour
		var st stream.Stats
		for range 3 {
			bestQ = min(bestQ, qemu())
			d, s := ours()
			bestO, st = min(bestO, d), s
		}
		os.Remove(out)
		t.Logf("%s: qemu-img convert -O raw %v, ours (stream.Run, discard) %v: ratio qemu/ours %.2f; read %d MiB, skipped %d MiB",
			c.name, bestQ.Round(time.Millisecond), bestO.Round(time.Millisecond), float64(bestQ)/float64(bestO), st.Read>>20, st.Skipped>>20)
		os.Remove(src)
	}
}
