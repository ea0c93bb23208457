package vsphere

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// VM is what the inventory says of a virtual machine.
type VM struct {
	// Name is the VM's name; URL its vsphere:// URL (no user).
	Name string `json:"name"`
	URL  string `json:"url"`
	// PowerState is poweredOn, poweredOff or suspended.
	PowerState string `json:"power_state"`
	// Firmware is bios or efi.
	Firmware string `json:"firmware"`
	// GuestID is the guest OS the VM is configured for
	// ("ubuntu64Guest"); GuestName its full name.
	GuestID   string `json:"guest_id,omitempty"`
	GuestName string `json:"guest_name,omitempty"`
	// Tools is VMware Tools' state: running, not running, not installed.
	Tools    string `json:"tools,omitempty"`
	Template bool   `json:"template,omitempty"`
	CPUs     int32  `json:"cpus,omitempty"`
	MemoryMB int32  `json:"memory_mb,omitempty"`
	// Disks are the virtual disks, the boot disk first, then in the order
	// of their controllers and units.
	Disks []Disk `json:"disks"`
	// Snapshots are the VM's snapshots, oldest first.
	Snapshots []Snapshot `json:"snapshots,omitempty"`

	ref        types.ManagedObjectReference
	datacenter string
	// datastores are the VM's datastores: name and URL
	// (ds:///vmfs/volumes/UUID/).
	datastores []datastore
	// files are the VM's files by layoutEx key.
	files map[int32]types.VirtualMachineFileLayoutExFileInfo
}

// Disk is one virtual disk of a VM.
type Disk struct {
	// Index is the disk's number for --disk, from 0.
	Index int    `json:"index"`
	Label string `json:"label"`
	Key   int32  `json:"key"`
	// Capacity is the virtual size in bytes.
	Capacity int64 `json:"capacity"`
	// Bus is where it sits: "scsi0:0", "nvme0:1", "sata0:0", "ide0:0".
	Bus string `json:"bus"`
	// File is the top file of its chain, "[datastore] folder/name.vmdk".
	File      string `json:"file"`
	Datastore string `json:"datastore,omitempty"`
	// DatastoreType is VMFS, NFS, NFS41, vsan, VVOL, PMEM, ...
	DatastoreType string `json:"datastore_type,omitempty"`
	// Backing is flat, rdm, sesparse, sparse or another kind.
	Backing string `json:"backing"`
	// Mode is persistent, independent_persistent, ...; Sharing
	// sharingNone or sharingMultiWriter.
	Mode    string `json:"mode,omitempty"`
	Sharing string `json:"sharing,omitempty"`
	Thin    bool   `json:"thin,omitempty"`
	// DeltaFormat is the format of its delta files when it has a chain:
	// redoLogFormat (vmfsSparse), seSparseFormat, nativeFormat.
	DeltaFormat string `json:"delta_format,omitempty"`
	// Chain are the descriptors of its chain, top first.
	Chain []string `json:"chain"`
	// Allocated is what its files take on the datastore (layoutEx).
	Allocated int64 `json:"allocated,omitempty"`
	// Boot is set on the disk the VM boots from.
	Boot bool `json:"boot,omitempty"`

	dsRef   *types.ManagedObjectReference
	rdmMode string
}

// Snapshot is one snapshot of a VM.
type Snapshot struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	ID          int32     `json:"id"`
	ref         types.ManagedObjectReference
}

var vmProps = []string{"name", "config", "runtime.powerState", "guest.toolsRunningStatus", "guest.toolsVersionStatus2", "snapshot", "layoutEx", "datastore"}

// ErrNotFound: the URL names no VM (or folder).
var ErrNotFound = errors.New("not found in the inventory")

