package testkit

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Windows versions MakeWindowsDisk lays out.
var WindowsVersions = []string{"2008r2", "2012r2", "2016"}

// WindowsGuest describes a Windows system disk for MakeWindowsDisk. The
// zero value beside Version is a guest that breaks none of the cloud's
// rules.
type WindowsGuest struct {
	// Version is "2008r2", "2012r2" or "2016".
	Version string
	// System and Software are .reg text merged after the clean guest's
	// own (keys from the hive root: "[\ControlSet001\Services\viostor]";
	// "name"=- deletes a value, [-\Key] a key).
	System, Software string
	// Machine is cmd.exe's PE machine (default 0x8664).
	Machine uint16
	// Files are more files on C: (path from its root -> contents).
	Files map[string][]byte
	// Dirty sets the dirty flag of C:; BitLocker turns C:'s OEM id into
	// -FVE-FS-; DirtyHive makes the SYSTEM hive's sequence numbers differ
	// (writes left in its logs).
	Dirty, BitLocker, DirtyHive bool
	// SizeMiB is C:'s size (default 24); above 64, C: is made at 24 MiB
	// and grown with ntfsresize (a 40 GiB volume stays sparse).
	SizeMiB int64
	// Full fills C: but for 16 clusters (for fs.space).
	Full bool
}

// SystemReserved is true for the layouts with a "System Reserved"
// partition before C: (2008 R2, 2012 R2), as Windows Setup makes them.
func (g WindowsGuest) SystemReserved() bool { return g.Version != "2016" }

// CleanSystemReg is the SYSTEM hive of a guest ready for the cloud: the
// viostor driver loading at boot with its PCI mapping (CriticalDeviceDatabase
// on 2008 R2, DriverDatabase later), netkvm, the cloud's agent, the
// firewall off, RDP on 3389, DHCP.
func CleanSystemReg(version string) string {
	viostor := hexReg(2, `system32\drivers\viostor.sys`)
	reg := `[\Select]
"Current"=dword:00000001
"Default"=dword:00000001

[\ControlSet001\Services\viostor]
"Type"=dword:00000001
"Start"=dword:00000000
"ImagePath"=` + viostor + `

[\ControlSet001\Services\netkvm]
"Type"=dword:00000001
"Start"=dword:00000003

[\ControlSet001\Services\JCSAgentCore]
"DisplayName"="JCS Agent Core"
"Start"=dword:00000002
"ImagePath"=` + hexReg(2, `"C:\Program Files\JD.com\jCloud\JCSAgentCore.exe"`) + `

[\ControlSet001\Services\SharedAccess\Parameters\FirewallPolicy\DomainProfile]
"EnableFirewall"=dword:00000000

[\ControlSet001\Services\SharedAccess\Parameters\FirewallPolicy\StandardProfile]
"EnableFirewall"=dword:00000000

[\ControlSet001\Services\SharedAccess\Parameters\FirewallPolicy\PublicProfile]
"EnableFirewall"=dword:00000000

[\ControlSet001\Control\Terminal Server]
"fDenyTSConnections"=dword:00000000

[\ControlSet001\Control\Terminal Server\WinStations\RDP-Tcp]
"PortNumber"=dword:00000d3d

[\ControlSet001\Control\Session Manager\Environment]
"PROCESSOR_ARCHITECTURE"="AMD64"

[\ControlSet001\Services\Tcpip\Parameters\Interfaces\{6a2b1c3d-0000-4e5f-8a9b-0c1d2e3f4a5b}]
"EnableDHCP"=dword:00000001

[\ControlSet001\Services\Tcpip\Parameters\Interfaces\{11111111-2222-3333-4444-555555555555}]
"EnableDHCP"=dword:00000000

[\ControlSet001\Services\Tcpip6\Parameters]
"Dhcpv6DUID"=hex:00,01,00,01

`
	if version == "2008r2" {
		return reg + `[\ControlSet001\Control\CriticalDeviceDatabase\pci#ven_1af4&dev_1001&subsys_00021af4&rev_00]
"Service"="viostor"
"ClassGUID"="{4D36E97B-E325-11CE-BFC1-08002BE10318}"

`
	}
	return reg + `[\DriverDatabase\DeviceIds\PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00]
"oem2.inf"=hex:01,ff,00,00

[\DriverDatabase\DriverInfFiles\oem2.inf]
@=` + hexReg(7, "viostor.inf_amd64_47c5a4b1e2d1e7c3") + `
"Active"="viostor.inf_amd64_47c5a4b1e2d1e7c3"

[\DriverDatabase\DriverPackages\viostor.inf_amd64_47c5a4b1e2d1e7c3\Configurations\rhelscsi_inst]
"Service"="viostor"

`
}

