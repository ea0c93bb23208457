package image

import (
	"fmt"
	"net/url"
	"path"
	"strings"
)

// ResolveName turns a file name recorded inside an image (a backing file,
// an extent, a parent) into a name that may be opened: a path, or a URL.
//
// For an image on the local file system it is ResolvePath, except that a
// name that is itself a URL is taken only inside a URL prefix of
// opts.AllowPaths. For a remote image (imagePath is a URL) the name is a
// reference relative to the image's URL, never a local path: it resolves
// on the same host (or bucket), and the result must lie in the image's own
// folder or under a URL prefix of opts.AllowPaths. A remote image can
// never make the reader open a local file.
func ResolveName(imagePath, name string, opts *Options) (string, error) {
	if !IsURL(imagePath) {
		if IsURL(name) {
			return resolveURL(nil, "", name, opts, imagePath)
		}
		return ResolvePath(imagePath, name, opts)
	}
	base, err := parseURL(imagePath)
	if err != nil {
		return "", fmt.Errorf("%s: %w", imagePath, err)
	}
	return resolveURL(base, folderOf(base.Path), name, opts, imagePath)
}

// parseURL parses an http(s) URL, or an s3://bucket/key address whose key
// is taken literally (as aws s3 and -o s3:// take it: no %-escapes).
func parseURL(s string) (*url.URL, error) {
	if rest, ok := cutPrefixFold(s, "s3://"); ok {
		bucket, key, _ := strings.Cut(rest, "/")
		if bucket == "" {
			return nil, fmt.Errorf("%q names no bucket", s)
		}
		return &url.URL{Scheme: "s3", Host: bucket, Path: "/" + key}, nil
	}
	return url.Parse(s)
}

// formatURL is the inverse of parseURL.
func formatURL(u *url.URL) string {
	if u.Scheme == "s3" {
		return "s3://" + u.Host + u.Path
	}
	return u.String()
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// folderOf is the folder part of a URL path, with its trailing slash.
func folderOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i+1]
	}
	return "/"
}

// resolveURL resolves name against base (nil: name must be a URL) and
// checks the result lies in folder on base's host, or under an allowed
// URL prefix.
func resolveURL(base *url.URL, folder, name string, opts *Options, imagePath string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty file name", ErrNotAllowed)
	}
	if strings.ContainsAny(name, "\x00\r\n") {
		return "", fmt.Errorf("%w: file name %q holds a NUL or line break", ErrNotAllowed, name)
	}
	var target url.URL
	switch {
	case IsURL(name):
		u, err := parseURL(name)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("%w: %q named by %s is not a usable URL", ErrNotAllowed, name, imagePath)
		}
		if u.User != nil {
			return "", fmt.Errorf("%w: %q named by %s carries credentials", ErrNotAllowed, Redact(name), imagePath)
		}
		target = url.URL{Scheme: strings.ToLower(u.Scheme), Host: strings.ToLower(u.Host), Path: u.Path}
	case base == nil:
		return "", fmt.Errorf("%w: %q is not a URL", ErrNotAllowed, name)
	default:
		// A file name, not a URL reference: "?" and "#" are part of the
		// name, and a leading / starts at the root of the host (or bucket).
		p := name
		if !strings.HasPrefix(p, "/") {
			p = folder + p
		}
		target = url.URL{Scheme: strings.ToLower(base.Scheme), Host: strings.ToLower(base.Host), Path: p}
	}
	target.Path = cleanURLPath(target.Path)
	if target.Path == "/" || strings.HasSuffix(target.Path, "/") {
		return "", fmt.Errorf("%w: %q named by %s is a folder, not a file", ErrNotAllowed, name, imagePath)
	}
	if base != nil && sameOrigin(base, &target) && within(folder, target.Path) {
		return formatURL(&target), nil
	}
	if opts != nil && urlUnder(&target, opts.AllowPaths) {
		return formatURL(&target), nil
	}
	where := "outside the image's folder"
	switch {
	case base == nil:
		where = "a remote file named by a local image"
	case !sameOrigin(base, &target):
		where = "on another host than the image"
	}
	if base != nil {
		folderURL := url.URL{Scheme: base.Scheme, Host: base.Host, Path: folder}
		return "", fmt.Errorf("%w: %q named by %s resolves to %s, %s %s (allow it with --allow-path URL-PREFIX)", ErrNotAllowed, name, imagePath, formatURL(&target), where, formatURL(&folderURL))
	}
	return "", fmt.Errorf("%w: %q named by %s resolves to %s, %s (allow it with --allow-path URL-PREFIX)", ErrNotAllowed, name, imagePath, formatURL(&target), where)
}