// FindVM finds the VM the session's URL names and reads its inventory.
func (s *Session) FindVM(ctx context.Context) (*VM, error) {
	loc := s.loc
	if loc.Path == "" {
		return nil, fmt.Errorf("%s: %w: name a VM: vsphere://HOST/%s/vm/FOLDER/VM (convert vsphere ls %s lists them)", loc.String(), ErrNotFound, loc.Datacenter, loc.String())
	}
	ref, err := object.NewSearchIndex(s.client).FindByInventoryPath(ctx, loc.InventoryPath())
	if err != nil {
		return nil, fmt.Errorf("%s: finding %s: %w", loc.String(), loc.InventoryPath(), err)
	}
	if ref == nil {
		return nil, fmt.Errorf("%s: %w: no VM at %s (convert vsphere ls vsphere://%s/%s/vm lists the VMs)", loc.String(), ErrNotFound, loc.InventoryPath(), loc.Host, loc.Datacenter)
	}
	if ref.Reference().Type != "VirtualMachine" {
		return nil, fmt.Errorf("%s: %w: %s is a %s, not a VM", loc.String(), ErrNotFound, loc.InventoryPath(), ref.Reference().Type)
	}
	vms, err := s.read(ctx, []types.ManagedObjectReference{ref.Reference()}, []Location{loc})
	if err != nil {
		return nil, err
	}
	return vms[0], nil
}

// List reads every VM under the folder the session's URL names (its
// subfolders too), sorted by URL.
func (s *Session) List(ctx context.Context) ([]*VM, error) {
	loc := s.loc
	f := find.NewFinder(s.client, false)
	list, err := f.VirtualMachineList(ctx, loc.InventoryPath()+"/...")
	var nf *find.NotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: listing %s: %w", loc.String(), loc.InventoryPath(), err)
	}
	refs := make([]types.ManagedObjectReference, len(list))
	locs := make([]Location, len(list))
	prefix := "/" + loc.Datacenter + "/vm/"
	for i, vm := range list {
		refs[i] = vm.Reference()
		l := loc
		l.User = ""
		l.Path = strings.TrimPrefix(vm.InventoryPath, prefix)
		locs[i] = l
	}
	vms, err := s.read(ctx, refs, locs)
	if err != nil {
		return nil, err
	}
	sort.Slice(vms, func(i, j int) bool { return vms[i].URL < vms[j].URL })
	return vms, nil
}

// read reads the properties of the VMs and of their disks' datastores.
func (s *Session) read(ctx context.Context, refs []types.ManagedObjectReference, locs []Location) ([]*VM, error) {
	pc := property.DefaultCollector(s.client)
	var mvms []mo.VirtualMachine
	if err := pc.Retrieve(ctx, refs, vmProps, &mvms); err != nil {
		return nil, fmt.Errorf("%s: reading the VMs' inventory: %w", s.loc.String(), err)
	}
	byRef := map[types.ManagedObjectReference]*mo.VirtualMachine{}
	for i := range mvms {
		byRef[mvms[i].Self] = &mvms[i]
	}
	out := make([]*VM, 0, len(refs))
	dsRefs := map[types.ManagedObjectReference]bool{}
	for i, ref := range refs {
		m := byRef[ref]
		if m == nil {
			return nil, fmt.Errorf("%s: %w: the VM went away while it was read", locs[i].String(), ErrNotFound)
		}
		vm := newVM(m, locs[i])
		for _, d := range vm.Disks {
			if d.dsRef != nil {
				dsRefs[*d.dsRef] = true
			}
		}
		for _, r := range m.Datastore {
			dsRefs[r] = true
		}
		out = append(out, vm)
	}
	if len(dsRefs) > 0 {
		var list []types.ManagedObjectReference
		for r := range dsRefs {
			list = append(list, r)
		}
		var dss []mo.Datastore
		if err := pc.Retrieve(ctx, list, []string{"name", "summary"}, &dss); err != nil {
			return nil, fmt.Errorf("%s: reading the datastores: %w", s.loc.String(), err)
		}
		by := map[types.ManagedObjectReference]*mo.Datastore{}
		for i := range dss {
			by[dss[i].Self] = &dss[i]
		}
		for i, vm := range out {
			for _, r := range byRef[refs[i]].Datastore {
				if ds := by[r]; ds != nil {
					vm.datastores = append(vm.datastores, datastore{name: ds.Name, url: ds.Summary.Url, kind: ds.Summary.Type})
				}
			}
			for i := range vm.Disks {
				d := &vm.Disks[i]
				if d.dsRef == nil {
					continue
				}
				if ds := by[*d.dsRef]; ds != nil {
					d.Datastore = ds.Name
					d.DatastoreType = ds.Summary.Type
				}
			}
		}
	}
	return out, nil
}

