package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/job"
)

// TestExtendedL2ReadsOnlyData: a QCOW2 with extended L2 entries converts to
// qemu-img's bytes reading no more than a plain QCOW2 of the same data
// does. The allocation map used to stop at each cluster's status, which
// for extended-L2 images is always "allocated", so every byte of the disk
// was read, one 2 KiB subcluster at a time.
func TestExtendedL2ReadsOnlyData(t *testing.T) {
	src := disk(t)
	want := testkit.FileSHA256(t, src)
	for _, cluster := range []string{"64k", "2M"} {
		t.Run(cluster, func(t *testing.T) {
			dir := t.TempDir()
			read := map[string]int64{}
			for _, kind := range []string{"plain", "extended-l2"} {
				opts := "cluster_size=" + cluster
				if kind == "extended-l2" {
					opts += ",extended_l2=on"
				}
				q := testkit.Convert(t, src, filepath.Join(dir, kind+".qcow2"), "qcow2", "-o", opts)
				out := filepath.Join(dir, kind+".raw")
				var sum job.Result
				if err := json.Unmarshal([]byte(mustConvert(t, q, "-O", "raw", "-o", out, "--progress", "never", "--json")), &sum); err != nil {
					t.Fatal(err)
				}
				if got := testkit.FileSHA256(t, out); got != want {
					t.Fatalf("%s: our RAW differs from qemu-img's", kind)
				}
				read[kind] = sum.Stats.Read
			}
			if read["extended-l2"] > read["plain"] {
				t.Errorf("read %d bytes of the extended-L2 image, %d of the plain one: want no more", read["extended-l2"], read["plain"])
			}
			t.Logf("bytes read: %v of %d", read, int64(48<<20))
		})
	}
}
