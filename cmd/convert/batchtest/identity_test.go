package batchtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
	"vmimport/internal/webtest"
)

// TestBatchOneFileTwoSpellings: two records writing out/x.raw and
// link/x.raw (link -> out) write one file: refused before anything runs,
// as two records naming one output are; before, both passed (their
// absolute paths differ), both reported done, and the file held one disk.
func TestBatchOneFileTwoSpellings(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	a := randomDisk(t, filepath.Join(dir, "a.raw"), 4*mib, 0, 64<<10, mib)
	b := randomDisk(t, filepath.Join(dir, "b.raw"), 4*mib, 0, 64<<10, mib)
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	if err := os.Symlink(out, filepath.Join(dir, "link")); err != nil {
		t.Skip(err)
	}
	manifest := writeManifest(t, filepath.Join(dir, "disks.jsonl"), []string{
		jsonLine("source", a, "output", filepath.Join(out, "x.raw")),
		jsonLine("source", b, "output", filepath.Join(dir, "link", "x.raw")),
	})
	r := e.run("batch", manifest, "--state-dir", filepath.Join(dir, "state"))
	if r.code != 2 || !strings.Contains(r.stderr, "disks.jsonl:2: the output") || !strings.Contains(r.stderr, "is also the output of the disk on line 1") {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "x.raw")); err == nil {
		t.Error("a disk was converted")
	}
}

// TestBatchOutputIsAnotherSource: a record whose output is another
// record's source (by identity, here through a linked folder) would read
// the old or the new file depending on the order: refused, either way
// round.
func TestBatchOutputIsAnotherSource(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	a := randomDisk(t, filepath.Join(dir, "a.raw"), 4*mib, 0, 64<<10, mib)
	randomDisk(t, filepath.Join(dir, "b.raw"), 4*mib, 0, 64<<10, mib)
	if err := os.Symlink(dir, filepath.Join(dir, "link")); err != nil {
		t.Skip(err)
	}
	for i, lines := range [][]string{
		{jsonLine("source", a, "output", filepath.Join(dir, "link", "b.raw")), jsonLine("source", filepath.Join(dir, "b.raw"), "output", filepath.Join(dir, "c.raw"))},
		{jsonLine("source", filepath.Join(dir, "link", "b.raw"), "output", filepath.Join(dir, "c.raw")), jsonLine("source", a, "output", filepath.Join(dir, "b.raw"))},
	} {
		manifest := writeManifest(t, filepath.Join(dir, "disks.jsonl"), lines)
		r := e.run("batch", manifest, "--state-dir", filepath.Join(dir, "state"))
		if r.code != 2 || !strings.Contains(r.stderr, "disks.jsonl:2: ") || !strings.Contains(r.stderr, "of the disk on line 1") || !strings.Contains(r.stderr, "old or the new file") {
			t.Errorf("manifest %d: exit %d\n%s", i+1, r.code, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "c.raw")); err == nil {
			t.Errorf("manifest %d: a disk was converted", i+1)
		}
	}
}

// TestBatchRemoteWithoutValidatorsSkips: a source served without ETag or
// Last-Modified is identified by its size and the digest of its first
// MiB; a rerun finds it unchanged and skips it (before, the digest was
// never recorded, and every rerun converted it again); once the first MiB
// changes, it is done again.
func TestBatchRemoteWithoutValidatorsSkips(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	web := filepath.Join(dir, "web")
	os.Mkdir(web, 0o755)
	src := randomDisk(t, filepath.Join(web, "web01.raw"), 4*mib, 0, 64<<10, mib)
	// FileServer sends no Last-Modified for a file of the epoch.
	epoch := time.Unix(0, 0)
	os.Chtimes(src, epoch, epoch)
	ws := webtest.Start(t, web)
	ws.Set(func(s *webtest.Server) { s.NoETag = true })
	out := filepath.Join(dir, "out.raw")
	manifest := writeManifest(t, filepath.Join(dir, "disks.jsonl"), []string{jsonLine("source", ws.URL+"/web01.raw", "output", out)})
	state := filepath.Join(dir, "state")
	for i, want := range []string{"done", "skipped", "done"} {
		if i == 2 {
			f, _ := os.OpenFile(src, os.O_WRONLY, 0)
			f.WriteAt([]byte("changed"), 4096)
			f.Close()
			os.Chtimes(src, epoch, epoch)
		}
		r := e.run("batch", manifest, "--json", "--state-dir", state)
		got, _ := parse(t, r.stdout)
		if r.code != 0 || string(got[out].Status) != want {
			t.Fatalf("run %d: exit %d, %s; want %s\n%s", i+1, r.code, got[out].Status, want, r.stderr)
		}
		if fileSHA(t, out) != fileSHA(t, src) {
			t.Fatalf("run %d: the output is not the source", i+1)
		}
	}
	for _, h := range ws.Headers() {
		if h.Get("If-Match") != "" || h.Get("If-Unmodified-Since") != "" {
			t.Fatal("the server sent a validator after all")
		}
	}
}

