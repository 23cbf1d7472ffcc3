package extauthz

import (
	"strings"
)

// Envoy's HTTP connection manager rewrites :path before any HTTP filter and
// before routing, as its configuration says:
//
//   - path_with_escaped_slashes_action: KEEP_UNCHANGED (Envoy's default and
//     Istio's) leaves %2F and %5C alone; REJECT_REQUEST answers 400;
//     UNESCAPE_AND_FORWARD decodes them first (UNESCAPE_AND_REDIRECT is not
//     emulated);
//   - normalize_path: RFC 3986 normalization of the path part (the query is
//     kept as sent) with the canonicalizer of Chromium's URL library
//     (googleurl, url_canon_path.cc, as Envoy vendors it): "." and ".."
//     segments are resolved, also when written %2e; "\" is a "/"; a
//     %-escape of an unreserved character (letters, digits, "-", "_", "~") is
//     decoded, other escapes are kept exactly as written (%2F stays %2F, so
//     /dex%2Fx is not under /dex/); characters that must be escaped are
//     (space, ", <, >, ^, `, {, |, }, DEL, bytes >= 0x80, controls); an
//     escaped or literal NUL makes the path invalid (400);
//   - merge_slashes: "//" becomes "/" (Istio leaves it off).
//
// Everything the gateway does after that (RBAC's url_path, jwt_authn's
// rules, the ext_authz check's path, routing and the upstream request) sees
// the rewritten path.

// pathCharClass is googleurl's kPathCharLookup.
type pathCharClass uint8

const (
	pcPass     pathCharClass = iota // copied as is
	pcUnescape                      // copied as is; decoded when %-escaped
	pcEscape                        // %-escaped in the output
	pcSpecial                       // ".": dot segments
	pcInvalid                       // NUL: the path is invalid
)

var pathChars = func() [256]pathCharClass {
	var t [256]pathCharClass
	for c := 0; c < 256; c++ {
		switch {
		case c == 0:
			t[c] = pcInvalid
		case c < 0x20, c >= 0x7f:
			t[c] = pcEscape
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '~':
			t[c] = pcUnescape
		case c == '.':
			t[c] = pcSpecial
		case strings.IndexByte(" \"#%<>?\\^`{|}", byte(c)) >= 0:
			t[c] = pcEscape
		default: // ! $ & ' ( ) * + , / : ; = @ [ ]
			t[c] = pcPass
		}
	}
	return t
}()

// isDot reports the length of a "." or "%2e" at the start of s (0: none).
func isDot(s string) int {
	if strings.HasPrefix(s, ".") {
		return 1
	}
	if len(s) >= 3 && s[0] == '%' && s[1] == '2' && (s[2] == 'e' || s[2] == 'E') {
		return 3
	}
	return 0
}

func isSlash(c byte) bool { return c == '/' || c == '\\' }

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

const hexUpper = "0123456789ABCDEF"

// canonicalizePath is googleurl's CanonicalizePath of a path (no query);
// false when the path is invalid.
func canonicalizePath(p string) (string, bool) {
	var out []byte
	if p == "" || !isSlash(p[0]) {
		out = append(out, '/')
	}
	if p == "" {
		return "/", true
	}
	ok := true
	for i := 0; i < len(p); i++ {
		c := p[i]
		cls := pathChars[c]
		if cls == pcPass || cls == pcUnescape {
			out = append(out, c)
			continue
		}
		if n := isDot(p[i:]); n > 0 {
			if len(out) > 0 && out[len(out)-1] == '/' {
				rest := p[i+n:]
				switch {
				case rest == "": // "." at the end
					i += n - 1
				case isSlash(rest[0]): // "./"
					i += n
				default:
					m := isDot(rest)
					switch {
					case m > 0 && len(rest) == m: // ".." at the end
						out = backUp(out)
						i += n + m - 1
					case m > 0 && isSlash(rest[m]): // "../"
						out = backUp(out)
						i += n + m
					default:
						out = append(out, '.')
						i += n - 1
					}
				}
			} else {
				out = append(out, '.')
				i += n - 1
			}
			continue
		}
		switch {
		case c == '\\':
			out = append(out, '/')
		case c == '%':
			if i+2 < len(p) {
				h, ok1 := unhex(p[i+1])
				l, ok2 := unhex(p[i+2])
				if ok1 && ok2 {
					v := h<<4 | l
					switch pathChars[v] {
					case pcUnescape:
						out = append(out, v)
					case pcInvalid:
						out = append(out, '%', p[i+1], p[i+2])
						ok = false
					default: // kept escaped, hex digits as written
						out = append(out, '%', p[i+1], p[i+2])
					}
					i += 2
					continue
				}
			}
			out = append(out, '%') // an invalid escape passes through
		case cls == pcInvalid:
			out = append(out, '%', hexUpper[c>>4], hexUpper[c&15])
			ok = false
		default: // pcEscape
			out = append(out, '%', hexUpper[c>>4], hexUpper[c&15])
		}
	}
	return string(out), ok
}

// backUp removes the last segment of out, which ends in "/", keeping the
// slash before it; never above the first slash.
func backUp(out []byte) []byte {
	i := len(out) - 1
	if i == 0 {
		return out
	}
	i--
	for i > 0 && out[i] != '/' {
		i--
	}
	return out[:i+1]
}

// mergeSlashes is Envoy's PathTransformer::mergeSlashes.
func mergeSlashes(path string) string {
	p, q, hasQ := strings.Cut(path, "?")
	if !strings.Contains(p, "//") {
		return path
	}
	var parts []string
	for _, s := range strings.Split(p, "/") {
		if s != "" {
			parts = append(parts, s)
		}
	}
	out := ""
	if strings.HasPrefix(p, "/") {
		out = "/"
	}
	out += strings.Join(parts, "/")
	if strings.HasSuffix(p, "/") && len(parts) > 0 {
		out += "/"
	}
	if hasQ {
		out += "?" + q
	}
	return out
}

// escapedSlashesAction is the HCM's path_with_escaped_slashes_action.
type escapedSlashesAction string

const (
	keepUnchanged      escapedSlashesAction = "KEEP_UNCHANGED"
	rejectRequest      escapedSlashesAction = "REJECT_REQUEST"
	unescapeAndForward escapedSlashesAction = "UNESCAPE_AND_FORWARD"
)

// pathSettings are the HCM's path rewriting settings.
type pathSettings struct {
	normalize      bool
	mergeSlashes   bool
	escapedSlashes escapedSlashesAction
}

// rewrite returns the :path the filters and the router see, or false for a
// 400 (an invalid path, or escaped slashes with REJECT_REQUEST).
func (s pathSettings) rewrite(path string) (string, bool) {
	p, q, hasQ := strings.Cut(path, "?")
	lower := strings.ToLower(p)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
		switch s.escapedSlashes {
		case rejectRequest:
			return "", false
		case unescapeAndForward:
			r := strings.NewReplacer("%2F", "/", "%2f", "/", "%5C", "\\", "%5c", "\\")
			p = r.Replace(p)
		}
	}
	if s.normalize {
		var ok bool
		if p, ok = canonicalizePath(p); !ok {
			return "", false
		}
	}
	if hasQ {
		p += "?" + q
	}
	if s.mergeSlashes {
		p = mergeSlashes(p)
	}
	return p, true
}
