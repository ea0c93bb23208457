package check

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
)

// winCase is one Windows variant: a guest that breaks one rule (or none),
// the rules of warning and error severity it must give, and a piece of a
// message or evidence that must be there.
type winCase struct {
	name  string
	guest func(version string) testkit.WindowsGuest
	rules []string
	want  string
}

func guest(mod func(g *testkit.WindowsGuest)) func(string) testkit.WindowsGuest {
	return func(v string) testkit.WindowsGuest {
		g := testkit.WindowsGuest{Version: v}
		if mod != nil {
			mod(&g)
		}
		return g
	}
}

func sysReg(reg string) func(string) testkit.WindowsGuest {
	return guest(func(g *testkit.WindowsGuest) { g.System = reg })
}

// mapping is the .reg text that deletes the clean guest's viostor PCI
// mapping.
func deleteMapping(v string) string {
	if v == "2008r2" {
		return "[-\\ControlSet001\\Control\\CriticalDeviceDatabase\\pci#ven_1af4&dev_1001&subsys_00021af4&rev_00]\n\n"
	}
	return "[-\\DriverDatabase\\DeviceIds\\PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00]\n\n"
}

const staticIP = "[\\ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{6a2b1c3d-0000-4e5f-8a9b-0c1d2e3f4a5b}]\n\"EnableDHCP\"=dword:00000000\n\"IPAddress\"="

