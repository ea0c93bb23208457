package upload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"vmimport/internal/kv"
)

// TestStateStores: the file and the key-value store behave alike: none
// recorded is os.ErrNotExist, a save is read back, a removal forgets it.
func TestStateStores(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, s := range []StateStore{
		FileState(filepath.Join(dir, "sub", "upload.json")),
		KVState{Store: kv.Dir(filepath.Join(dir, "kv")), Key: "upload-0123", Where: "test store"},
	} {
		if _, err := s.Load(ctx); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: Load of nothing: %v", s.Name(), err)
		}
		st := &state{Version: stateVersion, Bucket: "b", Key: "k", UploadID: "u1"}
		if err := st.save(ctx, s); err != nil {
			t.Fatal(err)
		}
		got, err := loadState(ctx, s)
		if err != nil || got.UploadID != "u1" {
			t.Errorf("%s: %+v %v", s.Name(), got, err)
		}
		if err := s.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(ctx); err != nil {
			t.Errorf("%s: removing twice: %v", s.Name(), err)
		}
		if _, err := loadState(ctx, s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: after Remove: %v", s.Name(), err)
		}
	}
}
