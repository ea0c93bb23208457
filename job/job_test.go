package job

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"vmimport/check"
	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/reader/image"
)

const rootUUID = "6f1ed6a1-0b32-4e4b-8f43-1d2b51e3a1c0"

var (
	diskOnce sync.Once
	diskPath string
	diskDir  string
)

// testDisk is a 48 MiB RAW disk with an ext4 partition full of files,
// built once for the package.
func testDisk(t *testing.T) string {
	t.Helper()
	testkit.Need(t, "sfdisk", "mkfs.ext4", "qemu-img")
	diskOnce.Do(func() {
		dir, err := os.MkdirTemp("", "job-test-")
		if err != nil {
			t.Fatal(err)
		}
		diskDir = dir
		diskPath = testkit.MakeDisk(t, dir, testkit.DiskOptions{SizeMiB: 48, Tail: true})
	})
	if diskPath == "" {
		t.Fatal("no test disk")
	}
	return diskPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if diskDir != "" {
		os.RemoveAll(diskDir)
	}
	os.Exit(code)
}

// events records what a job reports.
type events struct {
	mu  sync.Mutex
	all []Event
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

func (e *events) phases() []Phase {
	e.mu.Lock()
	defer e.mu.Unlock()
	var p []Phase
	for _, ev := range e.all {
		if ev.Kind == PhaseChanged {
			p = append(p, ev.Phase)
		}
	}
	return p
}

func (e *events) messages(kind EventKind) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var m []string
	for _, ev := range e.all {
		if ev.Kind == kind {
			m = append(m, ev.Message)
		}
	}
	return m
}

// TestRunMatchesQemuImg: one job per output format gives qemu-img's bytes,
// reports its phases in order and its progress up to the whole disk.
func TestRunMatchesQemuImg(t *testing.T) {
	src := testDisk(t)
	dir := t.TempDir()
	qsrc := testkit.Convert(t, src, filepath.Join(dir, "src.qcow2"), "qcow2", "-c")
	want := testkit.FileSHA256(t, src)
	for _, c := range []struct {
		name string
		spec Spec
	}{
		{"raw", Spec{Source: qsrc, Output: filepath.Join(dir, "out.raw")}},
		{"qcow2", Spec{Source: qsrc, Output: filepath.Join(dir, "out.qcow2"), Format: "qcow2"}},
		{"qcow2 zstd, 1 worker", Spec{Source: src, Output: filepath.Join(dir, "z.qcow2"), Format: "qcow2", Workers: 1,
			QCOW2: QCOW2Spec{Compression: "zstd", ClusterSize: 128 << 10}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var ev events
			res, err := Run(context.Background(), c.spec, Env{Events: ev.add})
			if err != nil {
				t.Fatal(err)
			}
			if got := testkit.RawSHA256(t, c.spec.Output); got != want {
				t.Fatalf("output differs from the source")
			}
			if c.spec.Format == "qcow2" {
				testkit.QemuImg(t, "check", c.spec.Output)
			}
			fi, _ := os.Stat(c.spec.Output)
			if res.OutputBytes != fi.Size() || res.Stats.Done != 48<<20 || res.Source.VirtualSize != 48<<20 || res.SystemDiskSizeGB != 40 {
				t.Errorf("result %+v, file %d bytes", res, fi.Size())
			}
			wantPhases := []Phase{Opening, Checking, Reading, Verifying, Finishing}
			if got := ev.phases(); !slicesEqual(got, wantPhases) {
				t.Errorf("phases %v, want %v", got, wantPhases)
			}
			var last Event
			for _, e := range ev.all {
				if e.Kind == Progress {
					last = e
				}
			}
			if last.Stats.Done != 48<<20 {
				t.Errorf("last progress at %d", last.Stats.Done)
			}
		})
	}
}

func slicesEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestValidate: every setting is checked before any work, and the error
// names the flag.
func TestValidate(t *testing.T) {
	good := Spec{Source: "a.img", Output: "b.raw"}
	for _, c := range []struct {
		name string
		mod  func(s *Spec)
		want string // "" for valid
	}{
		{"good", func(s *Spec) {}, ""},
		{"no source", func(s *Spec) { s.Source = "" }, "no source"},
		{"no output", func(s *Spec) { s.Output = "" }, "no output"},
		{"format", func(s *Spec) { s.Format = "vmdk" }, "-O vmdk"},
		{"qcow2 to stdout", func(s *Spec) { s.Format, s.Output = "qcow2", "-" }, "-O qcow2 -o -"},
		{"qcow2 settings on raw", func(s *Spec) { s.QCOW2.Compression = "zlib" }, "apply to -O qcow2"},
		{"cluster size", func(s *Spec) { s.Format, s.QCOW2.ClusterSize = "qcow2", 3000 }, "cluster size 3000"},
		{"zstd on compat 0.10", func(s *Spec) { s.Format, s.QCOW2 = "qcow2", QCOW2Spec{Compat: "0.10", Compression: "zstd"} }, "zstd"},
		{"check", func(s *Spec) { s.Check = "maybe" }, "--check"},
		{"workers", func(s *Spec) { s.Workers = 1000 }, "--workers"},
		{"block size", func(s *Spec) { s.BlockSize = 3 << 20 }, "--block-size"},
		{"shrink without size", func(s *Spec) { s.Shrink = true }, "--shrink"},
		{"upload settings on a file", func(s *Spec) { s.Upload.Verify = true }, "apply to -o s3://"},
		{"bad bucket", func(s *Spec) { s.Output = "s3://" }, "bucket"},
		{"presign", func(s *Spec) { s.Output, s.Upload.PresignTTL = "s3://bkt/k", time.Hour }, "--presign-ttl"},
		{"part size", func(s *Spec) { s.Output, s.Upload.PartSize = "s3://bkt/k", 1<<20 }, "--part-size"},
		{"concurrency", func(s *Spec) { s.Output, s.Upload.Concurrency = "s3://bkt/k", 100 }, "--upload-concurrency"},
		{"os type", func(s *Spec) { s.Output, s.Upload.Image.OSType = "s3://bkt/k", "beos" }, "--os-type"},
		{"keep without resume", func(s *Spec) { s.Output, s.Upload.Keep = "s3://bkt/k", true }, "--resume"},
		{"upload ok", func(s *Spec) { s.Output, s.Upload.Resume, s.Upload.Keep = "s3://bkt/", true, true }, ""},
	} {
		s := good
		c.mod(&s)
		err := s.Validate()
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		var se *SpecError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a SpecError naming %q", c.name, err, c.want)
		}
		// Run refuses it before opening anything: a.img does not exist.
		if _, err := Run(context.Background(), s, Env{}); !errors.As(err, &se) {
			t.Errorf("%s: Run: %v", c.name, err)
		}
	}
}

// TestImportCheckModes: strict stops, --force goes on and sets
// forceImport, auto is strict for buckets, off checks nothing.
func TestImportCheckModes(t *testing.T) {
	dir := t.TempDir()
	files := testkit.LinuxRoot("ext4", rootUUID)
	files["etc/udev/rules.d/70-persistent-net.rules"] = "x\n"
	disk := testkit.MakeRootDisk(t, dir, testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
		{SizeMiB: 40, Bootable: true, FS: "ext4", UUID: rootUUID, Files: files}}})
	im, err := reader.Open(disk, reader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for _, c := range []struct {
		name      string
		spec      Spec
		wantErr   bool
		wantForce bool
		wantRep   bool
	}{
		{"strict", Spec{Check: "strict", Output: "x.raw"}, true, false, true},
		{"strict --force", Spec{Check: "strict", Force: true, Output: "x.raw"}, false, true, true},
		{"warn", Spec{Check: "warn", Output: "x.raw"}, false, false, true},
		{"auto to a file", Spec{Check: "auto", Output: "x.raw"}, false, false, true},
		{"auto to a bucket", Spec{Check: "auto", Output: "s3://bkt/k"}, true, false, true},
		{"off", Spec{Check: "off", Output: "s3://bkt/k"}, false, false, false},
		{"off --force", Spec{Check: "off", Force: true, Output: "s3://bkt/k"}, false, true, false},
	} {
		var ev events
		j := &run{s: c.spec, res: &Result{}, env: Env{Events: ev.add}}
		j.s.Source = disk
		rep, force, err := j.importCheck(context.Background(), im)
		var ie *InputError
		if c.wantErr != (err != nil) || (err != nil && (!errors.As(err, &ie) || !errors.Is(err, check.ErrRule))) {
			t.Errorf("%s: err %v", c.name, err)
		}
		if force != c.wantForce || (rep != nil) != c.wantRep {
			t.Errorf("%s: forceImport %v, report %v", c.name, force, rep != nil)
		}
		if rep != nil && (!rep.Has(check.RulePersistentNet) || rep.OS.Platform != "CentOS") {
			t.Errorf("%s: report %+v", c.name, rep)
		}
	}
}

