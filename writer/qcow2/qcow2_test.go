package qcow2_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/reader/readertest"
	"vmimport/stream"
	"vmimport/writer"
	"vmimport/writer/qcow2"
)

// encode converts src into a QCOW2 file at dst with our encoder, through
// the stream pipeline and a writer.File, and returns dst.
func encode(t testing.TB, src, dst string, o qcow2.Options, so stream.Options) string {
	t.Helper()
	im, err := reader.Open(src, reader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	o.VirtualSize = im.Size()
	tg, err := writer.CreateFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := qcow2.NewEncoder(tg, o)
	if err != nil {
		tg.Abort(context.Background())
		t.Fatal(err)
	}
	so.BlockSize = qcow2.BlockSize(so.BlockSize, o.ClusterSize)
	ctx := context.Background()
	if _, err := stream.Run(ctx, im, enc, so); err != nil {
		tg.Abort(ctx)
		t.Fatal(err)
	}
	if err := enc.Finish(ctx); err != nil {
		tg.Abort(ctx)
		t.Fatal(err)
	}
	maxSize, err := qcow2.MaxSize(o)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dst); err != nil {
		t.Fatal(err)
	} else if fi.Size() != enc.Written() || fi.Size() > maxSize {
		t.Fatalf("file of %d bytes, Written() %d, MaxSize %d", fi.Size(), enc.Written(), maxSize)
	}
	return dst
}

// check runs qemu-img check on a QCOW2 file: no errors, no leaks.
func check(t testing.TB, path string) {
	t.Helper()
	out := testkit.QemuImg(t, "check", "-f", "qcow2", path)
	if !strings.Contains(out, "No errors were found") || strings.Contains(out, "leak") {
		t.Fatalf("qemu-img check %s:\n%s", path, out)
	}
}

// verify checks our output against the source with qemu-img as the oracle
// and with our own reader. rawPath is the source as RAW, or "" to get it
// from qemu-img; full=false skips the hashes and the reader check (for the
// huge sparse disk, which is compared with qemu-img compare only). Our
// reader always reads the whole output back; the full conformance suite
// (random and concurrent reads, slow on small clusters) runs when deep.
//
// Strict compare (-s) also compares allocation: it holds against a QCOW2
// source with the same cluster size (qemu-img's own output fails it against
// a RAW source, whose allocation is the file system's), so it is used there.
func verify(t *testing.T, src, out, rawPath string, full, strict, deep bool) {
	t.Helper()
	check(t, out)
	if strict {
		testkit.QemuImg(t, "compare", "-s", "-f", "qcow2", "-F", "qcow2", src, out)
	} else {
		testkit.QemuImg(t, "compare", "-F", "qcow2", src, out)
	}
	if !full {
		return
	}
	if rawPath == "" {
		rawPath = testkit.Convert(t, src, filepath.Join(t.TempDir(), "src.raw"), "raw")
	}
	want := testkit.FileSHA256(t, rawPath)
	if got := testkit.RawSHA256(t, out); got != want {
		t.Fatalf("qemu-img convert -O raw of our file: sha256 %s, source %s", got, want)
	}
	im, err := reader.Open(out, reader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if f := im.Info().Format; f != "qcow2" {
		t.Fatalf("our reader says %q", f)
	}
	if im.Size() != fileSize(t, rawPath) {
		t.Fatalf("our reader: size %d, qemu-img %d", im.Size(), fileSize(t, rawPath))
	}
	if got := readerSHA256(t, im, im.Size()); got != want {
		t.Fatalf("our reader on our file: sha256 %s, source %s", got, want)
	}
	if deep {
		readertest.Check(t, im, rawPath)
	}
}

// readerSHA256 hashes r in 2 MiB reads: a whole cluster at a time, so a
// compressed 2 MiB cluster is inflated once, not once per small read.
func readerSHA256(t testing.TB, r io.ReaderAt, n int64) string {
	t.Helper()
	h := sha256.New()
	buf := make([]byte, 2<<20)
	for off := int64(0); off < n; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), n-off)]
		if _, err := r.ReadAt(b, off); err != nil && !(err == io.EOF && off+int64(len(b)) == n) {
			t.Fatal(err)
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func sameBytes(t *testing.T, a, b string) {
	t.Helper()
	if ha, hb := testkit.FileSHA256(t, a), testkit.FileSHA256(t, b); ha != hb {
		t.Fatalf("%s and %s differ", a, b)
	}
}

// writeFile writes a RAW disk of size bytes with fill deciding the content.
func writeFile(t testing.TB, path string, size int64, fill func(b []byte, off int64)) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if fill == nil {
		return path
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), size-off)]
		clear(b)
		fill(b, off)
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func randomFill(seed uint64) func(b []byte, off int64) {
	return func(b []byte, off int64) {
		rng := rand.New(rand.NewPCG(seed, uint64(off)))
		for i := 0; i+8 <= len(b); i += 8 {
			v := rng.Uint64()
			for k := range 8 {
				b[i+k] = byte(v >> (8 * k))
			}
		}
		for i := len(b) &^ 7; i < len(b); i++ {
			b[i] = byte(rng.Uint32())
		}
	}
}

