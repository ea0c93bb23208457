package check

// The Windows rules: the system found as libguestfs finds it (a
// systemroot \Windows with System32\config\SYSTEM and SOFTWARE and
// System32\cmd.exe), then what the registry hives and a few files say.

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"

	"vmimport/check/internal/hive"
	"vmimport/check/internal/ntfs"
)

// Windows rule ids.
const (
	RuleWinVersion    = "windows.version"
	RuleWinArch       = "windows.arch"
	RuleWinVirtio     = "windows.virtio"
	RuleWinQemuGA     = "windows.qemu-guest-agent"
	RuleWinCloudbase  = "windows.cloudbase-init"
	RuleWinAgent      = "windows.jcs-agent"
	RuleWinFirewall   = "windows.firewall"
	RuleWinRDP        = "windows.rdp"
	RuleWinDHCP       = "windows.dhcp"
	RuleWinIPv6       = "windows.ipv6"
	RuleWinHibernated = "windows.hibernated"
	RuleWinBitLocker  = "windows.bitlocker"
	RuleWinHiveDirty  = "windows.hive-dirty"
)

// Limits on what the Windows rules read.
const (
	maxServices   = 4096
	maxInterfaces = 256
	maxUninstall  = 4096
)

// win runs the rules inside a Windows system volume.
type win struct {
	r    *Report
	part int
	fs   *ntfs.FS
	root string // the systemroot, "/Windows"
	sys  *hive.Hive
	soft *hive.Hive
	ccs  string // "ControlSet001"
	// ver is the NT version ("6.1", "6.3", "10.0"), "" when unknown.
	ver      string
	services []*hive.Key
	store    []string // the names in the driver store, once read
}

const (
	systemHive   = "System32/config/SYSTEM"
	softwareHive = "System32/config/SOFTWARE"
)

// windowsRules checks the NTFS (and BitLocker) partitions of a disk that
// holds no Linux system. A panic of a reader becomes a finding.
func windowsRules(r *Report, d Disk, parts []*Partition) {
	defer func() {
		if v := recover(); v != nil {
			r.addf(RuleWindowsOff, Warning, "reading the Windows system failed (%v), so the Windows rules were not all checked; please report this with the image's first megabytes", v)
		}
	}()
	checkWindows(r, d, parts)
}

// checkWindows is windowsRules without the recover (the fuzz targets call
// it, so that a panic shows).
func checkWindows(r *Report, d Disk, parts []*Partition) {
	r.OS = OS{OSType: "windows", Platform: "Other Windows", ID: "windows"}
	var sys *win
	encrypted, unreadable := false, false
	for _, p := range parts {
		if p.FS == "bitlocker" {
			encrypted = true
			f := r.addf(RuleWinBitLocker, Error, "partition %d is encrypted with BitLocker (its boot sector says -FVE-FS-): the cloud cannot read or boot it unattended; decrypt it in the guest (manage-bde -off C:, wait until manage-bde -status says Fully Decrypted) and export again", p.Index)
			f.Partition, f.Offset = p.Index, at(p.Start+3)
			continue
		}
		sec := io.NewSectionReader(d, p.Start, max(0, min(p.Size, d.Size()-p.Start)))
		fs, err := ntfs.Open(sec, sec.Size())
		if err != nil {
			f := r.addf(RuleUnchecked, Warning, "partition %d (ntfs) could not be read, so the rules inside it were not checked: %v", p.Index, err)
			f.Partition, f.Offset = p.Index, at(p.Start)
			unreadable = true
			continue
		}
		ntfsVolume(r, fs, p)
		if sys == nil {
			for _, root := range []string{"/Windows", "/winnt"} {
				if _, err := fs.Open(root + "/" + systemHive); err == nil {
					sys = &win{r: r, part: p.Index, fs: fs, root: root}
					break
				}
			}
		}
	}
	if sys == nil {
		if encrypted {
			r.addf(RuleWindowsOff, Info, "the Windows system is on an encrypted (BitLocker) volume, so the Windows rules were not checked: decrypt it and check again")
			return
		}
		if unreadable {
			r.addf(RuleWindowsOff, Warning, "no Windows system was found on the NTFS partitions that could be read, so the Windows rules were not checked")
			return
		}
		r.addf(RuleRootFS, Error, "NTFS was found, but no Windows system on it (no \\Windows\\System32\\config\\SYSTEM): the cloud needs the system disk; export the disk that holds C:\\Windows")
		return
	}
	r.OS.RootPartition = sys.part
	for i := range parts {
		if parts[i].Index == sys.part {
			parts[i].Mount = "C:"
		}
	}
	sys.run()
}

