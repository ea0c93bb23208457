package jdcloud

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf16"
)

// Algorithm is the signature scheme of the cloud's OpenAPI gateway (the Go
// and JavaScript SDKs sign with it; only the Python SDK has moved on to a
// JDCLOUD3 variant).
const Algorithm = "JDCLOUD2-HMAC-SHA256"

// Header names the signer sets.
const (
	HeaderDate  = "x-jdcloud-date"
	HeaderNonce = "x-jdcloud-nonce"
)

const (
	dateFormat  = "20060102T150405Z"
	scopeSuffix = "jdcloud2_request"
)

// SignInput is everything a signature depends on. Sign is a pure function
// of it, so tests can fix the time and the nonce.
type SignInput struct {
	Method string
	// URL is the request's address as it goes on the wire: its Host, its
	// escaped path (EscapedPath) and its RawQuery.
	URL *url.URL
	// Header holds the headers that will be sent, besides Host and the
	// x-jdcloud-date and x-jdcloud-nonce headers Sign adds. Authorization
	// and User-Agent are never signed.
	Header      http.Header
	Body        []byte
	Credentials Credentials
	Region      string
	Service     string
	Time        time.Time
	Nonce       string
}

// Signature is the result of Sign, with the intermediate strings for
// debugging a mismatch with the gateway.
type Signature struct {
	Date             string // x-jdcloud-date
	Nonce            string // x-jdcloud-nonce
	Scope            string // yyyymmdd/region/service/jdcloud2_request
	SignedHeaders    string
	CanonicalRequest string
	StringToSign     string
	Authorization    string
}

// Apply sets the date, nonce and Authorization headers on h.
func (s Signature) Apply(h http.Header) {
	h.Set(HeaderDate, s.Date)
	h.Set(HeaderNonce, s.Nonce)
	h.Set("Authorization", s.Authorization)
}

// Sign computes the JDCLOUD2-HMAC-SHA256 signature of a request, the way
// the official SDKs do: SigV4 with the x-jdcloud-date and x-jdcloud-nonce
// headers, the scope date/region/service/jdcloud2_request and a key chain
// that starts from "JDCLOUD2"+secret.
//
// The canonical request is METHOD, the escaped path, the query re-encoded
// (parameters sorted, values of a repeated name sorted, RFC 3986 escaping
// with %20 for spaces), the signed headers as name:value lines (names lower
// case and sorted, runs of white space in values collapsed to one space),
// a blank line, the signed header names joined by ';', and the hex SHA-256
// of the body.
func Sign(in SignInput) Signature {
	date := in.Time.UTC().Format(dateFormat)
	s := Signature{Date: date, Nonce: in.Nonce}
	s.Scope = strings.Join([]string{date[:8], in.Region, in.Service, scopeSuffix}, "/")

	// The headers to sign: those given, plus host, date and nonce.
	vals := map[string][]string{}
	for k, v := range in.Header {
		k = strings.ToLower(k)
		if !signable(k) || k == "host" || k == HeaderDate || k == HeaderNonce {
			continue
		}
		vals[k] = append(vals[k], v...)
	}
	vals["host"] = []string{in.URL.Host}
	vals[HeaderDate] = []string{date}
	vals[HeaderNonce] = []string{in.Nonce}
	names := make([]string, 0, len(vals))
	for k := range vals {
		names = append(names, k)
	}
	slices.Sort(names)
	var ch strings.Builder
	for _, k := range names {
		ch.WriteString(k)
		ch.WriteByte(':')
		ch.WriteString(collapseSpace(strings.Join(vals[k], ", ")))
		ch.WriteByte('\n')
	}
	s.SignedHeaders = strings.Join(names, ";")

	path := in.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	body := sha256.Sum256(in.Body)
	s.CanonicalRequest = strings.Join([]string{
		in.Method, path, CanonicalQuery(in.URL.RawQuery), ch.String(), s.SignedHeaders, hex.EncodeToString(body[:]),
	}, "\n")
	creq := sha256.Sum256([]byte(s.CanonicalRequest))
	s.StringToSign = strings.Join([]string{Algorithm, date, s.Scope, hex.EncodeToString(creq[:])}, "\n")

	key := hmacSHA256([]byte("JDCLOUD2"+in.Credentials.SecretAccessKey), date[:8])
	key = hmacSHA256(key, in.Region)
	key = hmacSHA256(key, in.Service)
	key = hmacSHA256(key, scopeSuffix)
	sig := hex.EncodeToString(hmacSHA256(key, s.StringToSign))
	s.Authorization = Algorithm + " Credential=" + in.Credentials.AccessKeyID + "/" + s.Scope +
		", SignedHeaders=" + s.SignedHeaders + ", Signature=" + sig
	return s
}

// signable says whether a (lower-case) header takes part in the signature:
// every header but authorization and user-agent; x-jdcloud-* always.
func signable(k string) bool {
	if strings.Contains(k, "x-jdcloud-") {
		return true
	}
	return k != "authorization" && k != "user-agent"
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// collapseSpace turns every run of white space (as JavaScript's \s sees it)
// into one space and trims both ends.
func collapseSpace(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if jsSpace(r) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	return b.String()
}

// jsSpace is JavaScript's \s: the ASCII white space, no-break space, the
// Unicode space separators, line and paragraph separators and the BOM.
func jsSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', ' ', 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff:
		return true
	}
	return r >= 0x2000 && r <= 0x200a
}

// Escape percent-encodes every byte of s but the RFC 3986 unreserved
// characters (A-Z a-z 0-9 - . _ ~), with upper-case hex: the escaping of
// path segments, query names and query values in the signature.
func Escape(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

func unreserved(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// EscapePath escapes each segment of a slash-separated path with Escape:
// "/v1/regions/cn-north-1/images:import" becomes
// "/v1/regions/cn-north-1/images%3Aimport", as the SDKs send and sign it.
func EscapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = Escape(s)
	}
	return strings.Join(segs, "/")
}

// CanonicalQuery re-encodes a raw query the way the signature wants it:
// decoded (with '+' as a space), names sorted (in UTF-16 order, as
// JavaScript sorts), the values of a repeated name sorted after escaping,
// every name and value escaped with Escape, joined with '&'. A name
// without '=' gets an empty value.
func CanonicalQuery(raw string) string {
	if raw == "" {
		return ""
	}
	vals := map[string][]string{}
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, v = unescapeQuery(k), unescapeQuery(v)
		vals[k] = append(vals[k], Escape(v))
	}
	names := make([]string, 0, len(vals))
	for k := range vals {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int { return slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b))) })
	var b strings.Builder
	for _, k := range names {
		v := vals[k]
		slices.Sort(v)
		for _, x := range v {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(Escape(k))
			b.WriteByte('=')
			b.WriteString(x)
		}
	}
	return b.String()
}

// unescapeQuery decodes a query component like a browser's form decoder:
// '+' is a space, %XX a byte; a malformed escape stays as it is.
func unescapeQuery(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return strings.ReplaceAll(s, "+", " ")
}

// EncodeQuery builds a raw query from name/value pairs in canonical form
// (sorted and escaped as CanonicalQuery makes it), so that what goes on the
// wire is what is signed.
func EncodeQuery(q url.Values) string {
	var parts []string
	for k, vs := range q {
		for _, v := range vs {
			parts = append(parts, Escape(k)+"="+Escape(v))
		}
	}
	return CanonicalQuery(strings.Join(parts, "&"))
}
