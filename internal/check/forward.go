package check

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"go.uber.org/zap"
)

// verify is the forward-auth endpoint (nginx auth_request, ingress-nginx's
// auth-url, Caddy forward_auth, Traefik forwardAuth). The proxy calls it
// with the browser's headers and describes the original request in headers
// of its own; which ones depends on the proxy (FORWARD_AUTH_PROXY), because
// every header a proxy does not set itself is the client's:
//
//	nginx, ingress-nginx  X-Original-Method, X-Original-URL (scheme, host, path and query)
//	caddy, traefik        X-Forwarded-Method, X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-Uri
//
// (ingress-nginx sets X-Original-URI only with an auth-method annotation,
// so it is never read.) They are believed only from
// FORWARD_AUTH_TRUSTED_PROXIES; from anyone else the verify request itself
// is judged. Every other forwarding header is the client's: ignored and
// removed. A missing or malformed header of the configured kind, or one
// sent twice with values that disagree, is answered 400.
// Answers: 200 with the identity headers; 401, or with FORWARD_AUTH_REDIRECT
// a 302 to the provider for a browser navigation; 403 when not authorized.
func (h *Handler) verify(w http.ResponseWriter, r *http.Request, f front) {
	if !h.trustedProxy(r.RemoteAddr) {
		if hasForwardedHeaders(r) {
			h.quiet.Warn("forward-auth headers from an untrusted address ignored", zap.String("remote", r.RemoteAddr))
		}
		h.check(w, withoutForwarded(r), forwardAuth, f)
		return
	}
	orig, err := h.forwarded(r)
	if err != nil {
		h.serve(w, r, forwardAuth, f, &refusal{
			v: badRequest("the forward-auth request does not describe the original request: " + err.Error()),
			log: func(rid zap.Field) {
				h.quiet.Info("forward-auth request refused", rid, zap.String("proxy", h.o.ForwardAuthProxy), zap.Error(err))
			}})
		return
	}
	h.check(w, orig, forwardAuth, f)
}

// forwardHeaders are every header a forward-auth proxy may describe the
// original request with, of all kinds.
var forwardHeaders = []string{"X-Forwarded-Method", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Uri",
	"X-Original-Method", "X-Original-Url", "X-Original-Uri"}

func hasForwardedHeaders(r *http.Request) bool {
	for _, k := range forwardHeaders {
		if r.Header.Get(k) != "" {
			return true
		}
	}
	return false
}

// withoutForwarded is r without any forwarding header, for judging the
// verify request itself.
func withoutForwarded(r *http.Request) *http.Request {
	o := r.Clone(r.Context())
	for _, k := range forwardHeaders {
		o.Header.Del(k)
	}
	return o
}

// forwarded rebuilds the original request from the headers the configured
// proxy sets; nothing else of the forwarding kind survives in it, so no
// later reading (the scheme for cookies, for instance) sees a client value.
func (h *Handler) forwarded(r *http.Request) (*http.Request, error) {
	one := func(k string) (string, error) {
		v := r.Header.Values(k)
		if len(v) == 0 || v[0] == "" {
			return "", fmt.Errorf("%s missing", k)
		}
		for _, other := range v[1:] {
			if other != v[0] {
				return "", fmt.Errorf("%s sent %d times with values that disagree", k, len(v))
			}
		}
		return v[0], nil
	}
	var method, scheme, host, uri string
	var err error
	switch h.o.ForwardAuthProxy {
	case "caddy", "traefik":
		if method, err = one("X-Forwarded-Method"); err != nil {
			return nil, err
		}
		if scheme, err = one("X-Forwarded-Proto"); err != nil {
			return nil, err
		}
		if host, err = one("X-Forwarded-Host"); err != nil {
			return nil, err
		}
		if uri, err = one("X-Forwarded-Uri"); err != nil {
			return nil, err
		}
		if err := sentAsIs(uri); err != nil {
			return nil, fmt.Errorf("X-Forwarded-Uri %w", err)
		}
	default: // nginx, ingress-nginx
		if method, err = one("X-Original-Method"); err != nil {
			return nil, err
		}
		raw, err := one("X-Original-Url")
		if err != nil {
			return nil, err
		}
		if err := sentAsIs(raw); err != nil {
			return nil, fmt.Errorf("X-Original-URL %w", err)
		}
		u, err := url.Parse(raw)
		if err != nil || !u.IsAbs() || u.Host == "" || u.User != nil {
			return nil, errors.New("X-Original-URL is not an absolute URL")
		}
		scheme, host, uri = u.Scheme, u.Host, u.RequestURI()
	}
	switch {
	case !validMethod(method):
		return nil, errors.New("the original method is not an HTTP method")
	case scheme != "http" && scheme != "https":
		return nil, errors.New("the original scheme is neither http nor https")
	case !validHost(host):
		return nil, errors.New("the original host is malformed")
	case !strings.HasPrefix(uri, "/") || strings.HasPrefix(uri, "//"):
		return nil, errors.New("the original URI is not an absolute path")
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, errors.New("the original URI does not parse")
	}
	o := withoutForwarded(r)
	o.Method, o.Host, o.URL, o.RequestURI = method, host, u, uri
	o.Header.Set("X-Forwarded-Proto", scheme)
	return o, nil
}

