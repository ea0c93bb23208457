package check

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"vmimport/check/internal/guestfs"
)

// Limits on the files the Linux rules read.
const (
	maxConfigFile = 1 << 20
	maxDpkgStatus = 32 << 20
	maxModulesDep = 16 << 20
)

// linux runs the rules inside a Linux root file system.
type linux struct {
	t     *guestfs.Tree
	r     *Report
	part  int // partition of the root file system
	disk  *diskView
	dpkg  []byte // /var/lib/dpkg/status, if any
	boot  []bootFS
	unrea []string
}

// bootFS is another Linux file system of the disk (a separate /boot).
type bootFS struct {
	t    *guestfs.Tree
	part int
	dir  string // where the kernels and initramfs are: "/boot" or "/"
}

// diskView is what the fstab rule compares against: every file system and
// partition identity on the disk.
type diskView struct {
	uuids, labels, partuuids map[string]bool
}

func (l *linux) finding(rule string, sev Severity, file, format string, args ...any) {
	f := l.r.addf(rule, sev, format, args...)
	f.Partition, f.Path = l.part, file
}

// unreadable notes a file the readers could not read for a reason other
// than its absence.
func (l *linux) unreadable(file string, err error) {
	if err != nil && !errors.Is(err, guestfs.ErrNotFound) {
		l.unrea = append(l.unrea, fmt.Sprintf("%s (%v)", file, err))
	}
}

func (l *linux) readConfig(file string) ([]byte, bool) {
	b, err := l.t.ReadFile(file, maxConfigFile)
	if err != nil {
		l.unreadable(file, err)
		return nil, false
	}
	return b, true
}

func (l *linux) run() {
	l.osRelease()
	l.arch()
	l.fstab()
	l.persistentNet()
	if b, err := l.t.ReadFile("/var/lib/dpkg/status", maxDpkgStatus); err == nil {
		l.dpkg = b
	} else {
		l.unreadable("/var/lib/dpkg/status", err)
	}
	l.conflicts()
	l.virtio()
	l.selinux()
	l.sshd()
	l.agent()
	l.dhcp()
	if len(l.unrea) > 0 {
		l.finding("fs.unchecked", Info, "", "some files could not be read, so the rules that need them were not checked: %s", strings.Join(l.unrea, "; "))
	}
}

// osRelease fills the OS name and version and the ImportImage platform.
func (l *linux) osRelease() {
	os := &l.r.OS
	os.OSType, os.Platform = "linux", "Other Linux"
	file := "/etc/os-release"
	b, ok := l.readConfig(file)
	if !ok {
		file = "/usr/lib/os-release"
		b, ok = l.readConfig(file)
	}
	if ok {
		kv := parseEnvFile(b)
		os.Name, os.ID, os.Version = kv["NAME"], kv["ID"], kv["VERSION_ID"]
	} else {
		for _, file = range []string{"/etc/centos-release", "/etc/redhat-release"} {
			if b, ok = l.readConfig(file); ok {
				os.Name = strings.TrimSpace(string(b))
				if m := releaseVersion.FindStringSubmatch(os.Name); m != nil {
					os.Version = m[1]
				}
				if strings.HasPrefix(os.Name, "CentOS") {
					os.ID = "centos"
				}
				break
			}
		}
	}
	switch strings.ToLower(os.ID) {
	case "centos":
		os.Platform = "CentOS"
	case "ubuntu":
		os.Platform = "Ubuntu"
	}
	if !ok {
		l.finding("linux.os", Info, "", "no /etc/os-release: the distribution is unknown; use the platform \"Other Linux\"")
		return
	}
	l.finding("linux.os", Info, file, "%s %s found: the import body gets platform %q, osVersion %q", os.Name, os.Version, os.Platform, os.Version)
}

// parseEnvFile reads KEY=value lines (os-release, selinux/config, ifcfg).
func parseEnvFile(b []byte) map[string]string {
	kv := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		kv[strings.TrimSpace(k)] = v
	}
	return kv
}

