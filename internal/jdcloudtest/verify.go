package jdcloudtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"
)

// This file checks signatures the way the gateway does, written apart from
// the jdcloud package's signer so that the two check each other: it reads
// the request as it arrived (the raw path, the raw query, the headers the
// client says it signed) and recomputes the signature with the secret.

var (
	authRe  = regexp.MustCompile(`^JDCLOUD2-HMAC-SHA256 Credential=([^/, ]+)/(\d{8})/([^/, ]+)/([^/, ]+)/jdcloud2_request, SignedHeaders=([a-z0-9;_.-]+), Signature=([0-9a-f]{64})$`)
	nonceRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
)

// verify returns why the request's signature is refused, or "".
func (s *Server) verify(r *http.Request, body []byte, pathRegion string) string {
	m := authRe.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		return "no JDCLOUD2-HMAC-SHA256 Authorization header"
	}
	ak, day, region, service, signed, sig := m[1], m[2], m[3], m[4], m[5], m[6]
	if ak != s.AccessKey {
		return "unknown access key " + ak
	}
	if service != "vm" {
		return "scope service " + service + ", not vm"
	}
	if pathRegion != "" && region != pathRegion {
		return fmt.Sprintf("scope region %s, path region %s", region, pathRegion)
	}
	date := r.Header.Get("x-jdcloud-date")
	t, err := time.Parse("20060102T150405Z", date)
	if err != nil {
		return "bad x-jdcloud-date " + date
	}
	if d := time.Since(t); d > s.opts.MaxSkew || d < -s.opts.MaxSkew {
		return fmt.Sprintf("x-jdcloud-date %s is %s away from the server's clock", date, d.Round(time.Second))
	}
	if day != date[:8] {
		return "scope date " + day + " is not the day of x-jdcloud-date " + date
	}
	nonce := r.Header.Get("x-jdcloud-nonce")
	if !nonceRe.MatchString(nonce) {
		return "x-jdcloud-nonce " + nonce + " is not a UUIDv4"
	}
	if s.nonces[nonce] {
		return "x-jdcloud-nonce " + nonce + " used before (replay)"
	}
	names := strings.Split(signed, ";")
	if !sort.StringsAreSorted(names) {
		return "SignedHeaders not sorted"
	}
	for _, need := range []string{"host", "x-jdcloud-date", "x-jdcloud-nonce"} {
		if !contains(names, need) {
			return "SignedHeaders lacks " + need
		}
	}
	var canon strings.Builder
	for _, n := range names {
		var v string
		if n == "host" {
			v = r.Host
		} else {
			vs := r.Header.Values(n)
			if len(vs) == 0 {
				return "signed header " + n + " not sent"
			}
			v = strings.Join(vs, ", ")
		}
		canon.WriteString(n + ":" + strings.Join(strings.Fields(v), " ") + "\n")
	}
	rawPath, _, _ := strings.Cut(r.RequestURI, "?")
	sum := sha256.Sum256(body)
	creq := strings.Join([]string{r.Method, rawPath, canonicalQuery(r.URL.RawQuery), canon.String(), signed, hex.EncodeToString(sum[:])}, "\n")
	h := sha256.Sum256([]byte(creq))
	sts := "JDCLOUD2-HMAC-SHA256\n" + date + "\n" + day + "/" + region + "/" + service + "/jdcloud2_request\n" + hex.EncodeToString(h[:])
	k := mac([]byte("JDCLOUD2"+s.SecretKey), day)
	for _, part := range []string{region, service, "jdcloud2_request"} {
		k = mac(k, part)
	}
	want := hex.EncodeToString(mac(k, sts))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return "signature mismatch; canonical request was:\n" + creq
	}
	s.nonces[nonce] = true
	return ""
}

func mac(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// canonicalQuery: pairs decoded, sorted by name then by escaped value,
// re-escaped with RFC 3986's unreserved set.
func canonicalQuery(raw string) string {
	type pair struct{ k, v string }
	var ps []pair
	for _, kv := range strings.Split(raw, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		dk, err1 := url.QueryUnescape(k)
		dv, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			dk, dv = k, v
		}
		ps = append(ps, pair{dk, rfc3986(dv)})
	}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].k != ps[j].k {
			return ps[i].k < ps[j].k
		}
		return ps[i].v < ps[j].v
	})
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = rfc3986(p.k) + "=" + p.v
	}
	return strings.Join(out, "&")
}

func rfc3986(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
