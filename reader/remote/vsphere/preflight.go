package vsphere

import (
	"fmt"
	"strings"

	"vmimport/internal/units"
)

// Severity of a finding, as the import check counts them.
type Severity int

// Severities, as package check has them.
const (
	Info Severity = iota
	Warning
	Error
)

// Finding is what the inventory says about the import, before a byte of
// the disk is read. Rule ids start with "vsphere.".
type Finding struct {
	Rule     string
	Severity Severity
	Message  string
}

// Rule ids of the inventory's findings.
const (
	RuleFirmware  = "vsphere.firmware"
	RuleDisks     = "vsphere.disks"
	RuleDiskKind  = "vsphere.disk-kind"
	RuleDatastore = "vsphere.datastore"
	RuleSnapshots = "vsphere.snapshots"
	RuleGuestOS   = "vsphere.guest-os"
	RuleTools     = "vsphere.tools"
	RulePower     = "vsphere.power"
)

// Preflight is what the inventory says about importing disk n of the VM,
// before a byte of it is read: firmware, the other disks, the disk's kind
// and datastore, snapshots, the guest OS, VMware Tools. Errors are rules
// the import breaks (EFI) or disks convert cannot read (RDM, vSAN, vVols).
func (vm *VM) Preflight(n int) []Finding {
	var fs []Finding
	add := func(rule string, sev Severity, format string, args ...any) {
		fs = append(fs, Finding{Rule: rule, Severity: sev, Message: fmt.Sprintf(format, args...)})
	}
	if strings.EqualFold(vm.Firmware, "efi") {
		add(RuleFirmware, Error, "VM %s boots by UEFI (firmware efi), but the cloud boots by BIOS only: convert the guest to BIOS boot (an MBR disk with a BIOS boot loader) before the import", vm.Name)
	}
	if n < 0 || n >= len(vm.Disks) {
		return fs
	}
	d := vm.Disks[n]
	if len(vm.Disks) > 1 {
		var others []string
		for _, o := range vm.Disks {
			if o.Index != n {
				others = append(others, fmt.Sprintf("%d %s (%s, %s)", o.Index, o.Label, o.Bus, units.Bytes(o.Capacity)))
			}
		}
		what := "--disk " + fmt.Sprint(n)
		if d.Boot {
			what += ", the boot disk"
		} else {
			what += ", NOT the boot disk"
		}
		sev := Info
		if !d.Boot {
			sev = Warning
		}
		add(RuleDisks, sev, "VM %s has %d disks: taking disk %d %s (%s, %s, %s); the system disk is the boot disk; the others (%s) are not imported: import them as data disks, or pick another with --disk N", vm.Name, len(vm.Disks), n, d.Label, d.Bus, units.Bytes(d.Capacity), what, strings.Join(others, "; "))
	}
	switch d.Backing {
	case "flat", "sparse":
	case "rdm":
		add(RuleDiskKind, Error, "disk %d (%s) is a raw device mapping (%s mode) of a LUN: it has no file on a datastore to read; image the LUN itself, or migrate the disk to a VMDK (Storage vMotion) first", n, d.Label, d.rdmMode)
	case "sesparse":
		add(RuleDiskKind, Error, "disk %d (%s) is an SEsparse disk (%s): convert reads flat and hosted sparse VMDKs; consolidate or clone it to a flat disk first", n, d.Label, d.File)
	default:
		add(RuleDiskKind, Error, "disk %d (%s) has a %s backing, which is not a VMDK on a datastore", n, d.Label, d.Backing)
	}
	if strings.HasPrefix(d.Mode, "independent") {
		add(RuleDiskKind, Warning, "disk %d (%s) is %s: snapshots leave it out, so --snapshot cannot freeze it; power the VM off to read it consistently", n, d.Label, d.Mode)
	}
	if d.Sharing == "sharingMultiWriter" {
		add(RuleDiskKind, Warning, "disk %d (%s) is shared (multi-writer) with other VMs: they may write it while it is read; stop them, or read a clone", n, d.Label)
	}
	if strings.HasPrefix(d.Bus, "nvme") {
		add(RuleDiskKind, Warning, "disk %d (%s) is on an NVMe controller: the cloud attaches the system disk as virtio-blk; make sure the guest boots without NVMe (root= by UUID or label, virtio drivers in the initramfs)", n, d.Label)
	}
	switch strings.ToLower(d.DatastoreType) {
	case "vsan":
		add(RuleDatastore, Error, "disk %d (%s) lives on the vSAN datastore %s, which keeps disks as objects, not flat files the datastore's file access can read by ranges: Storage vMotion the VM to a VMFS or NFS datastore first, or export it", n, d.Label, d.Datastore)
	case "vvol":
		add(RuleDatastore, Error, "disk %d (%s) lives on the vVols datastore %s, whose disks are array volumes, not files: Storage vMotion the VM to a VMFS or NFS datastore first, or export it", n, d.Label, d.Datastore)
	}
	if len(vm.Snapshots) > 0 {
		names := make([]string, len(vm.Snapshots))
		for i, s := range vm.Snapshots {
			names[i] = fmt.Sprintf("%q", s.Name)
		}
		sev := Warning
		msg := "reading through the delta files of the chain"
		if d.DeltaFormat == "redoLogFormat" || d.DeltaFormat == "seSparseFormat" {
			sev = Error
			msg = fmt.Sprintf("their delta files are ESXi %s disks, which convert does not read: delete the snapshots (consolidating them into the base disk) first", d.DeltaFormat)
		}
		add(RuleSnapshots, sev, "VM %s has %d snapshot(s) (%s): the disk is %d files deep; %s", vm.Name, len(vm.Snapshots), strings.Join(names, ", "), len(d.Chain), msg)
	}
	if vm.GuestID != "" {
		add(RuleGuestOS, Info, "vCenter says the guest is %s (%s); the disk's own check tells what it holds", vm.GuestName, vm.GuestID)
	}
	if vm.Tools != "" && vm.Tools != "not installed" {
		if vm.IsWindows() {
			add(RuleTools, Warning, "VMware Tools are installed (%s): uninstall them after the migration (their drivers and services have no VMware hardware to talk to)", vm.Tools)
		} else {
			add(RuleTools, Info, "VMware Tools are installed (%s): open-vm-tools does no harm in the cloud; remove it after the migration if you like", vm.Tools)
		}
	}
	return fs
}