// TestDisk converts an MBR+ext4 disk whose size is not a multiple of the
// cluster size, from RAW and from QCOW2, in every option we support.
func TestDisk(t *testing.T) {
	testkit.Need(t, "qemu-img")
	dir := t.TempDir()
	sizeMiB := int64(24)
	if raceEnabled {
		sizeMiB = 12
	}
	disk := testkit.MakeDisk(t, dir, testkit.DiskOptions{SizeMiB: sizeMiB, Tail: true, Seed: 5})
	// Make the virtual size odd: 3 sectors and 100 bytes more.
	if err := os.Truncate(disk, sizeMiB<<20+3*512+100); err != nil {
		t.Fatal(err)
	}
	qsrc := testkit.Convert(t, disk, filepath.Join(dir, "src.qcow2"), "qcow2")
	// qemu-img reads it as 4 sectors more: the oracle.
	oracle := testkit.Convert(t, disk, filepath.Join(dir, "oracle.raw"), "raw")
	cases := []struct {
		name string
		o    qcow2.Options
		bs   int
	}{
		{"default", qcow2.Options{}, 0},
		{"compat-0.10", qcow2.Options{Compat: qcow2.Compat010}, 0},
		{"cluster-512", qcow2.Options{ClusterSize: 512}, 4096},
		{"cluster-2M", qcow2.Options{ClusterSize: 2 << 20}, 0},
		{"zlib", qcow2.Options{Compression: qcow2.CompressZlib}, 0},
		{"zstd", qcow2.Options{Compression: qcow2.CompressZstd}, 0},
		{"zlib-compat-0.10", qcow2.Options{Compat: qcow2.Compat010, Compression: qcow2.CompressZlib}, 0},
		{"zlib-cluster-512", qcow2.Options{ClusterSize: 512, Compression: qcow2.CompressZlib}, 4096},
		{"zstd-cluster-2M", qcow2.Options{ClusterSize: 2 << 20, Compression: qcow2.CompressZstd}, 0},
		{"zlib-cluster-4k", qcow2.Options{ClusterSize: 4096, Compression: qcow2.CompressZlib}, 64 << 10},
	}
	for _, src := range []struct{ name, path string }{{"raw", disk}, {"qcow2", qsrc}} {
		for _, c := range cases {
			t.Run(src.name+"/"+c.name, func(t *testing.T) {
				if (testing.Short() || raceEnabled) && src.name == "qcow2" && c.name != "default" && c.name != "zlib" {
					t.Skip("short or race: the QCOW2 source runs the default and zlib cases only")
				}
				if raceEnabled && c.name == "zlib-cluster-512" {
					t.Skip("race: slow; TestRandomLayouts covers small compressed clusters")
				}
				out := encode(t, src.path, filepath.Join(t.TempDir(), "out.qcow2"), c.o, stream.Options{BlockSize: c.bs, Workers: 3})
				strict := src.name == "qcow2" && c.o.Compression == "" && (c.o.ClusterSize == 0 || c.o.ClusterSize == 64<<10)
				// The reader's conformance suite is slow under -race, and
				// checks the reader more than our output: run it without.
				deep := src.name == "raw" && !raceEnabled && (c.name == "default" || !testing.Short() && (c.name == "zlib" || c.name == "zstd"))
				verify(t, src.path, out, oracle, true, strict, deep)
			})
		}
	}
}

