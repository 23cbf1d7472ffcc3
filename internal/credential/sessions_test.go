package credential

import (
	"encoding/base64"
	"strconv"
	"testing"
	"time"

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

// The refresh window adapts to the tokens' lifetime: REFRESH_BEFORE_EXPIRY
// before the deadline, but never before two thirds of the lifetime (a
// third of it rounded up to whole seconds before the deadline), and
// never within a second of obtaining them, so tokens that live no longer
// than the window are not refreshed on every request.
func TestRefreshAt(t *testing.T) {
	s := &Sessions{o: SessionOptions{RefreshBeforeExpiry: 60 * time.Second}}
	const t0 = 1_700_000_000
	for _, c := range []struct {
		name          string
		obtained, exp int64
		want          int64
	}{
		{"24 h tokens: 60 s before", t0, t0 + 86400, t0 + 86400 - 60},
		{"60 s tokens: after 40 s", t0, t0 + 60, t0 + 40},
		{"30 s tokens: after 20 s", t0, t0 + 30, t0 + 20},
		{"10 s tokens: after 6 s", t0, t0 + 10, t0 + 6},
		{"2 s tokens: after 1 s", t0, t0 + 2, t0 + 1},
		{"tokens expired on arrival: not within the second", t0, t0 - 5, t0 + 1},
	} {
		sess := &session.Session{Created: t0 - 3600, Renewed: c.obtained, TokenExpiry: c.exp, RefreshToken: "r"}
		if got := s.refreshAt(sess, s.deadline(sess)); got != c.want {
			t.Errorf("%s: refresh at +%d s, want +%d s", c.name, got-t0, c.want-t0)
		}
	}
	// Sessions sealed before Renewed was kept count from their creation.
	sess := &session.Session{Created: t0, TokenExpiry: t0 + 30, RefreshToken: "r"}
	if got := s.refreshAt(sess, s.deadline(sess)); got != t0+20 {
		t.Errorf("no Renewed: refresh at +%d s, want +20 s", got-t0)
	}
}
