// Package windowstest runs the convert binary on Windows system disks
// built at test time (testkit.MakeWindowsDisk: mkntfs, ntfscp and hives
// from hivexregedit, 2008 R2, 2012 R2 and 2016 layouts): the verdicts of
// convert check (rule ids, severities, evidence, exit codes), the
// findings in a conversion's summary and --json, per disk in a batch, and
// the ImportImage body of an upload (to versitygw).
package windowstest

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/batch"
	"vmimport/check"
	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
)

var (
	srv *s3test.Server
	bin string
)

func TestMain(m *testing.M) { os.Exit(s3test.MainWithConvert(m, &srv, &bin)) }

type result struct {
	code           int
	stdout, stderr string
}

func convert(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	if srv != nil {
		cmd.Env = srv.Env(t.TempDir())
	} else {
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// finding returns the first finding of a rule.
func finding(r *check.Report, rule string) *check.Finding {
	for i := range r.Findings {
		if r.Findings[i].Rule == rule {
			return &r.Findings[i]
		}
	}
	return nil
}

// partC is C:'s partition number in each layout.
var partC = map[string]int{"2008r2": 2, "2012r2": 2, "2016": 1}

var osVersion = map[string]string{"2008r2": "2008 R2", "2012r2": "2012 R2", "2016": "2016"}

// TestCheckVerdicts: for each layout, a clean guest passes (exit 0), one
// without the cloud's agent warns (exit 4), one whose viostor loads on
// demand and whose NIC has a static address fails (exit 3), with the
// registry evidence in the JSON report and in the text.
func TestCheckVerdicts(t *testing.T) {
	t.Parallel()
	for _, v := range testkit.WindowsVersions {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			mk := func(name string, g testkit.WindowsGuest) string {
				d := filepath.Join(dir, name)
				os.Mkdir(d, 0o755)
				g.Version = v
				return testkit.MakeWindowsDisk(t, d, g)
			}
			clean := mk("clean", testkit.WindowsGuest{})
			warn := mk("warn", testkit.WindowsGuest{System: "[-\\ControlSet001\\Services\\JCSAgentCore]\n\n"})
			bad := mk("bad", testkit.WindowsGuest{System: "[\\ControlSet001\\Services\\viostor]\n\"Start\"=dword:00000003\n\n" +
				"[\\ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{6a2b1c3d-0000-4e5f-8a9b-0c1d2e3f4a5b}]\n\"EnableDHCP\"=dword:00000000\n\"IPAddress\"=" + testkit.HexReg(7, "10.0.0.7") + "\n\n"})
			if v == "2012r2" {
				// The same disk in a container.
				bad = testkit.Convert(t, bad, filepath.Join(dir, "bad.vhd"), "vpc")
			}
			for _, c := range []struct {
				disk  string
				code  int
				rules []string
			}{{clean, 0, nil}, {warn, 4, []string{check.RuleWinAgent}}, {bad, 3, []string{check.RuleWinDHCP, check.RuleWinVirtio}}} {
				r := convert(t, "check", "--json", c.disk)
				var rep check.Report
				if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != c.code {
					t.Fatalf("%s: exit %d (want %d), %v\n%s%s", c.disk, r.code, c.code, err, r.stdout, r.stderr)
				}
				if got := strings.Join(rep.Rules(check.Warning), " "); got != strings.Join(c.rules, " ") {
					t.Errorf("%s: rules %q, want %q", c.disk, got, c.rules)
				}
				want := check.OS{OSType: "windows", Platform: "Windows Server", Version: osVersion[v], Architecture: "x86_64", RootPartition: partC[v]}
				if rep.OS.OSType != want.OSType || rep.OS.Platform != want.Platform || rep.OS.Version != want.Version || rep.OS.Architecture != want.Architecture || rep.OS.RootPartition != want.RootPartition {
					t.Errorf("%s: OS %+v", c.disk, rep.OS)
				}
			}
			r := convert(t, "check", "--json", bad)
			var rep check.Report
			json.Unmarshal([]byte(r.stdout), &rep)
			f := finding(&rep, check.RuleWinVirtio)
			if f == nil || f.Severity != check.Error || f.Partition != partC[v] || f.Path != "/Windows/System32/config/SYSTEM" ||
				f.Key != `HKLM\SYSTEM\ControlSet001\Services\viostor` || f.Value != "Start=3" || !strings.Contains(f.Message, "0x7B") {
				t.Errorf("virtio finding %+v", f)
			}
			f = finding(&rep, check.RuleWinDHCP)
			if f == nil || f.Severity != check.Error || !strings.Contains(f.Value, "10.0.0.7") || !strings.HasSuffix(f.Key, `{6a2b1c3d-0000-4e5f-8a9b-0c1d2e3f4a5b}`) {
				t.Errorf("dhcp finding %+v", f)
			}
			// The text says the same, evidence in brackets.
			r = convert(t, "check", bad)
			if r.code != 3 || !strings.Contains(r.stdout, `error   windows.virtio: `) ||
				!strings.Contains(r.stdout, `/Windows/System32/config/SYSTEM, HKLM\SYSTEM\ControlSet001\Services\viostor, Start=3]`) ||
				!strings.Contains(r.stdout, `errors: 2 error(s), 0 warning(s)`) || !strings.Contains(r.stdout, `(platform "Windows Server", x86_64)`) {
				t.Errorf("text: exit %d\n%s", r.code, r.stdout)
			}
		})
	}
}

