package vsphere

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"vmimport/reader/remote"
)

// ErrRunning: the VM is powered on and no snapshot was asked for.
var ErrRunning = errors.New("the VM is running")

// SnapshotPrefix starts the name of every snapshot convert takes, so
// that one left behind (a run killed hard) can be found: ListSnapshots.
const SnapshotPrefix = "convert-"

// Source is one disk of a VM, opened for reading.
type Source struct {
	VM *VM
	// Disk is the disk read.
	Disk Disk
	// Findings are what the inventory says, before a byte is read.
	Findings []Finding

	sess *Session
	cfg  Config
	// snap is the snapshot taken for the read; nil without one.
	snap *Snapshot
	// chain are the descriptors read, top first: the disk's, or as of
	// the snapshot.
	chain []string
	files *Files
}

// Open logs in, finds the VM and reads its inventory: nothing is changed
// and no byte of a disk is read. A running VM is refused unless
// cfg.Snapshot (or identify, which only names the files).
func Open(ctx context.Context, cfg Config, identify bool) (*Source, error) {
	sess, err := Login(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s := &Source{sess: sess, cfg: cfg}
	if err := s.open(ctx, identify); err != nil {
		sess.Logout(ctx)
		return nil, err
	}
	return s, nil
}

func (s *Source) open(ctx context.Context, identify bool) error {
	vm, err := s.sess.FindVM(ctx)
	if err != nil {
		return err
	}
	s.VM = vm
	n := s.cfg.Disk
	switch {
	case len(vm.Disks) == 0:
		return fmt.Errorf("%s: the VM has no virtual disk", vm.URL)
	case n < 0 || n >= len(vm.Disks):
		return fmt.Errorf("--disk %d: VM %s has %d disk(s), 0..%d (convert vsphere ls %s lists them)", n, vm.Name, len(vm.Disks), len(vm.Disks)-1, vm.URL)
	}
	s.Disk = vm.Disks[n]
	s.chain = s.Disk.Chain
	s.Findings = vm.Preflight(n)
	if identify {
		return nil
	}
	switch vm.PowerState {
	case string(types.VirtualMachinePowerStatePoweredOn):
		if !s.cfg.Snapshot {
			return fmt.Errorf("%s: %w (powered on): its disk changes while it is read; give --snapshot to read it as of a snapshot convert takes and removes, or power it off", vm.URL, ErrRunning)
		}
	case string(types.VirtualMachinePowerStateSuspended):
		s.Findings = append(s.Findings, Finding{Rule: RulePower, Severity: Warning, Message: fmt.Sprintf("VM %s is suspended: the disk is read as the guest left it, with its memory state lost (as after a power cut); shut it down cleanly for a consistent file system", vm.Name)})
	}
	return nil
}

// Freeze settles the files to read: a powered-off or suspended VM's disk
// as it is; a running VM's as of a snapshot taken now (quiesced when
// VMware Tools run), which Close removes. note hears what it did.
func (s *Source) Freeze(ctx context.Context, note func(string)) error {
	if note == nil {
		note = func(string) {}
	}
	vm := s.VM
	if vm.PowerState != string(types.VirtualMachinePowerStatePoweredOn) {
		if s.cfg.Snapshot {
			note(fmt.Sprintf("%s is %s: its disk is read as it is, without a snapshot", vm.Name, vm.PowerState))
		}
		return nil
	}
	if strings.HasPrefix(s.Disk.Mode, "independent") {
		return fmt.Errorf("%s: disk %d (%s) is %s: a snapshot does not freeze it, so a running VM cannot read it consistently; power the VM off", vm.URL, s.Disk.Index, s.Disk.Label, s.Disk.Mode)
	}
	name := fmt.Sprintf("%s%s-%d", SnapshotPrefix, time.Now().UTC().Format("20060102T150405Z"), os.Getpid())
	desc := fmt.Sprintf("Taken by convert to read disk %d of this VM as of now; removed when the read ends. One that stays was left by a run stopped hard: remove it (convert vsphere snapshots --remove %s).", s.Disk.Index, vm.URL)
	quiesce := vm.Tools == "running"
	ref, err := s.snapshot(ctx, name, desc, quiesce)
	if err != nil && quiesce && ctx.Err() == nil {
		note(fmt.Sprintf("%s: a quiesced snapshot failed (%v); taking one without quiescing: the file systems are read as after a power cut", vm.Name, err))
		quiesce = false
		ref, err = s.snapshot(ctx, name, desc, false)
	}
	if err != nil {
		return fmt.Errorf("%s: taking a snapshot: %w", vm.URL, err)
	}
	s.snap = &Snapshot{Name: name, Description: desc, Created: time.Now(), ref: *ref}
	how := "not quiesced (VMware Tools do not run): the file systems are read as after a power cut"
	if quiesce {
		how = "quiesced"
	}
	note(fmt.Sprintf("took snapshot %q of %s (%s); it is removed when the read ends", name, vm.Name, how))
	// The disk as of the snapshot: the files the snapshot froze.
	var ms mo.VirtualMachineSnapshot
	pc := property.DefaultCollector(s.sess.client)
	if err := pc.RetrieveOne(ctx, *ref, []string{"config.hardware.device"}, &ms); err != nil {
		return fmt.Errorf("%s: reading snapshot %q: %w", vm.URL, name, err)
	}
	for _, d := range disks(ms.Config.Hardware.Device, nil) {
		if d.Key == s.Disk.Key {
			s.chain = d.Chain
			return nil
		}
	}
	return fmt.Errorf("%s: snapshot %q holds no disk %d (%s)", vm.URL, name, s.Disk.Index, s.Disk.Label)
}

// snapshot takes a snapshot without memory and waits for it.
func (s *Source) snapshot(ctx context.Context, name, desc string, quiesce bool) (*types.ManagedObjectReference, error) {
	vm := object.NewVirtualMachine(s.sess.client, s.VM.ref)
	task, err := vm.CreateSnapshot(ctx, name, desc, false, quiesce)
	if err != nil {
		return nil, err
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		if ctx.Err() != nil {
			// Cancelled while the task ran: the snapshot may exist.
			s.removeByName(name)
		}
		return nil, err
	}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		return nil, fmt.Errorf("the task returned %T, not a snapshot", info.Result)
	}
	return &ref, nil
}

