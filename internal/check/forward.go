package check

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"go.uber.org/zap"
)

// verify is the forward-auth endpoint (nginx auth_request, Caddy
// forward_auth, Traefik forwardAuth). The proxy calls it with the browser's
// headers and describes the original request in X-Forwarded-Method,
// X-Forwarded-Proto, X-Forwarded-Host and X-Forwarded-Uri (or
// X-Original-URL); those are believed only from FORWARD_AUTH_TRUSTED_PROXIES.
// Answers: 200 with the identity headers; 401, or with FORWARD_AUTH_REDIRECT
// a 302 to the provider for a browser navigation; 403 when not authorized.
func (h *Handler) verify(w http.ResponseWriter, r *http.Request) {
	orig, trusted := h.forwarded(r)
	if !trusted && hasForwardedHeaders(r) {
		h.log.Warn("forward-auth headers from an untrusted address ignored", requestID(r), zap.String("remote", r.RemoteAddr))
	}
	h.decide(w, orig, forwardAuth)
}

func hasForwardedHeaders(r *http.Request) bool {
	for _, k := range []string{"X-Forwarded-Uri", "X-Forwarded-Host", "X-Forwarded-Method", "X-Original-Url"} {
		if r.Header.Get(k) != "" {
			return true
		}
	}
	return false
}

// forwarded rebuilds the original request from a trusted proxy's headers.
// From an untrusted caller the verify request itself is judged, with the
// forwarding headers removed.
func (h *Handler) forwarded(r *http.Request) (*http.Request, bool) {
	o := r.Clone(r.Context())
	if !h.trustedProxy(r.RemoteAddr) {
		for _, k := range []string{"X-Forwarded-Uri", "X-Forwarded-Host", "X-Forwarded-Method", "X-Forwarded-Proto", "X-Original-Url"} {
			o.Header.Del(k)
		}
		return o, false
	}
	hd := r.Header
	if m := hd.Get("X-Forwarded-Method"); m != "" && validMethod(m) {
		o.Method = m
	}
	uri := hd.Get("X-Forwarded-Uri")
	if orig := hd.Get("X-Original-Url"); uri == "" && orig != "" {
		if u, err := url.Parse(orig); err == nil && u.IsAbs() {
			if u.Host != "" && hd.Get("X-Forwarded-Host") == "" {
				o.Host = u.Host
			}
			if hd.Get("X-Forwarded-Proto") == "" && (u.Scheme == "http" || u.Scheme == "https") {
				o.Header.Set("X-Forwarded-Proto", u.Scheme)
			}
			uri = u.RequestURI()
		} else {
			uri = orig
		}
	}
	if fh := hd.Get("X-Forwarded-Host"); fh != "" && validHost(fh) {
		o.Host = fh
	}
	if uri != "" && strings.HasPrefix(uri, "/") {
		if u, err := url.ParseRequestURI(uri); err == nil {
			o.URL = u
			o.RequestURI = uri
		}
	}
	return o, true
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
	for _, p := range h.cfg.TrustedProxies {
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
func (h *Handler) start(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
		return
	}
	rd := "/"
	if raw := r.URL.RawQuery; strings.HasPrefix(raw, "rd=") {
		rd = raw[3:]
		if u, err := url.QueryUnescape(rd); err == nil && (strings.HasPrefix(rd, "http%3A") || strings.HasPrefix(rd, "https%3A") || strings.HasPrefix(rd, "%2F")) {
			rd = u
		}
	}
	scheme := "http"
	if h.secure(r) {
		scheme = "https"
	}
	abs := rd
	if strings.HasPrefix(rd, "/") && !strings.HasPrefix(rd, "//") {
		abs = scheme + "://" + r.Host + rd
	}
	target := h.safeTarget(r, abs)
	if target == "/" && rd != "/" && abs != scheme+"://"+r.Host+"/" {
		h.log.Info("login start refused: redirect target not allowed", requestID(r))
		h.failPage(w, r, http.StatusBadRequest, "Login failed", "The address to return to after login is not allowed.", "/")
		return
	}
	if pr, _ := h.authenticate(r); pr != nil {
		hd := w.Header()
		hd["Cache-Control"] = noStore
		hd.Set("Location", target)
		w.WriteHeader(http.StatusFound)
		return
	}
	orig := r.Clone(r.Context())
	u, _ := url.Parse(target)
	if u.IsAbs() {
		orig.Host = u.Host
		orig.RequestURI = u.RequestURI()
	} else {
		orig.RequestURI = target
	}
	h.startLogin(w, orig, nil)
}
