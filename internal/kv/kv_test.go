package kv_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"vmimport/internal/kv"
	"vmimport/internal/kv/kvtest"
)

func TestDir(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.Store { return kv.Dir(filepath.Join(t.TempDir(), "state")) })
}

// A folder written before revisions reads as it was, at revision 1, and
// keeps nothing but its keys' files, the lock and the last revision.
func TestDirOldFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "disk-1.json"), []byte(`{"version":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	d := kv.Dir(dir)
	b, rev, err := d.Entry(ctx, "disk-1")
	if err != nil || string(b) != `{"version":1}` || rev != 1 {
		t.Fatalf("an old file: %q at %d, %v", b, rev, err)
	}
	if _, err := d.Swap(ctx, "disk-1", []byte("new"), kv.Cond{Rev: 1}); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "disk-1"); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{".lock", ".rev"}) {
		t.Errorf("left behind: %v", names)
	}
}