// ntfsVolume applies the volume rules (dirty, space) to one NTFS
// partition.
func ntfsVolume(r *Report, fs *ntfs.FS, p *Partition) {
	ev := func(f *Finding) { f.Partition, f.Offset = p.Index, at(p.Start) }
	if v, err := fs.Volume(); err != nil {
		f := r.addf(RuleUnchecked, Info, "partition %d (ntfs): the volume flags could not be read: %v", p.Index, err)
		f.Partition = p.Index
	} else if v.Dirty {
		f := r.addf(RuleDirty, Error, "partition %d (ntfs) is marked dirty ($Volume flags 0x%04x): Windows did not shut down cleanly or a chkdsk is pending, and the import reads a file system that is not complete; boot the VM, run chkdsk /f if asked, shut it down cleanly and export again", p.Index, v.Flags)
		ev(f)
		f.Path = "/$Volume"
	}
	used, total, err := fs.Usage()
	if err != nil {
		f := r.addf(RuleUnchecked, Info, "partition %d (ntfs): the free space could not be read: %v", p.Index, err)
		f.Partition = p.Index
		return
	}
	if total > 0 {
		p.UsedPct = 100 * float64(used) / float64(total)
		if p.UsedPct > MaxUsedPct {
			f := r.addf(RuleSpace, Warning, "partition %d (ntfs) is %.1f%% full, above %d%%: Windows may fail to boot, update or write its page file; free some space (Disk Cleanup, or delete files) before exporting", p.Index, p.UsedPct, MaxUsedPct)
			ev(f)
			f.Path = "/$Bitmap"
		}
	}
}

func (w *win) file(name string) string { return w.root + "/" + name }

func (w *win) finding(rule string, sev Severity, file, key, value, format string, args ...any) *Finding {
	f := w.r.addf(rule, sev, format, args...)
	f.Partition, f.Path, f.Key, f.Value = w.part, file, key, value
	return f
}

// openHive opens a hive file of the system volume.
func (w *win) openHive(name string) (*hive.Hive, error) {
	f, err := w.fs.Open(w.file(name))
	if err != nil {
		return nil, err
	}
	h, err := hive.Open(f, f.Size())
	if err != nil {
		return nil, err
	}
	if h.Dirty {
		w.finding(RuleWinHiveDirty, Warning, w.file(name), "", fmt.Sprintf("sequence numbers %d, %d", h.Seq1, h.Seq2),
			"the %s hive was not fully written back (its two sequence numbers differ): its last changes are only in %s.LOG1/.LOG2, which this check does not replay, so what it read may be older than the system; boot the VM and shut it down cleanly (not by Fast Startup or a forced power-off), then export again", strings.ToUpper(name[strings.LastIndexByte(name, '/')+1:]), name[strings.LastIndexByte(name, '/')+1:])
	}
	return h, nil
}

func (w *win) run() {
	w.hibernation()
	var err error
	if w.soft, err = w.openHive(softwareHive); err != nil {
		w.finding(RuleWinVersion, Warning, w.file(softwareHive), "", "", "the SOFTWARE hive could not be read (%v): the Windows version and the installed programs are unknown; give --platform and --os-version yourself", err)
	}
	w.version()
	if w.sys, err = w.openHive(systemHive); err != nil {
		w.finding(RuleWindowsOff, Warning, w.file(systemHive), "", "", "the SYSTEM hive could not be read (%v), so the virtio drivers, services, firewall, RDP and network settings were not checked", err)
		w.arch()
		return
	}
	w.controlSet()
	w.arch()
	if w.ccs == "" {
		return
	}
	w.virtio()
	w.netkvm()
	w.agents()
	w.firewall()
	w.rdp()
	w.network()
	w.r.addf(RuleWindowsOff, Info, "not checked offline (they need the running system): Windows activation, third-party firewalls and security software, and the health of the cloud's agent")
}

