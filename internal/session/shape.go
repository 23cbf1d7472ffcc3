package session

import (
	"bytes"
	"encoding/base64"
	"strings"
)

// LooksSealed reports whether value has the shape of a sealed value
// (base64url of "time|ciphertext|mac", the time in decimal digits), or of
// the first chunk of one ("<count>." before it), whatever key sealed it: a
// session value that no longer opens is still a session value, never
// anything to show another party (an opaque access token goes to the
// provider's userinfo endpoint; a session value must not).
func LooksSealed(value string) bool {
	if value == "" || len(value) > MaxValue {
		return false
	}
	chunked := false
	if n, rest, ok := strings.Cut(value, "."); ok && n != "" && len(n) <= 2 && digits(n) {
		value, chunked = rest, true
	}
	// A first chunk is cut at a multiple of 4 characters, so it decodes.
	raw, err := base64.URLEncoding.DecodeString(value)
	if err != nil {
		return false
	}
	first := bytes.IndexByte(raw, '|')
	if first <= 0 || !digits(string(raw[:first])) {
		return false
	}
	return chunked || bytes.IndexByte(raw[first+1:], '|') >= 0
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
