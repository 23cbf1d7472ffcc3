// Package urlpath owns the one canonical form in which the service compares
// request paths (skip paths, API prefixes, authorization rules), and prefix
// matching on segment boundaries.
//
// Envoy with Istio's default normalization resolves "." and ".." but merges
// no slashes and decodes no %2F; many upstreams do both (and some treat "\"
// as "/" or drop ";params" from segments). A path the gateway passes as
// "/pipeline/foo%2F..%2Fadmin/x" may be served as "/pipeline/admin/x". So
// every comparison uses Canonical, and the caller judges a request whose
// path as sent differs from it by the strictest of the two readings.
package urlpath

import (
	"strings"
)

// Canonical returns the form of an escaped request path (URL.EscapedPath)
// that an upstream which decodes and normalizes everything would serve:
// percent-escapes decoded once (%2F included), "\" read as "/", ";params"
// dropped from segments, empty and "." segments removed, ".." resolved
// (never above the root), and a trailing slash kept. It reports false for a
// path no request should carry: not starting with "/", a malformed escape,
// or a control character once decoded. (Its length is bounded by the
// server's header limit; the work is linear.)
//
// A path with none of '%', '\\', ';', "//" and "/." is returned unchanged
// without allocating: the common request pays one scan.
func Canonical(escaped string) (string, bool) {
	if len(escaped) == 0 || escaped[0] != '/' {
		return "", false
	}
	if plain(escaped) {
		return escaped, true
	}
	decoded, ok := unescape(escaped)
	if !ok {
		return "", false
	}
	segs := make([]string, 0, strings.Count(decoded, "/"))
	for _, seg := range strings.Split(decoded, "/") {
		seg, _, _ = strings.Cut(seg, ";")
		switch seg {
		case "", ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			segs = append(segs, seg)
		}
	}
	out := "/" + strings.Join(segs, "/")
	if len(segs) > 0 && trailingSlash(decoded) {
		out += "/"
	}
	return out, true
}

// plain reports whether p needs no work: no escape, backslash, parameter,
// empty segment or dot segment, and no control character.
func plain(p string) bool {
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '%', c == '\\', c == ';', c < 0x20, c == 0x7f:
			return false
		case c == '/' && i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.'):
			return false
		}
	}
	return true
}

// trailingSlash reports whether the decoded path names a directory: it ends
// in "/", or in a "." or ".." segment.
func trailingSlash(p string) bool {
	return strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
}

// unescape decodes every %XX once, turns "\" into "/", and refuses malformed
// escapes and control characters.
func unescape(s string) (string, bool) {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", false
			}
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
		}
		switch {
		case c < 0x20 || c == 0x7f:
			return "", false
		case c == '\\':
			c = '/'
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// Under reports whether path p lies under prefix on segment boundaries:
// "/dex" matches "/dex" and "/dex/auth" but not "/dexterity"; "/api/"
// matches "/api" and everything below it.
func Under(p, prefix string) bool {
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(p, prefix) || p == prefix[:len(prefix)-1]
	}
	return p == prefix || (strings.HasPrefix(p, prefix) && p[len(prefix)] == '/')
}

// UnderAny reports whether p lies under one of prefixes.
func UnderAny(p string, prefixes []string) bool {
	for _, pre := range prefixes {
		if Under(p, pre) {
			return true
		}
	}
	return false
}
