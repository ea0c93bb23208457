package job

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"vmimport/check"
	"vmimport/internal/testkit"
	"vmimport/internal/vcsimtest"
	"vmimport/reader/remote/vsphere"
)

// vcsim starts a simulator with the test disk as a monolithicSparse VMDK
// of VMs web01 (powered off), run01 (running) and efi01 (UEFI).
func vcsim(t *testing.T) (*vcsimtest.Server, string) {
	t.Helper()
	disk := testDisk(t)
	s, err := vcsimtest.Start(context.Background(), "Sup3r-s3cret-"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	vmdk := testkit.Convert(t, disk, filepath.Join(t.TempDir(), "d.vmdk"), "vmdk")
	for _, vm := range []vcsimtest.VM{
		{Name: "web01", Folder: "prod"},
		{Name: "run01", PowerOn: true},
		{Name: "efi01", Firmware: "efi"},
	} {
		if err := s.Put(vmdk, vm.Name+"/"+vm.Name+".vmdk"); err != nil {
			t.Fatal(err)
		}
		vm.Disks = []vcsimtest.Disk{{Chain: []string{vm.Name + "/" + vm.Name + ".vmdk"}, Capacity: 48 << 20}}
		if err := s.AddVM(context.Background(), vm); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(vsphere.EnvUser, vcsimtest.User)
	return s, testkit.RawSHA256(t, disk)
}

// TestVSphereSource: a powered-off VM's disk converts to the bytes of
// the disk, fetching no more than 1.1x what its file takes (no hole is
// fetched); the inventory's findings are the check's; the password shows
// nowhere.
func TestVSphereSource(t *testing.T) {
	s, want := vcsim(t)
	out := filepath.Join(t.TempDir(), "web01.raw")
	spec := Spec{Source: s.SourceURL("prod", "web01"), Output: out, VSphere: VSphereSpec{CAFile: s.CAFile, Password: s.Password}}
	res, err := Run(context.Background(), spec, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if testkit.RawSHA256(t, out) != want {
		t.Fatal("the output differs from the disk")
	}
	alloc := testkit.AllocatedBytes(t, filepath.Join(s.Dir, "web01", "web01.vmdk"))
	r := res.Remote
	if r == nil || r.Fetched.Bytes != s.FolderBytes.Load() || float64(r.Fetched.Bytes) > 1.1*float64(alloc) {
		t.Errorf("fetched %+v, the server sent %d, the file takes %d", r, s.FolderBytes.Load(), alloc)
	}
	t.Logf("fetched %d in %d requests, the file takes %d", r.Fetched.Bytes, r.Fetched.Requests, alloc)
	if r.Source.URL != "vsphere://"+s.Host+"/DC0/vm/prod/web01#disk=0" || r.Source.ETag == "" {
		t.Errorf("source %+v", r.Source)
	}
	if res.Check == nil || !res.Check.Has(vsphere.RuleGuestOS) {
		t.Errorf("no inventory finding in the check: %+v", res.Check)
	}
	for _, b := range [][]byte{mustJSON(t, spec), mustJSON(t, res)} {
		if strings.Contains(string(b), s.Password) {
			t.Errorf("the password shows: %s", b)
		}
	}
	// The batch's identity of the source is the one the run read.
	id, err := IdentifySource(context.Background(), &spec)
	if err != nil || id.Same(r.SourceID()) != nil {
		t.Errorf("IdentifySource = %+v, %v; the run read %+v", id, err, r.SourceID())
	}
	if s.NoCookie.Load() != 0 {
		t.Errorf("%d datastore requests without the session", s.NoCookie.Load())
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVSphereConsistency: a running VM is refused without --snapshot;
// with it, a snapshot is taken, the disk read as of it, and the snapshot
// removed; an EFI VM is refused on the inventory's finding before a byte
// is read or a snapshot taken.
func TestVSphereConsistency(t *testing.T) {
	s, want := vcsim(t)
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "run01.raw")
	spec := Spec{Source: s.SourceURL("", "run01"), Output: out, VSphere: VSphereSpec{CAFile: s.CAFile, Password: s.Password}}
	if _, err := Run(ctx, spec, Env{}); !errors.Is(err, vsphere.ErrRunning) {
		t.Fatalf("running VM without --snapshot: %v", err)
	}
	spec.VSphere.Snapshot = true
	var notes []string
	res, err := Run(ctx, spec, Env{Events: func(e Event) {
		if e.Kind == Notice {
			notes = append(notes, e.Message)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if testkit.RawSHA256(t, out) != want || !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "took snapshot") }) {
		t.Errorf("output or notes wrong: %q", notes)
	}
	if snaps, _ := s.Snapshots(ctx, "run01"); len(snaps) != 0 {
		t.Errorf("snapshots left: %q", snaps)
	}
	_ = res

	s.ResetCounts()
	efi := Spec{Source: s.SourceURL("", "efi01"), Output: filepath.Join(t.TempDir(), "efi.raw"), Check: "strict", VSphere: VSphereSpec{CAFile: s.CAFile, Password: s.Password, Snapshot: true}}
	res, err = Run(ctx, efi, Env{})
	if !errors.Is(err, check.ErrRule) || res.Check == nil || !res.Check.Has(vsphere.RuleFirmware) {
		t.Fatalf("EFI VM: %v, %+v", err, res.Check)
	}
	if n := s.FolderRequests.Load(); n != 0 {
		t.Errorf("%d datastore requests before the refusal", n)
	}
	if snaps, _ := s.Snapshots(ctx, "efi01"); len(snaps) != 0 {
		t.Errorf("snapshots: %q", snaps)
	}
}

// TestVSpherePhases runs the job of a running VM with --snapshot one phase
// at a time: openVM and checkInventory read no byte of the datastore and
// take no snapshot; openDisk takes it; verifyDigests removes it once the
// pass has read everything, before the output is committed. A job that
// fails after the snapshot (here: cancelled in the pass) removes it as it
// ends.
func TestVSpherePhases(t *testing.T) {
	s, want := vcsim(t)
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "run01.raw")
	spec := Spec{Source: s.SourceURL("", "run01"), Output: out, Check: "off", Workers: 2,
		VSphere: VSphereSpec{CAFile: s.CAFile, Password: s.Password, Snapshot: true}}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	snaps := func() int {
		t.Helper()
		n, err := s.Snapshots(ctx, "run01")
		if err != nil {
			t.Fatal(err)
		}
		return len(n)
	}
	newRun := func() *run {
		return &run{s: spec.withDefaults(), res: &Result{}, clients: NewClients(), ownClients: true}
	}
	j := newRun()
	step := func(p phase, next string, check func() bool) phase {
		t.Helper()
		got, err := p(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name(p), err)
		}
		if name(got) != next || (check != nil && !check()) {
			t.Fatalf("%s named %s next (want %s); snapshots %d, datastore requests %d", name(p), name(got), next, snaps(), s.FolderRequests.Load())
		}
		return got
	}
	untouched := func() bool { return snaps() == 0 && s.FolderRequests.Load() == 0 }
	p := step(j.open, "openVM", untouched)
	p = step(p, "checkInventory", func() bool { return j.vs != nil && untouched() })
	p = step(p, "openDisk", untouched)
	p = step(p, "shape", func() bool { return snaps() == 1 && j.im != nil && j.res.SourceID != nil })
	for name(p) != "verifyDigests" {
		var err error
		if p, err = p(ctx); err != nil || p == nil {
			t.Fatalf("before verifyDigests: %v", err)
		}
	}
	if snaps() != 1 {
		t.Fatal("the snapshot went before the pass ended")
	}
	p = step(p, "commit", func() bool { return snaps() == 0 })
	for p != nil {
		var err error
		if p, err = p(ctx); err != nil {
			t.Fatal(err)
		}
	}
	j.close()
	if testkit.RawSHA256(t, out) != want || j.res.Remote.Fetched.Bytes == 0 {
		t.Fatalf("output or counts wrong: %+v", j.res.Remote)
	}

	// Cancelled in the pass: the run ends, and the snapshot goes with it.
	s.ResetCounts()
	cctx, cancel := context.WithCancel(ctx)
	s.Hook(func(*http.Request) { cancel() })
	defer s.Hook(nil)
	res, err := Run(cctx, spec, Env{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v", err)
	}
	if n := snaps(); n != 0 {
		t.Errorf("%d snapshot(s) left by the cancelled run; warnings %q", n, res.Warnings)
	}
}

// TestVSphereInspectCheck: Inspect and Check of a vsphere:// source (what
// convert info and check do): the VM and the disk as the inventory has
// them, the files' sizes, the inventory's findings in the check; a
// running VM read as of a snapshot that is gone when they return. A VM on
// a vSAN datastore, whose disk has no file to read, is checked by its
// inventory alone.
func TestVSphereInspectCheck(t *testing.T) {
	s, _ := vcsim(t)
	ctx := context.Background()
	spec := func(vm string, snap bool) Spec {
		return Spec{Source: s.SourceURL("", vm), VSphere: VSphereSpec{CAFile: s.CAFile, Password: s.Password, Snapshot: snap}}
	}
	in, err := Inspect(ctx, spec("run01", true), nil)
	if err != nil {
		t.Fatal(err)
	}
	if in.VSphere == nil || in.VSphere.VM.Name != "run01" || in.VSphere.Snapshot == "" || in.Format != "vmdk" || in.FileSize == 0 || in.AllocatedSize == 0 {
		t.Errorf("inspection %+v, vsphere %+v", in, in.VSphere)
	}
	if snaps, _ := s.Snapshots(ctx, "run01"); len(snaps) != 0 {
		t.Errorf("snapshots left by Inspect: %q", snaps)
	}
	if _, err := Inspect(ctx, spec("run01", false), nil); !errors.Is(err, vsphere.ErrRunning) {
		t.Errorf("a running VM without --snapshot: %v", err)
	}
	r, err := Check(ctx, spec("efi01", false), CheckOptions{}, nil)
	if err != nil || !r.Has(vsphere.RuleFirmware) || !r.Has(vsphere.RuleGuestOS) || r.Count(check.Error) == 0 {
		t.Errorf("check of the EFI VM: %v, %+v", err, r)
	}

	// vSAN: the inventory says why the disk cannot be read (an object,
	// no file on the datastore: the file made for the VM is taken away).
	if err := s.Put(filepath.Join(s.Dir, "web01", "web01.vmdk"), "vsan01/vsan01.vmdk"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddVM(ctx, vcsimtest.VM{Name: "vsan01", Disks: []vcsimtest.Disk{{Chain: []string{"vsan01/vsan01.vmdk"}, Capacity: 48 << 20}}}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(s.Dir, "vsan01", "vsan01.vmdk")); err != nil {
		t.Fatal(err)
	}
	s.SetDatastoreType("vsan")
	r, err = Check(ctx, spec("vsan01", false), CheckOptions{}, nil)
	if err != nil || !r.Has(vsphere.RuleDatastore) || r.Status != "errors" {
		t.Errorf("check of the vSAN VM: %v, %+v", err, r)
	}
	if _, err := Inspect(ctx, spec("vsan01", false), nil); err == nil {
		t.Error("Inspect of a disk with no file to read")
	}
}
