package qcow2_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/readertest"
)

// TestExtendedL2 reads extended-L2 images whose clusters qemu-io wrote a
// subcluster at a time, against qemu-img: data subclusters (some written
// in part, which qemu fills from the backing file), zero subclusters in
// clusters with and without a host cluster, a zero subcluster over data, a
// compressed cluster, a discarded run, a write across two clusters, and a
// last cluster past the end of the backing file. Each image is read with
// its backing file (unallocated subclusters fall through), without it
// (they read as zeros), and recompressed whole; the allocation map must
// say zero exactly where qemu-img map does.
func TestExtendedL2(t *testing.T) {
	testkit.Need(t, "qemu-io")
	for _, cluster := range []int64{64 << 10, 2 << 20} {
		t.Run(fmt.Sprintf("cluster-%dk", cluster>>10), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			sub := cluster / 32
			base := filepath.Join(dir, "base.qcow2")
			testkit.QemuImg(t, "create", "-q", "-f", "qcow2", base, fmt.Sprint(4*cluster))
			testkit.Run(t, "qemu-io", "-c", fmt.Sprintf("write -P 0x5a 0 %d", 4*cluster), base)
			top := filepath.Join(dir, "top.qcow2")
			testkit.QemuImg(t, "create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("extended_l2=on,cluster_size=%d", cluster),
				"-b", "base.qcow2", "-F", "qcow2", top, fmt.Sprint(6*cluster))
			var cmds []string
			for _, c := range []string{
				fmt.Sprintf("write -P 0xab %d %d", sub, sub),                   // one subcluster of cluster 0
				fmt.Sprintf("write -P 0xac %d %d", 3*sub+sub/2, 5*sub),         // partial subclusters: the rest from base
				fmt.Sprintf("write -P 0xad %d %d", cluster-2*sub, 4*sub),       // across clusters 0 and 1
				fmt.Sprintf("write -z %d %d", cluster+4*sub, 4*sub),            // zero subclusters
				fmt.Sprintf("write -P 0xae %d %d", cluster+10*sub, 3*sub),      // data ...
				fmt.Sprintf("write -z %d %d", cluster+11*sub, sub),             // ... with a zero subcluster over it
				fmt.Sprintf("write -z %d %d", 2*cluster+7*sub, 2*sub),          // zero subclusters, no host cluster
				fmt.Sprintf("write -c -P 0xcd %d %d", 3*cluster, cluster),      // a compressed cluster
				fmt.Sprintf("discard %d %d", 20*sub, 4*sub),                    // discarded subclusters
				fmt.Sprintf("write -P 0xef %d %d", 4*cluster+5*sub, sub),       // past the end of base
				fmt.Sprintf("write -z %d %d", 4*cluster+9*sub, 2*sub),          // zeros past the end of base
				fmt.Sprintf("write -P 0x77 %d %d", 5*cluster+31*sub, sub),      // the last subcluster
				fmt.Sprintf("write -P 0x78 %d %d", 5*cluster+16*sub+512, 1024), // inside one subcluster
			} {
				cmds = append(cmds, "-c", c)
			}
			testkit.Run(t, "qemu-io", append(cmds, top)...)

			alone := filepath.Join(dir, "alone.qcow2")
			testkit.Run(t, "cp", top, alone)
			testkit.QemuImg(t, "rebase", "-q", "-u", "-f", "qcow2", "-b", "", alone)
			packed := testkit.Convert(t, top, filepath.Join(dir, "packed.qcow2"), "qcow2",
				"-c", "-o", fmt.Sprintf("extended_l2=on,cluster_size=%d", cluster))
			for _, c := range []struct {
				name, path string
				opts       reader.Options
			}{
				{"backing", top, reader.Options{AllowBacking: true}},
				{"no-backing", alone, reader.Options{}},
				{"compressed", packed, reader.Options{}},
			} {
				t.Run(c.name, func(t *testing.T) {
					im, err := reader.Open(c.path, c.opts)
					if err != nil {
						t.Fatal(err)
					}
					defer im.Close()
					readertest.CheckFast(t, im, testkit.Convert(t, c.path, filepath.Join(t.TempDir(), "want.raw"), "raw"))
					checkMap(t, im, c.path)
				})
			}
		})
	}
}

// checkMap holds our allocation map to qemu-img map's: a run is zero in
// ours exactly where qemu-img says it reads as zeros.
func checkMap(t *testing.T, im image.Image, path string) {
	t.Helper()
	var runs []struct {
		Start, Length int64
		Zero          bool
	}
	if err := json.Unmarshal([]byte(testkit.QemuImg(t, "map", "--output=json", path)), &runs); err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		for off := r.Start; off < r.Start+r.Length; {
			e, err := im.Extent(off, r.Start+r.Length-off)
			if err != nil {
				t.Fatal(err)
			}
			if e.Zero != r.Zero {
				t.Fatalf("Extent(%d) = %+v; qemu-img map says [%d, +%d) zero=%v", off, e, r.Start, r.Length, r.Zero)
			}
			off += e.Length
		}
	}
}
