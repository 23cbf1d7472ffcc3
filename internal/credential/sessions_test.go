package credential

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
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

// revokeCall is one call of Provider.Revoke.
type revokeCall struct {
	token, hint string
	deadline    time.Time
}

// growingProvider refreshes into tokens too large for the cookies, and
// holds every revocation until release is closed (or its context ends).
type growingProvider struct {
	revokes chan revokeCall
	release chan struct{}
}

func (p *growingProvider) Refresh(context.Context, string, string) (*oauth2.Token, error) {
	return &oauth2.Token{AccessToken: strings.Repeat("a", 9000), RefreshToken: "RT-new", Expiry: time.Now().Add(time.Hour)}, nil
}

func (p *growingProvider) Validate(context.Context, string) error { return nil }

func (p *growingProvider) Revoke(ctx context.Context, token, hint string) error {
	d, _ := ctx.Deadline()
	p.revokes <- revokeCall{token: token, hint: hint, deadline: d}
	select {
	case <-p.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A refresh whose result is too large for the cookies ends the session and
// revokes the refresh token it returned, which nothing stores (RFC 7009):
// in the background, bounded by CHECK_PROVIDER_BUDGET, so the answer never
// waits for the provider's revocation endpoint.
func TestDroppedRefreshTokenIsRevoked(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	codec := session.NewCodec([][]byte{[]byte(strings.Repeat("k", 32))}, time.Hour, clock)
	p := &growingProvider{revokes: make(chan revokeCall, maxRevoking+4), release: make(chan struct{})}
	defer close(p.release)
	const budget = 3 * time.Second
	s := NewSessions(SessionOptions{CookieName: "authservice_session", StrictValidation: true, RefreshBeforeExpiry: time.Minute, Budget: budget, MaxCookies: 2},
		codec, p, revocation.New(time.Hour, nil, clock, zap.NewNop()), metrics.New("test"), zap.NewNop(), clock)
	open := func(id string) *Live {
		sealed, err := codec.SealSession("authservice_session", &session.Session{ID: id, Subject: "s", User: "u", Created: now.Unix() - 3600,
			Expires: now.Unix() + 3600, Renewed: now.Unix() - 3600, RefreshToken: "RT-" + id, AccessToken: "AT", TokenExpiry: now.Unix() + 5})
		if err != nil {
			t.Fatal(err)
		}
		l, err := s.Open(sealed)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	_, _, err := s.Renew(context.Background(), open("a"), zap.Skip(), Carry{})
	var tl *TooLargeError
	if !errors.As(err, &tl) || !tl.Refresh {
		t.Fatalf("Renew: %v, want the session ended as too large", err)
	}
	// Renew has returned while the revocation is still held at the
	// provider: it is not on the answer's path.
	c := <-p.revokes
	if c.token != "RT-new" || c.hint != "refresh_token" {
		t.Fatalf("revoked %q (%s), want the refresh token the refresh returned", c.token, c.hint)
	}
	if c.deadline.IsZero() || c.deadline.After(time.Now().Add(budget)) {
		t.Fatalf("the revocation's deadline %v is not within CHECK_PROVIDER_BUDGET", c.deadline)
	}
	// At most maxRevoking at once: the ones past that are not revoked (a
	// log line), never queued without bound.
	for i := range maxRevoking + 2 {
		s.Renew(context.Background(), open(fmt.Sprint("b", i)), zap.Skip(), Carry{})
	}
	for range maxRevoking - 1 {
		select {
		case <-p.revokes:
		case <-time.After(10 * time.Second):
			t.Fatal("fewer revocations than maxRevoking started")
		}
	}
	// Every slot is held by a revocation blocked at the provider: the
	// other three were dropped without a goroutine.
	if n := len(s.revoking); n != maxRevoking {
		t.Fatalf("%d revocations in flight, want %d", n, maxRevoking)
	}
}
