package image

import (
	"errors"
	"strings"
	"testing"
)

func TestResolveNameURL(t *testing.T) {
	const img = "https://files.example/exports/web/disk.vmdk?X-Amz-Signature=REDACTED"
	allowShared := &Options{AllowPaths: []string{"https://files.example/exports/shared/"}}
	allowOther := &Options{AllowPaths: []string{"https://mirror.example/base"}}
	cases := []struct {
		image, name string
		opts        *Options
		want        string // "" for a refusal
	}{
		{img, "disk-flat.vmdk", nil, "https://files.example/exports/web/disk-flat.vmdk"},
		{img, "sub/disk-s001.vmdk", nil, "https://files.example/exports/web/sub/disk-s001.vmdk"},
		{img, "./disk-flat.vmdk", nil, "https://files.example/exports/web/disk-flat.vmdk"},
		{img, "a b#1?.vmdk", nil, "https://files.example/exports/web/a%20b%231%3F.vmdk"},
		{img, "../shared/base.vmdk", nil, ""},
		{img, "../shared/base.vmdk", allowShared, "https://files.example/exports/shared/base.vmdk"},
		{img, "/exports/web/disk-flat.vmdk", nil, "https://files.example/exports/web/disk-flat.vmdk"},
		{img, "/etc/passwd", nil, ""},
		{img, "sub/../../../etc/passwd", nil, ""},
		{img, "https://files.example/exports/web/x.vmdk", nil, "https://files.example/exports/web/x.vmdk"},
		{img, "HTTPS://FILES.EXAMPLE/exports/web/x.vmdk", nil, "https://files.example/exports/web/x.vmdk"},
		{img, "http://files.example/exports/web/x.vmdk", nil, ""}, // another scheme is another origin
		{img, "https://evil.example/exports/web/x.vmdk", nil, ""},
		{img, "https://mirror.example/base/x.vmdk", allowOther, "https://mirror.example/base/x.vmdk"},
		{img, "https://mirror.example/basement/x.vmdk", allowOther, ""},
		{img, "https://u:p@files.example/exports/web/x.vmdk", nil, ""},
		{img, "sub/", nil, ""},
		{img, "", nil, ""},
		{img, "a\x00b", nil, ""},
		{"s3://bucket/dir/disk.vmdk", "disk-flat.vmdk", nil, "s3://bucket/dir/disk-flat.vmdk"},
		{"s3://bucket/dir/disk.vmdk", "../other/disk-flat.vmdk", nil, ""},
		{"s3://bucket/dir/disk.vmdk", "s3://other/dir/disk-flat.vmdk", nil, ""},
		// A local image may name a URL only inside an allowed prefix.
		{"/srv/disk.qcow2", "https://files.example/exports/shared/base.qcow2", nil, ""},
		{"/srv/disk.qcow2", "https://files.example/exports/shared/base.qcow2", allowShared, "https://files.example/exports/shared/base.qcow2"},
	}
	for _, c := range cases {
		got, err := ResolveName(c.image, c.name, c.opts)
		if c.want == "" {
			if err == nil {
				t.Errorf("ResolveName(%q, %q) = %q, want a refusal", c.image, c.name, got)
			} else if !errors.Is(err, ErrNotAllowed) {
				t.Errorf("ResolveName(%q, %q): %v does not wrap ErrNotAllowed", c.image, c.name, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ResolveName(%q, %q) = %q, %v; want %q", c.image, c.name, got, err, c.want)
		}
	}
	_, err := ResolveName(img, "../../secret.vmdk", nil)
	if err == nil || !strings.Contains(err.Error(), "outside the image's folder https://files.example/exports/web/") || !strings.Contains(err.Error(), "--allow-path") {
		t.Errorf("escape error: %v", err)
	}
	_, err = ResolveName(img, "https://evil.example/x.vmdk", nil)
	if err == nil || !strings.Contains(err.Error(), "another host") {
		t.Errorf("other host error: %v", err)
	}
}

func TestRedact(t *testing.T) {
	cases := []struct{ in, want string }{
		{"https://u:secret@host/a.vmdk", "https://u:REDACTED@host/a.vmdk"},
		{"https://u@host/a.vmdk", "https://u@host/a.vmdk"},
		{"https://b.s3.example/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc&X-Amz-Security-Token=t",
			"https://b.s3.example/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Security-Token=REDACTED"},
		{"https://acct.blob.example/c/d.vhd?sv=2020&sig=xyz", "https://acct.blob.example/c/d.vhd?sv=2020&sig=REDACTED"},
		// Every value but the known harmless ones: pwd, t, code, id, ...
		{"https://host/dl?id=5&pwd=hunter2&t=abc&code=x1&versionId=7", "https://host/dl?id=REDACTED&pwd=REDACTED&t=REDACTED&code=REDACTED&versionId=7"},
		{"https://host/dl?s3cr3tT0ken&a=1#frag", "https://host/dl?REDACTED&a=REDACTED#REDACTED"},
		{"https://host/dl?%zz=1", "https://host/dl?REDACTED"},
		{"/local/path", "/local/path"},
		{"s3://bucket/key", "s3://bucket/key"},
	}
	for _, c := range cases {
		if got := Redact(c.in); got != c.want {
			t.Errorf("Redact(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestIsURL(t *testing.T) {
	for s, want := range map[string]bool{
		"https://h/x": true, "HTTP://h/x": true, "s3://b/k": true, "ftp://h/x": false,
		"./https://h/x": false, "disk.vmdk": false, "://x": false,
	} {
		if IsURL(s) != want {
			t.Errorf("IsURL(%q) = %v", s, !want)
		}
	}
}

func TestResolveNameS3Literal(t *testing.T) {
	got, err := ResolveName("s3://bucket/dir/100%.vmdk", "a b%20c-flat.vmdk", nil)
	if err != nil || got != "s3://bucket/dir/a b%20c-flat.vmdk" {
		t.Errorf("ResolveName = %q, %v: s3 keys are literal", got, err)
	}
}