// TestFailureLeavesNothing: a corrupt source, a cancelled run and a
// rehearsal leave nothing under the output name.
func TestFailureLeavesNothing(t *testing.T) {
	src := testDisk(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.qcow2")
	q := testkit.Convert(t, src, filepath.Join(dir, "good.qcow2"), "qcow2")
	b, _ := os.ReadFile(q)
	os.WriteFile(bad, b[:len(b)/2], 0o644)

	out := filepath.Join(dir, "out.raw")
	res, err := Run(context.Background(), Spec{Source: bad, Output: out}, Env{})
	if err == nil {
		t.Fatal("a truncated QCOW2 converted")
	}
	var ie *InputError
	if !errors.As(err, &ie) || !errors.Is(err, image.ErrCorrupt) || res.Output != out {
		t.Errorf("a truncated QCOW2: %v, result %+v", err, res)
	}
	noOutput(t, dir, out)

	ctx, cancel := context.WithCancel(context.Background())
	_, err = Run(ctx, Spec{Source: src, Output: out, Workers: 1, BlockSize: 64 << 10}, Env{Events: func(e Event) {
		if e.Kind == Progress && e.Stats.Done > 0 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v", err)
	}
	noOutput(t, dir, out)

	res, err = Run(context.Background(), Spec{Source: src, Output: out, Rehearse: true}, Env{})
	if err != nil || res.OutputBytes != 48<<20 {
		t.Fatalf("rehearsal: %v, %+v", err, res)
	}
	noOutput(t, dir, out)
}

func noOutput(t *testing.T, dir, out string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() == filepath.Base(out) || strings.HasSuffix(e.Name(), ".partial") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// TestBudget: a job takes its share of memory and waits for it; a job
// whose smallest share does not fit is refused, one that fits with fewer
// workers runs with fewer.
func TestBudget(t *testing.T) {
	src := testDisk(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.raw")

	// 8 workers x 1 MiB: a window of 18 blocks + 4 MiB; 14 MiB hold a
	// window of 10: 4 workers.
	var ev events
	b := NewBudget(14 << 20)
	res, err := Run(context.Background(), Spec{Source: src, Output: out, Workers: 8}, Env{Budget: b, Events: ev.add})
	if err != nil {
		t.Fatal(err)
	}
	if res.Memory > 14<<20 || len(ev.messages(Notice)) != 1 || !strings.Contains(ev.messages(Notice)[0], "running with 4 workers") {
		t.Errorf("memory %d, notices %q", res.Memory, ev.messages(Notice))
	}
	os.Remove(out)
	// Blocks of 4 MiB: even 1 worker needs 16 MiB + 4 MiB.
	_, err = Run(context.Background(), Spec{Source: src, Output: out, BlockSize: 4 << 20}, Env{Budget: b})
	var se *SpecError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "--memory") {
		t.Errorf("too small a budget: %v", err)
	}
	// A job waits while the budget is spent, and gives up when cancelled.
	if err := b.acquire(context.Background(), 14<<20); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var ev2 events
	_, err = Run(ctx, Spec{Source: src, Output: out, Workers: 1}, Env{Budget: b, Events: ev2.add})
	if !errors.Is(err, context.DeadlineExceeded) || ev2.phases()[len(ev2.phases())-1] != Waiting {
		t.Errorf("waiting job: %v, phases %v", err, ev2.phases())
	}
	b.release(14 << 20)
	noOutput(t, dir, out)
}

// TestDestination names the object after the source when the key ends in /.
func TestDestination(t *testing.T) {
	for _, c := range []struct{ src, out, format, key string }{
		{"/x/web01.vmdk", "s3://bkt/", "", "web01.qcow2"}, // uploads are QCOW2 unless -O says otherwise
		{"/x/web01.vmdk", "s3://bkt/", "raw", "web01.raw"},
		{"/x/web01.vmdk", "s3://bkt/images/", "qcow2", "images/web01.qcow2"},
		{"/x/web01.vmdk", "s3://bkt/k.raw", "", "k.raw"},
	} {
		s := Spec{Source: c.src, Output: c.out, Format: c.format}
		b, k, err := s.Destination()
		if err != nil || b != "bkt" || k != c.key {
			t.Errorf("%s -> %s: %s %s %v, want %s", c.src, c.out, b, k, err, c.key)
		}
	}
}

var _ image.Image = reader.Image(nil)

// TestSameFile: an output that is the source, even through a link, is
// refused before anything is written, and the source is left as it was.
func TestSameFile(t *testing.T) {
	src := testDisk(t)
	dir := t.TempDir()
	q := testkit.Convert(t, src, filepath.Join(dir, "in.qcow2"), "qcow2")
	before := testkit.FileSHA256(t, q)
	link := filepath.Join(dir, "link.qcow2")
	os.Symlink(q, link)
	for _, out := range []string{q, link} {
		_, err := Run(context.Background(), Spec{Source: q, Output: out}, Env{})
		var se *SpecError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), "-o "+out) {
			t.Errorf("-o %s: %v", out, err)
		}
	}
	if testkit.FileSHA256(t, q) != before {
		t.Fatal("the source changed")
	}
}
