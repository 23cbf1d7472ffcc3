package check

import (
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/logtext"
	"github.com/oidc-authservice/oidc-authservice/internal/urlpath"
)

// mode is who asks: Envoy's ext_authz filter, or a forward-auth proxy
// (nginx auth_request, Caddy forward_auth, Traefik forwardAuth) through the
// verify endpoint.
type mode int

const (
	extAuthz mode = iota
	forwardAuth
)

// request is a request classified once: everything the decision and the
// answer read about it, so nothing is re-derived further down. What only
// some answers need (the credential, whether it is a navigation, the
// request id) is read on first use and kept.
type request struct {
	*http.Request
	mode   mode
	front  front       // the protocol the check arrived in
	path   requestPath // both readings of the path
	secure bool        // https: Secure (and __Host-) cookies, the scheme of URLs built for it
	pathOK bool        // false: a path no request should carry (control character once decoded)

	// The flags next to each other: a request is allocated per check.
	read       lazy   // which of the fields below have been read
	navigates  bool   // a top-level browser navigation: a login redirect rather than 401
	cookieSent bool   // a session cookie was sent, whether or not it could be read
	authMany   bool   // Authorization holds more than one credential (credentials)
	sealed     string // the session cookie's value (chunks joined), or ""
	bearer     string // the Authorization: Bearer value, or ""
	requestID  string // x-request-id, bounded

	// start is the target of the forward-auth start endpoint, whose
	// answers a proxy reads into its buffer (FORWARD_AUTH_ANSWER_MAX_BYTES);
	// "" for every other request.
	start string
}

// lazy marks the fields of request read so far.
type lazy uint8

const (
	readNav lazy = 1 << iota
	readCredential
	readRequestID
)

// classify reads what every decision needs.
func (h *Handler) classify(r *http.Request, m mode, f front) request {
	q := request{Request: r, mode: m, front: f, secure: h.d.Cookies.Secure(r)}
	q.path, q.pathOK = readPath(r.URL)
	return q
}

// nav reports whether the request is a top-level browser navigation outside
// API_PATH_PREFIXES.
func (h *Handler) nav(q *request) bool {
	if q.read&readNav == 0 {
		q.read |= readNav
		q.navigates = q.pathOK && browserNavigation(q.Request) && !q.path.touches(h.o.APIPrefixes)
	}
	return q.navigates
}

// credential reads the session cookie and the bearer token.
func (h *Handler) credential(q *request) {
	if q.read&readCredential == 0 {
		q.read |= readCredential
		q.sealed, q.cookieSent = h.d.Cookies.ReadSession(q.Header, q.secure)
		q.bearer, q.authMany = bearer(q.Header)
	}
}

// foreignSite reports whether the request may have been started by anyone
// but the site itself: Sec-Fetch-Site is anything but exactly one
// "same-origin" (the site's own page) or "none" (the user typed the URL or
// used a bookmark). "same-site" is another subdomain of the same site — a
// sibling application or anyone who can host a page there, whose
// navigations carry Lax cookies — and "cross-site", an unknown value or a
// header sent twice are no better. A request without the header (browsers
// that do not send it, gateways that do not pass it to the check) is not
// foreign: SameSite is then the only protection (docs/security.md).
func (q *request) foreignSite() bool {
	v, sent := q.Header["Sec-Fetch-Site"]
	if !sent {
		return false
	}
	return len(v) != 1 || (v[0] != "same-origin" && v[0] != "none")
}

// scheme is the scheme of URLs built for the request.
func (q *request) scheme() string {
	if q.secure {
		return "https"
	}
	return "http"
}

// id is the request id the gateway set (x-request-id), bounded: like every
// header the gateway does not set itself, a client may have sent it, and it
// goes into logs and pages.
func (q *request) id() string {
	if q.read&readRequestID == 0 {
		q.read |= readRequestID
		q.requestID = logtext.Bound(header(q.Header, "X-Request-Id"), 128)
	}
	return q.requestID
}

// rid is the request id as a log field.
func (q *request) rid() zap.Field { return zap.String("request_id", q.id()) }

// requestPath is a request's path in the two readings the service judges:
// as the gateway passes it on (URL.Path) and canonical (urlpath.Canonical),
// which is what an upstream that decodes and normalizes everything serves.
type requestPath struct{ raw, canon string }

