package queuetest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"vmimport/internal/natstest"
	"vmimport/internal/webtest"
	"vmimport/queue"
)

// byKey reads every disk's status (convert batch status --json), by key.
func (e *env) byKey() map[string]queue.Status {
	e.t.Helper()
	r := e.run("batch", "status", "--queue", e.nats.URL, "--json")
	if r.code != 0 {
		e.t.Fatalf("batch status: exit %d\n%s", r.code, r.stderr)
	}
	out := map[string]queue.Status{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var s queue.Status
		if json.Unmarshal([]byte(line), &s) == nil && s.Key != "" {
			out[s.Key] = s
		}
	}
	return out
}

// waitEnded waits until the disks of keys have ended (60 s at most).
func (e *env) waitEnded(keys ...string) map[string]queue.Status {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := e.byKey()
		ended := 0
		for _, k := range keys {
			if s, ok := st[k]; ok && s.Ended() {
				ended++
			}
		}
		if ended == len(keys) {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("not ended within 60s: %+v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// publish puts a message on the queue by hand, as anyone who may publish
// on its subjects can: no convert involved.
func (e *env) publish(key string, spec map[string]any) {
	e.t.Helper()
	nc, err := nats.Connect(e.nats.URL)
	if err != nil {
		e.t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The worker makes the stream when it starts.
	for {
		if _, err := js.Stream(ctx, "convert"); err == nil {
			break
		}
		if ctx.Err() != nil {
			e.t.Fatal("the queue's stream was never made")
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := json.Marshal(map[string]any{"version": 1, "key": key, "spec": spec, "submitted": time.Now().UTC()})
	if _, err := js.Publish(ctx, "convert.disk."+key, b); err != nil {
		e.t.Fatal(err)
	}
}

// TestQueueForgedMessages: messages published by hand on the queue's
// subject (the deploy/ set-up had no authentication) made a worker upload
// a secret file of its node to an endpoint the message named, and write
// bytes served from a URL to any path it could write. Now the worker
// admits a message only inside its own limits (--allow-source,
// --allow-output, --allow-endpoint): every forged message fails at once,
// for good, with the reason; the endpoint hears nothing, no file appears;
// a message within the limits is done.
func TestQueueForgedMessages(t *testing.T) {
	e := newEnv(t)
	e.strict = true
	images := filepath.Join(e.dir, "images")
	os.Mkdir(images, 0o755)
	secrets := t.TempDir()
	secret := filepath.Join(secrets, "id_rsa")
	os.WriteFile(secret, []byte(strings.Repeat("secret ", 200)), 0o600)
	os.Symlink(secrets, filepath.Join(images, "escape"))
	good := randomDisk(t, filepath.Join(images, "good.raw"), 4*mib, mib, 2*mib)
	web := webtest.Start(t, images)
	var heard atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		heard.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer evil.Close()
	stolen := filepath.Join(t.TempDir(), "written.raw")

	e.worker("w", "--allow-source", images, "--allow-output", "s3://"+e.bucket+"/out/")
	forged := map[string]forgedMessage{
		"disk-secret":   {map[string]any{"source": secret, "output": "s3://" + e.bucket + "/out/x.raw", "upload": map[string]any{"endpoint": evil.URL}, "output_format": "raw"}, "(--allow-source)"},
		"disk-endpoint": {map[string]any{"source": good, "output": "s3://" + e.bucket + "/out/y.raw", "upload": map[string]any{"endpoint": evil.URL}, "output_format": "raw"}, "--allow-endpoint"},
		"disk-write":    {map[string]any{"source": web.URL + "/good.raw", "output": stolen}, "(--allow-source)"},
		"disk-write2":   {map[string]any{"source": good, "output": stolen}, "(--allow-output)"},
		"disk-link":     {map[string]any{"source": filepath.Join(images, "escape", "id_rsa"), "output": "s3://" + e.bucket + "/out/z.raw", "output_format": "raw"}, "(--allow-source)"},
		"disk-relative": {map[string]any{"source": "good.raw", "output": "s3://" + e.bucket + "/out/r.raw"}, "not an absolute path"},
		"disk-bucket":   {map[string]any{"source": good, "output": "s3://" + e.bucket + "/elsewhere.raw"}, "(--allow-output)"},
		"disk-statefile": {map[string]any{"source": good, "output": "s3://" + e.bucket + "/out/s.raw", "upload": map[string]any{"state_file": filepath.Join(e.dir, "s.state")}},
			"--state-file does not apply"},
	}
	st := e.publishForged(t, forged, "disk-good", map[string]any{"source": good, "output": "s3://" + e.bucket + "/out/good.raw", "output_format": "raw", "check": "off"})
	if s := st["disk-good"]; s.State != queue.Done {
		t.Errorf("the message within the limits: %s %+v", s.State, s.Outcome)
	}
	if n := heard.Load(); n != 0 {
		t.Errorf("the message's endpoint heard %d requests", n)
	}
	if _, err := os.Stat(stolen); err == nil {
		t.Error("a file was written outside --allow-output")
	}
	if keys := srv.Keys(t, e.bucket); len(keys) != 1 || keys[0] != "out/good.raw" {
		t.Errorf("objects: %v", keys)
	}
}

// TestQueueOneFileTwoSpellings: two submissions write out/x.raw and
// link/x.raw (link -> out), one file: the workers' lease is the file's
// identity, so one waits for the other instead of both writing it at once.
func TestQueueOneFileTwoSpellings(t *testing.T) {
	e := newEnv(t)
	out := filepath.Join(e.dir, "out")
	os.Mkdir(out, 0o755)
	if err := os.Symlink(out, filepath.Join(e.dir, "link")); err != nil {
		t.Skip(err)
	}
	a := randomDisk(t, filepath.Join(e.dir, "a.raw"), 128*mib, 4*mib, 8*mib)
	b := randomDisk(t, filepath.Join(e.dir, "b.raw"), 128*mib, 4*mib, 8*mib)
	for i, line := range []string{
		jsonLine("source", a, "output", filepath.Join(out, "x.raw"), "workers", 1, "block-size", "64k"),
		jsonLine("source", b, "output", filepath.Join(e.dir, "link", "x.raw"), "workers", 1, "block-size", "64k"),
	} {
		m := writeManifest(t, filepath.Join(e.dir, fmt.Sprintf("m%d.jsonl", i)), []string{line})
		if r := e.submit(m)(); r.code != 0 {
			t.Fatalf("submit: exit %d\n%s", r.code, r.stderr)
		}
	}
	e.worker("w1", "--ack-wait", "2s")
	e.worker("w2", "--ack-wait", "2s")
	var keys []string
	for k := range e.byKey() {
		keys = append(keys, k)
	}
	st := e.waitEnded(keys...)
	for k, s := range st {
		if s.State != queue.Done {
			t.Errorf("%s: %s %+v", k, s.State, s.Outcome)
		}
	}
	logs := ""
	for _, w := range []string{"w1", "w2"} {
		b, _ := os.ReadFile(filepath.Join(e.dir, "worker-"+w+".log"))
		logs += string(b)
	}
	if !strings.Contains(logs, "holds the lease of") {
		t.Errorf("no disk waited for the lease of the other: both wrote the file at once\n%s", logs)
	}
}

// TestQueueRemoteSourceSubmitted: convert batch --queue passes an https://
// source through as a URL (it used to make it a path, and blame
// --source-header); a worker allowed the URL's prefix converts it.
func TestQueueRemoteSourceSubmitted(t *testing.T) {
	e := newEnv(t)
	web := filepath.Join(e.dir, "web")
	os.Mkdir(web, 0o755)
	src := randomDisk(t, filepath.Join(web, "web01.raw"), 8*mib, mib, 2*mib)
	ws := webtest.Start(t, web)
	e.strict = true
	e.worker("w", "--allow-source", ws.URL+"/", "--allow-output", "s3://"+e.bucket+"/")
	m := writeManifest(t, filepath.Join(e.dir, "disks.jsonl"), []string{jsonLine("source", ws.URL+"/web01.raw", "output", "s3://"+e.bucket+"/web01.raw", "output-format", "raw")})
	r := e.submit(m, "--wait", "--json")()
	got, sum := parse(t, r.stdout)
	if r.code != 0 || sum.Done != 1 {
		t.Fatalf("exit %d, %+v\n%s", r.code, got, r.stderr)
	}
	if e.objectRawSHA("web01.raw", "raw") != fileSHA(t, src) {
		t.Fatal("the object is not the source")
	}
}

// TestQueueResubmitMissingOutput: a resubmission said "done before" for a
// disk whose output was deleted since; as the local batch does, it checks
// the output is still there, and queues the disk again.
func TestQueueResubmitMissingOutput(t *testing.T) {
	e := newEnv(t)
	src := randomDisk(t, filepath.Join(e.dir, "a.raw"), 4*mib, mib, 2*mib)
	out := filepath.Join(e.dir, "a.out")
	m := writeManifest(t, filepath.Join(e.dir, "disks.jsonl"), []string{jsonLine("source", src, "output", out)})
	e.worker("w")
	if r := e.submit(m, "--wait", "--json")(); r.code != 0 {
		t.Fatalf("first: exit %d\n%s", r.code, r.stderr)
	}
	r := e.submit(m, "--wait", "--json")()
	if _, sum := parse(t, r.stdout); r.code != 0 || sum.Skipped != 1 {
		t.Fatalf("resubmitted with the output there: exit %d, %+v\n%s", r.code, sum, r.stderr)
	}
	os.Remove(out)
	r = e.submit(m, "--wait", "--json")()
	_, sum := parse(t, r.stdout)
	if r.code != 0 || sum.Done != 1 {
		t.Fatalf("resubmitted after the output was deleted: exit %d, %+v\n%s", r.code, sum, r.stderr)
	}
	if fileSHA(t, out) != fileSHA(t, src) {
		t.Fatal("the output was not made again")
	}
}

// TestQueueAuthTLS: a queue behind a password and TLS (as deploy/ now
// sets it up): the worker and the submitter connect with NATS_USER,
// NATS_PASSWORD and NATS_CA; without the password, or without the CA,
// they are refused.
func TestQueueAuthTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := tlsFiles(t, dir)
	srvNATS := natstest.StartArgs(t, "--user", "convert", "--pass", "s3cret-pw", "--tls", "--tlscert", cert, "--tlskey", key)
	e := newEnvWith(t, srvNATS)
	src := randomDisk(t, filepath.Join(e.dir, "a.raw"), 4*mib, mib, 2*mib)
	out := filepath.Join(e.dir, "a.out")
	m := writeManifest(t, filepath.Join(e.dir, "disks.jsonl"), []string{jsonLine("source", src, "output", out)})
	url := strings.Replace(srvNATS.URL, "nats://", "tls://", 1)
	for _, c := range []struct {
		env  []string
		want string
	}{
		{[]string{"NATS_CA=" + ca}, "Authorization Violation"},
		{[]string{"NATS_USER=convert", "NATS_PASSWORD=s3cret-pw"}, "certificate"},
	} {
		cmd := e.command("batch", "status", "--queue", url)
		cmd.Env = append(cmd.Env, c.env...)
		b, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() == 0 || !strings.Contains(strings.ToLower(string(b)), strings.ToLower(c.want)) {
			t.Errorf("%v: exit %d: %s; want refused (%s)", c.env, cmd.ProcessState.ExitCode(), b, c.want)
		}
		if strings.Contains(string(b), "s3cret-pw") {
			t.Error("the password shows in a message")
		}
	}
	e.extra = []string{"NATS_CA=" + ca, "NATS_USER=convert", "NATS_PASSWORD=s3cret-pw"}
	e.queueURL = url
	e.worker("w")
	r := e.submit(m, "--wait", "--json")()
	if _, sum := parse(t, r.stdout); r.code != 0 || sum.Done != 1 {
		t.Fatalf("exit %d, %+v\n%s", r.code, sum, r.stderr)
	}
	if fileSHA(t, out) != fileSHA(t, src) {
		t.Fatal("the output is not the source")
	}
}

// tlsFiles makes a CA and a certificate for 127.0.0.1 signed by it, as
// PEM files in dir.
func tlsFiles(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server-key.pem", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(srvKey))
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// forgedMessage is a message published by hand that a worker must refuse,
// and the words its refusal must hold.
type forgedMessage struct {
	spec map[string]any
	why  string
}

// publishForged publishes the good message under key good and every forged
// one, waits for all to end, and checks each forged one was refused once,
// for good, with its reason; it returns the statuses.
func (e *env) publishForged(t *testing.T, forged map[string]forgedMessage, good string, spec map[string]any) map[string]queue.Status {
	t.Helper()
	keys := []string{good}
	e.publish(good, spec)
	for k, f := range forged {
		e.publish(k, f.spec)
		keys = append(keys, k)
	}
	st := e.waitEnded(keys...)
	for k, f := range forged {
		s := st[k]
		if s.State != queue.Failed || s.Outcome == nil || !strings.Contains(s.Outcome.Error, "refused by the worker") || !strings.Contains(s.Outcome.Error, f.why) {
			t.Errorf("%s: %s %+v; want refused (%s)", k, s.State, s.Outcome, f.why)
		}
		if s.Delivery > 1 {
			t.Errorf("%s: delivered %d times; a refusal is for good", k, s.Delivery)
		}
	}
	return st
}