// IsWindows reports whether vCenter says the guest is Windows.
func (vm *VM) IsWindows() bool { return strings.HasPrefix(strings.ToLower(vm.GuestID), "win") }

// GuestOSType is the OS type vCenter's guest id says: windows, linux, or
// "" for others (other, darwin, freebsd, solaris, ...).
func (vm *VM) GuestOSType() string {
	id := strings.ToLower(vm.GuestID)
	switch {
	case id == "":
		return ""
	case strings.HasPrefix(id, "win"):
		return "windows"
	}
	for _, l := range []string{"linux", "ubuntu", "debian", "centos", "rhel", "sles", "oracle", "fedora", "opensuse", "suse", "asianux", "mandr", "turbo", "redhat", "coreos", "photon", "amazonlinux", "almalinux", "rocky", "vmwarephoton", "kylin"} {
		if strings.Contains(id, l) {
			return "linux"
		}
	}
	return ""
}

// CrossCheck compares vCenter's guest OS with what the disk's check found
// (osType linux or windows; "" when it found none).
func (vm *VM) CrossCheck(osType string) *Finding {
	want := vm.GuestOSType()
	if want == "" || osType == "" || want == osType {
		return nil
	}
	return &Finding{Rule: RuleGuestOS, Severity: Warning, Message: fmt.Sprintf("vCenter says the guest is %s (%s), but the disk holds a %s system: is this the right disk (--disk N) or the right VM?", vm.GuestName, vm.GuestID, osType)}
}