// TestSize compares our file sizes with qemu-img's for the same source.
func TestSize(t *testing.T) {
	if raceEnabled {
		t.Skip("race: sizes do not depend on it; run without -race")
	}
	testkit.Need(t, "qemu-img")
	dir := t.TempDir()
	disk := testkit.MakeDisk(t, dir, testkit.DiskOptions{SizeMiB: 32, Tail: true, Seed: 9})
	cases := []struct {
		name  string
		o     qcow2.Options
		qemu  []string
		slack float64
	}{
		{"plain", qcow2.Options{}, nil, 0.01},
		{"plain-512", qcow2.Options{ClusterSize: 512}, []string{"-o", "cluster_size=512"}, 0.01},
		{"plain-2M", qcow2.Options{ClusterSize: 2 << 20}, []string{"-o", "cluster_size=2M"}, 0.01},
		{"zlib", qcow2.Options{Compression: qcow2.CompressZlib}, []string{"-c"}, 0.05},
		{"zstd", qcow2.Options{Compression: qcow2.CompressZstd}, []string{"-c", "-o", "compression_type=zstd"}, 0.05},
		{"zlib-4k", qcow2.Options{Compression: qcow2.CompressZlib, ClusterSize: 4096}, []string{"-c", "-o", "cluster_size=4k"}, 0.05},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ours := encode(t, disk, filepath.Join(t.TempDir(), "ours.qcow2"), c.o, stream.Options{})
			theirs := testkit.Convert(t, disk, filepath.Join(t.TempDir(), "qemu.qcow2"), "qcow2", c.qemu...)
			a, b := fileSize(t, ours), fileSize(t, theirs)
			t.Logf("ours %d bytes, qemu-img %d bytes (%+.2f%%)", a, b, 100*(float64(a)/float64(b)-1))
			if float64(a) > float64(b)*(1+c.slack) {
				t.Fatalf("ours is %d bytes, more than %.0f%% over qemu-img's %d", a, 100*c.slack, b)
			}
		})
	}
}

// TestDeterministic: the same input and options give the same bytes,
// whatever the number of workers.
func TestDeterministic(t *testing.T) {
	testkit.Need(t, "qemu-img")
	dir := t.TempDir()
	disk := testkit.MakeDisk(t, dir, testkit.DiskOptions{SizeMiB: 16, Tail: true, Seed: 3})
	for _, comp := range []string{"", qcow2.CompressZlib, qcow2.CompressZstd} {
		t.Run("compression="+comp, func(t *testing.T) {
			if raceEnabled && comp == qcow2.CompressZlib {
				t.Skip("race: zstd covers the parallel compression path")
			}
			o := qcow2.Options{Compression: comp}
			a := encode(t, disk, filepath.Join(t.TempDir(), "a.qcow2"), o, stream.Options{Workers: 1})
			b := encode(t, disk, filepath.Join(t.TempDir(), "b.qcow2"), o, stream.Options{Workers: 8})
			c := encode(t, disk, filepath.Join(t.TempDir(), "c.qcow2"), o, stream.Options{Workers: 8, BlockSize: 64 << 10})
			sameBytes(t, a, b)
			sameBytes(t, a, c)
		})
	}
}

// TestZeroAndRandom: an all-zero disk and a fully random disk.
func TestZeroAndRandom(t *testing.T) {
	testkit.Need(t, "qemu-img")
	dir := t.TempDir()
	zero := writeFile(t, filepath.Join(dir, "zero.raw"), 16<<20+512, nil)
	randomSize := int64(8 << 20)
	if raceEnabled {
		randomSize = 4 << 20
	}
	random := writeFile(t, filepath.Join(dir, "random.raw"), randomSize+4096+7, randomFill(1))
	for _, c := range []struct {
		name  string
		src   string
		o     qcow2.Options
		qemu  []string
		slack float64
	}{
		{"zero", zero, qcow2.Options{}, nil, 0.01},
		{"zero-zlib", zero, qcow2.Options{Compression: qcow2.CompressZlib}, []string{"-c"}, 0.05},
		{"zero-512", zero, qcow2.Options{ClusterSize: 512}, []string{"-o", "cluster_size=512"}, 0.01},
		{"random", random, qcow2.Options{}, nil, 0.01},
		{"random-zstd", random, qcow2.Options{Compression: qcow2.CompressZstd}, []string{"-c", "-o", "compression_type=zstd"}, 0.05},
		{"random-zlib-2M", random, qcow2.Options{Compression: qcow2.CompressZlib, ClusterSize: 2 << 20}, []string{"-c", "-o", "cluster_size=2M"}, 0.05},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := encode(t, c.src, filepath.Join(t.TempDir(), "out.qcow2"), c.o, stream.Options{})
			verify(t, c.src, out, "", true, false, false)
			theirs := testkit.Convert(t, c.src, filepath.Join(t.TempDir(), "qemu.qcow2"), "qcow2", c.qemu...)
			a, b := fileSize(t, out), fileSize(t, theirs)
			t.Logf("ours %d bytes, qemu-img %d bytes", a, b)
			if float64(a) > (1+c.slack)*float64(b) {
				t.Errorf("ours %d bytes, qemu-img %d", a, b)
			}
		})
	}
}