// URLAllowed tells whether the http(s) or s3 URL u lies under one of the
// URL prefixes of allow (the folders there are ignored): the same origin,
// and a clean path under the prefix's folder.
func URLAllowed(u string, allow []string) bool {
	tu, err := parseURL(u)
	if err != nil || tu.Host == "" {
		return false
	}
	target := url.URL{Scheme: strings.ToLower(tu.Scheme), Host: strings.ToLower(tu.Host), Path: cleanURLPath(tu.Path)}
	return urlUnder(&target, allow)
}

// urlUnder tells whether target (scheme and host lower-cased, path clean)
// lies under one of the URL prefixes of allow: the same origin, and a path
// under the prefix's folder.
func urlUnder(target *url.URL, allow []string) bool {
	for _, a := range allow {
		if !IsURL(a) {
			continue
		}
		au, err := parseURL(a)
		if err != nil {
			continue
		}
		dir := cleanURLPath(au.Path)
		if !strings.HasSuffix(dir, "/") {
			dir += "/"
		}
		if sameOrigin(au, target) && within(dir, target.Path) {
			return true
		}
	}
	return false
}

// cleanURLPath cleans p like path.Clean, keeping a trailing slash.
func cleanURLPath(p string) string {
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Host, b.Host)
}

// within reports whether the clean path p lies under folder (which ends
// in /).
func within(folder, p string) bool {
	return strings.HasPrefix(p, folder) && len(p) > len(folder)
}

// Redact returns a URL as it may be shown: the password of its user info,
// and the value of every query parameter but the few known to be harmless
// (a signature's algorithm, date and expiry, an Azure SAS's fields but its
// sig, a version id, ...), replaced by REDACTED; a parameter without a
// value (which may be a token itself) becomes REDACTED whole; a fragment
// too. A URL's query carries credentials too often (sig, token, pwd, t,
// code, ...) to tell them by name. Anything that is not a URL is returned
// as it is.
func Redact(s string) string {
	if !IsURL(s) {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		// Cannot tell its parts apart: show no more than the scheme.
		i := strings.Index(s, "://")
		return s[:i+3] + "REDACTED"
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
		}
	}
	if u.RawQuery != "" {
		var parts []string
		for _, p := range strings.Split(u.RawQuery, "&") {
			if p == "" {
				continue
			}
			k, _, hasValue := strings.Cut(p, "=")
			name, err := url.QueryUnescape(k)
			switch {
			case err != nil || !hasValue && !harmlessParam(name):
				parts = append(parts, "REDACTED")
			case harmlessParam(name):
				parts = append(parts, p)
			default:
				parts = append(parts, k+"=REDACTED")
			}
		}
		u.RawQuery = strings.Join(parts, "&")
	}
	if u.Fragment != "" || u.RawFragment != "" {
		u.Fragment, u.RawFragment = "REDACTED", ""
	}
	return u.String()
}

// harmlessParam tells the query parameters whose values are no secret:
// the parts of an AWS or Google signature but the signature and the
// credential, an Azure SAS's fields but its sig, an object's version, the
// response overrides of a presigned GET.
func harmlessParam(k string) bool {
	switch strings.ToLower(k) {
	case "x-amz-algorithm", "x-amz-date", "x-amz-expires", "x-amz-signedheaders",
		"x-goog-algorithm", "x-goog-date", "x-goog-expires", "x-goog-signedheaders",
		"expires", "sv", "ss", "srt", "sp", "se", "st", "spr", "sr", "versionid", "partnumber",
		"response-content-type", "response-content-disposition", "response-content-language",
		"response-content-encoding", "response-cache-control", "response-expires":
		return true
	}
	return false
}
