package remote

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"vmimport/reader/image"
)

// origin is a URL's origin, exactly: scheme, host and port (the scheme's
// default port when none is given), lower-cased. The user's headers and
// credentials go to the source's origin and no other: not to another
// port of the same host.
func origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return scheme + "://" + strings.ToLower(u.Hostname()) + ":" + port
}

// RedirectError is a redirect the reader did not follow: to another
// origin than the source's, outside every --allow-path URL prefix.
type RedirectError struct {
	From, To string // redacted
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("the server redirected to %s, another origin than the source %s: not followed (allow it with --allow-path URL-PREFIX; the source's headers and credentials are never sent there)", e.To, e.From)
}

// Is matches image.ErrNotAllowed.
func (e *RedirectError) Is(target error) bool { return target == image.ErrNotAllowed }

// checkRedirect decides every redirect the client meets. No request
// carries a Referer (it would carry the first URL, signature and all). A
// redirect within the source's origin keeps the user's headers; one to
// another origin loses every one of them (--source-header, Authorization
// from the URL's user info, Cookie) and is followed only under an
// --allow-path URL prefix, as a file an image names would be.
func (op *Opener) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	req.Header.Del("Referer")
	first := via[0].URL
	if origin(req.URL) == origin(first) {
		return nil
	}
	for k := range op.o.Header {
		req.Header.Del(k)
	}
	for _, k := range []string{"Authorization", "Proxy-Authorization", "Cookie"} {
		req.Header.Del(k)
	}
	to := *req.URL
	to.User = nil
	if image.URLAllowed(to.String(), op.o.AllowPaths) {
		return nil
	}
	return &RedirectError{From: image.Redact(first.String()), To: image.Redact(to.String())}
}