// hibernation reads the start of hiberfil.sys: "hibr" (any case) is a
// hibernated system or a Fast Startup shutdown (ntfs-3g refuses to mount
// such a volume read-write for the same reason).
func (w *win) hibernation() {
	const file = "/hiberfil.sys"
	f, err := w.fs.Open(file)
	if err != nil {
		return
	}
	b := make([]byte, 4)
	if n, _ := f.ReadAt(b, 0); n < 4 {
		return
	}
	if strings.EqualFold(string(b), "hibr") {
		w.finding(RuleWinHibernated, Error, file, "", fmt.Sprintf("header %q", b),
			"Windows was hibernated or shut down with Fast Startup (hiberfil.sys starts with %q): the file system on the disk is not complete and the rest is in memory saved to hiberfil.sys; boot the VM and shut it down fully (shutdown /s /t 0), or turn hibernation and Fast Startup off (powercfg /h off), then export again", b)
	}
}

// hkey names a key of a hive for evidence.
func hkey(hiveName, path string) string { return `HKLM\` + hiveName + `\` + path }

// value reads one value of a key; ok is false when the key or value is
// not there.
func value(h *hive.Hive, key, name string) (*hive.Value, bool) {
	if h == nil {
		return nil, false
	}
	k, err := h.Key(key)
	if err != nil {
		return nil, false
	}
	v, err := k.Value(name)
	if err != nil {
		return nil, false
	}
	return v, true
}

func dword(h *hive.Hive, key, name string) (uint64, bool) {
	v, ok := value(h, key, name)
	if !ok {
		return 0, false
	}
	n, err := v.Uint()
	return n, err == nil
}

func str(h *hive.Hive, key, name string) string {
	v, ok := value(h, key, name)
	if !ok {
		return ""
	}
	s, _ := v.String()
	return s
}

// version reads SOFTWARE\Microsoft\Windows NT\CurrentVersion.
func (w *win) version() {
	const key = `Microsoft\Windows NT\CurrentVersion`
	if w.soft == nil {
		return
	}
	product := str(w.soft, key, "ProductName")
	w.ver = str(w.soft, key, "CurrentVersion")
	major, hasMajor := dword(w.soft, key, "CurrentMajorVersionNumber")
	minor, _ := dword(w.soft, key, "CurrentMinorVersionNumber")
	build := str(w.soft, key, "CurrentBuildNumber")
	if build == "" {
		build = str(w.soft, key, "CurrentBuild")
	}
	itype := str(w.soft, key, "InstallationType")
	if hasMajor {
		w.ver = fmt.Sprintf("%d.%d", major, minor)
	}
	os := &w.r.OS
	os.Name = product
	if product == "" && w.ver == "" {
		w.finding(RuleWinVersion, Warning, w.file(softwareHive), hkey("SOFTWARE", key), "", "the Windows version is not in the registry (no ProductName or CurrentVersion): give --platform and --os-version yourself")
		return
	}
	server := strings.Contains(itype, "Server") || (itype == "" && strings.Contains(product, "Server"))
	label := ""
	switch {
	case w.ver == "6.0":
		label = "2008"
	case w.ver == "6.1":
		label = "2008 R2"
	case w.ver == "6.2":
		label = "2012"
	case w.ver == "6.3":
		label = "2012 R2"
	case w.ver == "10.0" && build == "14393":
		label = "2016"
	case w.ver == "10.0" && build == "17763":
		label = "2019"
	case w.ver == "10.0" && build == "20348":
		label = "2022"
	case w.ver == "10.0" && build == "26100":
		label = "2025"
	}
	evidence := fmt.Sprintf("ProductName=%q CurrentVersion=%s CurrentBuildNumber=%s InstallationType=%q", product, w.ver, build, itype)
	if server && (label == "2008 R2" || label == "2012 R2" || label == "2016") {
		os.Platform, os.Version = "Windows Server", label
		w.finding(RuleWinVersion, Info, w.file(softwareHive), hkey("SOFTWARE", key), evidence, "%s (NT %s, build %s) found: the import body gets platform \"Windows Server\", osVersion %q", product, w.ver, build, label)
		return
	}
	what := "a client edition of Windows"
	if server {
		what = "Windows Server " + label
		if label == "" {
			what = "a Windows Server version"
		}
	}
	os.Version = label
	w.finding(RuleWinVersion, Warning, w.file(softwareHive), hkey("SOFTWARE", key), evidence, "%s (NT %s, build %s) is %s: the cloud lists Windows Server 2008 R2, 2012 R2 and 2016 only, so the import may be refused or the instance unsupported; the import body gets platform \"Other Windows\"", product, w.ver, build, what)
}

// controlSet reads SYSTEM\Select\Current.
func (w *win) controlSet() {
	n, ok := dword(w.sys, "Select", "Current")
	if !ok || n == 0 || n > 999 {
		w.finding(RuleWindowsOff, Warning, w.file(systemHive), hkey("SYSTEM", "Select"), "Current", "the SYSTEM hive names no current control set (Select\\Current), so the drivers, services, firewall, RDP and network settings were not checked")
		return
	}
	w.ccs = fmt.Sprintf("ControlSet%03d", n)
	if _, err := w.sys.Key(w.ccs); err != nil {
		w.finding(RuleWindowsOff, Warning, w.file(systemHive), hkey("SYSTEM", w.ccs), "", "the current control set %s (Select\\Current = %d) could not be read (%v), so the drivers, services, firewall, RDP and network settings were not checked", w.ccs, n, err)
		w.ccs = ""
	}
}

// arch reads the PE header of System32\cmd.exe; without it, the
// processor architecture of the session manager's environment.
func (w *win) arch() {
	file := w.file("System32/cmd.exe")
	machine, err := w.peMachine(file)
	if err != nil {
		if w.ccs != "" {
			key := w.ccs + `\Control\Session Manager\Environment`
			switch a := str(w.sys, key, "PROCESSOR_ARCHITECTURE"); strings.ToUpper(a) {
			case "AMD64":
				w.r.OS.Architecture = "x86_64"
				return
			case "X86":
				w.r.OS.Architecture = "i386"
				w.finding(RuleWinArch, Error, w.file(systemHive), hkey("SYSTEM", key), "PROCESSOR_ARCHITECTURE="+a, "the system is 32-bit Windows: the cloud imports 64-bit (x86_64) systems only; install a 64-bit Windows Server")
				return
			}
		}
		w.finding(RuleWinArch, Info, file, "", "", "cmd.exe could not be read (%v): the architecture is unknown; give --architecture yourself", err)
		return
	}
	ev := fmt.Sprintf("PE Machine 0x%04x", machine)
	switch machine {
	case 0x8664:
		w.r.OS.Architecture = "x86_64"
	case 0x14c:
		w.r.OS.Architecture = "i386"
		w.finding(RuleWinArch, Error, file, "", ev, "the system is 32-bit Windows (cmd.exe is an i386 program): the cloud imports 64-bit (x86_64) systems only; install a 64-bit Windows Server")
	case 0xaa64:
		w.r.OS.Architecture = "arm64"
		w.finding(RuleWinArch, Error, file, "", ev, "the system is Windows on arm64: the cloud's Windows images are x86_64; install an x86_64 Windows Server")
	default:
		w.finding(RuleWinArch, Error, file, "", ev, "cmd.exe is built for the PE machine 0x%04x, not x86_64: the cloud cannot run it", machine)
	}
}

func (w *win) peMachine(file string) (uint16, error) {
	f, err := w.fs.Open(file)
	if err != nil {
		return 0, err
	}
	h := make([]byte, 64)
	if n, _ := f.ReadAt(h, 0); n < len(h) || string(h[:2]) != "MZ" {
		return 0, fmt.Errorf("%s has no MZ header", file)
	}
	off := int64(binary.LittleEndian.Uint32(h[0x3c:]))
	if off < 64 || off > 64<<10 {
		return 0, fmt.Errorf("%s: the PE header offset 0x%x at 0x3c is out of range", file, off)
	}
	pe := make([]byte, 6)
	if n, _ := f.ReadAt(pe, off); n < len(pe) || string(pe[:4]) != "PE\x00\x00" {
		return 0, fmt.Errorf("%s has no PE header at 0x%x", file, off)
	}
	return binary.LittleEndian.Uint16(pe[4:]), nil
}

// virtioDriver is a virtio storage driver and the PCI device ids it
// serves (legacy and modern).
type virtioDriver struct {
	name string
	devs []string
}

var storageDrivers = []virtioDriver{{"viostor", []string{"1001", "1042"}}, {"vioscsi", []string{"1004", "1048"}}}

// virtio checks that a virtio storage driver loads at boot: its service
// starts at boot (Start = 0) and the virtio PCI device maps to it, in the
// CriticalDeviceDatabase (up to Windows 7 / 2008 R2) or the DriverDatabase
// (Windows 8 / 2012 and later). Either alone leaves the boot disk without
// a driver: 0x7B INACCESSIBLE_BOOT_DEVICE.
func (w *win) virtio() {
	var problems []string
	var evKey, evValue string
	for _, d := range storageDrivers {
		key := w.ccs + `\Services\` + d.name
		start, hasStart := dword(w.sys, key, "Start")
		_, svcErr := w.sys.Key(key)
		mapped, mapKey := w.pciMapped(d)
		staged := w.staged(d.name)
		switch {
		case svcErr == nil && hasStart && start == 0 && mapped:
			return // it loads at boot
		case svcErr == nil && !hasStart:
			problems = append(problems, fmt.Sprintf("%s is installed without a Start value, not with 0 (boot)", d.name))
			evKey, evValue = hkey("SYSTEM", key), "Start not set"
		case svcErr == nil && start != 0:
			problems = append(problems, fmt.Sprintf("%s is installed with Start = %d (%s), not 0 (boot)", d.name, start, startName(start)))
			evKey, evValue = hkey("SYSTEM", key), fmt.Sprintf("Start=%d", start)
		case svcErr == nil && !mapped:
			problems = append(problems, fmt.Sprintf("%s starts at boot but no virtio PCI device (VEN_1AF4&DEV_%s) is mapped to it in the %s", d.name, strings.Join(d.devs, "/"), w.mappingName()))
			evKey, evValue = hkey("SYSTEM", key), "Start=0"
		case svcErr != nil && staged != "":
			problems = append(problems, fmt.Sprintf("%s is only staged in the driver store (%s), not installed as a service", d.name, staged))
			if evKey == "" {
				evKey = staged
			}
		case svcErr != nil && mapped:
			problems = append(problems, fmt.Sprintf("the virtio PCI device is mapped to %s (%s) but there is no %s service", d.name, mapKey, d.name))
			if evKey == "" {
				evKey = mapKey
			}
		}
	}
	if len(problems) > 0 {
		w.finding(RuleWinVirtio, Error, w.file(systemHive), evKey, evValue, "a virtio storage driver is present but does not load at boot: %s; the instance would stop with 0x7B INACCESSIBLE_BOOT_DEVICE. Install the virtio-win drivers with a virtio disk attached (or run virt-v2v's registry changes): the viostor (or vioscsi) service needs Start = 0 and the PCI device mapping", strings.Join(problems, "; "))
	} else {
		w.finding(RuleWinVirtio, Error, w.file(systemHive), hkey("SYSTEM", w.ccs+`\Services`), "", "no virtio storage driver (viostor or vioscsi) is installed: the cloud's disk is virtio, and the instance would stop with 0x7B INACCESSIBLE_BOOT_DEVICE; install the virtio-win drivers (viostor) before exporting, with a virtio disk attached once so that Windows binds them at boot")
	}
}

func startName(start uint64) string {
	switch start {
	case 0:
		return "boot"
	case 1:
		return "system"
	case 2:
		return "automatic"
	case 3:
		return "on demand"
	case 4:
		return "disabled"
	}
	return "unknown"
}

func (w *win) mappingName() string {
	switch w.mapping() {
	case "cdd":
		return "CriticalDeviceDatabase"
	case "dd":
		return "DriverDatabase"
	}
	return "CriticalDeviceDatabase or DriverDatabase"
}

// mapping says where this Windows maps boot devices to drivers: "cdd"
// (6.1 and older), "dd" (6.2 and later), "" when the version is unknown.
func (w *win) mapping() string {
	switch w.ver {
	case "":
		return ""
	case "5.0", "5.1", "5.2", "6.0", "6.1":
		return "cdd"
	}
	return "dd"
}

// pciMapped reports whether a virtio PCI device id maps to the driver,
// and the key that says so.
func (w *win) pciMapped(d virtioDriver) (bool, string) {
	m := w.mapping()
	if m != "dd" {
		key := w.ccs + `\Control\CriticalDeviceDatabase`
		if k, err := w.sys.Key(key); err == nil {
			subs, _ := k.Subkeys()
			for _, s := range subs {
				n := strings.ToLower(s.Name)
				for _, dev := range d.devs {
					if strings.HasPrefix(n, "pci#ven_1af4&dev_"+dev) {
						if v, err := s.Value("Service"); err == nil {
							if svc, _ := v.String(); strings.EqualFold(svc, d.name) {
								return true, hkey("SYSTEM", key+`\`+s.Name)
							}
						}
					}
				}
			}
		}
	}
	if m != "cdd" {
		const key = `DriverDatabase\DeviceIds\PCI`
		if k, err := w.sys.Key(key); err == nil {
			subs, _ := k.Subkeys()
			for _, s := range subs {
				n := strings.ToLower(s.Name)
				for _, dev := range d.devs {
					if !strings.HasPrefix(n, "ven_1af4&dev_"+dev) {
						continue
					}
					vals, _ := s.Values()
					for _, v := range vals {
						if w.infServes(v.Name, d.name) {
							return true, hkey("SYSTEM", key+`\`+s.Name)
						}
					}
				}
			}
		}
	}
	return false, ""
}

// infServes reports whether a driver package (by its INF name, "oem3.inf"
// or "viostor.inf") installs the service: DriverInfFiles names its active
// package, whose configurations name their services.
func (w *win) infServes(inf, service string) bool {
	if !strings.HasSuffix(strings.ToLower(inf), ".inf") {
		return false
	}
	pkgs := []string{}
	if v, ok := value(w.sys, `DriverDatabase\DriverInfFiles\`+inf, "Active"); ok {
		if s, err := v.String(); err == nil && s != "" {
			pkgs = append(pkgs, s)
		}
	}
	if v, ok := value(w.sys, `DriverDatabase\DriverInfFiles\`+inf, ""); ok {
		if ss, err := v.Strings(); err == nil {
			pkgs = append(pkgs, ss...)
		}
	}
	for _, p := range pkgs {
		k, err := w.sys.Key(`DriverDatabase\DriverPackages\` + p + `\Configurations`)
		if err != nil {
			continue
		}
		cfgs, _ := k.Subkeys()
		for _, c := range cfgs {
			if v, err := c.Value("Service"); err == nil {
				if s, _ := v.String(); strings.EqualFold(s, service) {
					return true
				}
			}
		}
	}
	return false
}

// staged names where a driver package sits in the driver store, or "".
func (w *win) staged(name string) string {
	if _, err := w.sys.Key(`DriverDatabase\DriverInfFiles\` + name + ".inf"); err == nil {
		return hkey("SYSTEM", `DriverDatabase\DriverInfFiles\`+name+".inf")
	}
	dir := w.file("System32/DriverStore/FileRepository")
	if w.store == nil {
		w.store, _ = w.fs.ReadDir(dir)
		if w.store == nil {
			w.store = []string{}
		}
	}
	for _, n := range w.store {
		if strings.HasPrefix(strings.ToLower(n), name+".inf_") {
			return dir + "/" + n
		}
	}
	return ""
}

func (w *win) netkvm() {
	if _, err := w.sys.Key(w.ccs + `\Services\netkvm`); err == nil {
		return
	}
	if w.staged("netkvm") != "" {
		return // Plug and Play installs a staged network driver at first boot
	}
	w.finding(RuleWinVirtio, Warning, w.file(systemHive), hkey("SYSTEM", w.ccs+`\Services\netkvm`), "", "no virtio network driver (netkvm) is installed or staged: the instance would have no network; install the virtio-win network driver before exporting")
}

// serviceList reads the services of the current control set once.
func (w *win) serviceList() []*hive.Key {
	if w.services != nil {
		return w.services
	}
	k, err := w.sys.Key(w.ccs + `\Services`)
	if err == nil {
		w.services, _ = k.Subkeys()
	}
	if len(w.services) > maxServices {
		w.services = w.services[:maxServices]
	}
	if w.services == nil {
		w.services = []*hive.Key{}
	}
	return w.services
}

func keyString(k *hive.Key, name string) string {
	v, err := k.Value(name)
	if err != nil {
		return ""
	}
	s, _ := v.String()
	return s
}

// agents: the QEMU guest agent and cloudbase-init must go, the cloud's
// agent must be there.
func (w *win) agents() {
	type match struct{ key, value string }
	var qga, cbi, jcs *match
	for _, s := range w.serviceList() {
		n := strings.ToLower(s.Name)
		img := keyString(s, "ImagePath")
		disp := keyString(s, "DisplayName")
		li, ld := strings.ToLower(img), strings.ToLower(disp)
		key := hkey("SYSTEM", w.ccs+`\Services\`+s.Name)
		switch {
		case qga == nil && (n == "qemu-ga" || strings.Contains(li, "qemu-ga.exe")):
			qga = &match{key, "ImagePath=" + img}
		case cbi == nil && (n == "cloudbase-init" || strings.Contains(li, "cloudbase")):
			cbi = &match{key, "ImagePath=" + img}
		case jcs == nil && (strings.Contains(n, "jcs") && strings.Contains(n, "agent") || strings.Contains(n, "jcloud") ||
			strings.Contains(ld, "jcs agent") || strings.Contains(li, `jd.com\jcloud`) || strings.Contains(li, "jcsagentcore")):
			jcs = &match{key, "DisplayName=" + disp}
		}
	}
	// Programs installed without a service of their own name.
	for _, root := range []string{`Microsoft\Windows\CurrentVersion\Uninstall`, `WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall`} {
		if w.soft == nil {
			break
		}
		k, err := w.soft.Key(root)
		if err != nil {
			continue
		}
		subs, _ := k.Subkeys()
		for i, s := range subs {
			if i >= maxUninstall {
				break
			}
			disp := keyString(s, "DisplayName")
			ld := strings.ToLower(disp)
			m := &match{hkey("SOFTWARE", root+`\`+s.Name), "DisplayName=" + disp}
			switch {
			case qga == nil && strings.Contains(ld, "qemu guest agent"):
				qga = m
			case cbi == nil && strings.Contains(ld, "cloudbase-init"):
				cbi = m
			case jcs == nil && (strings.Contains(ld, "jcs agent") || strings.Contains(ld, "jcs-agent") || strings.Contains(ld, "jcloud")):
				jcs = m
			}
		}
	}
	if qga != nil {
		w.finding(RuleWinQemuGA, Error, w.file(systemHive), qga.key, qga.value, "the QEMU guest agent is installed and conflicts with the cloud's own agent: uninstall it (Programs and Features: QEMU guest agent; or sc delete QEMU-GA) before exporting")
	}
	if cbi != nil {
		w.finding(RuleWinCloudbase, Error, w.file(systemHive), cbi.key, cbi.value, "cloudbase-init is installed and conflicts with the cloud's own agent: uninstall it (Programs and Features: Cloudbase-Init) before exporting")
	}
	if jcs == nil {
		w.finding(RuleWinAgent, Warning, w.file(systemHive), hkey("SYSTEM", w.ccs+`\Services`), "", "the cloud's agent (JCS Agent Core) was not found: password reset, key pairs and monitoring will not work; install it before exporting the image")
	}
}

// firewall: every profile must be off, by the local setting or, where it
// is set, by Group Policy (which wins).
func (w *win) firewall() {
	local := w.ccs + `\Services\SharedAccess\Parameters\FirewallPolicy\`
	const policy = `Policies\Microsoft\WindowsFirewall\`
	for _, p := range []struct{ name, local, policy string }{
		{"Domain", "DomainProfile", "DomainProfile"},
		{"Private", "StandardProfile", "PrivateProfile"},
		{"Public", "PublicProfile", "PublicProfile"},
	} {
		if on, ok := dword(w.soft, policy+p.policy, "EnableFirewall"); ok {
			if on != 0 {
				w.finding(RuleWinFirewall, Error, w.file(softwareHive), hkey("SOFTWARE", policy+p.policy), fmt.Sprintf("EnableFirewall=%d", on),
					"the Windows firewall is on for the %s profile by Group Policy: the cloud asks for it off, or the instance may be unreachable; set Computer Configuration > Windows Settings > Security Settings > Windows Firewall with Advanced Security > %s Profile > Firewall state to Off (or remove the policy) and export again", p.name, p.name)
			}
			continue
		}
		on, ok := dword(w.sys, local+p.local, "EnableFirewall")
		if !ok {
			w.finding(RuleWinFirewall, Error, w.file(systemHive), hkey("SYSTEM", local+p.local), "EnableFirewall not set",
				"the Windows firewall is on for the %s profile (no EnableFirewall value: on by default): the cloud asks for it off, or the instance may be unreachable; run netsh advfirewall set allprofiles state off and export again", p.name)
			continue
		}
		if on != 0 {
			w.finding(RuleWinFirewall, Error, w.file(systemHive), hkey("SYSTEM", local+p.local), fmt.Sprintf("EnableFirewall=%d", on),
				"the Windows firewall is on for the %s profile: the cloud asks for it off, or the instance may be unreachable; run netsh advfirewall set allprofiles state off and export again", p.name)
		}
	}
}

// rdp: Remote Desktop allowed (by policy or locally) on port 3389.
func (w *win) rdp() {
	const policy = `Policies\Microsoft\Windows NT\Terminal Services`
	local := w.ccs + `\Control\Terminal Server`
	if deny, ok := dword(w.soft, policy, "fDenyTSConnections"); ok {
		if deny != 0 {
			w.finding(RuleWinRDP, Error, w.file(softwareHive), hkey("SOFTWARE", policy), fmt.Sprintf("fDenyTSConnections=%d", deny),
				"Remote Desktop connections are denied by Group Policy: nobody could log in to the instance; set Computer Configuration > Administrative Templates > Windows Components > Remote Desktop Services > Remote Desktop Session Host > Connections > Allow users to connect remotely to Enabled")
		}
	} else if deny, ok := dword(w.sys, local, "fDenyTSConnections"); !ok || deny != 0 {
		ev := fmt.Sprintf("fDenyTSConnections=%d", deny)
		if !ok {
			ev = "fDenyTSConnections not set (denied by default)"
		}
		w.finding(RuleWinRDP, Error, w.file(systemHive), hkey("SYSTEM", local), ev,
			"Remote Desktop is off: nobody could log in to the instance; turn it on (System Properties > Remote > Allow remote connections, or set fDenyTSConnections to 0) and export again")
	}
	key := local + `\WinStations\RDP-Tcp`
	if port, ok := dword(w.sys, key, "PortNumber"); ok && port != 3389 {
		w.finding(RuleWinRDP, Error, w.file(systemHive), hkey("SYSTEM", key), fmt.Sprintf("PortNumber=%d", port),
			"Remote Desktop listens on port %d, not 3389: the cloud's security groups and console expect 3389; set PortNumber back to 3389 and export again", port)
	}
}

// network: every configured interface asks for DHCP; IPv6 is told.
func (w *win) network() {
	key := w.ccs + `\Services\Tcpip\Parameters\Interfaces`
	if k, err := w.sys.Key(key); err == nil {
		subs, _ := k.Subkeys()
		for i, s := range subs {
			if i >= maxInterfaces {
				break
			}
			dhcp, ok := dwordOf(s, "EnableDHCP")
			if !ok || dhcp != 0 {
				continue
			}
			var addrs []string
			if v, err := s.Value("IPAddress"); err == nil {
				ss, _ := v.Strings()
				for _, a := range ss {
					if a != "" && a != "0.0.0.0" {
						addrs = append(addrs, a)
					}
				}
			}
			if len(addrs) == 0 {
				continue
			}
			w.finding(RuleWinDHCP, Error, w.file(systemHive), hkey("SYSTEM", key+`\`+s.Name), "EnableDHCP=0 IPAddress="+strings.Join(addrs, ","),
				"the network interface %s has the static address %s: on the cloud's network it would be unreachable; set it to obtain an address automatically (DHCP) before exporting", s.Name, strings.Join(addrs, ", "))
		}
	}
	v6 := w.ccs + `\Services\Tcpip6\Parameters`
	if dc, ok := dword(w.sys, v6, "DisabledComponents"); ok && dc&0xff == 0xff {
		w.finding(RuleWinIPv6, Info, w.file(systemHive), hkey("SYSTEM", v6), fmt.Sprintf("DisabledComponents=0x%x", dc), "IPv6 is disabled: the cloud's network is IPv4, which is what it needs")
	} else {
		val := "DisabledComponents not set"
		if ok {
			val = fmt.Sprintf("DisabledComponents=0x%x", dc)
		}
		w.finding(RuleWinIPv6, Info, w.file(systemHive), hkey("SYSTEM", v6), val, "IPv6 is enabled: the cloud's network is IPv4, so nothing in the guest (services, name resolution, applications) may depend on IPv6")
	}
}

func dwordOf(k *hive.Key, name string) (uint64, bool) {
	v, err := k.Value(name)
	if err != nil {
		return 0, false
	}
	n, err := v.Uint()
	return n, err == nil
}