// sentAsIs checks that a forwarded URL (X-Original-URL, X-Forwarded-Uri)
// is one a proxy could have sent as it is: only visible ASCII and no "#".
// nginx puts the request target into X-Original-URL byte for byte, and
// refuses requests whose target has a space or a control character; no
// browser sends a raw "#" (the fragment stays in the browser) or a raw byte
// above 0x7E (it percent-encodes them), yet nginx passes both, and so does
// Caddy in the query. Parsed as a URL, everything after a "#" would be cut
// off as a fragment while the upstream receives it as part of the path
// (/public#/../admin), so such a URL is refused (400) instead of judged
// as something it is not.
func sentAsIs(u string) error {
	for i := 0; i < len(u); i++ {
		switch c := u[i]; {
		case c == '#':
			return errors.New(`has a raw "#": no browser sends a fragment, and the service would not judge the path the upstream gets`)
		case c <= ' ' || c >= 0x7f:
			return fmt.Errorf("has a byte 0x%02x that a proxy does not pass unencoded (space, control character or raw non-ASCII)", c)
		}
	}
	return nil
}

func (h *Handler) trustedProxy(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	for _, p := range h.o.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func validMethod(m string) bool {
	if len(m) == 0 || len(m) > 16 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

func validHost(h string) bool {
	if len(h) == 0 || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

// start begins a login for nginx's error_page 401 pattern:
// <prefix>start?rd=<url>. rd may be absolute or a path; it passes the same
// checks as the callback's target (same host or ALLOWED_REDIRECT_HOSTS). As
// nginx cannot escape it, everything after "rd=" is taken as the target, so
// the original query string survives unescaped. A signed-in user goes
// straight to rd.
func (h *Handler) start(w http.ResponseWriter, r *http.Request, f front) {
	q := h.classify(r, extAuthz, f)
	v := h.startVerdict(&q)
	h.answer(w, &q, &v)
}

func (h *Handler) startVerdict(q *request) verdict {
	if q.Method != http.MethodGet && q.Method != http.MethodHead {
		return methodNotAllowed("GET, HEAD")
	}
	rd := "/"
	if raw := q.URL.RawQuery; strings.HasPrefix(raw, "rd=") {
		rd = raw[3:]
		if u, err := url.QueryUnescape(rd); err == nil && (strings.HasPrefix(rd, "http%3A") || strings.HasPrefix(rd, "https%3A") || strings.HasPrefix(rd, "%2F")) {
			rd = u
		}
	}
	self := q.scheme() + "://" + q.Host
	abs := rd
	if strings.HasPrefix(rd, "/") && !strings.HasPrefix(rd, "//") {
		abs = self + rd
	}
	target := h.safeTarget(q.Host, abs)
	if target == "/" && rd != "/" && abs != self+"/" {
		h.quiet.Info("login start refused: redirect target not allowed", q.rid())
		return failure(http.StatusBadRequest, "Login failed", "The address to return to after login is not allowed.", "/")
	}
	q.start = target
	switch a, v := h.authenticate(q); {
	case a.ok():
		return redirectTo(target, v.cookies...)
	case v.final: // a renewal's redirect, or the provider unreachable past the grace
		return v
	}
	orig := *q
	orig.Request = q.Clone(q.Context())
	if u, err := url.Parse(target); err == nil && u.IsAbs() {
		orig.Host, orig.RequestURI = u.Host, u.RequestURI()
	} else {
		orig.RequestURI = target
	}
	return h.startLogin(&orig, verdict{}, true)
}
