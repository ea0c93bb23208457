package queue

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/job"
)

// TestAdmitVSphere: a worker logs in to a vsphere:// source's vCenter with
// its own VSPHERE_PASSWORD, so a message names only a vCenter (datacenter,
// folder) the worker allows, no user of its own, and trusts the vCenter's
// certificate no more than the worker lets it (no --source-insecure, no
// CA file but the worker's).
func TestAdmitVSphere(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644)
	if err := os.Symlink(dir, filepath.Join(dir, "link")); err != nil {
		t.Skip(err)
	}
	base := Limits{Sources: []string{"vsphere://vc01/DC1/vm/prod/"}, Outputs: []string{out}, CAFiles: []string{ca}}
	spec := func(src string, v job.VSphereSpec) job.Spec {
		return job.Spec{Source: src, Output: filepath.Join(out, "x.raw"), VSphere: v}
	}
	for _, c := range []struct {
		name string
		spec job.Spec
		lim  func(*Limits)
		why  string // "" for admitted
	}{
		{"folder", spec("vsphere://vc01/DC1/vm/prod/web01", job.VSphereSpec{}), nil, ""},
		{"subfolder", spec("vsphere://VC01:443/DC1/vm/prod/eu/web01", job.VSphereSpec{Snapshot: true}), nil, ""},
		{"other folder", spec("vsphere://vc01/DC1/vm/production/web01", job.VSphereSpec{}), nil, "--allow-source vsphere://"},
		{"other host", spec("vsphere://evil.example/DC1/vm/prod/web01", job.VSphereSpec{}), nil, "--allow-source vsphere://"},
		{"other port", spec("vsphere://vc01:8443/DC1/vm/prod/web01", job.VSphereSpec{}), nil, "--allow-source vsphere://"},
		{"endpoint", spec("vsphere://vc02/DC9/vm/web01", job.VSphereSpec{}), func(l *Limits) { l.Endpoints = []string{"https://VC02:443/"} }, ""},
		{"endpoint port", spec("vsphere://vc02/DC9/vm/web01", job.VSphereSpec{}), func(l *Limits) { l.Endpoints = []string{"https://vc02:8443"} }, "--allow-source vsphere://"},
		{"https prefix", spec("vsphere://vc03/DC1/vm/web01", job.VSphereSpec{}), func(l *Limits) { l.Sources = []string{"https://vc03/"} }, "--allow-source vsphere://"},
		{"user", spec("vsphere://administrator@vc01/DC1/vm/prod/web01", job.VSphereSpec{}), nil, "names a user"},
		{"insecure", spec("vsphere://vc01/DC1/vm/prod/web01", job.VSphereSpec{Insecure: true}), nil, "--allow-insecure"},
		{"insecure allowed", spec("vsphere://vc01/DC1/vm/prod/web01", job.VSphereSpec{Insecure: true}), func(l *Limits) { l.Insecure = true }, ""},
		{"ca", spec("vsphere://vc01/DC1/vm/prod/web01", job.VSphereSpec{CAFile: ca}), nil, ""},
		{"ca spelt", spec("vsphere://vc01/DC1/vm/prod/web01", job.VSphereSpec{CAFile: filepath.Join(dir, "link", "ca.pem")}), nil, ""},
		{"ca other", spec("vsphere://vc01/DC1/vm/prod/web01", job.VSphereSpec{CAFile: "/etc/passwd"}), nil, "--allow-ca-file"},
		{"ca relative", spec("vsphere://vc01/DC1/vm/prod/web01", job.VSphereSpec{CAFile: "ca.pem"}), nil, "not an absolute path"},
		{"ca none allowed", spec("vsphere://vc01/DC1/vm/prod/web01", job.VSphereSpec{CAFile: ca}), func(l *Limits) { l.CAFiles = nil }, "--allow-ca-file"},
		{"host spelt to mislead", spec("vsphere://vc01#x:443/DC1/vm/prod/web01", job.VSphereSpec{}), nil, "host"},
	} {
		l := base
		l.Sources = append([]string(nil), base.Sources...)
		if c.lim != nil {
			c.lim(&l)
		}
		err := Admit(c.spec, l)
		switch {
		case c.why == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.why != "" && (!errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.why)):
			t.Errorf("%s: %v; want refused (%s)", c.name, err, c.why)
		}
	}
	for _, bad := range []string{"vsphere://", "vsphere:///DC1", "vsphere://vc01#x/"} {
		l := Limits{Sources: []string{bad}}
		if err := l.Validate(); err == nil {
			t.Errorf("--allow-source %s accepted", bad)
		}
	}
	for _, good := range []string{"vsphere://vc01/", "vsphere://vc01:8443", "vsphere://vc01/DC1", "vsphere://vc01/DC1/vm/prod/"} {
		l := Limits{Sources: []string{good}}
		if err := l.Validate(); err != nil {
			t.Errorf("--allow-source %s: %v", good, err)
		}
	}
	// A submission carries neither a user nor a password.
	s := spec("vsphere://vc01/DC1/vm/prod/web01", job.VSphereSpec{Password: "s3cret"})
	if _, err := Prepare(s); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Prepare with a password: %v", err)
	}
	s = spec("vsphere://vc01/DC1/vm/prod/web01", job.VSphereSpec{CAFile: "ca.pem"})
	if p, err := Prepare(s); err != nil || !filepath.IsAbs(p.VSphere.CAFile) {
		t.Errorf("Prepare: %+v, %v", p.VSphere, err)
	}
}
