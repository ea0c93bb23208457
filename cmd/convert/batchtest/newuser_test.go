package batchtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"vmimport/internal/s3test"
)

// TestBatchManifestErrors: every bad line of a manifest is told in one
// pass, each on a line of its own with its line number (a CSV's header
// counts), a mistyped key with the keys it may have meant; nothing starts.
func TestBatchManifestErrors(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	raw := randomDisk(t, filepath.Join(dir, "a.raw"), 4*mib, 0, 64<<10, mib)
	out := filepath.Join(dir, "out")
	for _, c := range []struct {
		name, text string
		want       []string
	}{
		{"m.jsonl", jsonLine("source", raw, "output", filepath.Join(out, "x.raw")) + "\n" +
			"{\"source\": \n" +
			"\n" +
			jsonLine("source", raw, "output", filepath.Join(out, "y.raw"), "workers", "many") + "\n" +
			jsonLine("source", raw, "ouptut", filepath.Join(out, "z.raw")) + "\n" +
			jsonLine("source", raw, "output", filepath.Join(out, "x.raw")) + "\n",
			[]string{
				`convert: m.jsonl:2: key "source": EOF`,
				`convert: m.jsonl:4: key "workers": invalid argument "many" for "--workers" flag: must be an integer`,
				`convert: m.jsonl:5: unknown key "ouptut": did you mean "output"?`,
				"convert: m.jsonl:6: the output " + filepath.Join(out, "x.raw") + " is also the output of the disk on line 1",
				"convert: m.jsonl: 4 bad lines; nothing was started",
			}},
		// A mistyped column is told once, on the header's line (the
		// second: a blank line comes first); a bad row after it too.
		{"m.csv", "\nsource,output,worker\n" + raw + "," + filepath.Join(out, "x.raw") + ",2\n" + raw + "," + filepath.Join(out, "y.raw") + ",3\n",
			[]string{`convert: m.csv:2: unknown key "worker": did you mean "workers"?`}},
		{"n.csv", "source,output,disk\n" + raw + "," + filepath.Join(out, "x.raw") + ",1\n\n" + raw + "," + filepath.Join(out, "y.raw") + ",-1\n",
			[]string{"convert: n.csv:4: --disk -1: disks count from 0"}},
	} {
		m := filepath.Join(dir, c.name)
		os.WriteFile(m, []byte(c.text), 0o644)
		r := e.run("batch", m, "--no-state")
		want := strings.ReplaceAll(strings.Join(c.want, "\n"), "convert: "+c.name, "convert: "+m)
		if got := strings.TrimSpace(r.stderr); r.code != 2 || got != want {
			t.Errorf("%s: exit %d, want 2 and\n%s\ngot\n%s", c.name, r.code, want, r.stderr)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a disk was converted: %v", err)
	}
}

// TestBatchRelativePaths: relative paths in a manifest are its folder's,
// not the current one's; a first run says nothing of resumes it had none
// to do; one disk is "1 disk"; a disk that breaks an import rule names it.
func TestBatchRelativePaths(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	man := filepath.Join(dir, "exports")
	os.MkdirAll(filepath.Join(man, "disks"), 0o755)
	os.MkdirAll(filepath.Join(man, "out"), 0o755)
	randomDisk(t, filepath.Join(man, "disks", "a.raw"), 4*mib, 0, 64<<10, mib)
	writeManifest(t, filepath.Join(man, "disks.csv"), []string{
		"source,output,check",
		"disks/a.raw,out/a.raw,",
		"disks/a.raw,s3://" + e.bucket + "/a.qcow2,",
		"disks/a.raw,out/strict.raw,strict",
	})
	cmd := e.command("batch", "exports/disks.csv", "--no-state")
	cmd.Dir = dir // the manifest's folder is not the current one
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("batch: exit %d, want 1 (one disk breaks import rules)\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(man, "out", "a.raw")); err != nil {
		t.Errorf("the relative output is not in the manifest's folder: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "no interrupted upload recorded") {
		t.Errorf("a first run talks of resumes:\n%s", out)
	}
	if !strings.Contains(string(out), "(fs.root, part.table; convert check tells how to fix them)") {
		t.Errorf("the failed disk does not name the broken rules:\n%s", out)
	}

	// One disk.
	one := writeManifest(t, filepath.Join(man, "one.jsonl"), []string{jsonLine("source", "disks/a.raw", "output", "out/b.raw")})
	r := e.run("batch", one, "--no-state")
	if r.code != 0 || !strings.Contains(r.stderr, "1 disk: 1 done") || strings.Contains(r.stderr, "1 disks") {
		t.Errorf("one disk: exit %d\n%s", r.code, r.stderr)
	}
}

// TestBatchDryRun: a batch's --dry-run checks and plans every disk and
// writes nothing, not even its bookkeeping; a disk done before is told
// so; a broken one fails.
func TestBatchDryRun(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	raw := randomDisk(t, filepath.Join(dir, "a.raw"), 4*mib, 0, 64<<10, mib)
	state := filepath.Join(dir, "state")
	done := writeManifest(t, filepath.Join(dir, "done.jsonl"), []string{jsonLine("source", raw, "output", filepath.Join(dir, "done.raw"))})
	if r := e.run("batch", done, "--state-dir", state); r.code != 0 {
		t.Fatalf("batch: exit %d\n%s", r.code, r.stderr)
	}
	stateFiles := func() int { m, _ := filepath.Glob(filepath.Join(state, "*")); return len(m) }
	before := stateFiles()
	m := writeManifest(t, filepath.Join(dir, "disks.jsonl"), []string{
		jsonLine("source", raw, "output", filepath.Join(dir, "done.raw")),
		jsonLine("source", raw, "output", filepath.Join(dir, "a.qcow2")),
		jsonLine("source", raw, "output", "s3://"+e.bucket+"/a.qcow2"),
		jsonLine("source", filepath.Join(dir, "missing.vmdk"), "output", filepath.Join(dir, "m.raw")),
	})
	r := e.run("batch", m, "--dry-run", "--json", "--state-dir", state)
	got, sum := parse(t, r.stdout)
	if r.code != 1 || sum.Planned != 2 || sum.Skipped != 1 || sum.Failed != 1 {
		t.Fatalf("dry run: exit %d, %+v\n%s%s", r.code, sum, r.stdout, r.stderr)
	}
	if o := got["s3://"+e.bucket+"/a.qcow2"]; o.Status != "planned" || o.Plan == nil || o.Plan.PartSize == 0 || o.Plan.Parts == 0 {
		t.Errorf("the upload's plan: %+v", o)
	}
	if _, err := os.Stat(filepath.Join(dir, "a.qcow2")); !os.IsNotExist(err) {
		t.Errorf("a dry run wrote a.qcow2: %v", err)
	}
	if keys, pending := srv.Keys(t, e.bucket), srv.Pending(t, e.bucket); len(keys)+len(pending) != 0 {
		t.Errorf("a dry run left objects %v and uploads %v", keys, pending)
	}
	if n := stateFiles(); n != before {
		t.Errorf("a dry run wrote bookkeeping: %d files, %d before", n, before)
	}
}

// TestBatchProgressLines: a batch into a log (stderr no terminal) tells
// its progress in lines with the time: the total and each running disk
// every interval, and (--progress always) each disk's phases and the total
// as disks start and end; the total's size does not jump while disks of
// one size start (it told 32 MiB while the third had started and not
// opened yet).
func TestBatchProgressLines(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	var lines []string
	for i := range 3 {
		src := randomDisk(t, filepath.Join(dir, fmt.Sprintf("d%d.raw", i)), 16*mib, 0, 4*mib, 8*mib)
		lines = append(lines, jsonLine("source", src, "output", fmt.Sprintf("s3://%s/d%d.raw", e.bucket, i)))
	}
	manifest := writeManifest(t, filepath.Join(dir, "disks.jsonl"), lines)
	e.proxy.Inject(200*time.Millisecond, func(op string, n int) s3test.Fault {
		if op == "UploadPart" || op == "UploadPartCopy" {
			return s3test.Slow
		}
		return s3test.Pass
	})
	cmd := exec.Command(e.bin, "batch", manifest, "--no-state", "--jobs", "2", "--endpoint", e.proxy.URL, "--check", "off",
		"--part-size", "5M", "--upload-concurrency", "1", "--progress", "always", "--progress-interval", "100ms")
	cmd.Env = srv.Env(e.home)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("batch: %v\n%s", err, errb.String())
	}
	stderr := errb.String()
	total := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} convert: all 3 disks: (?:\S+ \S+ / (\S+ \S+) \(\d+%\).*; )?\d+ running, \d+ ended, \d+ waiting$`)
	disk := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} convert: d\d\.raw: `)
	var totals []string
	disks := 0
	for _, l := range strings.Split(stderr, "\n") {
		if m := total.FindStringSubmatch(l); m != nil && m[1] != "" {
			totals = append(totals, m[1])
		}
		if disk.MatchString(l) {
			disks++
		}
	}
	if len(totals) < 2 || disks < 2 || strings.Contains(stderr, "\x1b[") {
		t.Fatalf("%d total lines with a size, %d disk lines (or escapes):\n%s", len(totals), disks, stderr)
	}
	for _, s := range totals {
		if s != "48.0 MiB" {
			t.Errorf("the total says %s, want the 3 disks' 48.0 MiB all along: %q", s, totals)
			break
		}
	}
}
