package check

import (
	"context"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// providerTokens stands in for the verification of the login provider's
// ID tokens (go-oidc's, exercised with real Dex tokens in
// test/integration): each known token maps to what its claims say.
type providerTokens struct {
	iss    string
	claims map[string]authn.Identity
}

func (p *providerTokens) Authenticate(_ context.Context, raw string) (*authn.Identity, error) {
	id, ok := p.claims[raw]
	if !ok {
		return nil, authn.ErrInvalidToken
	}
	id.Issuer = p.iss
	return &id, nil
}

// A token of the login provider obtained for a session — it carries the
// login's nonce, or is one the session holds — is refused on the bearer
// path once that session is logged out, also when it was verified (and
// cached) before; tokens of other logins keep working. A back-channel
// logout by sid or by subject reaches the bearer path the same way.
func TestLogoutEndsTheSessionsTokensOnTheBearerPath(t *testing.T) {
	p := &providerTokens{claims: map[string]authn.Identity{}}
	f := newFixtureWith(t, map[string]string{"UPSTREAM_TOKEN": "id_token"}, p)
	p.iss = f.s.Provider.Issuer
	now, exp := f.now, f.now.Add(time.Hour)
	id := func(nonce, sid string, iat time.Time) authn.Identity {
		return authn.Identity{Username: "u@example.com", Subject: "sub-1", Nonce: nonce, SID: sid, IssuedAt: iat, Expiry: exp}
	}
	// The login's ID token (handed upstream), a refreshed one carrying the
	// nonce (Dex), a refreshed one without it (the session holds it), and
	// a token of another login of the same user (oidc-authservice token).
	loginTok, refreshedTok, bareTok, otherTok := fakeJWT(exp.Unix())+"1", fakeJWT(exp.Unix())+"2", fakeJWT(exp.Unix())+"3", fakeJWT(exp.Unix())+"4"
	p.claims[loginTok] = id("nonce-A", "", now)
	p.claims[refreshedTok] = id("nonce-A", "", now)
	p.claims[bareTok] = id("", "", now)
	p.claims[otherTok] = id("nonce-B", "", now)
	sess := &session.Session{ID: session.IDFromNonce("nonce-A"), Subject: "sub-1", User: "u@example.com", Created: now.Unix(),
		Expires: exp.Unix(), IDToken: bareTok, IDTokenExpiry: exp.Unix()}
	cookie := "authservice_session=" + f.seal(t, sess)

	bearer := func(tok string) int {
		return f.do("GET", "/api/x", map[string]string{"Authorization": "Bearer " + tok}).Code
	}
	for _, tok := range []string{loginTok, refreshedTok, bareTok, otherTok} {
		if c := bearer(tok); c != 200 {
			t.Fatalf("before logout: %d", c)
		}
	}
	w := f.do("GET", "/x", map[string]string{"Cookie": cookie})
	if w.Code != 200 || w.Header().Get("Authorization") != "Bearer "+bareTok {
		t.Fatalf("session: %d, upstream Authorization %q", w.Code, w.Header().Get("Authorization"))
	}
	if w := f.do("GET", "/authservice/logout", map[string]string{"Cookie": cookie}); w.Code != 302 {
		t.Fatalf("logout: %d", w.Code)
	}
	for name, tok := range map[string]string{"login's token": loginTok, "refreshed token with the nonce": refreshedTok,
		"the session's token without a nonce": bareTok} {
		if c := bearer(tok); c != 401 {
			t.Errorf("%s after logout: %d, want 401", name, c)
		}
	}
	if c := bearer(otherTok); c != 200 {
		t.Errorf("another login's token after this logout: %d, want 200", c)
	}

	// Back-channel logout: by sid, and by subject for tokens issued before.
	bySID, before, after := fakeJWT(exp.Unix())+"5", fakeJWT(exp.Unix())+"6", fakeJWT(exp.Unix())+"7"
	p.claims[bySID] = id("nonce-C", "provider-session", now)
	p.claims[before] = authn.Identity{Username: "v@example.com", Subject: "sub-2", IssuedAt: now.Add(-time.Minute), Expiry: exp}
	p.claims[after] = authn.Identity{Username: "v@example.com", Subject: "sub-2", IssuedAt: now.Add(time.Second), Expiry: exp}
	for _, tok := range []string{bySID, before} {
		if c := bearer(tok); c != 200 {
			t.Fatalf("before back-channel logout: %d", c)
		}
	}
	f.h.d.Revocations.Revoke(context.Background(), revocation.SID, "provider-session")
	f.h.d.Revocations.Revoke(context.Background(), revocation.Subject, "sub-2")
	if c := bearer(bySID); c != 401 {
		t.Errorf("token of a provider session ended by back-channel logout: %d, want 401", c)
	}
	if c := bearer(before); c != 401 {
		t.Errorf("token issued before a back-channel logout of its subject: %d, want 401", c)
	}
	if c := bearer(after); c != 200 {
		t.Errorf("token issued after a back-channel logout of its subject: %d, want 200", c)
	}
}

// A provider token issued longer ago than the revocation list remembers
// logouts is refused: nothing could tell whether a logout ended it.
func TestProviderTokenOlderThanTheRevocationMemory(t *testing.T) {
	p := &providerTokens{claims: map[string]authn.Identity{}}
	f := newFixtureWith(t, nil, p)
	p.iss = f.s.Provider.Issuer
	ttl := f.h.d.Revocations.TTL()
	old, fresh := fakeJWT(0)+"o", fakeJWT(0)+"f"
	p.claims[old] = authn.Identity{Username: "u@example.com", Subject: "s", IssuedAt: f.now.Add(-ttl - time.Second), Expiry: f.now.Add(time.Hour)}
	p.claims[fresh] = authn.Identity{Username: "u@example.com", Subject: "s", IssuedAt: f.now.Add(-ttl + time.Minute), Expiry: f.now.Add(time.Hour)}
	if w := f.do("GET", "/api/x", map[string]string{"Authorization": "Bearer " + old}); w.Code != 401 {
		t.Errorf("token issued %s ago: %d, want 401", ttl+time.Second, w.Code)
	}
	if w := f.do("GET", "/api/x", map[string]string{"Authorization": "Bearer " + fresh}); w.Code != 200 {
		t.Errorf("token issued within the retention: %d, want 200", w.Code)
	}
}