// windowsCases are the variants, each built for every version.
func windowsCases() []winCase {
	return []winCase{
		{name: "clean", guest: guest(nil)},
		{name: "32-bit", guest: guest(func(g *testkit.WindowsGuest) { g.Machine = 0x14c }), rules: []string{RuleWinArch}, want: "PE Machine 0x014c"},
		{name: "virtio-start-3", guest: sysReg("[\\ControlSet001\\Services\\viostor]\n\"Start\"=dword:00000003\n\n"),
			rules: []string{RuleWinVirtio}, want: "Start=3"},
		{name: "virtio-no-mapping", guest: func(v string) testkit.WindowsGuest {
			return testkit.WindowsGuest{Version: v, System: deleteMapping(v)}
		}, rules: []string{RuleWinVirtio}, want: "no virtio PCI device (VEN_1AF4&DEV_1001/1042) is mapped"},
		{name: "virtio-staged", guest: func(v string) testkit.WindowsGuest {
			return testkit.WindowsGuest{Version: v, System: "[-\\ControlSet001\\Services\\viostor]\n\n" + deleteMapping(v),
				Files: map[string][]byte{"/Windows/System32/DriverStore/FileRepository/viostor.inf_amd64_47c5a4b1e2d1e7c3/viostor.sys": []byte("MZ")}}
		}, rules: []string{RuleWinVirtio}, want: "only staged in the driver store"},
		{name: "virtio-none", guest: func(v string) testkit.WindowsGuest {
			return testkit.WindowsGuest{Version: v, System: "[-\\ControlSet001\\Services\\viostor]\n\n" + deleteMapping(v)}
		}, rules: []string{RuleWinVirtio}, want: "no virtio storage driver"},
		{name: "vioscsi", guest: func(v string) testkit.WindowsGuest {
			reg := "[-\\ControlSet001\\Services\\viostor]\n\n" + deleteMapping(v) + "[\\ControlSet001\\Services\\vioscsi]\n\"Start\"=dword:00000000\n\n"
			if v == "2008r2" {
				reg += "[\\ControlSet001\\Control\\CriticalDeviceDatabase\\pci#ven_1af4&dev_1004&subsys_00081af4&rev_00]\n\"Service\"=\"vioscsi\"\n\n"
			} else {
				reg += "[\\DriverDatabase\\DeviceIds\\PCI\\VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01]\n\"vioscsi.inf\"=hex:01,ff,00,00\n\n" +
					"[\\DriverDatabase\\DriverInfFiles\\vioscsi.inf]\n\"Active\"=\"vioscsi.inf_amd64_1\"\n\n" +
					"[\\DriverDatabase\\DriverPackages\\vioscsi.inf_amd64_1\\Configurations\\scsi_inst]\n\"Service\"=\"vioscsi\"\n\n"
			}
			return testkit.WindowsGuest{Version: v, System: reg}
		}},
		{name: "no-netkvm", guest: sysReg("[-\\ControlSet001\\Services\\netkvm]\n\n"), rules: []string{RuleWinVirtio}, want: "netkvm"},
		{name: "qemu-ga", guest: sysReg("[\\ControlSet001\\Services\\QEMU-GA]\n\"ImagePath\"=" + testkit.HexReg(2, `"C:\Program Files\Qemu-ga\qemu-ga.exe" -d`) + "\n\n"),
			rules: []string{RuleWinQemuGA}, want: `Services\QEMU-GA`},
		{name: "cloudbase-init", guest: guest(func(g *testkit.WindowsGuest) {
			g.Software = "[\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{A1B2C3D4-0000-1111-2222-333344445555}]\n\"DisplayName\"=\"Cloudbase-Init 1.1.4\"\n\n"
		}), rules: []string{RuleWinCloudbase}, want: "Cloudbase-Init 1.1.4"},
		{name: "cloudbase-init-service", guest: sysReg("[\\ControlSet001\\Services\\cloudbase-init]\n\"DisplayName\"=\"Cloud Initialization Service\"\n\n"),
			rules: []string{RuleWinCloudbase}, want: `Services\cloudbase-init`},
		{name: "no-agent", guest: sysReg("[-\\ControlSet001\\Services\\JCSAgentCore]\n\n"), rules: []string{RuleWinAgent}},
		{name: "firewall-public", guest: sysReg("[\\ControlSet001\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\PublicProfile]\n\"EnableFirewall\"=dword:00000001\n\n"),
			rules: []string{RuleWinFirewall}, want: "Public profile"},
		{name: "firewall-policy", guest: guest(func(g *testkit.WindowsGuest) {
			g.Software = "[\\Policies\\Microsoft\\WindowsFirewall\\DomainProfile]\n\"EnableFirewall\"=dword:00000001\n\n"
		}), rules: []string{RuleWinFirewall}, want: "by Group Policy"},
		{name: "firewall-on-policy-off", guest: guest(func(g *testkit.WindowsGuest) {
			for _, p := range []string{"DomainProfile", "StandardProfile", "PublicProfile"} {
				g.System += "[\\ControlSet001\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\" + p + "]\n\"EnableFirewall\"=dword:00000001\n\n"
			}
			for _, p := range []string{"DomainProfile", "PrivateProfile", "PublicProfile"} {
				g.Software += "[\\Policies\\Microsoft\\WindowsFirewall\\" + p + "]\n\"EnableFirewall\"=dword:00000000\n\n"
			}
		})},
		{name: "rdp-denied", guest: sysReg("[\\ControlSet001\\Control\\Terminal Server]\n\"fDenyTSConnections\"=dword:00000001\n\n"),
			rules: []string{RuleWinRDP}, want: "fDenyTSConnections=1"},
		{name: "rdp-policy", guest: guest(func(g *testkit.WindowsGuest) {
			g.Software = "[\\Policies\\Microsoft\\Windows NT\\Terminal Services]\n\"fDenyTSConnections\"=dword:00000001\n\n"
		}), rules: []string{RuleWinRDP}, want: "Group Policy"},
		{name: "rdp-port", guest: sysReg("[\\ControlSet001\\Control\\Terminal Server\\WinStations\\RDP-Tcp]\n\"PortNumber\"=dword:00000d3e\n\n"),
			rules: []string{RuleWinRDP}, want: "PortNumber=3390"},
		{name: "static-ip", guest: sysReg(staticIP + testkit.HexReg(7, "192.168.10.5") + "\n\n"),
			rules: []string{RuleWinDHCP}, want: "192.168.10.5"},
		{name: "ipv6-off", guest: sysReg("[\\ControlSet001\\Services\\Tcpip6\\Parameters]\n\"DisabledComponents\"=dword:000000ff\n\n"), want: "DisabledComponents=0xff"},
		{name: "dirty", guest: guest(func(g *testkit.WindowsGuest) { g.Dirty = true }), rules: []string{RuleDirty}, want: "marked dirty"},
		{name: "hibernated", guest: guest(func(g *testkit.WindowsGuest) {
			g.Files = map[string][]byte{"/hiberfil.sys": []byte("HIBR\x00\x00\x00\x00")}
		}),
			rules: []string{RuleWinHibernated}, want: `"HIBR"`},
		{name: "resumed", guest: guest(func(g *testkit.WindowsGuest) {
			g.Files = map[string][]byte{"/hiberfil.sys": []byte("wake\x00\x00\x00\x00")}
		})},
		{name: "hive-dirty", guest: guest(func(g *testkit.WindowsGuest) { g.DirtyHive = true }), rules: []string{RuleWinHiveDirty}, want: "SYSTEM.LOG1"},
		{name: "bitlocker", guest: guest(func(g *testkit.WindowsGuest) { g.BitLocker = true }), rules: []string{RuleWinBitLocker}, want: "-FVE-FS-"},
		{name: "full", guest: guest(func(g *testkit.WindowsGuest) { g.Full = true }), rules: []string{RuleSpace}, want: "full"},
		{name: "other-version", guest: func(v string) testkit.WindowsGuest {
			g := testkit.WindowsGuest{Version: v}
			switch v {
			case "2008r2":
				g.Software = "[\\Microsoft\\Windows NT\\CurrentVersion]\n\"ProductName\"=\"Windows Server 2008 Standard\"\n\"CurrentVersion\"=\"6.0\"\n\n"
			case "2012r2":
				g.Software = "[\\Microsoft\\Windows NT\\CurrentVersion]\n\"ProductName\"=\"Windows 8.1 Pro\"\n\"InstallationType\"=\"Client\"\n\n"
			default:
				g.Software = "[\\Microsoft\\Windows NT\\CurrentVersion]\n\"ProductName\"=\"Windows Server 2019 Standard\"\n\"CurrentBuildNumber\"=\"17763\"\n\n"
			}
			return g
		}, rules: []string{RuleWinVersion}, want: "Other Windows"},
	}
}

