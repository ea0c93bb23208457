package vsphere_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/internal/vcsimtest"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/remote"
	"vmimport/reader/remote/vsphere"
)

const mib = 1 << 20

// randomRaw writes a sparse RAW disk of size bytes with random runs of n
// bytes every stride bytes.
func randomRaw(t *testing.T, p string, size, n, stride int64) string {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(size)
	buf := make([]byte, n)
	for o := int64(0); o+n <= size; o += stride {
		rand.Read(buf)
		f.WriteAt(buf, o)
	}
	return p
}

func start(t *testing.T) *vcsimtest.Server {
	t.Helper()
	s, err := vcsimtest.Start(context.Background(), "pw-"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func cfg(s *vcsimtest.Server, url string) vsphere.Config {
	return vsphere.Config{URL: url, Password: s.Password, CAFile: s.CAFile,
		Getenv: func(k string) string {
			if k == vsphere.EnvUser {
				return vcsimtest.User
			}
			return ""
		}}
}

// readAll opens the source's disk through the reader and returns the
// SHA-256 of its guest bytes.
func readAll(t *testing.T, src *vsphere.Source) (string, *vsphere.Files) {
	t.Helper()
	files, err := src.Files(context.Background(), remote.Options{})
	if err != nil {
		t.Fatal(err)
	}
	im, err := reader.Open(files.Top, reader.Options{AllowBacking: true, Remote: files})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	out := filepath.Join(t.TempDir(), "out.raw")
	f, _ := os.Create(out)
	buf := make([]byte, mib)
	for off := int64(0); off < im.Size(); off += mib {
		n := min(mib, im.Size()-off)
		if _, err := im.ReadAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
		f.WriteAt(buf[:n], off)
	}
	f.Close()
	return testkit.RawSHA256(t, out), files
}

// TestDiskKinds: a monolithicFlat, a monolithicSparse disk and a delta
// chain (a sparse child of a flat base) read as qemu-img reads the same
// files.
func TestDiskKinds(t *testing.T) {
	testkit.Need(t, "qemu-img")
	s := start(t)
	dir := t.TempDir()
	raw := randomRaw(t, filepath.Join(dir, "base.raw"), 24*mib, 300<<10, 2*mib)
	want := testkit.RawSHA256(t, raw)
	flat := filepath.Join(dir, "flat")
	os.Mkdir(flat, 0o755)
	testkit.Convert(t, raw, filepath.Join(flat, "flat01.vmdk"), "vmdk", "-o", "subformat=monolithicFlat")
	s.Put(filepath.Join(flat, "flat01.vmdk"), "flat01/flat01.vmdk")
	s.Put(filepath.Join(flat, "flat01-flat.vmdk"), "flat01/flat01-flat.vmdk")
	sparse := testkit.Convert(t, raw, filepath.Join(dir, "sparse01.vmdk"), "vmdk")
	s.Put(sparse, "sparse01/sparse01.vmdk")

	// A delta chain: a sparse child of the flat base, with writes of its own.
	chain := filepath.Join(dir, "chain")
	os.Mkdir(chain, 0o755)
	testkit.Convert(t, raw, filepath.Join(chain, "base.vmdk"), "vmdk", "-o", "subformat=monolithicFlat")
	testkit.QemuImg(t, "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", filepath.Join(chain, "delta.vmdk"))
	testkit.Need(t, "qemu-io")
	testkit.Run(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 5M 1M", "-c", "write -z 7M 64k", filepath.Join(chain, "delta.vmdk"))
	wantChain := testkit.RawSHA256(t, testkit.Convert(t, filepath.Join(chain, "delta.vmdk"), filepath.Join(dir, "chain.raw"), "raw"))
	for _, n := range []string{"base.vmdk", "base-flat.vmdk", "delta.vmdk"} {
		s.Put(filepath.Join(chain, n), "chain01/"+n)
	}

	ctx := context.Background()
	for _, vm := range []vcsimtest.VM{
		{Name: "flat01", Disks: []vcsimtest.Disk{{Chain: []string{"flat01/flat01.vmdk"}, Capacity: 24 * mib}}},
		{Name: "sparse01", Folder: "linux/web", Disks: []vcsimtest.Disk{{Chain: []string{"sparse01/sparse01.vmdk"}, Capacity: 24 * mib}}},
		{Name: "chain01", Disks: []vcsimtest.Disk{{Chain: []string{"chain01/delta.vmdk", "chain01/base.vmdk"}, Capacity: 24 * mib}}},
	} {
		if err := s.AddVM(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ folder, name, want string }{
		{"", "flat01", want}, {"linux/web", "sparse01", want}, {"", "chain01", wantChain},
	} {
		t.Run(c.name, func(t *testing.T) {
			src, err := vsphere.Open(ctx, cfg(s, s.SourceURL(c.folder, c.name)), false)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close(ctx)
			if err := src.Freeze(ctx, nil); err != nil {
				t.Fatal(err)
			}
			got, files := readAll(t, src)
			if got != c.want {
				t.Fatalf("%s reads other bytes than qemu-img", c.name)
			}
			if id := files.Identity(); id.ETag == "" || id.Size == 0 || !strings.HasSuffix(id.URL, "#disk=0") {
				t.Errorf("identity %+v", id)
			}
		})
	}
	if s.NoCookie.Load() != 0 {
		t.Errorf("%d datastore requests without the session cookie", s.NoCookie.Load())
	}
}

// TestRefusals: a running VM without --snapshot, a wrong password, a
// password in the URL, a VM that is not there.
func TestRefusals(t *testing.T) {
	s := start(t)
	ctx := context.Background()
	raw := randomRaw(t, filepath.Join(t.TempDir(), "d.raw"), 4*mib, 4096, mib)
	s.Put(raw, "run01/run01-flat.vmdk")
	os.WriteFile(filepath.Join(s.Dir, "run01", "run01.vmdk"), []byte("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\nRW 8192 VMFS \"run01-flat.vmdk\"\n"), 0o644)
	if err := s.AddVM(ctx, vcsimtest.VM{Name: "run01", PowerOn: true, Disks: []vcsimtest.Disk{{Chain: []string{"run01/run01.vmdk"}, Capacity: 4 * mib}}}); err != nil {
		t.Fatal(err)
	}
	_, err := vsphere.Open(ctx, cfg(s, s.SourceURL("", "run01")), false)
	if !errors.Is(err, vsphere.ErrRunning) || !strings.Contains(err.Error(), "--snapshot") {
		t.Errorf("running VM: %v", err)
	}
	c := cfg(s, s.SourceURL("", "run01"))
	c.Password = "wrong-" + s.Password
	if _, err := vsphere.Open(ctx, c, false); !errors.Is(err, vsphere.ErrLogin) || strings.Contains(err.Error(), c.Password) {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := vsphere.Open(ctx, cfg(s, strings.Replace(s.SourceURL("", "run01"), "vsphere://", "vsphere://u:secret@", 1)), false); !errors.Is(err, vsphere.ErrURL) || strings.Contains(err.Error(), "secret") {
		t.Errorf("password in the URL: %v", err)
	}
	if _, err := vsphere.Open(ctx, cfg(s, s.SourceURL("", "nothere")), false); !errors.Is(err, vsphere.ErrNotFound) {
		t.Errorf("no VM: %v", err)
	}
	c = cfg(s, s.SourceURL("", "run01"))
	c.CAFile = ""
	if _, err := vsphere.Open(ctx, c, false); err == nil || !strings.Contains(err.Error(), "--source-ca-file") {
		t.Errorf("self-signed without the CA: %v", err)
	}
}

// TestPathRules: a descriptor on the datastore cannot make the reader
// fetch a file outside the folders of the disk's chain, even when
// --allow-path lets its name through, nor anything from another host.
func TestPathRules(t *testing.T) {
	s := start(t)
	ctx := context.Background()
	raw := randomRaw(t, filepath.Join(t.TempDir(), "d.raw"), 4*mib, 4096, mib)
	s.Put(raw, "other/secret-flat.vmdk")
	for name, extent := range map[string]string{"up01": "../other/secret-flat.vmdk", "abs01": "/folder/other/secret-flat.vmdk", "far01": "https://elsewhere.example/secret-flat.vmdk"} {
		os.MkdirAll(filepath.Join(s.Dir, name), 0o755)
		desc := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 8192 FLAT \"" + extent + "\" 0\n"
		os.WriteFile(filepath.Join(s.Dir, name, name+".vmdk"), []byte(desc), 0o644)
		if err := s.AddVM(ctx, vcsimtest.VM{Name: name, Disks: []vcsimtest.Disk{{Chain: []string{name + "/" + name + ".vmdk"}, Capacity: 4 * mib}}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"up01", "abs01", "far01"} {
		for _, allow := range [][]string{nil, {s.URL + "/", "https://elsewhere.example/"}} {
			src, err := vsphere.Open(ctx, cfg(s, s.SourceURL("", name)), false)
			if err != nil {
				t.Fatal(err)
			}
			files, err := src.Files(ctx, remote.Options{})
			if err != nil {
				t.Fatal(err)
			}
			im, err := reader.Open(files.Top, reader.Options{AllowBacking: true, AllowPaths: allow, Remote: files})
			if err == nil {
				im.Close()
				t.Errorf("%s (allow %q): the extent outside the chain's folder was opened", name, allow)
			} else if !errors.Is(err, image.ErrNotAllowed) {
				t.Errorf("%s (allow %q): %v", name, allow, err)
			}
			src.Close(ctx)
		}
	}
	if n := s.Served()["other/secret-flat.vmdk"]; n != 0 {
		t.Errorf("%d bytes of the other folder's file were served", n)
	}
}

// TestPreflight: what the inventory says before a byte is read: EFI, the
// disk taken among several, an independent NVMe disk, existing
// snapshots, the guest OS.
func TestPreflight(t *testing.T) {
	s := start(t)
	ctx := context.Background()
	raw := randomRaw(t, filepath.Join(t.TempDir(), "d.raw"), 4*mib, 4096, mib)
	for _, n := range []string{"a", "b"} {
		s.Put(raw, "multi01/"+n+"-flat.vmdk")
		os.WriteFile(filepath.Join(s.Dir, "multi01", n+".vmdk"), []byte("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\nRW 8192 VMFS \""+n+"-flat.vmdk\"\n"), 0o644)
	}
	err := s.AddVM(ctx, vcsimtest.VM{Name: "multi01", Firmware: "efi", GuestID: "windows2019srv_64Guest", Disks: []vcsimtest.Disk{
		{Chain: []string{"multi01/a.vmdk"}, Capacity: 4 * mib},
		{Chain: []string{"multi01/b.vmdk"}, Capacity: 4 * mib, NVMe: true, Mode: "independent_persistent"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Snapshot(ctx, "multi01", "before-upgrade"); err != nil {
		t.Fatal(err)
	}
	c := cfg(s, s.SourceURL("", "multi01"))
	c.Disk = 1
	src, err := vsphere.Open(ctx, c, false)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(ctx)
	got := map[string]vsphere.Severity{}
	for _, f := range src.Findings {
		if f.Severity > got[f.Rule] || got[f.Rule] == 0 {
			got[f.Rule] = f.Severity
		}
		if strings.Contains(f.Message, s.Password) {
			t.Errorf("the password shows: %s", f.Message)
		}
	}
	for rule, sev := range map[string]vsphere.Severity{
		vsphere.RuleFirmware: vsphere.Error, vsphere.RuleDisks: vsphere.Warning, vsphere.RuleDiskKind: vsphere.Warning,
		vsphere.RuleSnapshots: vsphere.Warning, vsphere.RuleGuestOS: vsphere.Info,
	} {
		if g, ok := got[rule]; !ok || g != sev {
			t.Errorf("%s: severity %v (found: %v), want %v\n%+v", rule, g, ok, sev, src.Findings)
		}
	}
	if d := src.VM.Disks; len(d) != 2 || !d[0].Boot || d[1].Bus != "nvme0:0" || src.Disk.Index != 1 {
		t.Errorf("disks %+v", d)
	}
	if f := src.VM.CrossCheck("linux"); f == nil || f.Rule != vsphere.RuleGuestOS {
		t.Errorf("a Linux disk in a Windows VM: %+v", f)
	}
}
