package vsphere

import (
	"errors"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, c := range []struct {
		in, user, host, dc, path, canon string
	}{
		{"vsphere://vc01/DC1/vm/prod/web01", "", "vc01", "DC1", "prod/web01", "vsphere://vc01/DC1/vm/prod/web01"},
		{"vsphere://migrator%40vsphere.local@VC01:8443/F0/DC1/vm/web%2F01", "migrator@vsphere.local", "vc01:8443", "F0/DC1", "web%2f01", "vsphere://vc01:8443/F0/DC1/vm/web%2F01"},
		{"vsphere://vc01/DC1/vm/My VM", "", "vc01", "DC1", "My VM", "vsphere://vc01/DC1/vm/My%20VM"},
		{"vsphere://vc01/DC1", "", "vc01", "DC1", "", "vsphere://vc01/DC1/vm"},
		{"VSPHERE://[::1]:443/DC1/vm/", "", "[::1]:443", "DC1", "", "vsphere://[::1]:443/DC1/vm"},
	} {
		l, err := ParseURL(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if l.User != c.user || l.Host != c.host || l.Datacenter != c.dc || l.Path != c.path || l.String() != c.canon {
			t.Errorf("%s: %+v, %s", c.in, l, l.String())
		}
	}
	for _, in := range []string{
		"https://vc01/DC1", "vsphere://", "vsphere:///DC1/vm/x", "vsphere://vc01", "vsphere://u:pw@vc01/DC1/vm/x",
		"vsphere://vc01/DC1/vm/../x", "vsphere://vc01/DC1/vm/x?y", "vsphere://vc01/DC1/vm/%zz",
		// Hosts another URL reader could take for another host.
		"vsphere://vc01#x:443/DC1/vm/x", "vsphere://vc01\\evil/DC1/vm/x", "vsphere://vc01:0/DC1/vm/x",
		"vsphere://vc01:99999/DC1/vm/x", "vsphere://vc01:+443/DC1/vm/x", "vsphere://[vc01]/DC1/vm/x", "vsphere://:443/DC1/vm/x",
	} {
		if _, err := ParseURL(in); !errors.Is(err, ErrURL) {
			t.Errorf("%s: %v", in, err)
		} else if strings.Contains(err.Error(), ":pw@") {
			t.Errorf("%s: the password shows: %v", in, err)
		}
	}
}

// TestWithin: a VM lies under a prefix of its vCenter (the same host and
// port, 443 by default), datacenter or folder, segment by segment; any
// other host, port or folder is outside, however it is spelt.
func TestWithin(t *testing.T) {
	const vm = "vsphere://migrator@VC01/DC1/vm/prod/web01"
	for _, c := range []struct {
		prefix string
		in     bool
	}{
		{"vsphere://vc01/", true},
		{"vsphere://vc01", true},
		{"vsphere://vc01:443/", true},
		{"vsphere://other@vc01/DC1", true},
		{"vsphere://vc01/DC1/vm/prod/", true},
		{"vsphere://vc01/DC1/vm/prod/web01", true},
		{"vsphere://vc01/DC1/vm/pro", false},
		{"vsphere://vc01/DC1/vm/prod/web0", false},
		{"vsphere://vc01/DC2/", false},
		{"vsphere://vc01:8443/", false},
		{"vsphere://vc02/", false},
		{"vsphere://vc01.evil/", false},
		{"https://vc01/", false},
		{"vsphere://vc01#@x/", false},
	} {
		if got := Within(vm, c.prefix); got != c.in {
			t.Errorf("Within(%s, %s) = %v", vm, c.prefix, got)
		}
	}
	if Within("vsphere://vc01#x:443/DC1/vm/a", "vsphere://vc01/") || Within("vsphere://vc01:443/DC1/vm/../a", "vsphere://vc01/") {
		t.Error("an unusable URL is within a prefix")
	}
}

// FuzzParseURL: any text parses or is refused with ErrURL, a password
// never shows in the error, a parsed URL parses again to the same and
// lies within its own URL and its vCenter, and no other.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"vsphere://vc01/DC1/vm/prod/web01", "vsphere://u@h:1/F/DC/vm/a%2Fb/c", "vsphere://u:secret@h/DC/vm/x", "vsphere://h/DC", "vsphere://[::1]/D/vm/x y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseURL(s)
		if err != nil {
			if !errors.Is(err, ErrURL) {
				t.Fatalf("%q: %v does not wrap ErrURL", s, err)
			}
			if i := strings.Index(s, "://"); i >= 0 {
				auth, _, _ := strings.Cut(s[i+3:], "/")
				if at := strings.LastIndexByte(auth, '@'); at >= 0 {
					if _, pw, ok := strings.Cut(auth[:at], ":"); ok && len(pw) > 3 && strings.Contains(err.Error(), pw) && !strings.Contains(Redact(s), pw) {
						t.Fatalf("%q: the password shows: %v", s, err)
					}
				}
			}
			return
		}
		again, err := ParseURL(l.String())
		if err != nil || again.Host != l.Host || again.Datacenter != l.Datacenter || again.Path != l.Path {
			t.Fatalf("%q -> %s -> %+v, %v", s, l.String(), again, err)
		}
		// Within its own URL and its vCenter, and no other vCenter.
		if !Within(s, l.String()) || !Within(s, "vsphere://"+l.Host+"/") || Within(s, "vsphere://other.example/") {
			t.Fatalf("%q: Within its own prefixes wrong", s)
		}
	})
}