// wantOS is what each clean version's report says of its system.
var wantOS = map[string]OS{
	"2008r2": {OSType: "windows", Platform: "Windows Server", Name: "Windows Server 2008 R2 Standard", ID: "windows", Version: "2008 R2", Architecture: "x86_64", RootPartition: 2},
	"2012r2": {OSType: "windows", Platform: "Windows Server", Name: "Windows Server 2012 R2 Standard", ID: "windows", Version: "2012 R2", Architecture: "x86_64", RootPartition: 2},
	"2016":   {OSType: "windows", Platform: "Windows Server", Name: "Windows Server 2016 Standard", ID: "windows", Version: "2016", Architecture: "x86_64", RootPartition: 1},
}

func checkWindowsReport(t *testing.T, r *Report, version string, c winCase) {
	t.Helper()
	var text strings.Builder
	r.WriteText(&text, Info)
	got := r.Rules(Warning)
	want := slices.Clone(c.rules)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("rules %v, want %v\n%s", got, want, text.String())
	}
	if c.want != "" && !strings.Contains(text.String(), c.want) {
		t.Errorf("no %q in the report:\n%s", c.want, text.String())
	}
	for _, f := range r.Findings {
		if f.Message == "" || f.Rule == "" || (strings.HasPrefix(f.Rule, "windows.") && f.Rule != RuleWindowsOff && f.Partition == 0) {
			t.Errorf("finding without rule, message or partition: %+v", f)
		}
	}
	switch c.name {
	case "clean":
		if r.OS != wantOS[version] || r.Status != "pass" {
			t.Errorf("OS %+v, status %s, want %+v", r.OS, r.Status, wantOS[version])
		}
		if f := r.ImportFields(); f.OSType != "windows" || f.Platform != "Windows Server" || f.OSVersion != wantOS[version].Version || f.Architecture != "x86_64" {
			t.Errorf("import fields %+v", f)
		}
		if info := r.Rules(Info); !slices.Equal(info, []string{RuleWinIPv6, RuleWindowsOff, RuleWinVersion}) {
			t.Errorf("info rules %v", info)
		}
		for _, p := range r.Partitions {
			if p.FS != "ntfs" || p.UsedPct <= 0 || p.UsedPct >= 98 {
				t.Errorf("partition %+v", p)
			}
		}
	case "32-bit":
		if r.OS.Architecture != "i386" {
			t.Errorf("architecture %q", r.OS.Architecture)
		}
	}
}