// CleanSoftwareReg is the SOFTWARE hive of the version: the product and
// version keys.
func CleanSoftwareReg(version string) string {
	cv := `[\Microsoft\Windows NT\CurrentVersion]
`
	switch version {
	case "2008r2":
		cv += `"ProductName"="Windows Server 2008 R2 Standard"
"CurrentVersion"="6.1"
"CurrentBuildNumber"="7601"
"EditionID"="ServerStandard"
`
	case "2012r2":
		cv += `"ProductName"="Windows Server 2012 R2 Standard"
"CurrentVersion"="6.3"
"CurrentBuildNumber"="9600"
"InstallationType"="Server"
`
	case "2016":
		cv += `"ProductName"="Windows Server 2016 Standard"
"CurrentVersion"="6.3"
"CurrentMajorVersionNumber"=dword:0000000a
"CurrentMinorVersionNumber"=dword:00000000
"CurrentBuildNumber"="14393"
"InstallationType"="Server"
`
	}
	return cv + `
[\Microsoft\Windows\CurrentVersion\Uninstall\{5B5A1F2E-0000-4C3D-9E8F-0A1B2C3D4E5F}]
"DisplayName"="virtio-win-guest-tools"

`
}

// hexReg writes a string value as .reg hex(kind) data (2: REG_EXPAND_SZ,
// 7: REG_MULTI_SZ).
func hexReg(kind int, s string) string {
	b := UTF16Z(s)
	if kind == 7 {
		b = append(b, 0, 0)
	}
	h := make([]string, len(b))
	for i, c := range b {
		h[i] = fmt.Sprintf("%02x", c)
	}
	return fmt.Sprintf("hex(%d):%s", kind, strings.Join(h, ","))
}

// HexReg is hexReg for tests that write their own values.
func HexReg(kind int, s string) string { return hexReg(kind, s) }

// MakeWindowsDisk builds a sparse RAW MBR disk holding the guest: for
// 2008 R2 and 2012 R2 a 2 MiB "System Reserved" NTFS partition (active,
// with bootmgr) then C:, for 2016 C: alone (active). C: holds
// \Windows\System32\config\SYSTEM and SOFTWARE (built by hivexregedit
// from CleanSystemReg/CleanSoftwareReg and the guest's own .reg text),
// \Windows\System32\cmd.exe (a PE header) and the guest's files.
func MakeWindowsDisk(t testing.TB, dir string, g WindowsGuest) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if g.Machine == 0 {
		g.Machine = 0x8664
	}
	if g.SizeMiB == 0 {
		g.SizeMiB = 24
	}
	sys := filepath.Join(dir, "SYSTEM")
	soft := filepath.Join(dir, "SOFTWARE")
	MakeHive(t, sys, CleanSystemReg(g.Version)+g.System)
	MakeHive(t, soft, CleanSoftwareReg(g.Version)+g.Software)
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(p)
		return b
	}
	sysHive := read(sys)
	if g.DirtyHive {
		sysHive[4]++ // the primary sequence number
	}
	files := map[string][]byte{
		"/Windows/System32/config/SYSTEM":   sysHive,
		"/Windows/System32/config/SOFTWARE": read(soft),
		"/Windows/System32/cmd.exe":         PE(g.Machine),
		"/pagefile.sys":                     nil,
	}
	for p, b := range g.Files {
		files[p] = b
	}
	c := filepath.Join(dir, "c.img")
	MakeNTFS(t, c, min(g.SizeMiB, 24), "", files)
	if g.SizeMiB > 24 {
		Need(t, "ntfsresize")
		if err := os.Truncate(c, g.SizeMiB<<20); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("ntfsresize", "-f", "-s", fmt.Sprint(g.SizeMiB<<20), c)
		cmd.Stdin = strings.NewReader("y\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ntfsresize: %v\n%s", err, out)
		}
		// ntfsresize schedules a chkdsk (the dirty flag); Windows would
		// clear it at the next boot.
		setNTFSDirty(t, c, 0, false)
	}
	if g.Full {
		var cluster, free int64
		for _, line := range strings.Split(Run(t, "ntfsinfo", "-m", c), "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
			switch k {
			case "Cluster Size":
				fmt.Sscan(v, &cluster)
			case "Free Clusters":
				fmt.Sscan(v, &free)
			}
		}
		if cluster == 0 || free < 32 {
			t.Fatalf("ntfsinfo: cluster size %d, %d free clusters", cluster, free)
		}
		big := filepath.Join(dir, "big.dat")
		if err := os.WriteFile(big, bytes.Repeat([]byte{0x5a}, int((free-16)*cluster)), 0o644); err != nil {
			t.Fatal(err)
		}
		Run(t, "ntfscp", "-q", c, big, "/big.dat")
		os.Remove(big)
	}
	var parts []FSPart
	if g.SystemReserved() {
		sr := filepath.Join(dir, "sr.img")
		MakeNTFS(t, sr, 2, "System Reserved", map[string][]byte{"/bootmgr": PE(0x14c), "/Boot/BCD": EmptyHive()})
		parts = append(parts, FSPart{SizeMiB: 2, Type: "7", Bootable: true, Image: sr})
	}
	if g.Dirty {
		SetNTFSDirty(t, c, 0)
	}
	if g.BitLocker {
		f, err := os.OpenFile(c, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("-FVE-FS-"), 3); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	parts = append(parts, FSPart{SizeMiB: g.SizeMiB, Type: "7", Bootable: !g.SystemReserved(), Image: c})
	return MakeRootDisk(t, dir, RootDiskOptions{BootCode: true, Parts: parts})
}
