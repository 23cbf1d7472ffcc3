package provider

import (
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// authURL is the authorization URL of every login, built once from the
// oauth2 configuration with the three values of a login (state, nonce,
// PKCE challenge) left open. It is exactly what oauth2's AuthCodeURL
// writes: url.Values sorts its keys whatever the values, and the values a
// login draws (unpadded base64url) are left as they are by query escaping.
// Building the URL from parts saves the parameter map, its sorting and the
// escaping of the constant parameters on every unauthenticated navigation,
// most of what it cost.
type authURL struct {
	cfg   oauth2.Config
	parts []string // constant text around the values; len(order)+1 of them
	order []int    // which value (0 state, 1 nonce, 2 challenge) goes into each gap
}

// Placeholders that query escaping leaves unchanged and no configuration
// contains; a configuration that does gets no template (see newAuthURL).
var authURLHoles = [3]string{"xOidcAuthserviceState0", "xOidcAuthserviceNonce0", "xOidcAuthserviceChallenge0"}

func newAuthURL(cfg oauth2.Config) authURL {
	a := authURL{cfg: cfg}
	u := a.slow(authURLHoles[0], authURLHoles[1], authURLHoles[2])
	for {
		first, at := -1, len(u)
		for i, h := range authURLHoles {
			if j := strings.Index(u, h); j >= 0 && j < at {
				first, at = i, j
			}
		}
		if first < 0 {
			break
		}
		a.parts = append(a.parts, u[:at])
		a.order = append(a.order, first)
		u = u[at+len(authURLHoles[first]):]
	}
	a.parts = append(a.parts, u)
	if len(a.order) != 3 || a.order[0] == a.order[1] || a.order[1] == a.order[2] || a.order[0] == a.order[2] {
		a.parts, a.order = nil, nil // each hole exactly once, or no template
	}
	return a
}

// url is the authorization URL of one login.
func (a *authURL) url(state, nonce, challenge string) string {
	values := [3]string{state, nonce, challenge}
	if a.parts == nil || !unreserved(state) || !unreserved(nonce) || !unreserved(challenge) {
		return a.slow(state, nonce, challenge)
	}
	n := len(state) + len(nonce) + len(challenge)
	for _, p := range a.parts {
		n += len(p)
	}
	var b strings.Builder
	b.Grow(n)
	for i, v := range a.order {
		b.WriteString(a.parts[i])
		b.WriteString(values[v])
	}
	b.WriteString(a.parts[len(a.parts)-1])
	return b.String()
}

// slow is oauth2's AuthCodeURL with PKCE S256 and the nonce.
func (a *authURL) slow(state, nonce, challenge string) string {
	return a.cfg.AuthCodeURL(state, oidc.Nonce(nonce),
		oauth2.SetAuthURLParam("code_challenge", challenge),
		oauth2.SetAuthURLParam("code_challenge_method", "S256"))
}

// unreserved reports whether s is not empty (oauth2 leaves out an empty
// state) and query escaping leaves it as it is.
func unreserved(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !unreservedByte[s[i]] {
			return false
		}
	}
	return true
}

// unreservedByte is RFC 3986's unreserved set as a table (faster than a
// chain of comparisons on random base64url).
var unreservedByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~'
	}
	return t
}()
