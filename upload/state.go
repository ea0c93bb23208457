package upload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// SourceID identifies the source image, so that a resumed upload refuses a
// source that changed since the upload started (the output is deterministic
// only for the same input). A file is its path, size, modification time
// and the digest of its first MiB; a remote file its URL (without
// credentials or query), size, ETag and Last-Modified (in MTime).
type SourceID struct {
	Path  string    `json:"path,omitempty"`
	URL   string    `json:"url,omitempty"`
	Size  int64     `json:"size"`
	MTime time.Time `json:"mtime"`
	ETag  string    `json:"etag,omitempty"`
	// Head is the SHA-256 of the first MiB of the file (of a remote file,
	// only when the server gives neither ETag nor Last-Modified).
	Head string `json:"head_sha256,omitempty"`
}

// Name is the file's path or URL, for messages.
func (id SourceID) Name() string {
	if id.URL != "" {
		return id.URL
	}
	return id.Path
}

// Same reports how now differs from id, the recorded source; nil when it
// is the same.
func (id SourceID) Same(now SourceID) error { return sameSource(id, now) }

// IdentifySource describes the file at path.
func IdentifySource(path string) (SourceID, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return SourceID{}, err
	}
	f, err := os.Open(abs)
	if err != nil {
		return SourceID{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return SourceID{}, err
	}
	size := fi.Size()
	if !fi.Mode().IsRegular() {
		// A block device: its size is where Seek(0, End) lands.
		if n, err := f.Seek(0, io.SeekEnd); err == nil {
			size = n
		}
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<20)); err != nil {
		return SourceID{}, err
	}
	return SourceID{Path: abs, Size: size, MTime: fi.ModTime().UTC(), Head: hex.EncodeToString(h.Sum(nil))}, nil
}

// state is what the state file records of an upload in progress.
type state struct {
	Version  int    `json:"version"`
	Endpoint string `json:"endpoint"`
	Bucket   string `json:"bucket"`
	Key      string `json:"key"`
	UploadID string `json:"upload_id"`
	PartSize int64  `json:"part_size"`
	// FirstPart is the size of part 1 (0 in the records of earlier
	// versions: PartSize).
	FirstPart int64     `json:"first_part,omitempty"`
	SizeHint  int64     `json:"size_hint"`
	Output    string    `json:"output"` // what shapes the bytes: format and options
	Source    SourceID  `json:"source"`
	ZeroKey   string    `json:"zero_key"`
	Started   time.Time `json:"started"`
	Resumable bool      `json:"resumable"`
	// Extra is the caller's record (Target.SetRecord): what makes a resumed
	// run produce the same bytes.
	Extra json.RawMessage `json:"extra,omitempty"`
	// Completing is written just before CompleteMultipartUpload: a run
	// stopped between Complete and its cleanup leaves it for a resume.
	Completing *completing `json:"completing,omitempty"`
}

// completing is what an upload about to be completed will have made.
type completing struct {
	Size int64 `json:"size"`
	// ETag is the ETag S3 gives an object of these parts.
	ETag string `json:"etag"`
	// Parts are the MD5s of the parts, in order, hex.
	Parts []string `json:"parts"`
}

const stateVersion = 1

// firstPart is the size of part 1 of the recorded upload.
func (s *state) firstPart() int64 {
	if s.FirstPart > 0 {
		return s.FirstPart
	}
	return s.PartSize
}

// DefaultStateFile is where the state of an upload to bucket/key at
// endpoint is kept unless --state-file says otherwise: under the user's
// cache folder, one file per destination, so that re-running the same
// command line with --resume finds it.
func DefaultStateFile(endpoint, bucket, key string) (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache folder for the upload state (%v): give --state-file", err)
	}
	sum := sha256.Sum256([]byte(endpoint + "\x00" + bucket + "\x00" + key))
	return filepath.Join(dir, "vmimport", "uploads", hex.EncodeToString(sum[:12])+".json"), nil
}

func loadState(ctx context.Context, store StateStore) (*state, error) {
	b, err := store.Load(ctx)
	if err != nil {
		return nil, err
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("upload state %s: %w", store.Name(), err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("upload state %s: version %d, this convert writes %d", store.Name(), s.Version, stateVersion)
	}
	return &s, nil
}

// save records the state in store.
func (s *state) save(ctx context.Context, store StateStore) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return store.Save(ctx, append(b, '\n'))
}

// writeAtomic writes a file atomically: a new file, synced, renamed.
func writeAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".state-*.tmp")
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

func removeState(path string) error {
	if path == "" {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// sameSource explains how the source differs from the recorded one.
func sameSource(rec, now SourceID) error {
	switch {
	case rec.Path != now.Path || rec.URL != now.URL:
		return fmt.Errorf("the upload was started from %s, not %s", rec.Name(), now.Name())
	case rec.Size != now.Size:
		return fmt.Errorf("%s changed size since the upload started (%d, now %d bytes)", now.Name(), rec.Size, now.Size)
	case !rec.MTime.Equal(now.MTime):
		return fmt.Errorf("%s was modified since the upload started (%s, now %s)", now.Name(), rec.MTime.Format(time.RFC3339), now.MTime.Format(time.RFC3339))
	case rec.ETag != now.ETag:
		return fmt.Errorf("%s changed since the upload started (ETag %s, now %s)", now.Name(), rec.ETag, now.ETag)
	case rec.Head != now.Head:
		return fmt.Errorf("%s: its first MiB changed since the upload started", now.Name())
	}
	return nil
}