func readPath(u *url.URL) (requestPath, bool) {
	escaped := u.RawPath
	if escaped == "" && !strings.Contains(u.Path, "%") {
		// The path as sent was Path's default encoding, which decodes back
		// to Path: Canonical reads Path the same way, without re-encoding.
		escaped = u.Path
	} else {
		escaped = u.EscapedPath()
	}
	canon, ok := urlpath.Canonical(escaped)
	return requestPath{raw: u.Path, canon: canon}, ok
}

// under reports whether both readings lie under prefix: the reading for
// letting a request through without authentication.
func (p requestPath) under(prefix string) bool {
	return urlpath.Under(p.canon, prefix) && urlpath.Under(p.raw, prefix)
}

// touches reports whether either reading lies under one of prefixes: the
// reading for treating a request as an API call.
func (p requestPath) touches(prefixes []string) bool {
	return urlpath.UnderAny(p.canon, prefixes) || urlpath.UnderAny(p.raw, prefixes)
}

// browserNavigation reports whether a request without a session should be
// sent to the login page rather than answered 401: a top-level GET/HEAD
// from a browser. Accept, X-Requested-With and Sec-Fetch-Mode are used when
// the gateway forwards them; without them a GET is taken as a navigation.
// (API_PATH_PREFIXES are judged by classify.)
func browserNavigation(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	hd := r.Header
	if strings.EqualFold(header(hd, "X-Requested-With"), "XMLHttpRequest") {
		return false
	}
	if m := header(hd, "Sec-Fetch-Mode"); m != "" && m != "navigate" && m != "nested-navigate" {
		return false
	}
	if a := header(hd, "Accept"); a != "" && !acceptsHTML(a) {
		return false
	}
	return true
}

func acceptsHTML(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		mt, _, _ := strings.Cut(part, ";")
		switch strings.ToLower(strings.TrimSpace(mt)) {
		case "text/html", "application/xhtml+xml", "*/*", "text/*":
			return true
		}
	}
	return false
}

// header is the first value of the header called canonical, a name already
// in canonical form: the server canonicalizes the request's header names
// once, so a map read is Header.Get without canonicalizing on every call.
func header(h http.Header, canonical string) string {
	if v := h[canonical]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// bearer is the Authorization: Bearer value ("" when there is none), and
// whether Authorization holds more than one credential: sent twice, or once
// with credentials a proxy merged into one line (Envoy joins a repeated
// header with "," in the check request, and forwards "Basic x,Bearer y" or
// both lines upstream). Only the first could be judged, and a credential
// of this gateway in another would reach the upstream: the check refuses
// such a request (authenticate).
func bearer(h http.Header) (string, bool) {
	all := h["Authorization"]
	if len(all) == 0 {
		return "", false
	}
	a := all[0]
	many := len(all) > 1 || (strings.IndexByte(a, ',') >= 0 && !oneCredential(a))
	if len(a) < 7 || !strings.EqualFold(a[:7], "bearer ") {
		return "", many
	}
	return strings.TrimSpace(a[7:]), many
}

// oneCredential reports whether an Authorization value that has a comma is
// one credential (RFC 9110 §11.4): a scheme with auth-params, "Digest
// username="u", realm="a, b"" or AWS's "AWS4-HMAC-SHA256 Credential=…,
// SignedHeaders=…, Signature=…", not a list of credentials. A bearer
// token (token68) has no comma at all; after any other scheme, an element
// after a comma outside a quoted string that is a token followed by a
// space, not by "=", starts another credential.
func oneCredential(v string) bool {
	if len(v) >= 7 && strings.EqualFold(v[:7], "bearer ") {
		return false
	}
	quoted := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted && startsCredential(v[i+1:]):
			return false
		}
	}
	return true
}

// startsCredential reports whether s (what follows a comma) begins with an
// auth-scheme and a space: another credential, not an auth-param.
func startsCredential(s string) bool {
	s = strings.TrimLeft(s, " \t")
	n := 0
	for n < len(s) && tchar(s[n]) {
		n++
	}
	if n == 0 || n == len(s) || (s[n] != ' ' && s[n] != '\t') {
		return false
	}
	rest := strings.TrimLeft(s[n:], " \t")
	return rest == "" || rest[0] != '='
}

// tchar reports whether c may appear in an HTTP token (RFC 9110 §5.6.2).
func tchar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
