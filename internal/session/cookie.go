package session

import (
	"net/http"
	"strings"
)

// CookieValue finds one cookie in the request headers without parsing the
// others, so the hot path does not allocate for unrelated cookies. When the
// name appears more than once the first wins, as in net/http.
func CookieValue(h http.Header, name string) (string, bool) {
	v, ok, _, _ := cookieValues(h, name, "")
	return v, ok
}

// cookieValues is CookieValue for two names (b may be ""), in one reading
// of the header.
func cookieValues(h http.Header, a, b string) (va string, okA bool, vb string, okB bool) {
	for _, line := range h["Cookie"] {
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = trimLeftOWS(part)
			n, v, ok := strings.Cut(part, "=")
			if !ok {
				continue
			}
			switch n = trimRightOWS(n); {
			case n == a && !okA:
				va, okA = unquote(v), true
			case n == b && b != "" && !okB:
				vb, okB = unquote(v), true
			default:
				continue
			}
			if okA && (okB || b == "") {
				return va, okA, vb, okB
			}
		}
	}
	return va, okA, vb, okB
}

// trimLeftOWS and trimRightOWS drop the spaces and tabs around a cookie
// (strings.Trim with a cutset builds the set on every call, a noticeable
// part of reading a Cookie header on every check).
func trimLeftOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	return s
}

func trimRightOWS(s string) string {
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func unquote(v string) string {
	v = strings.TrimSpace(v)
	if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	return v
}

// NamedValue is one cookie.
type NamedValue struct{ Name, Value string }

// CookiesWithPrefix lists the cookies whose name starts with prefix, at most
// limit of them (the rest are ignored: a browser holding hundreds of them is
// hostile or broken).
func CookiesWithPrefix(h http.Header, prefix string, limit int) []NamedValue {
	var out []NamedValue
	for _, line := range h["Cookie"] {
		for len(line) > 0 && len(out) < limit {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			n, v, ok := strings.Cut(part, "=")
			if ok && strings.HasPrefix(n, prefix) {
				out = append(out, NamedValue{n, strings.Trim(v, "\"")})
			}
		}
	}
	return out
}

// joinChunks is the sealed value whose first chunk, called name, is first.
func joinChunks(h http.Header, name, first string) string {
	return Join(first, func(i int) (string, bool) { return CookieValue(h, ChunkName(name, i)) })
}