func TestWindowsRules(t *testing.T) {
	t.Parallel()
	versions := testkit.WindowsVersions
	if testing.Short() {
		versions = versions[len(versions)-1:] // 2016 alone
	}
	for _, v := range versions {
		for _, c := range windowsCases() {
			t.Run(v+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				disk := testkit.MakeWindowsDisk(t, t.TempDir(), c.guest(v))
				checkWindowsReport(t, runCheck(t, disk, Options{}), v, c)
			})
		}
	}
}

// TestWindowsContainers runs a subset of the variants through VMDK, VHD
// and QCOW2 containers, as qemu-img writes them.
func TestWindowsContainers(t *testing.T) {
	if testing.Short() {
		t.Skip("the container variants")
	}
	t.Parallel()
	cases := windowsCases()
	pick := map[string]bool{"clean": true, "virtio-start-3": true, "firewall-policy": true, "static-ip": true, "hibernated": true}
	for i, v := range testkit.WindowsVersions {
		for j, c := range cases {
			if !pick[c.name] {
				continue
			}
			format := []string{"vmdk", "vpc", "qcow2"}[(i+j)%3]
			t.Run(fmt.Sprintf("%s/%s/%s", v, c.name, format), func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				raw := testkit.MakeWindowsDisk(t, dir, c.guest(v))
				img := testkit.Convert(t, raw, filepath.Join(dir, "disk."+format), format)
				os.Remove(raw)
				r := runCheck(t, img, Options{})
				checkWindowsReport(t, r, v, c)
			})
		}
	}
}

// counting is a Disk that counts the bytes read through it.
type counting struct {
	Disk
	bytes, reads atomic.Int64
}

func (c *counting) ReadAt(p []byte, off int64) (int, error) {
	c.bytes.Add(int64(len(p)))
	c.reads.Add(1)
	return c.Disk.ReadAt(p, off)
}

// TestWindowsBytesRead checks a 40 GiB (sparse) Windows disk, C: of 40
// GiB with its 1.25 MiB $Bitmap, and reports what the check read: the
// metadata and the hives only.
func TestWindowsBytesRead(t *testing.T) {
	if testing.Short() {
		t.Skip("a 40 GiB sparse disk")
	}
	t.Parallel()
	disk := testkit.MakeWindowsDisk(t, t.TempDir(), testkit.WindowsGuest{Version: "2016", SizeMiB: 40<<10 - 2})
	im, err := reader.Open(disk, reader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	c := &counting{Disk: im}
	r, err := Run(context.Background(), c, Options{Format: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Rules(Warning); len(got) != 0 || r.OS.Version != "2016" || r.VirtualSize != 40<<30 {
		t.Fatalf("rules %v, OS %+v, size %d", got, r.OS, r.VirtualSize)
	}
	t.Logf("the check of a %d GiB Windows disk read %d bytes (%.2f MiB) in %d reads", r.VirtualSize>>30, c.bytes.Load(), float64(c.bytes.Load())/(1<<20), c.reads.Load())
	if c.bytes.Load() > 8<<20 {
		t.Errorf("read %d bytes: more than the metadata", c.bytes.Load())
	}
}

// panicky is a disk whose reads past its first sector panic, as a reader
// bug would.
type panicky struct{ Disk }

func (p panicky) ReadAt(b []byte, off int64) (int, error) {
	if off >= 512 {
		panic("reader bug")
	}
	return p.Disk.ReadAt(b, off)
}

// TestWindowsPanicIsFinding: a panic while the Windows rules read becomes
// a finding, not a crash.
func TestWindowsPanicIsFinding(t *testing.T) {
	t.Parallel()
	l, data := newLayout(loadSeed(t, "ntfs.img.gz"))
	r := &Report{}
	windowsRules(r, panicky{sparseImage{l, data}}, []*Partition{{Index: 1, Size: l.size, FS: "ntfs"}})
	f := r.Findings[len(r.Findings)-1]
	if f.Rule != RuleWindowsOff || f.Severity != Warning || !strings.Contains(f.Message, "reader bug") {
		t.Errorf("findings %+v", r.Findings)
	}
}