// TestBatchSourceChangedDuringRun: a source written to while it is read
// (7 bytes at 20 MiB, once the upload is under way) fails its disk ("changed
// while it was read") instead of leaving an output of the old bytes that
// every rerun would skip as unchanged; the rerun converts the new source.
func TestBatchSourceChangedDuringRun(t *testing.T) {
	e := newEnv(t)
	testkit.Need(t, "qemu-img")
	dir := t.TempDir()
	src := randomDisk(t, filepath.Join(dir, "web01.raw"), 32*mib, 0, mib, 2*mib)
	dest := "s3://" + e.bucket + "/web01.raw"
	manifest := writeManifest(t, filepath.Join(dir, "disks.jsonl"), []string{jsonLine("source", src, "output", dest, "output-format", "raw")})
	state := filepath.Join(dir, "state")
	e.proxy.Inject(300*time.Millisecond, func(op string, n int) s3test.Fault {
		if op == "UploadPart" {
			return s3test.SlowOnReply
		}
		return s3test.Pass
	})
	cmd := e.command("batch", manifest, "--json", "--state-dir", state, "--upload-concurrency", "1", "--part-size", "5M")
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); e.proxy.Done("UploadPart") < 1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	f, _ := os.OpenFile(src, os.O_WRONLY, 0)
	f.WriteAt([]byte("changed"), 20*mib)
	f.Close()
	cmd.Wait()
	e.proxy.Inject(0, nil)
	got, _ := parse(t, out.String())
	if oc := got[dest]; oc.Status != "failed" || !strings.Contains(oc.Error, "changed while it was read") {
		t.Fatalf("the run that read a changing source: %s %q", oc.Status, oc.Error)
	}
	r := e.run("batch", manifest, "--json", "--state-dir", state)
	got, _ = parse(t, r.stdout)
	if r.code != 0 || got[dest].Status != "done" {
		t.Fatalf("rerun: exit %d, %+v\n%s", r.code, got[dest], r.stderr)
	}
	if e.objectSHA("web01.raw") != fileSHA(t, src) {
		t.Fatal("the object is not the source as it is now")
	}
}

// TestBatchCSVQuotedCells: a quoted CSV cell is the name as written,
// blanks and all (a file named " lead.raw"); before, every cell was
// trimmed and the record read "lead.raw", another file or none.
func TestBatchCSVQuotedCells(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	src := randomDisk(t, filepath.Join(dir, " lead.raw"), 4*mib, 0, 64<<10, mib)
	manifest := filepath.Join(dir, "disks.csv")
	os.WriteFile(manifest, []byte("source, output\n\" lead.raw\",  out.raw \n"), 0o644)
	cmd := e.command("batch", manifest, "--json", "--no-state")
	cmd.Dir = dir
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Run()
	got, _ := parse(t, out.String())
	// Relative paths are the manifest's folder's: the outcome names it.
	if oc := got[filepath.Join(dir, "out.raw")]; cmd.ProcessState.ExitCode() != 0 || oc.Status != "done" {
		t.Fatalf("exit %d, %+v", cmd.ProcessState.ExitCode(), got)
	}
	if fileSHA(t, filepath.Join(dir, "out.raw")) != fileSHA(t, src) {
		t.Fatal("out.raw is not \" lead.raw\"")
	}
}
