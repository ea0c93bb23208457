// Package importtest runs the convert binary end to end through the import:
// an upload to a real S3 server (versitygw on 127.0.0.1), then ImportImage
// and the wait on its task against the local API server of
// internal/jdcloudtest, which checks the signature of every request; the
// exit codes and one-line messages of each failure.
package importtest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"vmimport/internal/jdcloudtest"
	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
	"vmimport/upload"
)

var (
	srv *s3test.Server
	bin string
)

func TestMain(m *testing.M) { os.Exit(s3test.MainWithConvert(m, &srv, &bin)) }

// sample is the demo disk: MBR, ext4, a system the check passes and names
// ("Sample Linux" 1.0, x86_64, platform Other Linux).
var sample = filepath.Join("..", "..", "..", "testdata", "sample.qcow2")

type env struct {
	t      *testing.T
	bucket string
	home   string
	api    *jdcloudtest.Server
	// extra environment of the runs (JDCLOUD_* keys, ...)
	extra []string
}

// newEnv: a bucket, a home folder, and an API server that takes the
// JDCLOUD_* pair the runs get (useAWS: the S3 server's pair instead, to
// prove the fallback on the upload's credential chain).
func newEnv(t *testing.T, useAWS bool, o jdcloudtest.Options) *env {
	s3test.Need(t, srv)
	if useAWS {
		o.AccessKey, o.SecretKey = srv.AccessKey, srv.SecretKey
	}
	e := &env{t: t, bucket: srv.Bucket(t), home: t.TempDir(), api: jdcloudtest.Start(t, o)}
	if !useAWS {
		e.extra = []string{"JDCLOUD_ACCESS_KEY_ID=" + e.api.AccessKey, "JDCLOUD_SECRET_ACCESS_KEY=" + e.api.SecretKey}
	}
	return e
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs the binary against the S3 server and the API server.
func (e *env) run(args ...string) result {
	e.t.Helper()
	args = append(args, "--endpoint", srv.Endpoint, "--region", srv.Region, "--jdcloud-api-endpoint", e.api.URL,
		"--poll-interval", "5ms", "--progress", "never")
	if !strings.HasPrefix(args[0], "import") {
		args = append(args, "--check", "warn")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(srv.Env(e.home), e.extra...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if cmd.ProcessState == nil {
		e.t.Fatal(err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
}

func (e *env) mustRun(v any, args ...string) result {
	e.t.Helper()
	r := e.run(append(args, "--json")...)
	if r.code != 0 {
		e.t.Fatalf("convert %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		e.t.Fatalf("convert %s --json: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
	return r
}

// lastLine is the last line of stderr: the error main prints.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

type importJSON struct {
	Object    string         `json:"object"`
	Region    string         `json:"region"`
	ImageID   string         `json:"image_id"`
	TaskID    string         `json:"task_id"`
	Status    string         `json:"status"`
	Request   map[string]any `json:"request"`
	Task      map[string]any `json:"task"`
	Error     string         `json:"error"`
	Creds     string         `json:"credentials"`
	RequestID string         `json:"request_id"`
}

type runJSON struct {
	Target struct {
		Bucket      string         `json:"bucket"`
		Key         string         `json:"key"`
		ETag        string         `json:"etag"`
		ImportImage map[string]any `json:"import_image"`
	} `json:"target"`
	Import *importJSON `json:"import"`
}

// TestUploadImportWaitThenImportAgain: an upload with --import --wait
// ends with a finished image; the object carries the import metadata; a
// later `convert import` of the same object, with no flags, sends the same
// body (a fresh presigned link aside) and gets the same image back; and
// import-status reports the task.
func TestUploadImportWaitThenImportAgain(t *testing.T) {
	testkit.Need(t, "qemu-img")
	e := newEnv(t, false, jdcloudtest.Options{Polls: 3})
	key := "images/web 01.qcow2"
	var first runJSON
	r := e.mustRun(&first, sample, "-O", "qcow2", "-o", "s3://"+e.bucket+"/"+key, "--import", "--wait", "--image-name", "web01 镜像")
	if strings.Contains(r.stderr, "could not tell the operating system") {
		t.Errorf("the sample's OS is known, yet: %s", r.stderr)
	}
	imp := first.Import
	if imp == nil || imp.Status != "finished" || imp.ImageID == "" || imp.TaskID == "" || imp.Task["progress"] != 100.0 {
		t.Fatalf("import %+v\n%s", imp, r.stderr)
	}
	if !strings.Contains(imp.Creds, "JDCLOUD_ACCESS_KEY_ID") || strings.Contains(r.stdout+r.stderr, e.api.SecretKey) {
		t.Errorf("credentials %q (or the secret shows)", imp.Creds)
	}
	imps := e.api.Imports()
	if len(imps) != 1 {
		t.Fatalf("%d imports", len(imps))
	}
	body := imps[0].Fields
	want := map[string]any{
		"architecture": "x86_64", "osType": "linux", "platform": "Other Linux", "osVersion": "1.0", "diskFormat": "qcow2",
		"systemDiskSizeGB": 40.0, "imageName": "web01 镜像", "clientToken": upload.ClientToken(e.bucket, key, first.Target.ETag),
	}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("body %s = %v, want %v", k, body[k], v)
		}
	}
	// The body sent is the one the upload's report shows.
	for k, v := range first.Target.ImportImage {
		if body[k] != v {
			t.Errorf("body %s = %v, the report's %v", k, body[k], v)
		}
	}
	u, err := url.Parse(body["imageUrl"].(string))
	if err != nil || u.Query().Get("X-Amz-Signature") == "" || !strings.HasSuffix(u.Path, "/images/web 01.qcow2") {
		t.Errorf("imageUrl %s", body["imageUrl"])
	}
	for _, q := range e.api.Requests() {
		if q.Status != 200 || q.SignatureError != "" {
			t.Errorf("request %+v", q)
		}
	}

	// The object's metadata.
	h, err := srv.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	meta, virtual, err := upload.ImportMetaFromObject(h.Metadata)
	if err != nil || virtual != 64<<20 || meta.DiskFormat != "qcow2" || meta.SystemDiskSizeGB != 40 || meta.Platform != "Other Linux" ||
		meta.OSVersion != "1.0" || meta.ImageName != "web01 镜像" || meta.OSType != "linux" || meta.Architecture != "x86_64" {
		t.Errorf("metadata %v -> %+v, virtual %d, %v", h.Metadata, meta, virtual, err)
	}

	// convert import of the same object: the same body, the same image.
	var again importJSON
	r = e.mustRun(&again, "import", "s3://"+e.bucket+"/"+key, "--wait")
	imps = e.api.Imports()
	if len(imps) != 2 || !imps[1].Repeat || again.ImageID != imp.ImageID || again.TaskID != imp.TaskID || again.Status != "finished" {
		t.Fatalf("second import %+v; server %+v\n%s", again, imps, r.stderr)
	}
	b1, b2 := imps[0].Fields, imps[1].Fields
	for k := range b1 {
		if k != "imageUrl" && b1[k] != b2[k] {
			t.Errorf("second body %s = %v, first %v", k, b2[k], b1[k])
		}
	}
	if len(b1) != len(b2) {
		t.Errorf("bodies differ in fields: %v / %v", b1, b2)
	}
	u1, _ := url.Parse(b1["imageUrl"].(string))
	u2, _ := url.Parse(b2["imageUrl"].(string))
	if u1.Host != u2.Host || u1.EscapedPath() != u2.EscapedPath() {
		t.Errorf("image links differ beyond the signature: %s / %s", u1, u2)
	}

	// import-status, as a table and as JSON.
	r = e.run("import-status", imp.TaskID)
	if r.code != 0 || !strings.Contains(r.stdout, imp.TaskID) || !strings.Contains(r.stdout, "finished") || !strings.Contains(r.stdout, imp.ImageID) {
		t.Errorf("import-status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var tasks []map[string]any
	e.mustRun(&tasks, "import-status", imp.TaskID)
	if len(tasks) != 1 || tasks[0]["taskStatus"] != "finished" || tasks[0]["taskId"] != imp.TaskID {
		t.Errorf("import-status --json %v", tasks)
	}
	if r := e.run("import-status", imp.TaskID, "424242"); r.code != 6 || !strings.Contains(lastLine(r.stderr), "no import task 424242") {
		t.Errorf("unknown task: exit %d\n%s", r.code, r.stderr)
	}
	// With --wait too, at once: the wait's grace is for a task just
	// submitted, not for a mistyped id.
	start := time.Now()
	if r := e.run("import-status", "424242", "--wait"); r.code != 6 || !strings.Contains(lastLine(r.stderr), "no import task 424242") || time.Since(start) > 30*time.Second {
		t.Errorf("unknown task with --wait: exit %d after %s\n%s", r.code, time.Since(start).Round(time.Second), r.stderr)
	}
}

// TestImportReport: after an import the report says what was done, not
// how to import (no jdc command, no POST); the hints it gives keep the
// run's store and API flags; the rate line leaves the import's wait out.
func TestImportReport(t *testing.T) {
	testkit.Need(t, "qemu-img")
	e := newEnv(t, false, jdcloudtest.Options{Polls: 400})
	flags := "--endpoint " + srv.Endpoint + " --region " + srv.Region + " --jdcloud-api-endpoint " + e.api.URL
	r := e.run(sample, "-o", "s3://"+e.bucket+"/web01.qcow2", "--import")
	if r.code != 0 || strings.Contains(r.stdout, "import it with") || strings.Contains(r.stdout, "POST") {
		t.Errorf("--import: exit %d, the report still says how to import:\n%s", r.code, r.stdout)
	}
	if want := regexp.MustCompile(`follow it with:\n  convert import-status \d+ --wait ` + regexp.QuoteMeta(flags) + "\n"); !want.MatchString(r.stdout) {
		t.Errorf("--import: no hint %q:\n%s", want, r.stdout)
	}
	// A dry run checks the API too, and imports nothing.
	before := len(e.api.Imports())
	r = e.run(sample, "-o", "s3://"+e.bucket+"/dry.qcow2", "--import", "--wait", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "  checked:      the import API at "+e.api.URL) || len(e.api.Imports()) != before {
		t.Errorf("--dry-run --import: exit %d, %d imports\n%s%s", r.code, len(e.api.Imports())-before, r.stdout, r.stderr)
	}
	start := time.Now()
	r = e.run(sample, "-o", "s3://"+e.bucket+"/web02.qcow2", "--import", "--wait")
	took := time.Since(start).Seconds()
	if r.code != 0 || strings.Contains(r.stdout, "import it with") || !strings.Contains(r.stdout, "import finished: image ") {
		t.Fatalf("--import --wait: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	conv := regexp.MustCompile(` in ([0-9.]+)s[ ;]`).FindStringSubmatch(r.stderr)
	wait := regexp.MustCompile(`\(task \d+, (\d+)s\)`).FindStringSubmatch(r.stdout)
	if conv == nil || wait == nil {
		t.Fatalf("no summary line or wait:\n%s%s", r.stdout, r.stderr)
	}
	c, _ := strconv.ParseFloat(conv[1], 64)
	w, _ := strconv.ParseFloat(wait[1], 64)
	if w < 2 || c+w-1 > took {
		t.Errorf("the summary's %gs and the wait's %gs together exceed the run's %.1fs: the rate counts the wait\n%s", c, w, took, r.stderr)
	}
}

// uploadOnly puts the sample in the bucket without importing it.
func (e *env) uploadOnly(key string, extra ...string) {
	e.t.Helper()
	var v runJSON
	e.mustRun(&v, append([]string{sample, "-O", "qcow2", "-o", "s3://" + e.bucket + "/" + key}, extra...)...)
}

// TestImportFailures: each failure of the import through the binary, with
// its exit code and its one-line message.
func TestImportFailures(t *testing.T) {
	testkit.Need(t, "qemu-img")
	e := newEnv(t, false, jdcloudtest.Options{Polls: 2})
	key := "img/sample.qcow2"
	e.uploadOnly(key)
	obj := "s3://" + e.bucket + "/" + key
	for _, tc := range []struct {
		name    string
		setup   func()
		args    []string
		env     []string
		code    int
		message string // in the last line of stderr
		stdout  string
	}{
		{name: "400 OUT_OF_RANGE", args: []string{"import", obj},
			setup: func() {
				e.api.Inject(jdcloudtest.Fault{Op: "ImportImage", Status: 400, Code: "OUT_OF_RANGE", Message: "SystemDiskSizeGB must be multiple of 10"})
			},
			code: 6, message: "convert: ImportImage: HTTP 400 OUT_OF_RANGE: SystemDiskSizeGB must be multiple of 10 (requestId req"},
		{name: "401 wrong secret", args: []string{"import", obj}, env: []string{"JDCLOUD_SECRET_ACCESS_KEY=not-the-secret"},
			code: 7, message: "HTTP 401 ACCESS_ERROR: sign result is not same [gw]"},
		{name: "500 then success", args: []string{"import", obj, "--client-token", "t-500"},
			setup: func() { e.api.Inject(jdcloudtest.Fault{Op: "ImportImage", Status: 500, Times: 2}) },
			code:  0, stdout: "import submitted: image img-"},
		{name: "task fails", args: []string{"import", obj, "--wait", "--client-token", "t-fail"},
			setup: func() {
				e.api.FailTasks(func(jdcloudtest.Import) string {
					return "image check failed: no virtio driver found\nin the initramfs"
				})
			},
			code: 5, message: "convert: ImportImage task 10"},
		{name: "wait time-out", args: []string{"import", obj, "--wait", "--wait-timeout", "300ms", "--client-token", "t-slow"},
			setup: func() {
				e.api.FailTasks(nil)
				e.api.Inject(jdcloudtest.Fault{Op: "DescribeImageTasks", Status: 503, Times: 1000})
			},
			code: 8, message: "image task still running at the time-out: task 10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			before := len(e.api.Requests())
			saved := e.extra
			e.extra = append(append([]string{}, e.extra...), tc.env...)
			r := e.run(tc.args...)
			e.extra = saved
			line := lastLine(r.stderr)
			t.Logf("exit %d, stderr:\n%s", r.code, r.stderr)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d", r.code, tc.code)
			}
			if tc.message != "" && !strings.Contains(line, tc.message) {
				t.Errorf("last line %q lacks %q", line, tc.message)
			}
			if tc.stdout != "" && !strings.Contains(r.stdout, tc.stdout) {
				t.Errorf("stdout %q lacks %q", r.stdout, tc.stdout)
			}
			reqs := e.api.Requests()[before:]
			switch tc.name {
			case "500 then success":
				if n := len(reqs); n != 3 || strings.Count(r.stderr, "retrying in") != 2 {
					t.Errorf("%d requests, stderr %s", n, r.stderr)
				}
			case "task fails":
				if !strings.Contains(line, "image check failed: no virtio driver found; in the initramfs") {
					t.Errorf("errorInfo not on one line: %q", line)
				}
			case "400 OUT_OF_RANGE":
				// The hint reaches the same store and API as the run.
				want := "import it later with `convert import " + obj + " --endpoint " + srv.Endpoint + " --region " + srv.Region + " --jdcloud-api-endpoint " + e.api.URL + "`"
				if !strings.Contains(r.stderr, want) {
					t.Errorf("no hint %q:\n%s", want, r.stderr)
				}
			case "401 wrong secret":
				if !strings.Contains(line, "credentials were access key") || strings.Contains(r.stderr, "not-the-secret") {
					t.Errorf("line %q", line)
				}
			}
		})
	}
}

// TestRefusedBeforeUpload: with --import, credentials the API refuses stop
// the run before a byte is uploaded; nothing is left in the bucket.
func TestRefusedBeforeUpload(t *testing.T) {
	testkit.Need(t, "qemu-img")
	e := newEnv(t, false, jdcloudtest.Options{})
	e.extra = append(e.extra, "JDCLOUD_SECRET_ACCESS_KEY=wrong")
	r := e.run(sample, "-O", "qcow2", "-o", "s3://"+e.bucket+"/x.qcow2", "--import")
	if r.code != 7 || !strings.Contains(lastLine(r.stderr), "checking the cloud's API") {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if keys := srv.Keys(t, e.bucket); len(keys) != 0 {
		t.Errorf("objects left: %v", keys)
	}
	if p := srv.Pending(t, e.bucket); len(p) != 0 {
		t.Errorf("uploads left: %v", p)
	}
	// --import with a file output is a usage error.
	if r := e.run(sample, "-o", filepath.Join(t.TempDir(), "x.raw"), "--import"); r.code != 2 || !strings.Contains(lastLine(r.stderr), "--import and --wait need an upload") {
		t.Errorf("file output: exit %d\n%s", r.code, r.stderr)
	}
}

// TestUnknownOSAndAWSCredentials: a disk whose OS the check cannot tell is
// imported as linux / x86_64 / Other Linux with a warning that names the
// flags; without JDCLOUD_* keys the API is called with the upload's AWS
// pair; an object convert did not upload needs --disk-format and
// --system-disk-size-gb.
func TestUnknownOSAndAWSCredentials(t *testing.T) {
	testkit.Need(t, "qemu-img", "sfdisk")
	e := newEnv(t, true, jdcloudtest.Options{Polls: 1})
	disk := filepath.Join(t.TempDir(), "blank.raw")
	f, _ := os.Create(disk)
	f.Truncate(8 << 20)
	f.Close()
	testkit.Run(t, "sh", "-c", "printf 'label: dos\\nstart=2048, type=83, bootable\\n' | sfdisk -q "+disk)
	var v runJSON
	// At its defaults an upload is QCOW2, and the import says so.
	r := e.mustRun(&v, disk, "-o", "s3://"+e.bucket+"/blank.qcow2", "--import")
	if !strings.Contains(r.stderr, "could not tell the operating system") || !strings.Contains(r.stderr, "--os-type, --platform, --os-version and --architecture") {
		t.Errorf("no warning naming the flags:\n%s", r.stderr)
	}
	if v.Import == nil || v.Import.Status != "submitted" || !strings.Contains(v.Import.Creds, "AWS credential chain") {
		t.Fatalf("import %+v", v.Import)
	}
	b := e.api.Imports()[0].Fields
	if b["osType"] != "linux" || b["architecture"] != "x86_64" || b["platform"] != "Other Linux" || b["diskFormat"] != "qcow2" {
		t.Errorf("body %v", b)
	}
	// convert import of it warns too, and a flag overrides.
	r = e.run("import", "s3://"+e.bucket+"/blank.qcow2", "--platform", "Ubuntu", "--os-version", "22.04", "--client-token", "t2")
	if r.code != 0 || strings.Contains(r.stderr, "could not tell") {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}
	if b := e.api.Imports()[1].Fields; b["platform"] != "Ubuntu" || b["osVersion"] != "22.04" {
		t.Errorf("overrides: %v", b)
	}

	// An object without the metadata.
	_, err := srv.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(e.bucket), Key: aws.String("other.vhd"), Body: strings.NewReader("x")})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.run("import", "s3://"+e.bucket+"/other.vhd"); r.code != 2 || !strings.Contains(lastLine(r.stderr), "give --disk-format and --system-disk-size-gb") {
		t.Errorf("no metadata: exit %d\n%s", r.code, r.stderr)
	}
	if r := e.run("import", "s3://"+e.bucket+"/other.vhd", "--disk-format", "vhd", "--system-disk-size-gb", "45"); r.code != 2 {
		t.Errorf("size 45: exit %d\n%s", r.code, r.stderr)
	}
	r = e.run("import", "s3://"+e.bucket+"/other.vhd", "--disk-format", "vhd", "--system-disk-size-gb", "50", "--image-name", "other")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if b := e.api.Imports()[2].Fields; b["diskFormat"] != "vhd" || b["systemDiskSizeGB"] != 50.0 || b["imageName"] != "other" || b["platform"] != "Other Linux" {
		t.Errorf("body %v", b)
	}
	if r := e.run("import", "s3://"+e.bucket+"/missing.raw"); r.code != 1 || !strings.Contains(lastLine(r.stderr), "no such object") {
		t.Errorf("missing object: exit %d\n%s", r.code, r.stderr)
	}
}

// TestBatchImportWait: a batch whose records import, with --wait, follows
// every task together (a poll asks for several tasks), reports each disk
// when its import ends, and fails the disk whose task failed alone.
func TestBatchImportWait(t *testing.T) {
	testkit.Need(t, "qemu-img")
	e := newEnv(t, false, jdcloudtest.Options{Polls: 3})
	e.api.FailTasks(func(im jdcloudtest.Import) string {
		if im.Fields["imageName"] == "bad" {
			return "the image has no virtio driver"
		}
		return ""
	})
	dir := t.TempDir()
	var lines []string
	for _, name := range []string{"web01", "web02", "bad", "noimport"} {
		abs, _ := filepath.Abs(sample) // a manifest's relative paths are its folder's
		rec := map[string]any{"source": abs, "output": "s3://" + e.bucket + "/" + name + ".qcow2", "output-format": "qcow2", "image-name": name}
		if name != "noimport" {
			rec["import"] = true
		}
		b, _ := json.Marshal(rec)
		lines = append(lines, string(b))
	}
	manifest := filepath.Join(dir, "disks.jsonl")
	os.WriteFile(manifest, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	r := e.run("batch", manifest, "--jobs", "2", "--wait", "--json", "--no-state")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (one task failed)\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	type disk struct {
		Output string      `json:"output"`
		Status string      `json:"status"`
		Error  string      `json:"error"`
		Import *importJSON `json:"import"`
	}
	got := map[string]disk{}
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if strings.HasPrefix(l, `{"summary"`) {
			continue
		}
		var d disk
		if err := json.Unmarshal([]byte(l), &d); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		got[strings.TrimSuffix(d.Output[strings.LastIndex(d.Output, "/")+1:], ".qcow2")] = d
	}
	for _, name := range []string{"web01", "web02"} {
		if d := got[name]; d.Status != "done" || d.Import == nil || d.Import.Status != "finished" || d.Import.ImageID == "" {
			t.Errorf("%s: %+v", name, d)
		}
	}
	if d := got["bad"]; d.Status != "failed" || !strings.Contains(d.Error, "no virtio driver") {
		t.Errorf("bad: %+v", d)
	}
	if d := got["noimport"]; d.Status != "done" || d.Import != nil {
		t.Errorf("noimport: %+v", d)
	}
	if n := len(e.api.Imports()); n != 3 {
		t.Errorf("%d imports, want 3", n)
	}
	together := false
	for _, q := range e.api.Requests() {
		if q.Op == "DescribeImageTasks" && strings.Contains(q.RawQuery, "taskIds.3=") {
			together = true
		}
	}
	if !together {
		t.Error("no poll asked for the three tasks together")
	}
}

// TestBatchRerunReimports: a batch rerun after a failed import imports
// the object again, with a new client token, instead of converting and
// uploading the disk again: not a part is sent; the run after skips it.
func TestBatchRerunReimports(t *testing.T) {
	testkit.Need(t, "qemu-img")
	e := newEnv(t, false, jdcloudtest.Options{Polls: 2})
	e.api.FailTasks(func(jdcloudtest.Import) string { return "the image has no virtio driver" })
	proxy := s3test.NewProxy(srv)
	defer proxy.Close()
	dir := t.TempDir()
	out := "s3://" + e.bucket + "/web01.qcow2"
	abs, _ := filepath.Abs(sample) // a manifest's relative paths are its folder's
	b, _ := json.Marshal(map[string]any{"source": abs, "output": out, "import": true, "image-name": "web01"})
	manifest := filepath.Join(dir, "disks.jsonl")
	os.WriteFile(manifest, append(b, '\n'), 0o644)
	run := func() (result, map[string]any) {
		cmd := exec.Command(bin, "batch", manifest, "--state-dir", filepath.Join(dir, "state"), "--wait", "--json", "--endpoint", proxy.URL, "--region", srv.Region,
			"--jdcloud-api-endpoint", e.api.URL, "--poll-interval", "5ms", "--progress", "never", "--check", "warn")
		cmd.Env = append(srv.Env(e.home), e.extra...)
		var o, eb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &eb
		cmd.Run()
		var disk map[string]any
		json.Unmarshal([]byte(strings.SplitN(o.String(), "\n", 2)[0]), &disk)
		return result{code: cmd.ProcessState.ExitCode(), stdout: o.String(), stderr: eb.String()}, disk
	}
	r, disk := run()
	if r.code != 1 || disk["status"] != "failed" || !strings.Contains(r.stdout, "no virtio driver") {
		t.Fatalf("first run: exit %d, want 1 and the disk failed at its import\n%s%s", r.code, r.stdout, r.stderr)
	}
	sent := proxy.Done("CreateMultipartUpload") + proxy.Done("UploadPart")
	e.api.FailTasks(nil)
	r, disk = run()
	if r.code != 0 || disk["status"] != "done" || !strings.Contains(r.stderr, "importing it again (a new client token), not converting it again") {
		t.Fatalf("rerun: exit %d, want 0 and the disk imported again\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := proxy.Done("CreateMultipartUpload") + proxy.Done("UploadPart"); n != sent {
		t.Errorf("the rerun uploaded again: %d uploads and parts, %d before", n, sent)
	}
	imps := e.api.Imports()
	if len(imps) != 2 || imps[1].Repeat || imps[0].ClientToken == imps[1].ClientToken || imps[1].Fields["imageName"] != "web01" {
		t.Fatalf("imports %+v: want a second, new one", imps)
	}
	if imp, _ := disk["import"].(map[string]any); imp == nil || imp["status"] != "finished" {
		t.Errorf("the rerun's import: %v", disk["import"])
	}
	// Done now: the next run skips it.
	if r, disk = run(); r.code != 0 || disk["status"] != "skipped" || len(e.api.Imports()) != 2 {
		t.Errorf("third run: exit %d, %v, %d imports\n%s", r.code, disk["status"], len(e.api.Imports()), r.stderr)
	}
}
