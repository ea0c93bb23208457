package writer

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"vmimport/stream"
)

// record is a Target that keeps what it was told.
type record struct {
	out     bytes.Buffer
	written int64
	skipped int64
	calls   []string
}

func (r *record) Write(p []byte) (int, error) {
	r.written += int64(len(p))
	r.calls = append(r.calls, "w")
	return r.out.Write(p)
}

func (r *record) Skip(n int64) error {
	r.skipped += n
	r.calls = append(r.calls, "s")
	r.out.Write(make([]byte, n))
	return nil
}
func (r *record) Commit(context.Context, []byte) error { return nil }
func (r *record) Abort(context.Context) error          { return nil }

func TestRawSkipsZeroPages(t *testing.T) {
	data := make([]byte, 64<<10+100) // a short last page
	copy(data[0:], "first page")
	copy(data[3*ZeroPage+7:], "fourth page")
	copy(data[4*ZeroPage:], "fifth page")
	data[len(data)-1] = 1
	cases := []struct {
		name             string
		block            stream.Block
		written, skipped int64
		calls            string
	}{
		{"zero run", stream.Block{Off: 0, Len: 1 << 20, Zero: true}, 0, 1 << 20, "s"},
		{"data with zero pages", stream.Block{Off: 0, Len: int64(len(data)), Data: data}, 3*ZeroPage + 100, int64(len(data)) - 3*ZeroPage - 100, "wswsw"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var rec record
			enc := NewRaw(&rec)
			b := c.block
			if !b.Zero {
				if err := enc.Transform()(&b); err != nil {
					t.Fatal(err)
				}
			}
			if err := enc.WriteBlock(context.Background(), &b); err != nil {
				t.Fatal(err)
			}
			calls := ""
			for _, x := range rec.calls {
				calls += x
			}
			if rec.written != c.written || rec.skipped != c.skipped || calls != c.calls {
				t.Errorf("wrote %d, skipped %d, calls %s; want %d, %d, %s", rec.written, rec.skipped, calls, c.written, c.skipped, c.calls)
			}
			if !b.Zero && !bytes.Equal(rec.out.Bytes(), data) {
				t.Error("the output differs from the block")
			}
			if enc.Written() != b.Len {
				t.Errorf("Written() = %d, want %d", enc.Written(), b.Len)
			}
		})
	}
}

func TestFileTargetHolesAndRename(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "out.raw")
	f, err := CreateFile(final)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(final); err == nil {
		t.Fatal("the final name exists before Commit")
	}
	f.Write([]byte("head"))
	f.Skip(10 << 20)
	f.Write([]byte("tail"))
	f.Skip(5 << 20)
	if err := f.Commit(context.Background(), []byte("HEAD")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(final)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte("HEAD"), make([]byte, 10<<20)...), "tail"...), make([]byte, 5<<20)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("file of %d bytes differs from what was written", len(got))
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".*.partial")); len(m) != 0 {
		t.Fatalf("temporary files left: %v", m)
	}
	g, _ := CreateFile(filepath.Join(dir, "aborted.raw"))
	g.Write([]byte("x"))
	g.Abort(context.Background())
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 1 {
		t.Fatalf("after Abort the folder holds %v", m)
	}
}

// TestFileHasNoNameUntilCommit: while the output is written, nothing of it
// is in the folder (a SIGKILL then leaves nothing); Commit names it, Abort
// leaves nothing.
func TestFileHasNoNameUntilCommit(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.raw")
	for _, commit := range []bool{false, true} {
		f, err := CreateFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(bytes.Repeat([]byte{7}, 1<<20)); err != nil {
			t.Fatal(err)
		}
		if entries, _ := os.ReadDir(dir); runtime.GOOS == "linux" && len(entries) != 0 {
			t.Errorf("while writing, the folder holds %v", entries)
		}
		if commit {
			if err := f.Commit(context.Background(), []byte{1, 2}); err != nil {
				t.Fatal(err)
			}
		} else if err := f.Abort(context.Background()); err != nil {
			t.Fatal(err)
		}
		entries, _ := os.ReadDir(dir)
		switch {
		case !commit && len(entries) != 0:
			t.Errorf("after Abort: %v", entries)
		case commit && (len(entries) != 1 || entries[0].Name() != "out.raw"):
			t.Errorf("after Commit: %v", entries)
		}
	}
	b, err := os.ReadFile(out)
	if err != nil || len(b) != 1<<20 || b[0] != 1 || b[1] != 2 || b[2] != 7 {
		t.Fatalf("committed output: %d bytes, %v", len(b), err)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", fi.Mode())
	}
}
