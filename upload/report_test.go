package upload

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The presigned import link is signed for the intranet host itself, and a
// session token earns a warning. Presigning is offline: no request is made.
func TestReportJDCloud(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secretsecretsecret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, session := range []bool{false, true} {
		if session {
			t.Setenv("AWS_SESSION_TOKEN", "token")
		}
		c, err := NewClient(context.Background(), Config{JDCloudRegion: "cn-north-1"})
		if err != nil {
			t.Fatal(err)
		}
		if c.Endpoint.String() != "https://s3.cn-north-1.jdcloud-oss.com" || c.Region != "cn-north-1" {
			t.Fatalf("endpoint %s region %s", c.Endpoint, c.Region)
		}
		tg := &Target{c: c, bucket: "images", key: "vm/disk.qcow2", uploadID: "u1", g: grid{size: 8 << 20, pos: 1 << 30},
			o:     Options{PresignTTL: 48 * time.Hour, Import: ImportMeta{DiskFormat: "qcow2", SystemDiskSizeGB: 40}},
			parts: newPartLog()}
		r := tg.makeReport(context.Background(), "x", false)
		u, err := url.Parse(r.PresignedURL)
		if err != nil {
			t.Fatal(err)
		}
		if u.Host != "images.s3-internal.cn-north-1.jdcloud-oss.com" || u.Query().Get("X-Amz-Expires") != "172800" {
			t.Errorf("presigned URL %s", r.PresignedURL)
		}
		if r.URL != "https://images.s3.cn-north-1.jdcloud-oss.com/vm/disk.qcow2" || r.IntranetURL != "https://images.s3-internal.cn-north-1.jdcloud-oss.com/vm/disk.qcow2" {
			t.Errorf("URLs %s %s", r.URL, r.IntranetURL)
		}
		if !strings.Contains(r.ImportCommand, "--region-id cn-north-1") || !strings.Contains(r.ImportCommand, "--disk-format qcow2") ||
			!strings.Contains(r.ImportCommand, "--image-name disk") || r.ImportImage.Platform != "Other Linux" {
			t.Errorf("import command %s", r.ImportCommand)
		}
		if strings.Contains(r.PresignedURL, "secretsecret") || strings.Contains(r.ImportCommand, "secretsecret") {
			t.Error("the secret leaked")
		}
		if warned := len(r.Warnings) > 0 && strings.Contains(r.Warnings[0], "temporary credentials"); warned != session {
			t.Errorf("session=%v: warnings %v", session, r.Warnings)
		}
	}
}
