// Package ident tells when two names are one place: identities instead of
// spellings. Two paths are one file when their folders resolve to the same
// real folder (symbolic links followed) and their names are the same; two
// S3 locations are one object when their normalised endpoints, buckets and
// keys are. Where a spelling leaves a doubt (localhost or 127.0.0.1, http
// or https on their default ports), the identities are the same: a caller
// refuses rather than risks overwriting what it reads.
package ident

import (
	"errors"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
)

// ID is the identity of a file or an object, as a string that compares
// with ==: "file:/real/folder/name" or "s3:HOST[:PORT][/PATH] BUCKET/KEY".
type ID string

// File is the identity of a local path: the real path of its folder plus
// its name. A folder that does not exist yet is resolved as far as it
// exists. The name itself is not followed: a file written by rename
// replaces a link of that name, never its target.
func File(p string) (ID, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	dir, name := filepath.Split(abs)
	if name == "" { // the root
		return ID("file:" + fold(abs)), nil
	}
	real, err := resolve(filepath.Clean(dir))
	if err != nil {
		return "", err
	}
	return ID("file:" + fold(filepath.Join(real, name))), nil
}

// Target is the identity of the file a path reads: with every link
// followed, the name's too. For a path that does not exist it is File.
func Target(p string) (ID, error) {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return File(p)
	}
	abs, err := filepath.Abs(real)
	if err != nil {
		return "", err
	}
	return ID("file:" + fold(abs)), nil
}

// resolve follows the links of dir, as far as it exists: the part that
// does not exist is appended as given.
func resolve(dir string) (string, error) {
	var rest []string
	for {
		real, err := filepath.EvalSymlinks(dir)
		if err == nil {
			return filepath.Join(append([]string{real}, rest...)...), nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return filepath.Join(append([]string{dir}, rest...)...), nil
		}
		rest = append([]string{filepath.Base(dir)}, rest...)
		dir = parent
	}
}

// fold is p as the file system compares names: macOS and Windows ignore
// case by default.
func fold(p string) string {
	if runtime.GOOS == "darwin" || runtime.GOOS == "windows" {
		return strings.ToLower(p)
	}
	return p
}

// Object is the identity of KEY in BUCKET at endpoint, the store's base
// URL ("" for the SDK's default, AWS's own endpoint of the region).
func Object(endpoint, bucket, key string) ID {
	return ID("s3:" + Endpoint(endpoint, bucket) + " " + bucket + "/" + key)
}

// Endpoint normalises a store's base URL: the scheme dropped (a store
// serves both on their default ports), the host lower-cased without a
// trailing dot, the default ports 80 and 443 dropped, every name and
// address of the loopback interface one ("loopback"), no trailing slash,
// and a virtual-hosted "BUCKET." before the host dropped (the same object
// path-style or virtual-hosted). "" stays "" (the SDK's default).
func Endpoint(endpoint, bucket string) string {
	if endpoint == "" {
		return ""
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		// Not a URL: compare it as written, but for case and slashes.
		return strings.TrimRight(strings.ToLower(endpoint), "/")
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	port := u.Port()
	if port == "80" || port == "443" {
		port = ""
	}
	if bucket != "" {
		host = strings.TrimPrefix(host, strings.ToLower(bucket)+".")
	}
	host = hostName(host)
	if port != "" {
		host = net.JoinHostPort(host, port)
	}
	p := strings.TrimRight(path.Clean("/"+u.EscapedPath()), "/")
	return host + p
}

// hostName is a host as identities compare it: an address in its
// canonical form; the loopback interface, by any of its names, as one.
func hostName(h string) string {
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return "loopback"
	}
	if ip := net.ParseIP(h); ip != nil {
		if ip.IsLoopback() || ip.IsUnspecified() {
			return "loopback"
		}
		return ip.String()
	}
	return h
}

// URLObjects are the objects an http(s) URL may be of a store whose
// endpoint is the URL's origin: path-style (/BUCKET/KEY) and
// virtual-hosted (BUCKET.HOST/KEY). A presigned URL of an object reads
// that object.
func URLObjects(raw string) []ID {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (!strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(u.Scheme, "https")) {
		return nil
	}
	p := strings.TrimPrefix(u.Path, "/")
	origin := u.Scheme + "://" + u.Host
	var ids []ID
	if bucket, key, ok := strings.Cut(p, "/"); ok && bucket != "" && key != "" {
		ids = append(ids, Object(origin, bucket, key))
	}
	if bucket, rest, ok := strings.Cut(u.Host, "."); ok && bucket != "" && p != "" {
		ids = append(ids, Object(u.Scheme+"://"+rest, bucket, p))
	}
	return ids
}