// TestConvertCarriesFindings: a conversion of a Windows disk prints the
// findings and the summary line, and its --json carries them; convert
// batch reports them per disk.
func TestConvertCarriesFindings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := testkit.MakeWindowsDisk(t, filepath.Join(dir, "b"), testkit.WindowsGuest{Version: "2016",
		Files: map[string][]byte{"/hiberfil.sys": []byte("HIBR")}})
	good := testkit.MakeWindowsDisk(t, filepath.Join(dir, "g"), testkit.WindowsGuest{Version: "2008r2"})
	out := filepath.Join(dir, "out.qcow2")
	r := convert(t, bad, "-O", "qcow2", "-o", out, "--progress", "never")
	if r.code != 0 || !strings.Contains(r.stderr, "convert: check: error   windows.hibernated:") ||
		!strings.Contains(r.stderr, `convert: check: errors: 1 error(s), 0 warning(s), 3 info; windows Windows Server 2016 Standard (platform "Windows Server", x86_64)`) {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	r = convert(t, bad, "-O", "qcow2", "-o", out, "--json", "--progress", "never")
	var sum struct {
		Check *check.Report `json:"check"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || sum.Check == nil || finding(sum.Check, check.RuleWinHibernated) == nil || sum.Check.OS.Version != "2016" {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	// --check strict stops before writing.
	os.Remove(out)
	if r := convert(t, bad, "-O", "qcow2", "-o", out, "--check", "strict", "--progress", "never"); r.code != 3 || !strings.Contains(r.stderr, check.RuleWinHibernated) {
		t.Errorf("strict: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("strict wrote the output: %v", err)
	}

	manifest := filepath.Join(dir, "disks.csv")
	os.WriteFile(manifest, []byte("source,output\n"+bad+","+filepath.Join(dir, "bad.raw")+"\n"+good+","+filepath.Join(dir, "good.raw")+"\n"), 0o644)
	r = convert(t, "batch", manifest, "--json", "--no-state")
	outs, _, err := batch.ReadJSON(strings.NewReader(r.stdout))
	if err != nil || r.code != 0 {
		t.Fatalf("batch: exit %d, %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	by := batch.ByOutput(outs)
	if o := by[filepath.Join(dir, "bad.raw")]; o.Check == nil || finding(o.Check, check.RuleWinHibernated) == nil {
		t.Errorf("batch, hibernated disk: %+v", o)
	}
	if o := by[filepath.Join(dir, "good.raw")]; o.Check == nil || o.Check.Status != "pass" || o.Check.OS.Version != "2008 R2" {
		t.Errorf("batch, clean disk: %+v", o.Check)
	}
	r = convert(t, "batch", manifest, "--no-state", "--progress", "never")
	if !strings.Contains(r.stderr, "bad.raw: check: errors: 1 error(s)") && !strings.Contains(r.stderr, "check: errors: 1 error(s)") {
		t.Errorf("batch text: exit %d\n%s", r.code, r.stderr)
	}
}

// TestUploadImportBody: an upload of a Windows disk gets the ImportImage
// body from the check: osType windows, platform "Windows Server", the
// osVersion and the architecture.
func TestUploadImportBody(t *testing.T) {
	s3test.Need(t, srv)
	t.Parallel()
	bucket := srv.Bucket(t)
	for _, v := range testkit.WindowsVersions {
		disk := testkit.MakeWindowsDisk(t, t.TempDir(), testkit.WindowsGuest{Version: v})
		r := convert(t, disk, "-o", "s3://"+bucket+"/"+v+".qcow2", "--endpoint", srv.Endpoint, "--json", "--progress", "never")
		var sum struct {
			Target struct {
				ImportImage struct {
					Architecture, OSType, Platform, OSVersion string
				} `json:"import_image"`
			} `json:"target"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || r.code != 0 {
			t.Fatalf("%s: exit %d, %v\n%s\n%s", v, r.code, err, r.stdout, r.stderr)
		}
		b := sum.Target.ImportImage
		if b.Architecture != "x86_64" || b.OSType != "windows" || b.Platform != "Windows Server" || b.OSVersion != osVersion[v] {
			t.Errorf("%s: import body %+v", v, b)
		}
	}
}
