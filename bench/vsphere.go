package bench

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"vmimport/internal/vcsimtest"
)

// vsphereCases time a vsphere:// conversion (the VM's disk read in place
// on its datastore, through vcsim, govmomi's vCenter simulator, on
// loopback) against what a user does without it: download the disk's
// files from the same datastore (curl, with the session's cookie, as govc
// datastore.download does) and convert the local copy. Both write a RAW
// file and sync it.
func vsphereCases(ctx context.Context, o *SuiteOptions, rep *Report, gen func(string, int64, float64) (string, error), logf func(string, ...any)) error {
	if _, err := exec.LookPath("curl"); err != nil {
		logf("no curl: skipping the vsphere cases (apt-get install curl)")
		return nil
	}
	raw, err := gen("small-50", o.Small, 0.5)
	if err != nil {
		return err
	}
	const password = "bench-vcsim"
	s, err := vcsimtest.Start(ctx, password)
	if err != nil {
		return fmt.Errorf("starting vcsim: %w", err)
	}
	defer s.Close()
	pwFile := filepath.Join(o.Dir, "vsphere-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(pwFile)
	cookie := sessionCookie(s)
	out := filepath.Join(o.Dir, "out.img")
	dl := filepath.Join(o.Dir, "download")
	clean := func() {
		os.Remove(out)
		removeGlob(filepath.Join(o.Dir, ".out.img.*"))
		os.RemoveAll(dl)
	}
	for _, c := range []struct {
		label, vm string
		opts      []string
		files     []string // as the datastore names them, descriptor first
	}{
		{"vmdk vmfs flat", "flat01", []string{"-o", "subformat=monolithicFlat"}, []string{"flat01.vmdk", "flat01-flat.vmdk"}},
		{"vmdk monolithicSparse", "sparse01", nil, []string{"sparse01.vmdk"}},
	} {
		name := fmt.Sprintf("vsphere %s -> raw (50%%)", c.label)
		if !o.want(name) {
			continue
		}
		local := filepath.Join(o.Dir, c.vm)
		if err := os.MkdirAll(local, 0o755); err != nil {
			return err
		}
		logf("making %s on the datastore", c.vm)
		args := append(append([]string{"convert", "-O", "vmdk"}, c.opts...), raw, filepath.Join(local, c.files[0]))
		if b, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("qemu-img %s: %v: %s", strings.Join(args, " "), err, b)
		}
		var size int64
		var urls []string
		for _, f := range c.files {
			if err := s.Put(filepath.Join(local, f), c.vm+"/"+f); err != nil {
				return err
			}
			fi, _ := os.Stat(filepath.Join(local, f))
			size += fi.Size()
			u := url.URL{Scheme: "https", Host: s.Host, Path: "/folder/" + c.vm + "/" + f, RawQuery: url.Values{"dcPath": {vcsimtest.Datacenter}, "dsName": {vcsimtest.Datastore}}.Encode()}
			urls = append(urls, u.String())
		}
		os.RemoveAll(local)
		if err := s.AddVM(ctx, vcsimtest.VM{Name: c.vm, Disks: []vcsimtest.Disk{{Chain: []string{c.vm + "/" + c.files[0]}, Capacity: o.Small}}}); err != nil {
			return fmt.Errorf("vcsim: %w", err)
		}
		ours := []string{"env", "VSPHERE_USER=" + vcsimtest.User, o.Convert, s.SourceURL("", c.vm), "-o", out, "--progress", "never",
			"--source-ca-file", s.CAFile, "--source-password-file", pwFile}
		// The download, then the conversion of the local files.
		var script strings.Builder
		fmt.Fprintf(&script, "set -e; mkdir -p %s; curl -sSf --cacert %s -H %s", shellQuote(dl), shellQuote(s.CAFile), shellQuote("Cookie: "+cookie))
		for i, u := range urls {
			fmt.Fprintf(&script, " -o %s %s", shellQuote(filepath.Join(dl, c.files[i])), shellQuote(u))
		}
		fmt.Fprintf(&script, "; %s %s -o %s --progress never; sync %s", shellQuote(o.Convert), shellQuote(filepath.Join(dl, c.files[0])), shellQuote(out), shellQuote(out))
		peer := []string{"sh", "-c", script.String()}

		clean()
		before := s.FolderBytes.Load()
		if _, err := Run(ctx, ours); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		oursBytes := s.FolderBytes.Load() - before
		clean()
		before = s.FolderBytes.Load()
		if _, err := Run(ctx, peer); err != nil {
			return fmt.Errorf("%s: the download and convert: %w", name, err)
		}
		peerBytes := s.FolderBytes.Load() - before
		cs := Case{Name: name, SourceFormat: c.label + " on a vSphere datastore", Output: "raw",
			Peer: "curl download + convert", VirtualSize: o.Small, DataBytes: dataBytes(raw), Fill: 0.5, FileBytes: size,
			OursFetched: Fetched{Bytes: oursBytes}, PeerFetched: Fetched{Bytes: peerBytes}}
		logf("measuring %s (files %s; fetched: ours %s, download %s)", name, gib(size), gib(oursBytes), gib(peerBytes))
		rep.Cases = append(rep.Cases, timeCase(ctx, o.Runs, cs, ours, peer, clean, logf))
		clean()
	}
	return nil
}

// sessionCookie logs in as a user would with govc or curl and returns the
// session cookie for the datastore's file access.
func sessionCookie(s *vcsimtest.Server) string {
	c := s.Client()
	var parts []string
	for _, k := range c.Client.Jar.Cookies(c.URL()) {
		parts = append(parts, k.Name+"="+k.Value)
	}
	return strings.Join(parts, "; ")
}
