package upload

import (
	"errors"
	"strings"
	"testing"
)

func TestImportMetadataRoundTrip(t *testing.T) {
	m := ImportMeta{Architecture: "x86_64", OSType: "windows", Platform: "Windows Server", OSVersion: "2019",
		DiskFormat: "qcow2", SystemDiskSizeGB: 60, ImageName: "镜像 web01 100%", Description: "line\none", ForceImport: true}
	md := m.ObjectMetadata(53687091200)
	for k, v := range md {
		if !strings.HasPrefix(k, "convert-") || k != strings.ToLower(k) {
			t.Errorf("key %q", k)
		}
		for _, c := range []byte(v) {
			if c < 0x20 || c > 0x7e {
				t.Errorf("%s=%q is not printable ASCII", k, v)
			}
		}
	}
	// Stores hand keys back in any case.
	up := map[string]string{}
	for k, v := range md {
		up[strings.ToUpper(k[:1])+k[1:]] = v
	}
	got, virtual, err := ImportMetaFromObject(up)
	if err != nil || got != m || virtual != 53687091200 {
		t.Errorf("got %+v, %d, %v; want %+v", got, virtual, err, m)
	}
	if _, _, err := ImportMetaFromObject(map[string]string{"other": "x"}); !errors.Is(err, ErrNoImportMeta) {
		t.Errorf("no metadata: %v", err)
	}
	if _, _, err := ImportMetaFromObject(map[string]string{MetaVersion: "1", MetaSystemDiskSizeGB: "forty"}); err == nil {
		t.Error("a bad size was accepted")
	}
}

func TestClientToken(t *testing.T) {
	a := ClientToken("b", "k", `"ABC-2"`)
	if a != ClientToken("b", "k", "abc-2") || len(a) != 32 {
		t.Errorf("token %q depends on the ETag's quotes or case", a)
	}
	for _, other := range []string{ClientToken("b2", "k", "abc-2"), ClientToken("b", "k2", "abc-2"), ClientToken("b", "k", "abd-2")} {
		if other == a {
			t.Errorf("tokens collide")
		}
	}
}

func FuzzImportMetaFromObject(f *testing.F) {
	f.Add("1", "qcow2", "40", "Windows%20Server", "123")
	f.Add("", "", "", "", "")
	f.Add("1", "%zz", "-5", "\xff", "99999999999999999999")
	f.Fuzz(func(t *testing.T, ver, format, size, platform, virtual string) {
		md := map[string]string{MetaVersion: ver, MetaDiskFormat: format, MetaSystemDiskSizeGB: size, MetaPlatform: platform, MetaVirtualSize: virtual}
		m, v, err := ImportMetaFromObject(md)
		if err == nil && (m.SystemDiskSizeGB < 0 || v < 0) {
			t.Fatalf("negative sizes %+v %d", m, v)
		}
		if err == nil {
			// What is read back stores and reads back the same.
			m2, v2, err := ImportMetaFromObject(m.ObjectMetadata(v))
			if err != nil || m2 != m || v2 != v {
				t.Fatalf("round trip %+v %d -> %+v %d %v", m, v, m2, v2, err)
			}
		}
	})
}
