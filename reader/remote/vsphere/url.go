// Package vsphere reads the disks of a VMware vSphere virtual machine where
// they are, on their datastore: it logs in to vCenter (or an ESXi host)
// with VMware's own SDK (govmomi), finds the VM by its inventory path,
// lists its virtual disks, tells what the inventory says before a byte is
// read (firmware, disks, snapshots, datastores: Findings), takes and
// removes a snapshot when the VM runs (Config.Snapshot), and maps each
// disk's files to the datastore's HTTPS file access
// (/folder/PATH?dcPath=...&dsName=..., authenticated by the session) for
// the ranged, version-pinned reader of package remote: the VMDK reader
// reads a descriptor, its flat or sparse extents and a delta chain from
// there as it reads any https:// source. Nothing is exported, copied or
// staged.
//
// The password comes from the caller (a file) or VSPHERE_PASSWORD, never
// from the URL; the session cookie goes to the vCenter's origin only.
package vsphere

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Scheme is the scheme of vSphere sources.
const Scheme = "vsphere"

// IsURL reports whether s names a vSphere VM or folder: vsphere://...
func IsURL(s string) bool {
	return len(s) > len(Scheme)+3 && strings.EqualFold(s[:len(Scheme)+3], Scheme+"://")
}

// Location is a parsed vsphere:// URL:
// vsphere://[USER@]HOST[:PORT]/DATACENTER/vm/FOLDER/.../NAME.
type Location struct {
	// User is the user the URL names; empty: VSPHERE_USER.
	User string
	// Host is HOST[:PORT] of the vCenter or ESXi host.
	Host string
	// Datacenter is the datacenter's inventory path (a datacenter may sit
	// in folders: "F0/DC0").
	Datacenter string
	// Path is what follows the datacenter's vm folder: FOLDER/.../NAME,
	// empty for the vm folder itself.
	Path string
}

// ErrURL is wrapped by every error about a vsphere:// URL.
var ErrURL = errors.New("not a usable vsphere:// URL")

// ParseURL reads a vsphere:// URL. A password in it is refused: it would
// show in ps and in the shell's history; give it in VSPHERE_PASSWORD or a
// file. Path segments may be %-escaped (a VM name with a / is %2F).
func ParseURL(s string) (Location, error) {
	if !IsURL(s) {
		return Location{}, fmt.Errorf("%w: %q does not start with vsphere://", ErrURL, Redact(s))
	}
	rest := s[len(Scheme)+3:]
	auth, rest, _ := strings.Cut(rest, "/")
	var loc Location
	if at := strings.LastIndexByte(auth, '@'); at >= 0 {
		user := auth[:at]
		auth = auth[at+1:]
		if strings.Contains(user, ":") {
			return Location{}, fmt.Errorf("%w: %s carries a password: give it in VSPHERE_PASSWORD or --source-password-file, never on the command line", ErrURL, Redact(s))
		}
		u, err := url.PathUnescape(user)
		if err != nil || u == "" {
			return Location{}, fmt.Errorf("%w: %s: the user name is not usable", ErrURL, Redact(s))
		}
		loc.User = u
	}
	if auth == "" {
		return Location{}, fmt.Errorf("%w: %s names no host", ErrURL, Redact(s))
	}
	if !validHost(auth) {
		return Location{}, fmt.Errorf("%w: %s: host %q: give a host name or address, and a port if not 443", ErrURL, Redact(s), auth)
	}
	loc.Host = strings.ToLower(auth)
	if strings.ContainsAny(rest, "?#") {
		return Location{}, fmt.Errorf("%w: %s: a ? or # in the path: escape it as %%3F or %%23", ErrURL, Redact(s))
	}
	var segs []string
	for _, seg := range strings.Split(rest, "/") {
		if seg == "" {
			continue
		}
		u, err := url.PathUnescape(seg)
		if err != nil {
			return Location{}, fmt.Errorf("%w: %s: segment %q: %v", ErrURL, Redact(s), seg, err)
		}
		if u == "." || u == ".." {
			return Location{}, fmt.Errorf("%w: %s: segment %q", ErrURL, Redact(s), u)
		}
		segs = append(segs, escapeSlash(u))
	}
	if len(segs) == 0 {
		return Location{}, fmt.Errorf("%w: %s names no datacenter: vsphere://HOST/DATACENTER/vm/FOLDER/VM", ErrURL, Redact(s))
	}
	vm := -1
	for i := 1; i < len(segs); i++ {
		if segs[i] == "vm" {
			vm = i
			break
		}
	}
	if vm < 0 {
		// The datacenter alone (vsphere ls): its vm folder.
		loc.Datacenter = strings.Join(segs, "/")
		return loc, nil
	}
	loc.Datacenter = strings.Join(segs[:vm], "/")
	loc.Path = strings.Join(segs[vm+1:], "/")
	return loc, nil
}

