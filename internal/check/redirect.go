package check

import (
	"net/url"
	"strings"
)

// safeTarget returns where a browser may be sent after login: the original
// URL when its host is the request's own host (then as a path, so the
// scheme the browser uses is kept) or an allowed host; otherwise "/".
func (h *Handler) safeTarget(requestHost, target string) string {
	u, ok := parseTarget(target)
	if !ok {
		return "/"
	}
	host := strings.ToLower(u.Host)
	rel := u.EscapedPath()
	if rel == "" {
		rel = "/"
	}
	if u.RawQuery != "" {
		rel += "?" + u.RawQuery
	}
	if !safePath(rel) {
		return "/"
	}
	if host == strings.ToLower(requestHost) {
		return rel
	}
	if hostAllowed(host, h.o.AllowedRedirectHosts) {
		return u.Scheme + "://" + u.Host + rel
	}
	return "/"
}

// parseTarget accepts only absolute http(s) URLs without user info and
// without characters a browser would strip or reinterpret.
func parseTarget(target string) (*url.URL, bool) {
	if target == "" || len(target) > 8192 {
		return nil, false
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c < 0x21 || c == 0x7f || c == '\\' {
			return nil, false
		}
	}
	u, err := url.Parse(target)
	if err != nil || u.User != nil || u.Host == "" || u.Opaque != "" || !hostChars(u.Host) {
		return nil, false
	}
	if s := u.Scheme; s != "http" && s != "https" {
		return nil, false
	}
	return u, true
}

// hostChars reports whether a (decoded) host is only what a host name,
// an IP address and a port are written with: a percent-decoded host such
// as "a%b.example.com" would not parse again once put back in a URL.
func hostChars(h string) bool {
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

// safePath reports whether a relative target stays on the same origin: it
// starts with exactly one slash and nothing a browser reads as a new origin.
func safePath(p string) bool {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") {
		return false
	}
	lower := strings.ToLower(p)
	return !strings.HasPrefix(lower, "/%2f") && !strings.HasPrefix(lower, "/%5c") && !strings.ContainsAny(p, "\\\r\n\t")
}

// hostAllowed matches host (with or without port) against the allowed list;
// "*.example.com" matches any sub-domain of example.com.
func hostAllowed(host string, allowed []string) bool {
	for _, a := range allowed {
		if host == a {
			return true
		}
		if strings.HasPrefix(a, "*.") && strings.HasSuffix(host, a[1:]) && len(host) > len(a)-1 {
			return true
		}
	}
	return false
}
