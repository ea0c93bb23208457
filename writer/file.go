package writer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// File is a Target that writes a local file with no name in the folder of
// the output (Linux's O_TMPFILE), or elsewhere under a temporary name
// there, leaves holes for zero runs, and on Commit patches the head, fsyncs
// and gives the file its final name. A run killed with SIGKILL leaves
// nothing behind on Linux; elsewhere a .NAME.*.partial file.
type File struct {
	final   string
	f       *os.File
	anon    bool  // f has no name until Commit
	pos     int64 // logical end of the output
	written int64 // bytes really written (not holes)
	seekTo  int64 // pending position after skips, -1 if none
	done    bool
	// flushed is where the writeback started so far ends: every
	// writebackStep bytes the kernel is asked to start writing, so the disk
	// works during the pass and the fsync at Commit has little left.
	flushed int64
}

// writebackStep is how much output may wait in the page cache before its
// writeback is started.
const writebackStep = 64 << 20

var _ Target = (*File)(nil)

// CreateFile starts writing the file at path. Nothing appears at path
// until Commit.
func CreateFile(path string) (*File, error) {
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: is a %s, not a regular file: refusing to replace it", path, fi.Mode().Type())
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := createAnon(dir)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	if f != nil {
		t := &File{final: path, f: f, anon: true, seekTo: -1}
		if err := f.Chmod(0o644); err != nil { // as a named file gets, umask aside
			t.remove()
			return nil, fmt.Errorf("creating %s: %w", path, err)
		}
		return t, nil
	}
	f, err = os.CreateTemp(dir, "."+base+".*.partial")
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		t := &File{f: f}
		t.remove()
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	markSparse(f)
	return &File{final: path, f: f, seekTo: -1}, nil
}

// remove closes the file and removes its temporary name, if it has one.
func (t *File) remove() {
	t.f.Close()
	if !t.anon {
		os.Remove(t.f.Name())
	}
}

// Write appends p.
func (t *File) Write(p []byte) (int, error) {
	if t.seekTo >= 0 {
		if _, err := t.f.Seek(t.seekTo, io.SeekStart); err != nil {
			return 0, err
		}
		t.seekTo = -1
	}
	n, err := t.f.Write(p)
	t.pos += int64(n)
	t.written += int64(n)
	if err != nil {
		return n, fmt.Errorf("writing %s: %w", t.final, unwrapPath(err))
	}
	if t.pos-t.flushed >= writebackStep {
		// Start (not wait for) writeback of what was written since the
		// last time; holes cost nothing. Unsupported: fsync does it all.
		startWriteback(t.f, t.flushed, t.pos-t.flushed)
		t.flushed = t.pos
	}
	return n, nil
}

// Skip leaves a hole of n bytes.
func (t *File) Skip(n int64) error {
	if n < 0 {
		return errors.New("writer: negative skip")
	}
	t.pos += n
	t.seekTo = t.pos
	return nil
}

// Written is the number of bytes really written, holes excluded.
func (t *File) Written() int64 { return t.written }

// Commit patches the head, sets the length, syncs and renames.
func (t *File) Commit(_ context.Context, head []byte) error {
	if t.done {
		return errors.New("writer: commit after finish")
	}
	t.done = true
	fail := func(err error) error {
		t.remove()
		return fmt.Errorf("finishing %s: %w", t.final, unwrapPath(err))
	}
	if len(head) > 0 {
		if int64(len(head)) > t.pos {
			return fail(fmt.Errorf("head of %d bytes is longer than the output (%d bytes)", len(head), t.pos))
		}
		if _, err := t.f.WriteAt(head, 0); err != nil {
			return fail(err)
		}
	}
	// A trailing zero run is a hole: setting the length makes it.
	if err := t.f.Truncate(t.pos); err != nil {
		return fail(err)
	}
	if err := t.f.Sync(); err != nil {
		return fail(err)
	}
	tmp := t.f.Name()
	if t.anon {
		// The file gets a name only now, fully written and synced; a kill
		// between link and rename leaves it under this name.
		dir, base := filepath.Split(t.final)
		tmp = filepath.Join(dir, fmt.Sprintf(".%s.%d.partial", base, os.Getpid()))
		os.Remove(tmp)
		if err := linkAnon(t.f, tmp); err != nil {
			return fail(err)
		}
		t.anon = false
	}
	if err := t.f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("finishing %s: %w", t.final, unwrapPath(err))
	}
	if err := os.Rename(tmp, t.final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("finishing %s: %w", t.final, unwrapPath(err))
	}
	if d, err := os.Open(filepath.Dir(t.final)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Abort drops the file: an anonymous one is freed by the kernel, a named
// temporary one removed.
func (t *File) Abort(context.Context) error {
	if t.done {
		return nil
	}
	t.done = true
	t.remove()
	return nil
}

// unwrapPath drops the temporary file's name from an *os.PathError: the
// caller names the output instead ("writing out.raw: no space left on
// device", not the hidden name).
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Stream is a Target over a plain writer such as stdout: zero runs are
// written as zeros and the head cannot be patched, so formats whose header
// comes last must not be sent to it.
type Stream struct {
	w    io.Writer
	zero []byte
	n    int64
}

var _ Target = (*Stream)(nil)

// NewStream returns a Target writing to w.
func NewStream(w io.Writer) *Stream { return &Stream{w: w, zero: make([]byte, 1<<20)} }

// Write passes p on.
func (s *Stream) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.n += int64(n)
	return n, err
}

// Skip writes n zeros.
func (s *Stream) Skip(n int64) error {
	for n > 0 {
		k := min(n, int64(len(s.zero)))
		if _, err := s.Write(s.zero[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// Written is the number of bytes sent.
func (s *Stream) Written() int64 { return s.n }

// ErrHeadOnStream is returned when a head must be patched into a stream
// that has already gone out.
var ErrHeadOnStream = errors.New("writer: this output format needs its header patched at the end, which a pipe cannot take: write to a file or a bucket")

// Commit flushes; a head cannot be patched into a stream.
func (s *Stream) Commit(_ context.Context, head []byte) error {
	if len(head) > 0 {
		return ErrHeadOnStream
	}
	if f, ok := s.w.(interface{ Flush() error }); ok {
		return f.Flush()
	}
	return nil
}

// Abort does nothing: what was sent is gone.
func (s *Stream) Abort(context.Context) error { return nil }
