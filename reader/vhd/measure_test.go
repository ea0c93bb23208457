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
		// ours reads through stream.Run into a sink that discards, or, with
		// toFile, writes the RAW as qemu-img does: data written, zeros left
		// as holes.
		ours := func(toFile bool) (time.Duration, stream.Stats) {
			os.Remove(out)
			start := time.Now()
			im, err := reader.Open(src, reader.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			var f *os.File
			if toFile {
				if f, err = os.Create(out); err != nil {
					t.Fatal(err)
				}
				defer f.Close()
			}
			sink := stream.SinkFunc(func(_ context.Context, b *stream.Block) error {
				if f == nil || b.Zero {
					return nil
				}
				_, err := f.WriteAt(b.Data, b.Off)
				return err
			})
			st, err := stream.Run(context.Background(), im, sink, stream.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if f != nil {
				// qemu-img flushes the output at the end (cache mode
				// writeback): so do we.
				if err := f.Truncate(im.Size()); err != nil {
					t.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
			}
			return time.Since(start), st
		}
		// Warm the page cache, then take the best of three of each.
		qemu()
		ours(false)
		bestQ, bestO, bestF := time.Hour, time.Hour, time.Hour
		var st stream.Stats
		for range 3 {
			bestQ = min(bestQ, qemu())
			d, s := ours(false)
			bestO, st = min(bestO, d), s
			d, _ = ours(true)
			bestF = min(bestF, d)
		}
		os.Remove(out)
		t.Logf("%s: qemu-img convert -O raw %v; ours to a RAW file %v (qemu/ours %.2f); ours discarding %v (qemu/ours %.2f); read %d MiB, skipped %d MiB",
			c.name, bestQ.Round(time.Millisecond), bestF.Round(time.Millisecond), float64(bestQ)/float64(bestF),
			bestO.Round(time.Millisecond), float64(bestQ)/float64(bestO), st.Read>>20, st.Skipped>>20)
		os.Remove(src)
	}
}
