package session

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
)

// LoginState is what one pending login keeps in its own cookie, named after
// its state value, so that logins in several tabs do not overwrite each
// other.
type LoginState struct {
	State    string `json:"s"` // repeated inside, so a value cannot be moved to another name
	Verifier string `json:"v"` // PKCE code verifier
	Nonce    string `json:"n"`
	URL      string `json:"u"` // the full original URL: scheme, host, path, query
	Created  int64  `json:"c"` // unix seconds
	// Forward: the login started at the forward-auth start endpoint (the
	// nginx recipes), so the session's answers travel through a proxy that
	// reads them into a small buffer (FORWARD_AUTH_ANSWER_MAX_BYTES).
	Forward bool `json:"f,omitempty"`
}

// NewLoginState draws the state, nonce and PKCE verifier from random.
func NewLoginState(random io.Reader, originalURL string, now int64) (*LoginState, error) {
	var b [16 + 16 + 32]byte
	if _, err := io.ReadFull(random, b[:]); err != nil {
		return nil, err
	}
	enc := base64.RawURLEncoding
	return &LoginState{
		State:    enc.EncodeToString(b[:16]),
		Nonce:    enc.EncodeToString(b[16:32]),
		Verifier: enc.EncodeToString(b[32:]),
		URL:      originalURL,
		Created:  now,
	}, nil
}

// Challenge is the PKCE S256 challenge of the verifier.
func (l *LoginState) Challenge() string {
	sum := sha256.Sum256([]byte(l.Verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// ValidState reports whether s has the shape of a state this service
// issues (22 characters of unpadded base64url), so that a cookie name is
// only ever built from such a value.
func ValidState(s string) bool {
	if len(s) != 22 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
