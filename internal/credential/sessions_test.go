package credential

import (
	"encoding/base64"
	"strconv"
	"testing"

	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

func fakeJWT(exp int64) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(`{"exp":`+strconv.FormatInt(exp, 10)+`}`)) + ".sig"
}

func TestTokenDeadline(t *testing.T) {
	f := &Sessions{o: SessionOptions{UpstreamIDToken: true}}
	g := &Sessions{}
	for _, c := range []struct {
		name          string
		h             *Sessions
		at, it, want  int64
		idTokenStored bool
	}{
		{"ID token first, handed upstream", f, 200, 100, 100, true},
		{"access token first", f, 100, 200, 100, true},
		{"no access token expiry", f, 0, 100, 100, true},
		{"ID token not stored", f, 200, 100, 200, false},
		{"ID token not handed upstream", g, 200, 100, 200, true},
	} {
		s := &session.Session{TokenExpiry: c.at, IDTokenExpiry: c.it}
		if c.idTokenStored {
			s.IDToken = "x.y.z"
		}
		if got := c.h.deadline(s); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	if got := jwtExpiry(fakeJWT(1700000000)); got != 1700000000 {
		t.Errorf("jwtExpiry %d", got)
	}
	for _, bad := range []string{"", "a.b", "a.!!!.c", "a." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":"soon"}`)) + ".c"} {
		if got := jwtExpiry(bad); got != 0 {
			t.Errorf("jwtExpiry(%q) = %d", bad, got)
		}
	}
}
