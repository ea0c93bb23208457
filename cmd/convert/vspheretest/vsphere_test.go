// Package vspheretest runs the convert binary against vcsim, govmomi's
// vCenter simulator, run in this test process on loopback (behind a TLS
// proxy that counts the datastore's bytes): vsphere:// sources converted
// to files and uploads, the snapshot of a running VM (also on SIGINT), the
// inventory's findings, a fleet listed, converted and rerun, and the
// password nowhere.
package vspheretest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vmimport/batch"
	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
	"vmimport/internal/vcsimtest"
)

var (
	srv *s3test.Server
	bin string
)

func TestMain(m *testing.M) { os.Exit(s3test.MainWithConvert(m, &srv, &bin)) }

const mib = int64(1) << 20

// fixture is a simulator with the test images on its datastore.
type fixture struct {
	t    *testing.T
	s    *vcsimtest.Server
	home string
	// want are the SHA-256 of the guest bytes, by VM name, as qemu-img
	// reads the same files.
	want map[string]string
}

// newFixture makes a small ext4 disk and puts it on the datastore as a
// monolithicFlat (flat01), a monolithicSparse (sparse01, in folder
// linux/) and a delta chain (chain01: a sparse child with its own writes
// over a flat base), plus the VMs of extra.
func newFixture(t *testing.T, extra ...vcsimtest.VM) *fixture {
	t.Helper()
	testkit.Need(t, "qemu-img", "qemu-io")
	ctx := context.Background()
	s, err := vcsimtest.Start(ctx, "Hunter2-"+strings.ReplaceAll(t.Name(), "/", "-"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	f := &fixture{t: t, s: s, home: t.TempDir(), want: map[string]string{}}
	dir := t.TempDir()
	raw := testkit.MakeDisk(t, dir, testkit.DiskOptions{SizeMiB: 32})
	sum := testkit.RawSHA256(t, raw)
	put := func(local, rel string) {
		if err := s.Put(local, rel); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, "flat"), 0o755)
	testkit.Convert(t, raw, filepath.Join(dir, "flat", "flat01.vmdk"), "vmdk", "-o", "subformat=monolithicFlat")
	put(filepath.Join(dir, "flat", "flat01.vmdk"), "flat01/flat01.vmdk")
	put(filepath.Join(dir, "flat", "flat01-flat.vmdk"), "flat01/flat01-flat.vmdk")
	sparse := testkit.Convert(t, raw, filepath.Join(dir, "sparse.vmdk"), "vmdk")
	for _, n := range []string{"sparse01", "run01", "efi01", "web01", "web02"} {
		put(sparse, n+"/"+n+".vmdk")
		f.want[n] = sum
	}
	f.want["flat01"] = sum
	os.Mkdir(filepath.Join(dir, "chain"), 0o755)
	testkit.Convert(t, raw, filepath.Join(dir, "chain", "chain01.vmdk"), "vmdk", "-o", "subformat=monolithicFlat")
	delta := filepath.Join(dir, "chain", "chain01-000001.vmdk")
	testkit.QemuImg(t, "create", "-q", "-f", "vmdk", "-b", "chain01.vmdk", "-F", "vmdk", delta)
	testkit.Run(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 20M 1M", delta)
	f.want["chain01"] = testkit.RawSHA256(t, testkit.Convert(t, delta, filepath.Join(dir, "chain.raw"), "raw"))
	for _, n := range []string{"chain01.vmdk", "chain01-flat.vmdk", "chain01-000001.vmdk"} {
		put(filepath.Join(dir, "chain", n), "chain01/"+n)
	}
	disk := func(chain ...string) []vcsimtest.Disk {
		return []vcsimtest.Disk{{Chain: chain, Capacity: 32 * mib}}
	}
	vms := append([]vcsimtest.VM{
		{Name: "flat01", Disks: disk("flat01/flat01.vmdk")},
		{Name: "sparse01", Folder: "linux", Disks: disk("sparse01/sparse01.vmdk")},
		{Name: "chain01", Disks: disk("chain01/chain01-000001.vmdk", "chain01/chain01.vmdk")},
	}, extra...)
	for _, vm := range vms {
		if vm.Disks == nil {
			vm.Disks = disk(vm.Name + "/" + vm.Name + ".vmdk")
		}
		if err := s.AddVM(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

type result struct {
	code           int
	stdout, stderr string
}

func (f *fixture) command(args ...string) *exec.Cmd {
	if args[0] != "info" && args[0] != "check" && args[0] != "vsphere" {
		args = append(args, "--progress", "never")
	}
	args = append(args, "--source-ca-file", f.s.CAFile)
	cmd := exec.Command(bin, args...)
	env := []string{"VSPHERE_USER=" + vcsimtest.User, "VSPHERE_PASSWORD=" + f.s.Password}
	if srv != nil {
		env = append(env, srv.Env(f.home)...)
	} else {
		env = append(env, os.Environ()...)
	}
	cmd.Env = env
	return cmd
}

func (f *fixture) run(args ...string) result {
	f.t.Helper()
	cmd := f.command(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if cmd.ProcessState == nil {
		f.t.Fatal(err)
	}
	r := result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
	f.noPassword(r.stdout, r.stderr)
	return r
}

// noPassword fails when the password shows in any of texts.
func (f *fixture) noPassword(texts ...string) {
	f.t.Helper()
	for _, s := range texts {
		if strings.Contains(s, f.s.Password) {
			f.t.Errorf("the password shows: %s", s)
		}
	}
}

// noPasswordIn fails when a file under dir holds the password.
func (f *fixture) noPasswordIn(dir string) {
	f.t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(f.s.Password)) {
				f.t.Errorf("%s holds the password", p)
			}
		}
		return nil
	})
}

// TestVSphereToFiles: each kind of disk converts to the bytes qemu-img
// reads from the same files; the fetched bytes are counted at the server;
// info and check read the source too.
func TestVSphereToFiles(t *testing.T) {
	f := newFixture(t)
	out := t.TempDir()
	for _, c := range []struct{ folder, name string }{{"", "flat01"}, {"linux", "sparse01"}, {"", "chain01"}} {
		dst := filepath.Join(out, c.name+".raw")
		r := f.run(f.s.SourceURL(c.folder, c.name), "-o", dst, "--json")
		if r.code != 0 {
			t.Fatalf("%s: exit %d\n%s", c.name, r.code, r.stderr)
		}
		if testkit.RawSHA256(t, dst) != f.want[c.name] {
			t.Errorf("%s: the output differs from qemu-img's reading of the same files", c.name)
		}
		var res struct {
			Remote struct {
				Fetched struct{ Bytes int64 }
				Source  struct{ URL string }
			}
			Check struct{ Findings []struct{ Rule string } }
		}
		json.Unmarshal([]byte(r.stdout), &res)
		if !strings.HasSuffix(res.Remote.Source.URL, "/"+c.name+"#disk=0") || res.Remote.Fetched.Bytes == 0 {
			t.Errorf("%s: --json remote %+v", c.name, res.Remote)
		}
	}
	if f.s.NoCookie.Load() != 0 {
		t.Errorf("%d datastore requests without the session cookie", f.s.NoCookie.Load())
	}

	r := f.run("info", f.s.SourceURL("", "chain01"))
	if r.code != 0 || !strings.Contains(r.stdout, "vm:") || !strings.Contains(r.stdout, "chain01.vmdk") {
		t.Errorf("info: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = f.run("check", "--json", f.s.SourceURL("linux", "sparse01"))
	if !strings.Contains(r.stdout, `"vsphere.guest-os"`) {
		t.Errorf("check: exit %d, no inventory finding\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestVSphereSparseFetch: a monolithicSparse disk never fetches its
// holes: what the datastore sends stays within 1.1x of what the file
// takes on it.
func TestVSphereSparseFetch(t *testing.T) {
	f := newFixture(t)
	f.s.ResetCounts()
	dst := filepath.Join(t.TempDir(), "s.raw")
	if r := f.run(f.s.SourceURL("linux", "sparse01"), "-o", dst); r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	alloc := testkit.AllocatedBytes(t, filepath.Join(f.s.Dir, "sparse01", "sparse01.vmdk"))
	got := f.s.FolderBytes.Load()
	t.Logf("fetched %d bytes for a file of %d allocated (%.3fx)", got, alloc, float64(got)/float64(alloc))
	if float64(got) > 1.1*float64(alloc) {
		t.Errorf("fetched %d bytes, more than 1.1x the %d the file takes", got, alloc)
	}
}

// TestVSphereUpload: a vsphere:// source uploads to the bucket (QCOW2 by
// default) with the guest bytes of the disk.
func TestVSphereUpload(t *testing.T) {
	s3test.Need(t, srv)
	f := newFixture(t)
	bucket := srv.Bucket(t)
	r := f.run(f.s.SourceURL("", "chain01"), "-o", "s3://"+bucket+"/vm/chain01.qcow2", "--endpoint", srv.Endpoint, "--check", "warn", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if got := srv.GuestSHA256(t, bucket, "vm/chain01.qcow2", "qcow2"); got != f.want["chain01"] {
		t.Error("the object's guest bytes differ from qemu-img's reading of the chain")
	}
	f.noPasswordIn(f.home)
}

// TestVSphereConsistency: a running VM is refused without --snapshot;
// with it the snapshot is taken and removed; an EFI VM is refused on the
// inventory's finding before a byte of it is read.
func TestVSphereConsistency(t *testing.T) {
	f := newFixture(t, vcsimtest.VM{Name: "run01", PowerOn: true}, vcsimtest.VM{Name: "efi01", Firmware: "efi"})
	ctx := context.Background()
	dst := filepath.Join(t.TempDir(), "run01.raw")
	r := f.run(f.s.SourceURL("", "run01"), "-o", dst)
	if r.code != 3 || !strings.Contains(r.stderr, "--snapshot") {
		t.Fatalf("running VM without --snapshot: exit %d\n%s", r.code, r.stderr)
	}
	r = f.run(f.s.SourceURL("", "run01"), "-o", dst, "--snapshot")
	if r.code != 0 || testkit.RawSHA256(t, dst) != f.want["run01"] || !strings.Contains(r.stderr, "took snapshot") {
		t.Fatalf("--snapshot: exit %d\n%s", r.code, r.stderr)
	}
	if snaps, _ := f.s.Snapshots(ctx, "run01"); len(snaps) != 0 {
		t.Errorf("snapshots left: %q", snaps)
	}

	f.s.ResetCounts()
	r = f.run(f.s.SourceURL("", "efi01"), "-o", filepath.Join(t.TempDir(), "efi.raw"), "--check", "strict")
	if r.code != 3 || !strings.Contains(r.stderr, "vsphere.firmware") {
		t.Errorf("EFI VM: exit %d\n%s", r.code, r.stderr)
	}
	if n := f.s.FolderRequests.Load(); n != 0 {
		t.Errorf("%d datastore requests before the EFI refusal", n)
	}
}

// TestVSphereInterrupt: SIGINT in the middle of the read stops the run
// (exit 130) and the snapshot it took is removed all the same.
func TestVSphereInterrupt(t *testing.T) {
	f := newFixture(t, vcsimtest.VM{Name: "run01", PowerOn: true})
	ctx := context.Background()
	// Each datastore request waits, so the read is still going when the
	// signal comes.
	started := make(chan struct{}, 1)
	f.s.Hook(func(r *http.Request) {
		select {
		case started <- struct{}{}:
		default:
		}
		time.Sleep(200 * time.Millisecond)
	})
	cmd := f.command(f.s.SourceURL("", "run01"), "-o", filepath.Join(t.TempDir(), "run01.raw"), "--snapshot")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatal("no datastore read began")
	}
	if snaps, _ := f.s.Snapshots(ctx, "run01"); len(snaps) != 1 {
		t.Errorf("while reading: snapshots %q", snaps)
	}
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	f.s.Hook(nil)
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit %d, want 130\n%s", code, errb.String())
	}
	if snaps, _ := f.s.Snapshots(ctx, "run01"); len(snaps) != 0 {
		t.Errorf("snapshots left after SIGINT: %q\n%s", snaps, errb.String())
	}
	r := f.run("vsphere", "snapshots", "vsphere://"+f.s.Host+"/DC0/vm")
	if r.code != 0 || !strings.Contains(r.stdout, "0 snapshot(s)") {
		t.Errorf("vsphere snapshots: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestVSphereBatch: a fleet is listed into a manifest, converted as a
// batch, and a rerun skips every VM; the password is in no output, state
// file or manifest.
func TestVSphereBatch(t *testing.T) {
	f := newFixture(t, vcsimtest.VM{Name: "web01", Folder: "web"}, vcsimtest.VM{Name: "web02", Folder: "web", PowerOn: true})
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	r := f.run("vsphere", "ls", "vsphere://"+f.s.Host+"/DC0/vm/web")
	if r.code != 0 || !strings.Contains(r.stdout, "web01") || !strings.Contains(r.stdout, "poweredOn") || !strings.Contains(r.stdout, "2 VM(s)") {
		t.Fatalf("ls: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	manifest := filepath.Join(dir, "fleet.jsonl")
	r = f.run("vsphere", "ls", "vsphere://"+f.s.Host+"/DC0/vm/web", "--manifest", manifest, "--output-prefix", out)
	if r.code != 0 {
		t.Fatalf("ls --manifest: exit %d\n%s", r.code, r.stderr)
	}
	b, _ := os.ReadFile(manifest)
	if !strings.Contains(string(b), `"snapshot": true`) || strings.Count(string(b), `"source"`) != 2 {
		t.Fatalf("manifest:\n%s", b)
	}
	state := filepath.Join(dir, "state")
	for i, wantDone := range []int{2, 0} {
		r := f.run("batch", manifest, "--json", "--state-dir", state)
		got, sum := parse(t, r.stdout)
		if r.code != 0 || sum.Done != wantDone || sum.Skipped != 2-wantDone {
			t.Fatalf("run %d: exit %d, %+v\n%s", i+1, r.code, sum, r.stderr)
		}
		for _, n := range []string{"web01", "web02"} {
			if testkit.RawSHA256(t, filepath.Join(out, n+".raw")) != f.want[n] {
				t.Errorf("run %d: %s differs", i+1, n)
			}
			if i == 1 && got[filepath.Join(out, n+".raw")].Status != batch.Skipped {
				t.Errorf("run 2: %s not skipped: %+v", n, got[filepath.Join(out, n+".raw")])
			}
		}
	}
	f.noPasswordIn(dir)
	f.noPasswordIn(f.home)
}

func parse(t *testing.T, stdout string) (map[string]batch.Outcome, batch.Summary) {
	t.Helper()
	outs, sum, err := batch.ReadJSON(strings.NewReader(stdout))
	if err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	return batch.ByOutput(outs), sum
}