// arch reads the ELF header of /bin/sh: the class says 32 or 64 bits, the
// machine the architecture.
func (l *linux) arch() {
	const file = "/bin/sh"
	in, err := l.t.Lookup(file, true)
	if err != nil {
		l.unreadable(file, err)
		if errors.Is(err, guestfs.ErrNotFound) {
			l.finding("linux.arch", Info, file, "no /bin/sh: the architecture is unknown; give the import's architecture yourself")
		}
		return
	}
	h := make([]byte, 20)
	if n, _ := l.t.FS.ReadAt(in, h, 0); n < len(h) || string(h[:4]) != "\x7fELF" {
		l.finding("linux.arch", Info, file, "/bin/sh is not an ELF program: the architecture is unknown; give the import's architecture yourself")
		return
	}
	var bo binary.ByteOrder = binary.LittleEndian
	if h[5] == 2 {
		bo = binary.BigEndian
	}
	machine := bo.Uint16(h[18:])
	switch {
	case h[4] == 1:
		l.r.OS.Architecture = "i386"
		l.finding("linux.arch", Error, file, "the system is 32-bit (/bin/sh is an ELF32 program): the cloud imports 64-bit systems only; install a 64-bit (x86_64) system")
	case machine == 0x3e:
		l.r.OS.Architecture = "x86_64"
	case machine == 0xb7:
		l.r.OS.Architecture = "arm64"
		l.finding("linux.arch", Warning, file, "the system is arm64: the cloud documents x86_64 imports; make sure the region offers arm64 instances")
	default:
		l.finding("linux.arch", Error, file, "/bin/sh is built for ELF machine %d, not x86_64: the cloud cannot run it", machine)
	}
}

// networkFS reports whether a file system type mounts from the network or
// the host.
func networkFS(typ string) bool {
	switch typ {
	case "nfs", "nfs4", "cifs", "smbfs", "smb3", "glusterfs", "ceph", "sshfs", "fuse.sshfs", "davfs", "vboxsf", "9p", "virtiofs", "lustre", "gfs2", "ocfs2", "fuse.glusterfs", "afs":
		return true
	}
	return false
}

// Patterns the rules match (compiled once, never changed).
var (
	otherDisk      = regexp.MustCompile(`^/dev/(sd[a-z]+|hd[a-z]+|xvd[a-z]+|vd[b-z][a-z]*|nvme[0-9]+n[0-9]+)`)
	releaseVersion = regexp.MustCompile(`release ([0-9.]+)`)
	dhcpConfig     = regexp.MustCompile(`(?im)^\s*(BOOTPROTO\s*=\s*["']?dhcp|iface\s+\S+\s+inet6?\s+dhcp|dhcp4\s*:\s*(true|yes|on)|DHCP\s*=\s*(yes|true|ipv4|both)|method\s*=\s*auto)`)
	staticConfig   = regexp.MustCompile(`(?im)^\s*(method\s*=\s*manual|BOOTPROTO\s*=\s*["']?(static|none))`)
)