// newVM reads what the VM's properties say.
func newVM(m *mo.VirtualMachine, loc Location) *VM {
	vm := &VM{Name: m.Name, URL: loc.String(), PowerState: string(m.Runtime.PowerState), ref: m.Self, datacenter: loc.Datacenter}
	vm.files = map[int32]types.VirtualMachineFileLayoutExFileInfo{}
	if m.LayoutEx != nil {
		for _, f := range m.LayoutEx.File {
			vm.files[f.Key] = f
		}
	}
	switch {
	case m.Guest == nil:
	case m.Guest.ToolsVersionStatus2 == string(types.VirtualMachineToolsVersionStatusGuestToolsNotInstalled):
		vm.Tools = "not installed"
	case m.Guest.ToolsRunningStatus == string(types.VirtualMachineToolsRunningStatusGuestToolsRunning):
		vm.Tools = "running"
	case m.Guest.ToolsVersionStatus2 != "":
		vm.Tools = "not running"
	}
	if m.Snapshot != nil {
		var walk func([]types.VirtualMachineSnapshotTree)
		walk = func(ts []types.VirtualMachineSnapshotTree) {
			for _, t := range ts {
				vm.Snapshots = append(vm.Snapshots, Snapshot{Name: t.Name, Description: t.Description, Created: t.CreateTime, ID: t.Id, ref: t.Snapshot})
				walk(t.ChildSnapshotList)
			}
		}
		walk(m.Snapshot.RootSnapshotList)
		sort.SliceStable(vm.Snapshots, func(i, j int) bool { return vm.Snapshots[i].Created.Before(vm.Snapshots[j].Created) })
	}
	c := m.Config
	if c == nil {
		return vm
	}
	vm.Firmware = c.Firmware
	if vm.Firmware == "" {
		vm.Firmware = "bios"
	}
	vm.GuestID, vm.GuestName, vm.Template = c.GuestId, c.GuestFullName, c.Template
	vm.CPUs, vm.MemoryMB = c.Hardware.NumCPU, c.Hardware.MemoryMB
	vm.Disks = disks(c.Hardware.Device, c.BootOptions)
	if m.LayoutEx != nil {
		for i := range vm.Disks {
			d := &vm.Disks[i]
			for _, dl := range m.LayoutEx.Disk {
				if dl.Key != d.Key {
					continue
				}
				for _, u := range dl.Chain {
					for _, k := range u.FileKey {
						d.Allocated += vm.files[k].Size
					}
				}
			}
		}
	}
	return vm
}

// disks lists the virtual disks of a device list: the boot disk first,
// then by controller kind (IDE, SCSI, SATA, NVMe), bus and unit.
func disks(devs []types.BaseVirtualDevice, boot *types.VirtualMachineBootOptions) []Disk {
	ctrl := map[int32]types.BaseVirtualDevice{}
	for _, d := range devs {
		ctrl[d.GetVirtualDevice().Key] = d
	}
	bootKey := int32(-1)
	if boot != nil {
		for _, b := range boot.BootOrder {
			if bd, ok := b.(*types.VirtualMachineBootOptionsBootableDiskDevice); ok {
				bootKey = bd.DeviceKey
				break
			}
		}
	}
	type ranked struct {
		d    Disk
		rank [3]int32
	}
	var list []ranked
	for _, dev := range devs {
		vd, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		d := Disk{Key: vd.Key, Capacity: vd.CapacityInBytes}
		if d.Capacity == 0 {
			d.Capacity = vd.CapacityInKB * 1024
		}
		if info := vd.DeviceInfo; info != nil {
			d.Label = info.GetDescription().Label
		}
		kind, rank, bus := "disk", int32(9), int32(0)
		if vd.ControllerKey != 0 {
			if c, ok := ctrl[vd.ControllerKey]; ok {
				switch c.(type) {
				case *types.VirtualIDEController:
					kind, rank = "ide", 0
				case types.BaseVirtualSCSIController, *types.ParaVirtualSCSIController, *types.VirtualLsiLogicController, *types.VirtualLsiLogicSASController, *types.VirtualBusLogicController:
					kind, rank = "scsi", 1
				case *types.VirtualAHCIController, *types.VirtualSATAController:
					kind, rank = "sata", 2
				case *types.VirtualNVMEController:
					kind, rank = "nvme", 3
				}
				if bc, ok := c.(types.BaseVirtualController); ok {
					bus = bc.GetVirtualController().BusNumber
				}
			}
		}
		unit := int32(0)
		if vd.UnitNumber != nil {
			unit = *vd.UnitNumber
		}
		d.Bus = fmt.Sprintf("%s%d:%d", kind, bus, unit)
		backing(&d, vd.Backing)
		r := [3]int32{rank, bus, unit}
		if vd.Key == bootKey {
			d.Boot = true
			r = [3]int32{-1, 0, 0}
		}
		list = append(list, ranked{d, r})
	}
	sort.SliceStable(list, func(i, j int) bool {
		a, b := list[i].rank, list[j].rank
		return slices.Compare(a[:], b[:]) < 0
	})
	out := make([]Disk, len(list))
	for i := range list {
		out[i] = list[i].d
		out[i].Index = i
	}
	if len(out) > 0 && bootKey < 0 {
		// No boot order: the BIOS boots the first disk it finds.
		out[0].Boot = true
	}
	return out
}

