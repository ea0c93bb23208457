package qcow2_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/stream"
	"vmimport/writer"
	"vmimport/writer/qcow2"
)

// memDisk is a stream.Source over bytes in memory.
type memDisk []byte

func (m memDisk) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (m memDisk) Size() int64 { return int64(len(m)) }
func (m memDisk) Extent(off, n int64) (image.Extent, error) {
	return image.Extent{Start: off, Length: min(n, int64(len(m))-off)}, nil
}

// discard is a Target that only counts.
type discard struct{ n int64 }

func (d *discard) Write(p []byte) (int, error)          { d.n += int64(len(p)); return len(p), nil }
func (d *discard) Skip(n int64) error                   { d.n += n; return nil }
func (d *discard) Commit(context.Context, []byte) error { return nil }
func (d *discard) Abort(context.Context) error          { return nil }

// benchDisk is 64 MiB like a system disk: a third text (compresses ~4x),
// a third random bytes, a third zeros, in 256 KiB stripes.
func benchDisk() memDisk {
	const size = 64 << 20
	d := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	var text bytes.Buffer
	for i := 0; text.Len() < size; i++ {
		fmt.Fprintf(&text, "%d: kernel: [%8d.%06d] eth0: link up %d Mbps full duplex, flow control %s\n",
			i, rng.IntN(100000), rng.IntN(1000000), 10*rng.IntN(1000), []string{"rx", "tx", "rx/tx", "off"}[rng.IntN(4)])
	}
	for off := 0; off < size; off += 256 << 10 {
		s := d[off : off+256<<10]
		switch (off / (256 << 10)) % 3 {
		case 0:
			copy(s, text.Bytes()[off:])
		case 1:
			for i := range s {
				s[i] = byte(rng.Uint32())
			}
		}
	}
	return d
}

func benchEncode(b *testing.B, o qcow2.Options) {
	d := benchDisk()
	o.VirtualSize = d.Size()
	b.SetBytes(d.Size())
	b.ReportAllocs()
	b.ResetTimer()
	var out int64
	for b.Loop() {
		t := &discard{}
		enc, err := qcow2.NewEncoder(t, o)
		if err != nil {
			b.Fatal(err)
		}
		so := stream.Options{BlockSize: qcow2.BlockSize(0, o.ClusterSize)}
		if _, err := stream.Run(context.Background(), d, enc, so); err != nil {
			b.Fatal(err)
		}
		if err := enc.Finish(context.Background()); err != nil {
			b.Fatal(err)
		}
		out = t.n
	}
	b.ReportMetric(float64(out)/float64(d.Size()), "out/in")
}

func BenchmarkEncodePlain(b *testing.B)    { benchEncode(b, qcow2.Options{}) }
func BenchmarkEncodePlain512(b *testing.B) { benchEncode(b, qcow2.Options{ClusterSize: 512}) }
func BenchmarkEncodeZlib(b *testing.B) {
	benchEncode(b, qcow2.Options{Compression: qcow2.CompressZlib})
}
func BenchmarkEncodeZstd(b *testing.B) {
	benchEncode(b, qcow2.Options{Compression: qcow2.CompressZstd})
}
func BenchmarkEncodeZlib2M(b *testing.B) {
	benchEncode(b, qcow2.Options{Compression: qcow2.CompressZlib, ClusterSize: 2 << 20})
}

// TestMeasureFile converts the image named by QCOW2_MEASURE_SRC to QCOW2
// files, plain and compressed, and logs the wall time of each, for a
// comparison with qemu-img convert on the same file. It is skipped unless
// the variable is set; QCOW2_MEASURE_COMPRESSION picks one of "", zlib, zstd.
func TestMeasureFile(t *testing.T) {
	src := os.Getenv("QCOW2_MEASURE_SRC")
	if src == "" {
		t.Skip("set QCOW2_MEASURE_SRC to an image to measure")
	}
	dir := os.Getenv("QCOW2_MEASURE_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	for _, o := range []qcow2.Options{{}, {Compression: qcow2.CompressZlib}, {Compression: qcow2.CompressZstd}} {
		if c, ok := os.LookupEnv("QCOW2_MEASURE_COMPRESSION"); ok && c != o.Compression {
			continue
		}
		im, err := reader.Open(src, reader.Options{})
		if err != nil {
			t.Fatal(err)
		}
		o.VirtualSize = im.Size()
		dst := filepath.Join(dir, "ours-"+o.Compression+".qcow2")
		tg, err := writer.CreateFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := qcow2.NewEncoder(tg, o)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		st, err := stream.Run(context.Background(), im, enc, stream.Options{})
		streamed := time.Since(start)
		if err == nil {
			err = enc.Finish(context.Background())
		}
		if err != nil {
			tg.Abort(context.Background())
			t.Fatal(err)
		}
		im.Close()
		t.Logf("compression=%q: %v (stream %v, finish and fsync %v), %d bytes read, %d bytes out", o.Compression,
			time.Since(start).Round(time.Millisecond), streamed.Round(time.Millisecond), (time.Since(start) - streamed).Round(time.Millisecond), st.Read, enc.Written())
	}
}