// TestSparse100G: a 100 GiB virtual disk with a few MiB written here and
// there, compared with qemu-img compare only.
func TestSparse100G(t *testing.T) {
	testkit.Need(t, "qemu-img")
	dir := t.TempDir()
	src := filepath.Join(dir, "big.raw")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	const size = 100 << 30
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i, off := range []int64{0, 3<<30 + 12345, 40 << 30, 99<<30 + 7<<20, size - 1<<20} {
		randomFill(uint64(i))(buf, off)
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	for _, o := range []qcow2.Options{{}, {Compression: qcow2.CompressZstd, Compat: qcow2.Compat11}} {
		t.Run(fmt.Sprintf("compression=%q", o.Compression), func(t *testing.T) {
			out := encode(t, src, filepath.Join(t.TempDir(), "big.qcow2"), o, stream.Options{})
			verify(t, src, out, "", false, false, false)
			if n := fileSize(t, out); n > 16<<20 {
				t.Errorf("%d bytes for 6 MiB of data", n)
			}
		})
	}
}

// TestStdoutRefused: QCOW2 cannot go to a pipe.
func TestStdoutRefused(t *testing.T) {
	_, err := qcow2.NewEncoder(writer.NewStream(os.Stdout), qcow2.Options{VirtualSize: 1 << 20})
	if !errors.Is(err, writer.ErrHeadOnStream) {
		t.Fatalf("NewEncoder on a stream: %v", err)
	}
}

func TestOptions(t *testing.T) {
	bad := []qcow2.Options{
		{Compat: "1.0", VirtualSize: 1},
		{ClusterSize: 256, VirtualSize: 1},
		{ClusterSize: 4 << 20, VirtualSize: 1},
		{ClusterSize: 3000, VirtualSize: 1},
		{Compression: "lz4", VirtualSize: 1},
		{Compat: qcow2.Compat010, Compression: qcow2.CompressZstd, VirtualSize: 1},
		{VirtualSize: -1},
		{ClusterSize: 512, VirtualSize: 200 << 30}, // L1 over qemu's 32 MiB
	}
	for _, o := range bad {
		if _, err := o.Validate(); !errors.Is(err, qcow2.ErrOptions) {
			t.Errorf("%+v: %v", o, err)
		}
		if _, err := qcow2.NewEncoder(nil, o); err == nil {
			t.Errorf("NewEncoder(%+v) accepted", o)
		}
	}
	o, err := qcow2.Options{VirtualSize: 1}.Validate()
	if err != nil || o.Compat != qcow2.Compat11 || o.ClusterSize != 64<<10 {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
	// The maximum size bounds a fully random disk, and is close to it.
	for _, vs := range []int64{0, 1, 100 << 30, 500 << 30} {
		n, err := qcow2.MaxSize(qcow2.Options{VirtualSize: vs})
		if err != nil || n < vs || n > vs+vs/1000+4<<20 {
			t.Errorf("MaxSize(%d) = %d, %v", vs, n, err)
		}
	}
	if qcow2.BlockSize(0, 2<<20) != 2<<20 || qcow2.BlockSize(1<<20, 0) != 1<<20 || qcow2.BlockSize(4<<20, 512) != 4<<20 {
		t.Error("BlockSize")
	}
}

// TestBlockSmallerThanCluster: the stream's blocks must be whole clusters.
func TestBlockSmallerThanCluster(t *testing.T) {
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "r.raw"), 1<<20, randomFill(2))
	im, err := reader.Open(src, reader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	tg, err := writer.CreateFile(filepath.Join(dir, "o.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Abort(context.Background())
	enc, err := qcow2.NewEncoder(tg, qcow2.Options{VirtualSize: im.Size(), ClusterSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Run(context.Background(), im, enc, stream.Options{BlockSize: 64 << 10})
	if err == nil || !strings.Contains(err.Error(), "block size") {
		t.Fatalf("want an error about the block size, got %v", err)
	}
}

// TestRandomLayouts is a differential test: disks of random sizes made of
// random runs of zeros, text, random bytes and lone non-zero bytes, written
// with random options and block sizes, must pass qemu-img check and read
// back (through qemu-img and through our reader) as the source.
func TestRandomLayouts(t *testing.T) {
	testkit.Need(t, "qemu-img")
	n := 8
	if testing.Short() || raceEnabled {
		n = 3
	}
	clusterSizes := []int{512, 1024, 4096, 64 << 10, 256 << 10, 2 << 20}
	comps := []string{qcow2.CompressNone, qcow2.CompressZlib, qcow2.CompressZstd}
	for seed := range uint64(n) {
		rng := rand.New(rand.NewPCG(seed, 99))
		o := qcow2.Options{
			ClusterSize: clusterSizes[rng.IntN(len(clusterSizes))],
			Compression: comps[rng.IntN(len(comps))],
		}
		if o.Compression != qcow2.CompressZstd && rng.IntN(2) == 0 {
			o.Compat = qcow2.Compat010
		}
		size := 1 + rng.Int64N(6<<20)
		bs := qcow2.BlockSize(4096<<rng.IntN(6), o.ClusterSize)
		t.Run(fmt.Sprintf("seed=%d/%+v/size=%d/block=%d", seed, o, size, bs), func(t *testing.T) {
			dir := t.TempDir()
			src := writeFile(t, filepath.Join(dir, "src.raw"), size, nil)
			f, err := os.OpenFile(src, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			for off := int64(0); off < size; {
				run := min(size-off, 1+rng.Int64N(512<<10))
				b := make([]byte, run)
				switch rng.IntN(4) {
				case 0: // zeros: leave the hole
				case 1:
					for i := range b {
						b[i] = "the quick brown fox "[i%20]
					}
				case 2:
					randomFill(rng.Uint64())(b, 0)
				case 3:
					b[rng.Int64N(run)] = 1
				}
				if _, err := f.WriteAt(b, off); err != nil {
					t.Fatal(err)
				}
				off += run
			}
			f.Close()
			out := encode(t, src, filepath.Join(dir, "out.qcow2"), o, stream.Options{BlockSize: bs, Workers: 1 + rng.IntN(4)})
			verify(t, src, out, "", true, false, false)
		})
	}
}

// TestChoose: blocks compressed or stored plain by a per-block choice (as
// --compress auto makes it) give a valid image with the source's bytes,
// the same bytes for the same choices whatever the workers, and the
// counts of what was compressed.
func TestChoose(t *testing.T) {
	testkit.Need(t, "qemu-img")
	dir := t.TempDir()
	disk := testkit.MakeDisk(t, dir, testkit.DiskOptions{SizeMiB: 16, Tail: true, Seed: 5})
	const bs = 256 << 10
	for _, c := range []struct {
		name   string
		choose func(off int64) bool
	}{
		{"alternate", func(off int64) bool { return off/bs%2 == 0 }},
		{"runs", func(off int64) bool { return off/bs%7 < 3 }},
		{"none", func(int64) bool { return false }},
		{"all", func(int64) bool { return true }},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := qcow2.Options{Compression: qcow2.CompressZlib, Choose: c.choose}
			a := encode(t, disk, filepath.Join(t.TempDir(), "a.qcow2"), o, stream.Options{Workers: 1, BlockSize: bs})
			b := encode(t, disk, filepath.Join(t.TempDir(), "b.qcow2"), o, stream.Options{Workers: 4, BlockSize: bs})
			sameBytes(t, a, b)
			verify(t, disk, a, "", true, false, false)
		})
	}
	// The counts: every data cluster is either plain or compressed, and
	// none is compressed when nothing is chosen.
	for _, choose := range []func(int64) bool{func(int64) bool { return false }, func(off int64) bool { return off/bs%2 == 0 }} {
		im, err := reader.Open(disk, reader.Options{})
		if err != nil {
			t.Fatal(err)
		}
		tg, err := writer.CreateFile(filepath.Join(t.TempDir(), "c.qcow2"))
		if err != nil {
			t.Fatal(err)
		}
		enc, err := qcow2.NewEncoder(tg, qcow2.Options{Compression: qcow2.CompressZlib, Choose: choose, VirtualSize: im.Size()})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if _, err := stream.Run(ctx, im, enc, stream.Options{BlockSize: bs}); err != nil {
			t.Fatal(err)
		}
		if err := enc.Finish(ctx); err != nil {
			t.Fatal(err)
		}
		im.Close()
		st := enc.Compression()
		if st.Plain+st.Compressed == 0 || enc.Next() != im.Size() {
			t.Fatalf("stats %+v, next %d", st, enc.Next())
		}
		if choose(bs) != choose(0) && (st.Compressed == 0 || st.Plain == 0 || st.Ratio() <= 1) || choose(0) == false && choose(bs) == false && st.Compressed != 0 {
			t.Errorf("stats %+v (ratio %.2f)", st, st.Ratio())
		}
	}
}