// fstab checks that every auto-mounted entry names a file system on this
// disk, in a way that survives the move to the cloud's virtio disk.
func (l *linux) fstab() {
	const file = "/etc/fstab"
	b, ok := l.readConfig(file)
	if !ok {
		return
	}
	for n, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		spec, mnt := fields[0], fields[1]
		typ, opts := "", ""
		if len(fields) > 2 {
			typ = fields[2]
		}
		if len(fields) > 3 {
			opts = fields[3]
		}
		if slices.Contains(strings.Split(opts, ","), "noauto") {
			continue
		}
		where := fmt.Sprintf("%s:%d", file, n+1)
		switch {
		case networkFS(typ) || strings.HasPrefix(spec, "//") || (strings.Contains(spec, ":/") && !strings.HasPrefix(spec, "/")):
			l.finding("linux.fstab-network", Error, where, "%s mounts %s (%s) from the network or the host: the cloud instance cannot reach it at boot; delete the line or add noauto", mnt, spec, typ)
		case strings.HasPrefix(spec, "UUID=") || strings.HasPrefix(spec, "/dev/disk/by-uuid/"):
			u := strings.Trim(strings.TrimPrefix(strings.TrimPrefix(spec, "UUID="), "/dev/disk/by-uuid/"), `"`)
			if !l.disk.uuids[strings.ToLower(u)] {
				l.finding("linux.fstab-uuid", Error, where, "%s mounts UUID %s, which no file system in the image has: it is another disk, which the instance will not have; delete the line or add noauto,nofail", mnt, u)
			}
		case strings.HasPrefix(spec, "LABEL=") || strings.HasPrefix(spec, "/dev/disk/by-label/"):
			lb := strings.Trim(strings.TrimPrefix(strings.TrimPrefix(spec, "LABEL="), "/dev/disk/by-label/"), `"`)
			if !l.disk.labels[lb] {
				l.finding("linux.fstab-uuid", Error, where, "%s mounts LABEL %s, which no file system in the image has: it is another disk; delete the line or add noauto,nofail", mnt, lb)
			}
		case strings.HasPrefix(spec, "PARTUUID=") || strings.HasPrefix(spec, "/dev/disk/by-partuuid/"):
			u := strings.Trim(strings.TrimPrefix(strings.TrimPrefix(spec, "PARTUUID="), "/dev/disk/by-partuuid/"), `"`)
			if !l.disk.partuuids[strings.ToLower(u)] {
				l.finding("linux.fstab-uuid", Error, where, "%s mounts PARTUUID %s, which no partition in the image has: it is another disk; delete the line or add noauto,nofail", mnt, u)
			}
		case otherDisk.MatchString(spec) || strings.HasPrefix(spec, "/dev/disk/by-id/") || strings.HasPrefix(spec, "/dev/disk/by-path/"):
			l.finding("linux.fstab-device", Error, where, "%s mounts %s by device name: the cloud's system disk is /dev/vda and other disks will not be there; mount by UUID= (blkid shows it) or delete the line", mnt, spec)
		case strings.HasPrefix(spec, "/dev/mapper/"):
			l.finding("linux.fstab-device", Error, where, "%s mounts the device-mapper volume %s (LVM or encryption), which the cloud's import does not support; move it onto a plain partition", mnt, spec)
		}
	}
}

func (l *linux) persistentNet() {
	const file = "/etc/udev/rules.d/70-persistent-net.rules"
	if l.t.Exists(file) {
		l.finding("linux.persistent-net", Error, file, "udev pins network interface names to the old machine's MAC addresses, so the instance's NIC would not come up as eth0: delete the file")
	}
}

// installed reports the first evidence that a package is installed: one
// of its files, or its dpkg status entry.
func (l *linux) installed(pkgs []string, files []string) string {
	for _, f := range files {
		if l.t.Exists(f) {
			return f
		}
	}
	for _, p := range pkgs {
		if dpkgInstalled(l.dpkg, p) {
			return "/var/lib/dpkg/status"
		}
	}
	return ""
}

func dpkgInstalled(status []byte, pkg string) bool {
	for _, para := range bytes.Split(status, []byte("\n\n")) {
		if !bytes.HasPrefix(para, []byte("Package: "+pkg+"\n")) {
			continue
		}
		for _, line := range bytes.Split(para, []byte("\n")) {
			if bytes.HasPrefix(line, []byte("Status: ")) && bytes.HasSuffix(line, []byte(" installed")) {
				return true
			}
		}
	}
	return false
}

func (l *linux) conflicts() {
	if ev := l.installed([]string{"cloud-init"}, []string{"/usr/bin/cloud-init", "/usr/local/bin/cloud-init"}); ev != "" {
		l.finding("linux.cloud-init", Error, ev, "cloud-init is installed and conflicts with the cloud's own agent: uninstall it (yum remove cloud-init / apt purge cloud-init)")
	}
	if ev := l.installed([]string{"qemu-guest-agent"}, []string{"/usr/bin/qemu-ga", "/usr/sbin/qemu-ga", "/usr/local/bin/qemu-ga"}); ev != "" {
		l.finding("linux.qemu-guest-agent", Error, ev, "qemu-guest-agent is installed and conflicts with the cloud's own agent: uninstall it (yum remove qemu-guest-agent / apt purge qemu-guest-agent)")
	}
}

func (l *linux) selinux() {
	const file = "/etc/selinux/config"
	b, ok := l.readConfig(file)
	if !ok {
		return
	}
	if strings.EqualFold(parseEnvFile(b)["SELINUX"], "enforcing") {
		l.finding("linux.selinux", Warning, file, "SELinux is enforcing: the cloud asks for it to be off; set SELINUX=disabled (or permissive)")
	}
}

