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
	if h, p, err := net.SplitHostPort(auth); err == nil {
		if h == "" || p == "" {
			return Location{}, fmt.Errorf("%w: %s: host %q", ErrURL, Redact(s), auth)
		}
	} else if strings.ContainsAny(auth, "?#[]") && !strings.HasPrefix(auth, "[") {
		return Location{}, fmt.Errorf("%w: %s: host %q", ErrURL, Redact(s), auth)
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