// removeByName removes a snapshot of the VM by name, under a fresh
// deadline: the run's context may be cancelled.
func (s *Source) removeByName(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vm := object.NewVirtualMachine(s.sess.client, s.VM.ref)
	if t, err := vm.RemoveSnapshot(ctx, name, false, types.NewBool(true)); err == nil {
		t.Wait(ctx)
	}
}

// Snapshot is the snapshot taken for the read, or nil.
func (s *Source) Snapshot() *Snapshot { return s.snap }

// Chain are the descriptors read, top first, as vSphere names them.
func (s *Source) Chain() []string { return s.chain }

// Files maps the chain's files to the datastore's file access, through
// an Opener with o (its HTTP client and the session cookie are set
// here). It is the image.Remote the reader opens them with; Top is the
// URL of the disk's top descriptor.
func (s *Source) Files(ctx context.Context, o remote.Options) (*Files, error) {
	if s.files != nil {
		return s.files, nil
	}
	f, err := newFiles(ctx, s, o)
	if err != nil {
		return nil, err
	}
	s.files = f
	return f, nil
}

// Close removes the snapshot taken for the read (under a fresh deadline:
// it runs after a failure or an interrupt too) and logs out. A snapshot
// that cannot be removed is an error naming it: never left silently.
func (s *Source) Close(ctx context.Context) error {
	var err error
	if s.snap != nil {
		err = s.removeSnapshot(ctx)
	}
	s.sess.Logout(ctx)
	return err
}

func (s *Source) removeSnapshot(ctx context.Context) error {
	snap := s.snap
	if err := s.sess.RemoveSnapshot(ctx, s.VM, *snap); err != nil {
		return fmt.Errorf("%w; it is still there: remove it in vCenter or with convert vsphere snapshots --remove %s", err, s.VM.URL)
	}
	s.snap = nil
	return nil
}
