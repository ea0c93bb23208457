package check

// The kernel rules: virtio drivers built in, as modules, and in the
// initramfs.

import (
	"bytes"
	"path"
	"strings"

	"vmimport/check/internal/guestfs"
	"vmimport/check/internal/initramfs"
)

// virtio checks every installed kernel for the virtio block and network
// drivers: built in (modules.builtin) or as modules (modules.dep or the
// .ko files). A virtio_blk module must also be in the kernel's initramfs,
// or the root disk is not found at boot.
func (l *linux) virtio() {
	const dir = "/lib/modules"
	kernels, err := l.t.ReadDir(dir)
	if err != nil || len(kernels) == 0 {
		l.unreadable(dir, err)
		l.finding("linux.virtio", Warning, dir, "no kernel modules found under /lib/modules: cannot tell whether the kernel has the virtio_blk and virtio_net drivers the cloud needs")
		return
	}
	for _, k := range kernels {
		kdir := path.Join(dir, k.Name)
		builtin, _ := l.t.ReadFile(kdir+"/modules.builtin", maxModulesDep)
		dep, _ := l.t.ReadFile(kdir+"/modules.dep", maxModulesDep)
		var missing []string
		blkModule := false
		for _, drv := range []struct{ name, sub string }{{"virtio_blk", "block"}, {"virtio_net", "net"}} {
			if hasModule(builtin, drv.name) {
				continue
			}
			found := hasModule(dep, drv.name)
			for _, ext := range []string{"", ".xz", ".zst", ".gz"} {
				if found {
					break
				}
				found = l.t.Exists(kdir + "/kernel/drivers/" + drv.sub + "/" + drv.name + ".ko" + ext)
			}
			if !found {
				missing = append(missing, drv.name)
			} else if drv.name == "virtio_blk" {
				blkModule = true
			}
		}
		if len(missing) > 0 {
			l.finding("linux.virtio", Warning, kdir, "kernel %s has no %s driver, built in or as a module: the instance may not find its disk or network; install the virtio drivers and rebuild the initramfs (dracut -f --add-drivers \"virtio_blk virtio_net\")", k.Name, strings.Join(missing, " or "))
			continue
		}
		if blkModule {
			l.initramfs(k.Name)
		}
	}
}

// initramfs checks that the initramfs of kernel kver holds virtio_blk.
func (l *linux) initramfs(kver string) {
	names := []string{"initramfs-" + kver + ".img", "initrd.img-" + kver, "initrd-" + kver, "initramfs-" + kver}
	for _, bt := range append([]bootFS{{l.t, l.part, "/boot"}}, l.boot...) {
		for _, n := range names {
			file := path.Join(bt.dir, n)
			in, err := bt.t.Lookup(file, true)
			if err != nil || !in.IsRegular() {
				continue
			}
			members, err := initramfs.Names(inodeReader{bt.t.FS, in}, in.Size())
			if err != nil && !hasModuleName(members, "virtio_blk") {
				f := l.r.addf("linux.virtio", Info, "virtio_blk is a module of kernel %s, and its initramfs could not be read to see whether it holds it: %v; make sure it does (lsinitrd | grep virtio_blk)", kver, err)
				f.Partition, f.Path = bt.part, file
				return
			}
			if !hasModuleName(members, "virtio_blk") {
				f := l.r.addf("linux.virtio", Warning, "virtio_blk is a module of kernel %s but not in its initramfs: the instance will not find its root disk; rebuild it with dracut -f --add-drivers \"virtio_blk virtio_net\" (or add them to /etc/initramfs-tools/modules and run update-initramfs -u)", kver)
				f.Partition, f.Path = bt.part, file
			}
			return
		}
	}
	l.finding("linux.virtio", Info, "/boot", "virtio_blk is a module of kernel %s, and no initramfs for it was found to see whether it holds it; make sure it does (lsinitrd | grep virtio_blk)", kver)
}

func hasModuleName(names []string, mod string) bool {
	for _, n := range names {
		base := n[strings.LastIndexByte(n, '/')+1:]
		if m, _, ok := strings.Cut(base, ".ko"); ok && m == mod {
			return true
		}
	}
	return false
}

// inodeReader reads a file of a file system as an io.ReaderAt.
type inodeReader struct {
	fs guestfs.FS
	in *guestfs.Inode
}

func (r inodeReader) ReadAt(p []byte, off int64) (int, error) { return r.fs.ReadAt(r.in, p, off) }

// hasModule finds "name.ko" as a path component end in modules.builtin or
// a modules.dep key.
func hasModule(list []byte, name string) bool {
	for _, line := range bytes.Split(list, []byte("\n")) {
		key, _, _ := bytes.Cut(line, []byte(":"))
		key = bytes.TrimSpace(key)
		base := key[bytes.LastIndexByte(key, '/')+1:]
		if m, _, _ := bytes.Cut(base, []byte(".ko")); string(m) == name && bytes.Contains(base, []byte(".ko")) {
			return true
		}
	}
	return false
}