// backing fills what the disk's backing says: its kind, files, mode.
func backing(d *Disk, b types.BaseVirtualDeviceBackingInfo) {
	for depth := 0; b != nil && depth < 256; depth++ {
		var next types.BaseVirtualDeviceBackingInfo
		var fb *types.VirtualDeviceFileBackingInfo
		kind := ""
		switch x := b.(type) {
		case *types.VirtualDiskFlatVer2BackingInfo:
			kind, fb = "flat", &x.VirtualDeviceFileBackingInfo
			if depth == 0 {
				d.Mode, d.Sharing, d.DeltaFormat = x.DiskMode, x.Sharing, x.DeltaDiskFormat
				d.Thin = x.ThinProvisioned != nil && *x.ThinProvisioned
			}
			if x.Parent != nil {
				next = x.Parent
			}
		case *types.VirtualDiskSeSparseBackingInfo:
			kind, fb = "sesparse", &x.VirtualDeviceFileBackingInfo
			if depth == 0 {
				d.Mode = x.DiskMode
			}
			if x.Parent != nil {
				next = x.Parent
			}
		case *types.VirtualDiskSparseVer2BackingInfo:
			kind, fb = "sparse", &x.VirtualDeviceFileBackingInfo
			if depth == 0 {
				d.Mode = x.DiskMode
			}
			if x.Parent != nil {
				next = x.Parent
			}
		case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
			kind, fb = "rdm", &x.VirtualDeviceFileBackingInfo
			if depth == 0 {
				d.Mode, d.Sharing, d.rdmMode = x.DiskMode, x.Sharing, x.CompatibilityMode
			}
			if x.Parent != nil {
				next = x.Parent
			}
		case *types.VirtualDiskLocalPMemBackingInfo:
			kind, fb = "pmem", &x.VirtualDeviceFileBackingInfo
		case types.BaseVirtualDeviceFileBackingInfo:
			kind, fb = "other", x.GetVirtualDeviceFileBackingInfo()
		default:
			kind = "other"
		}
		if depth == 0 {
			d.Backing = kind
			if fb != nil {
				d.File, d.dsRef = fb.FileName, fb.Datastore
			}
		}
		if fb != nil {
			d.Chain = append(d.Chain, fb.FileName)
		}
		b = next
	}
}

// DatastorePath is a file as vSphere names it: "[datastore] folder/name".
type DatastorePath struct {
	Datastore, Path string
}

// ParseDatastorePath reads "[datastore] folder/name".
func ParseDatastorePath(s string) (DatastorePath, bool) {
	var p object.DatastorePath
	if !p.FromString(s) || p.Datastore == "" {
		return DatastorePath{}, false
	}
	return DatastorePath{Datastore: p.Datastore, Path: path.Clean("/" + p.Path)[1:]}, true
}

func (p DatastorePath) String() string { return "[" + p.Datastore + "] " + p.Path }

// datastore is one datastore a VM uses.
type datastore struct {
	name, url, kind string
}