// validHost reports whether auth is HOST[:PORT] as the login may use it,
// and nothing another reader of URLs could take for something else: a
// name or IPv4 address of letters, digits, dots, hyphens and underscores,
// or a bracketed IPv6 address; a port of digits, 1..65535. (A # or ? in
// it would end the host early for net/url, which the API client uses: the
// worker's allow-lists and the login must see one host.)
func validHost(auth string) bool {
	host := auth
	if h, p, err := net.SplitHostPort(auth); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || strings.Trim(p, "0123456789") != "" {
			return false
		}
		if strings.Contains(h, ":") {
			return net.ParseIP(h) != nil // [v6]:port
		}
		host = h
	} else if len(auth) > 2 && auth[0] == '[' && auth[len(auth)-1] == ']' {
		return net.ParseIP(auth[1:len(auth)-1]) != nil
	}
	if host == "" {
		return false
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Within reports whether the VM (or folder) the vsphere:// URL u names
// lies under prefix: a vsphere:// URL of a vCenter (vsphere://HOST/), a
// datacenter (vsphere://HOST/DC) or a folder of its VMs
// (vsphere://HOST/DC/vm/FOLDER/): the same host and port (443 when none is
// given) and an inventory path at or under the prefix's, segment by
// segment. Both are read as ParseURL reads them, the login's reading; a
// user in either is not compared. A queue worker's --allow-source.
func Within(u, prefix string) bool {
	l, err := ParseURL(u)
	if err != nil || !IsURL(prefix) {
		return false
	}
	auth, rest, _ := strings.Cut(prefix[len(Scheme)+3:], "/")
	if at := strings.LastIndexByte(auth, '@'); at >= 0 {
		auth = auth[at+1:]
	}
	if !validHost(auth) || HostPort(l.Host) != HostPort(auth) {
		return false
	}
	if strings.Trim(rest, "/") == "" {
		return true // the vCenter's every VM
	}
	p, err := ParseURL(prefix)
	if err != nil {
		return false
	}
	a, b := l.InventoryPath(), p.InventoryPath()
	return a == b || strings.HasPrefix(a, b+"/")
}

// HostPort is HOST:PORT of a vsphere:// URL's host, lower-cased, with the
// port 443 when none is given.
func HostPort(host string) string {
	host = strings.ToLower(host)
	if h, p, err := net.SplitHostPort(host); err == nil {
		return net.JoinHostPort(h, p)
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), "443")
}

// escapeSlash escapes a / inside one name as the inventory does (%2f).
func escapeSlash(s string) string { return strings.ReplaceAll(s, "/", "%2f") }

// InventoryPath is the VM's (or folder's) path in the inventory:
// /DATACENTER/vm/FOLDER/.../NAME.
func (l Location) InventoryPath() string {
	p := "/" + l.Datacenter + "/vm"
	if l.Path != "" {
		p += "/" + l.Path
	}
	return p
}

// Name is the last segment of the path: the VM's name.
func (l Location) Name() string {
	p := l.Path
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		p = p[i+1:]
	}
	return strings.ReplaceAll(p, "%2f", "/")
}

// String is the URL again, canonical, without the user.
func (l Location) String() string {
	var segs []string
	add := func(p string) {
		for _, seg := range strings.Split(p, "/") {
			if seg != "" {
				segs = append(segs, escapeSegment(seg))
			}
		}
	}
	add(l.Datacenter)
	segs = append(segs, "vm")
	add(l.Path)
	return Scheme + "://" + l.Host + "/" + strings.Join(segs, "/")
}

// escapeSegment escapes what a path segment cannot hold as it is.
func escapeSegment(s string) string {
	s = strings.ReplaceAll(s, "%2f", "/")
	return url.PathEscape(s)
}

// Redact returns a vsphere:// URL as it may be shown: a password in its
// user info replaced by REDACTED.
func Redact(s string) string {
	if !IsURL(s) {
		return s
	}
	rest := s[len(Scheme)+3:]
	auth, path, hasPath := strings.Cut(rest, "/")
	if at := strings.LastIndexByte(auth, '@'); at >= 0 {
		if user, _, ok := strings.Cut(auth[:at], ":"); ok {
			auth = user + ":REDACTED" + auth[at:]
		}
	}
	out := s[:len(Scheme)+3] + auth
	if hasPath {
		out += "/" + path
	}
	return out
}
