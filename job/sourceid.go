package job

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"vmimport/reader/image"
	"vmimport/reader/remote"
	"vmimport/upload"
)

// atOpen is the source as the job found it when it opened it: what the
// batch records as the source a disk was made from, and what must still
// be there when the pass ends.
type atOpen struct {
	id    upload.SourceID
	files []fileAt // every local file the image reads
	op    *remote.Opener
}

// fileAt is one local file of the image at open: its size and time.
type fileAt struct {
	f     *os.File
	size  int64
	mtime time.Time
}

// identifyAtOpen takes the source's identity from what was opened: the
// open files themselves (not their names again, which may name another
// file by now), or the version of a remote file its reads are pinned to,
// with the digest of its first MiB when the server gives neither ETag nor
// Last-Modified (so that a rerun can tell it unchanged).
func (j *run) identifyAtOpen(im image.Image, op *remote.Opener) error {
	s := &j.s
	a := &atOpen{op: op}
	switch {
	case j.vs != nil:
		// The disk's files, each pinned to its version; their digest is
		// the ETag (job/vsphere.go).
		a.id = sourceID(j.vs.files.Identity())
	case s.IsRemote():
		pinned, _ := op.Pinned(s.Source)
		a.id = sourceID(pinned)
		if pinned.ETag == "" && pinned.LastModified.IsZero() {
			h, err := headDigest(op, s.Source)
			if err != nil {
				return err
			}
			a.id.Head = h
		}
	default:
		files := image.Files(im)
		for _, f := range files {
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			a.files = append(a.files, fileAt{f: f, size: sizeOf(f, fi), mtime: fi.ModTime()})
		}
		if len(files) == 0 {
			// Not read from an open file of ours: by its name.
			id, err := upload.IdentifySource(s.Source)
			if err != nil {
				return err
			}
			a.id = id
		} else {
			abs, err := filepath.Abs(s.Source)
			if err != nil {
				return err
			}
			head := sha256.New()
			if _, err := io.Copy(head, io.NewSectionReader(files[0], 0, 1<<20)); err != nil {
				return err
			}
			a.id = upload.SourceID{Path: abs, Size: a.files[0].size, MTime: a.files[0].mtime.UTC(), Head: hex.EncodeToString(head.Sum(nil))}
		}
	}
	j.opened = a
	id := a.id
	j.res.SourceID = &id
	return nil
}

// sizeOf is a file's size; a block device's is where Seek(0, End) lands.
func sizeOf(f *os.File, fi os.FileInfo) int64 {
	if fi.Mode().IsRegular() {
		return fi.Size()
	}
	if n, err := f.Seek(0, io.SeekEnd); err == nil {
		return n
	}
	return fi.Size()
}

// sourceUnchanged checks, once the pass has read everything, that the
// source is still as it was at open: a file written to while it was read
// (its size or time changed) would leave an output of neither version,
// which a rerun would then skip as done. A remote file's reads are pinned
// to its version already; without ETag or Last-Modified its size and first
// MiB are checked again.
func (j *run) sourceUnchanged() error {
	a := j.opened
	if a == nil {
		return nil
	}
	for _, fa := range a.files {
		fi, err := fa.f.Stat()
		if err != nil {
			return err
		}
		if size := sizeOf(fa.f, fi); size != fa.size || !fi.ModTime().Equal(fa.mtime) {
			return fmt.Errorf("%s changed while it was read (size %d, now %d; modified %s, now %s): the output would hold neither version; nothing was kept: run again once nothing writes it",
				fa.f.Name(), fa.size, size, fa.mtime.Format(time.RFC3339Nano), fi.ModTime().Format(time.RFC3339Nano))
		}
	}
	if j.s.IsRemote() && a.id.Head != "" {
		now, err := a.op.Identify(j.s.Source)
		if err != nil {
			return err
		}
		h, err := headDigest(a.op, j.s.Source)
		if err != nil {
			return err
		}
		if now.Size != a.id.Size || h != a.id.Head {
			return fmt.Errorf("%s: %w (its size or first MiB differ from when it was opened): nothing was kept: run again", j.s.shown(), remote.ErrChanged)
		}
	}
	return nil
}
