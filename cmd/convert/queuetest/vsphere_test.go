package queuetest

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/internal/vcsimtest"
	"vmimport/queue"
)

// TestQueueVSphereForged: a worker logs in to a vsphere:// source's
// vCenter with its own VSPHERE_PASSWORD. Messages published by hand name
// another host (a server that records what it hears), a user of their
// own, --source-insecure, and a CA file of the worker's node it was not
// told to trust: each fails at once, for good, saying why, and the other
// host hears nothing (no login, no connection). A message within the
// worker's limits (its vCenter, its CA file) converts the VM's disk. The
// password is in no status and no log.
func TestQueueVSphereForged(t *testing.T) {
	e := newEnv(t)
	e.strict = true
	ctx := context.Background()
	vc, err := vcsimtest.Start(ctx, "Queue-s3cret-vc")
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	src := randomDisk(t, filepath.Join(e.dir, "web01.raw"), 8*mib, mib, 2*mib)
	vmdk := testkit.Convert(t, src, filepath.Join(e.dir, "web01.vmdk"), "vmdk")
	if err := vc.Put(vmdk, "web01/web01.vmdk"); err != nil {
		t.Fatal(err)
	}
	if err := vc.AddVM(ctx, vcsimtest.VM{Name: "web01", Folder: "prod", Disks: []vcsimtest.Disk{{Chain: []string{"web01/web01.vmdk"}, Capacity: 8 * mib}}}); err != nil {
		t.Fatal(err)
	}
	// Another host, with a certificate the worker would accept with the
	// message's CA file or --source-insecure.
	var heard atomic.Int64
	evil := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		heard.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	evil.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			heard.Add(1)
		}
	}
	evil.TLS = &tls.Config{}
	evil.StartTLS()
	defer evil.Close()
	evilHost := strings.TrimPrefix(evil.URL, "https://")
	evilCA := filepath.Join(e.dir, "evil-ca.pem")
	os.WriteFile(evilCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: evil.Certificate().Raw}), 0o644)

	out := filepath.Join(e.dir, "out")
	os.Mkdir(out, 0o755)
	e.extra = append(e.extra, "VSPHERE_USER="+vcsimtest.User, "VSPHERE_PASSWORD="+vc.Password)
	e.worker("w", "--allow-source", "vsphere://"+vc.Host+"/DC0/vm/prod/", "--allow-output", out, "--allow-ca-file", vc.CAFile)

	good := vc.SourceURL("prod", "web01")
	msg := func(source, output string, v map[string]any) map[string]any {
		return map[string]any{"source": source, "output": filepath.Join(out, output), "output_format": "raw", "check": "off", "vsphere": v}
	}
	forged := map[string]forgedMessage{
		"vs-host":     {msg("vsphere://"+evilHost+"/DC0/vm/prod/web01", "a.raw", map[string]any{"ca_file": evilCA}), "(--allow-source vsphere://"},
		"vs-host2":    {msg("vsphere://"+evilHost+"/DC0/vm/prod/web01", "f.raw", map[string]any{"insecure": true}), "(--allow-source vsphere://"},
		"vs-insecure": {msg(good, "b.raw", map[string]any{"insecure": true}), "--allow-insecure"},
		"vs-user":     {msg(strings.Replace(good, "vsphere://", "vsphere://administrator%40vsphere.local@", 1), "c.raw", map[string]any{"ca_file": vc.CAFile}), "names a user"},
		"vs-ca":       {msg(good, "d.raw", map[string]any{"ca_file": evilCA}), "--allow-ca-file"},
		"vs-folder":   {msg(vc.SourceURL("", "web01"), "e.raw", map[string]any{"ca_file": vc.CAFile}), "(--allow-source vsphere://"},
	}
	st := e.publishForged(t, forged, "vs-good", msg(good, "good.raw", map[string]any{"ca_file": vc.CAFile}))
	if s := st["vs-good"]; s.State != queue.Done {
		t.Fatalf("the message within the limits: %s %+v", s.State, s.Outcome)
	}
	if fileSHA(t, filepath.Join(out, "good.raw")) != fileSHA(t, src) {
		t.Error("the output is not the VM's disk")
	}
	if n := heard.Load(); n != 0 {
		t.Errorf("the other host heard %d connections or requests", n)
	}
	for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
		if _, err := os.Stat(filepath.Join(out, n+".raw")); err == nil {
			t.Errorf("%s.raw was written", n)
		}
	}
	r := e.run("batch", "status", "--queue", e.nats.URL, "--json")
	b, _ := os.ReadFile(filepath.Join(e.dir, "worker-w.log"))
	if strings.Contains(r.stdout+r.stderr+string(b), vc.Password) {
		t.Error("the password shows in the statuses or the worker's log")
	}
}