// sshd checks that the OpenSSH server starts at boot (systemd wants links
// or SysV rc links).
func (l *linux) sshd() {
	var units []string
	for _, target := range []string{"multi-user.target.wants", "sockets.target.wants", "default.target.wants", "graphical.target.wants"} {
		for _, u := range []string{"sshd.service", "ssh.service", "ssh.socket", "sshd.socket", "openssh-server.service", "openssh.service"} {
			units = append(units, "/etc/systemd/system/"+target+"/"+u)
		}
	}
	for _, u := range units {
		if l.t.Exists(u) {
			return
		}
	}
	for _, rc := range []string{"/etc/rc3.d", "/etc/rc2.d", "/etc/rc.d/rc3.d"} {
		entries, _ := l.t.ReadDir(rc)
		for _, e := range entries {
			if strings.HasPrefix(e.Name, "S") && strings.Contains(e.Name, "ssh") {
				return
			}
		}
	}
	if l.installed([]string{"openssh-server"}, []string{"/usr/sbin/sshd", "/usr/bin/sshd"}) == "" {
		l.finding("linux.sshd", Warning, "/usr/sbin/sshd", "the OpenSSH server is not installed: nobody can log in to the instance; install openssh-server and enable it")
		return
	}
	l.finding("linux.sshd", Warning, "/etc/systemd/system/multi-user.target.wants", "sshd is installed but not enabled at boot: run systemctl enable sshd (or ssh)")
}

// agent looks for the cloud's agent (JCS-agent) by the names of its
// service files.
func (l *linux) agent() {
	for _, dir := range []string{"/etc/systemd/system", "/etc/systemd/system/multi-user.target.wants", "/usr/lib/systemd/system", "/lib/systemd/system", "/etc/init.d", "/usr/local/share"} {
		entries, _ := l.t.ReadDir(dir)
		for _, e := range entries {
			n := strings.ToLower(e.Name)
			if strings.Contains(n, "jcs-agent") || strings.Contains(n, "jcloud") || strings.Contains(n, "jdcloud") || strings.Contains(n, "ifrit") {
				return
			}
		}
	}
	l.finding("linux.jcs-agent", Warning, "", "the cloud's agent (JCS-agent) was not found: password reset, key pairs and monitoring will not work; install it before exporting the image")
}

// hasStaticNM reports whether NetworkManager has a connection with a
// static IPv4 address, or ifcfg files that it would read.
func (l *linux) hasStaticNM() bool {
	for _, d := range []string{"/etc/NetworkManager/system-connections", "/etc/sysconfig/network-scripts"} {
		entries, _ := l.t.ReadDir(d)
		for i, e := range entries {
			if i >= 256 {
				break
			}
			if b, err := l.t.ReadFile(d+"/"+e.Name, maxConfigFile); err == nil && staticConfig.Match(b) {
				return true
			}
		}
	}
	return false
}

// dhcp looks for a network configuration that asks for DHCP.
func (l *linux) dhcp() {
	dirs := []string{"/etc/sysconfig/network-scripts", "/etc/sysconfig/network", "/etc/netplan", "/etc/systemd/network",
		"/etc/NetworkManager/system-connections", "/etc/network/interfaces.d", "/run/systemd/network", "/usr/lib/systemd/network"}
	files := []string{"/etc/network/interfaces"}
	for _, d := range dirs {
		entries, _ := l.t.ReadDir(d)
		for i, e := range entries {
			if i >= 256 {
				break
			}
			files = append(files, d+"/"+e.Name)
		}
	}
	for _, f := range files {
		b, err := l.t.ReadFile(f, maxConfigFile)
		if err == nil && dhcpConfig.Match(b) {
			return
		}
	}
	// NetworkManager, enabled and without a connection of its own for
	// the NIC, brings it up by DHCP ("Wired connection 1").
	if l.t.Exists("/etc/systemd/system/multi-user.target.wants/NetworkManager.service") && !l.hasStaticNM() {
		return
	}
	l.finding("linux.dhcp", Warning, "", "no network configuration asking for DHCP was found (ifcfg BOOTPROTO=dhcp, netplan dhcp4, interfaces inet dhcp, systemd-networkd DHCP=, NetworkManager method=auto): the instance may get no address; configure eth0 for DHCP")
}
