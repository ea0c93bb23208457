package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/check"
	"vmimport/internal/testkit"
)

const testRootUUID = "6f1ed6a1-0b32-4e4b-8f43-1d2b51e3a1c0"

func checkDisk(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	return testkit.MakeRootDisk(t, dir, testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
		{SizeMiB: 40, Bootable: true, FS: "ext4", UUID: testRootUUID, Files: files}}})
}

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	ctx := context.Background()
	err := run(ctx, args, &out, &errb)
	if err != nil {
		errb.WriteString("convert: " + err.Error() + "\n")
	}
	return exitCode(ctx, err), out.String(), errb.String()
}

func TestCheckCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clean := testkit.LinuxRoot("ext4", testRootUUID)
	cases := []struct {
		name  string
		files map[string]string
		code  int
		rule  string
	}{
		{"pass", clean, 0, ""},
		{"errors", withFile(clean, "usr/bin/cloud-init", "x"), 3, check.RuleCloudInit},
		{"warnings", withFile(clean, "etc/selinux/config", "SELINUX=enforcing\n"), 4, check.RuleSELinux},
	}
	for _, c := range cases {
		d := filepath.Join(dir, c.name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		disk := checkDisk(t, d, c.files)
		code, out, errs := runCLI("check", disk)
		if code != c.code || !strings.Contains(out, c.rule) {
			t.Errorf("%s: exit %d, want %d\n%s%s", c.name, code, c.code, out, errs)
		}
		code, out, _ = runCLI("check", "--json", disk)
		var r check.Report
		if err := json.Unmarshal([]byte(out), &r); err != nil || code != c.code {
			t.Fatalf("%s: --json: exit %d, %v\n%s", c.name, code, err, out)
		}
		if c.rule != "" && !r.Has(c.rule) {
			t.Errorf("%s: JSON report lacks %s", c.name, c.rule)
		}
		if r.OS.Platform != "CentOS" || r.OS.Version != "7" || r.OS.Architecture != "x86_64" {
			t.Errorf("%s: OS %+v", c.name, r.OS)
		}
	}
	if code, _, _ := runCLI("check"); code != exitUsage {
		t.Errorf("check without image: exit %d", code)
	}
}

func withFile(m map[string]string, name, content string) map[string]string {
	c := make(map[string]string, len(m)+1)
	for k, v := range m {
		c[k] = v
	}
	c[name] = content
	return c
}

func TestConvertCheckModes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	disk := checkDisk(t, dir, withFile(testkit.LinuxRoot("ext4", testRootUUID), "etc/udev/rules.d/70-persistent-net.rules", "x\n"))
	out := filepath.Join(dir, "out.raw")

	// strict stops before anything is written.
	code, _, errs := runCLI(disk, "-O", "raw", "-o", out, "--check", "strict", "--progress", "never")
	if code != exitBadInput || !strings.Contains(errs, check.RulePersistentNet) {
		t.Fatalf("strict: exit %d\n%s", code, errs)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("strict wrote the output: %v", err)
	}
	// auto is warn for files.
	code, _, errs = runCLI(disk, "-O", "raw", "-o", out, "--progress", "never")
	if code != exitOK || !strings.Contains(errs, check.RulePersistentNet) {
		t.Fatalf("auto to a file: exit %d\n%s", code, errs)
	}
	// --json: the findings are in the summary, not on stderr.
	code, stdout, errs := runCLI(disk, "-O", "raw", "-o", out, "--json", "--progress", "never")
	var sum struct {
		Check *check.Report `json:"check"`
	}
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil || code != exitOK || sum.Check == nil || !sum.Check.Has(check.RulePersistentNet) || strings.Contains(errs, "check:") {
		t.Fatalf("--json: exit %d, %v\n%s\n%s", code, err, stdout, errs)
	}
	if code, _, _ := runCLI(disk, "-o", out, "--check", "maybe"); code != exitUsage {
		t.Errorf("--check maybe: exit %d", code)
	}
}

func TestConvertShrink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	disk := checkDisk(t, dir, testkit.LinuxRoot("ext4", testRootUUID))
	if err := os.Truncate(disk, 600*check.GiB); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.raw")
	// Without --shrink, 600 GiB is too large.
	if code, _, errs := runCLI(disk, "-o", out, "--system-disk-size-gb", "40", "--progress", "never"); code != exitBadInput {
		t.Fatalf("no --shrink: exit %d\n%s", code, errs)
	}
	code, _, errs := runCLI(disk, "-o", out, "--system-disk-size-gb", "40", "--shrink", "--check", "strict", "--progress", "never")
	if code != exitOK {
		t.Fatalf("--shrink: exit %d\n%s", code, errs)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Size() != 40*check.GiB {
		t.Fatalf("output: %v %v", fi, err)
	}
	if code, out, _ := runCLI("check", "--system-disk-size-gb", "40", "--shrink", disk); code != exitOK {
		t.Errorf("check --shrink: exit %d\n%s", code, out)
	}
	os.Remove(out)
	// Data beyond the requested size: the first offset is named.
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{1}, 100*check.GiB+12345); err != nil {
		t.Fatal(err)
	}
	f.Close()
	code, _, errs = runCLI(disk, "-o", out, "--system-disk-size-gb", "40", "--shrink", "--progress", "never")
	if code != exitBadInput || !strings.Contains(errs, "offset 107374194745") {
		t.Fatalf("--shrink with data beyond: exit %d\n%s", code, errs)
	}
	code, outText, _ := runCLI("check", "--system-disk-size-gb", "40", "--shrink", disk)
	if code != exitCheckErrors || !strings.Contains(outText, check.RuleDataBeyond) || !strings.Contains(outText, "offset 107374194745") {
		t.Errorf("check --shrink with data beyond: exit %d\n%s", code, outText)
	}
}
