package kv

import (
	"context"
	"errors"
	"os"
	"testing"
)

func TestDir(t *testing.T) {
	ctx := context.Background()
	d := Dir(t.TempDir() + "/state")
	if _, err := d.Get(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing key: %v", err)
	}
	if err := d.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := d.Put(ctx, "a", []byte("22")); err != nil {
		t.Fatal(err)
	}
	if b, err := d.Get(ctx, "a"); err != nil || string(b) != "22" {
		t.Fatalf("Get: %q %v", b, err)
	}
	if err := d.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "a"); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}
	entries, _ := os.ReadDir(string(d))
	if len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
	for _, bad := range []string{"", "a/b", "../x", ".hidden", "sp ace"} {
		if err := d.Put(ctx, bad, nil); err == nil {
			t.Errorf("key %q accepted", bad)
		}
	}
}
