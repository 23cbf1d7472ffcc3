package credential_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/cache"
	"github.com/oidc-authservice/oidc-authservice/internal/credential"
	"github.com/oidc-authservice/oidc-authservice/internal/identity"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
)

// userinfoPeer is an OpenID provider of discovery and userinfo only, with
// a table of valid access tokens, as GitLab answers for its OAuth tokens.
type userinfoPeer struct {
	url      string
	calls    atomic.Int32
	inFlight atomic.Int32
	maxSeen  atomic.Int32
	mu       sync.Mutex
	tokens   map[string]map[string]any
	status   int           // non-zero: every userinfo answer has it
	delay    chan struct{} // non-nil: userinfo waits for it
}

func startUserinfo(t *testing.T) *userinfoPeer {
	p := &userinfoPeer{tokens: map[string]map[string]any{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]any{"issuer": p.url, "authorization_endpoint": p.url + "/auth",
				"token_endpoint": p.url + "/token", "jwks_uri": p.url + "/keys", "userinfo_endpoint": p.url + "/userinfo",
				"id_token_signing_alg_values_supported": []string{"RS256"}})
		case "/userinfo":
			p.calls.Add(1)
			n := p.inFlight.Add(1)
			defer p.inFlight.Add(-1)
			for m := p.maxSeen.Load(); n > m && !p.maxSeen.CompareAndSwap(m, n); m = p.maxSeen.Load() {
			}
			p.mu.Lock()
			delay, status := p.delay, p.status
			claims := p.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
			p.mu.Unlock()
			if delay != nil {
				<-delay
			}
			switch {
			case status != 0:
				w.WriteHeader(status)
			case claims == nil:
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
				w.WriteHeader(http.StatusUnauthorized)
			default:
				w.Header().Set("Content-Type", "application/json")
				json.NewEncoder(w).Encode(claims)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

func (p *userinfoPeer) grant(token, sub, email string, groups ...string) {
	p.mu.Lock()
	p.tokens[token] = map[string]any{"sub": sub, "email": email, "email_verified": true, "groups": groups}
	p.mu.Unlock()
}

func (p *userinfoPeer) revoke(token string) { p.mu.Lock(); delete(p.tokens, token); p.mu.Unlock() }

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time         { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration)    { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock() *clock                  { return &clock{t: time.Unix(1_800_000_000, 0)} }
func (p *userinfoPeer) setStatus(s int) { p.mu.Lock(); p.status = s; p.mu.Unlock() }
func (p *userinfoPeer) hold() func() {
	ch := make(chan struct{})
	p.mu.Lock()
	p.delay = ch
	p.mu.Unlock()
	return func() { close(ch) }
}
func (p *userinfoPeer) release(f func()) { p.mu.Lock(); p.delay = nil; p.mu.Unlock(); f() }

func newOpaque(t *testing.T, p *userinfoPeer, c *clock, o credential.OpaqueOptions, revoked *revocation.List) *credential.Opaque {
	t.Helper()
	prov, err := provider.New(provider.Options{Issuer: p.url, ClientID: "kubeflow", ClientSecret: "x", RedirectURL: "/cb", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := prov.Discover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if o.TTL == 0 {
		o.TTL = time.Minute
	}
	if o.Budget == 0 {
		o.Budget = 3 * time.Second
	}
	return credential.NewOpaque(o, prov, &identity.Mapper{UserClaim: "email", GroupsClaim: "groups"}, revoked, nil, zap.NewNop(), c.now)
}

const gitlabToken = "4f1d0c0b6a0e2d6b1f3a9c8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c"

func TestOpaqueTokenAskedOnceAndCached(t *testing.T) {
	p := startUserinfo(t)
	p.grant(gitlabToken, "4217", "alice@example.com", "acme", "acme/ml")
	c := newClock()
	o := newOpaque(t, p, c, credential.OpaqueOptions{Rate: 10, Concurrency: 4, TTL: time.Minute, KeepClaims: true}, nil)
	ctx := context.Background()
	for range 5 {
		tok, err := o.Verify(ctx, gitlabToken, zap.Skip())
		if err != nil {
			t.Fatal(err)
		}
		if tok.User != "alice@example.com" || strings.Join(tok.Groups, ",") != "acme,acme/ml" || tok.Subject != "4217" || tok.Claims["sub"] != "4217" {
			t.Fatalf("%+v", &tok.Principal)
		}
	}
	if n := p.calls.Load(); n != 1 {
		t.Fatalf("%d userinfo calls for one token used five times", n)
	}
	// Revoked at the provider: still the cached answer within the TTL,
	// refused once it has passed.
	p.revoke(gitlabToken)
	c.add(59 * time.Second)
	if _, err := o.Verify(ctx, gitlabToken, zap.Skip()); err != nil {
		t.Fatalf("within the TTL: %v", err)
	}
	c.add(2 * time.Second)
	if _, err := o.Verify(ctx, gitlabToken, zap.Skip()); !errors.Is(err, authn.ErrInvalidToken) {
		t.Fatalf("a token revoked at the provider still works after the TTL: %v", err)
	}
	if n := p.calls.Load(); n != 2 {
		t.Fatalf("%d calls, want 2", n)
	}
	// The refusal is cached too.
	for range 5 {
		o.Verify(ctx, gitlabToken, zap.Skip())
	}
	if n := p.calls.Load(); n != 2 {
		t.Fatalf("a refused token was asked about again: %d calls", n)
	}
}

func TestOpaqueTokenProviderDownCachedBriefly(t *testing.T) {
	p := startUserinfo(t)
	p.grant(gitlabToken, "4217", "alice@example.com")
	p.setStatus(http.StatusBadGateway)
	c := newClock()
	o := newOpaque(t, p, c, credential.OpaqueOptions{Rate: 10, Concurrency: 4, TTL: time.Minute}, nil)
	for range 3 {
		if _, err := o.Verify(context.Background(), gitlabToken, zap.Skip()); !errors.Is(err, authn.ErrInvalidToken) {
			t.Fatalf("provider down: %v", err)
		}
	}
	if p.calls.Load() != 1 {
		t.Fatalf("%d calls", p.calls.Load())
	}
	p.setStatus(0)
	c.add(6 * time.Second)
	if _, err := o.Verify(context.Background(), gitlabToken, zap.Skip()); err != nil {
		t.Fatalf("the provider is back: %v", err)
	}
}

// TestOpaqueTokenFloodBounded: invented tokens, all different, cost at most
// the rate's worth of userinfo calls; the rest are refused at once, and a
// token seen before keeps working.
func TestOpaqueTokenFloodBounded(t *testing.T) {
	p := startUserinfo(t)
	p.grant(gitlabToken, "4217", "alice@example.com")
	c := newClock()
	o := newOpaque(t, p, c, credential.OpaqueOptions{Rate: 5, Concurrency: 4}, nil)
	ctx := context.Background()
	if _, err := o.Verify(ctx, gitlabToken, zap.Skip()); err != nil {
		t.Fatal(err)
	}
	limited := 0
	for i := range 500 {
		_, err := o.Verify(ctx, fmt.Sprintf("invented-token-%04d-%s", i, strings.Repeat("x", 30)), zap.Skip())
		if errors.Is(err, credential.ErrLookupLimited) {
			limited++
		} else if !errors.Is(err, authn.ErrInvalidToken) {
			t.Fatalf("token %d: %v", i, err)
		}
	}
	// The bucket held 5; the legitimate token took one.
	if n := p.calls.Load(); n != 5 || limited != 496 {
		t.Fatalf("%d userinfo calls, %d refused at once; want 5 and 496", n, limited)
	}
	if _, err := o.Verify(ctx, gitlabToken, zap.Skip()); err != nil {
		t.Fatalf("a known token during the flood: %v", err)
	}
	// A second later the bucket has refilled by the rate.
	c.add(time.Second)
	for i := range 20 {
		o.Verify(ctx, fmt.Sprintf("second-wave-%04d-%s", i, strings.Repeat("y", 30)), zap.Skip())
	}
	if n := p.calls.Load(); n != 10 {
		t.Fatalf("%d calls after a second more, want 10", n)
	}
}

func TestOpaqueTokenConcurrencyBounded(t *testing.T) {
	p := startUserinfo(t)
	c := newClock()
	o := newOpaque(t, p, c, credential.OpaqueOptions{Rate: 1000, Concurrency: 2}, nil)
	release := p.hold()
	var wg sync.WaitGroup
	var limited atomic.Int32
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o.Verify(context.Background(), fmt.Sprintf("slow-token-%02d-%s", i, strings.Repeat("z", 30)), zap.Skip())
		}()
	}
	for p.inFlight.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	for i := range 20 {
		if _, err := o.Verify(context.Background(), fmt.Sprintf("more-token-%02d-%s", i, strings.Repeat("z", 30)), zap.Skip()); errors.Is(err, credential.ErrLookupLimited) {
			limited.Add(1)
		}
	}
	waited := time.Since(start)
	p.release(release)
	wg.Wait()
	if limited.Load() != 20 || p.maxSeen.Load() != 2 {
		t.Fatalf("%d of 20 refused at once, at most %d lookups in flight; want 20 and 2", limited.Load(), p.maxSeen.Load())
	}
	t.Logf("20 refusals while 2 lookups were held took %v in all", waited)
}

func TestOpaqueTokenSharedLookup(t *testing.T) {
	p := startUserinfo(t)
	p.grant(gitlabToken, "4217", "alice@example.com")
	o := newOpaque(t, p, newClock(), credential.OpaqueOptions{Rate: 1, Concurrency: 1}, nil)
	release := p.hold()
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := o.Verify(context.Background(), gitlabToken, zap.Skip()); err == nil {
				ok.Add(1)
			}
		}()
	}
	for p.inFlight.Load() < 1 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	p.release(release)
	wg.Wait()
	if p.calls.Load() != 1 || ok.Load() != 30 {
		t.Fatalf("%d calls, %d accepted; want one call for all 30", p.calls.Load(), ok.Load())
	}
}

func TestOpaqueTokenShape(t *testing.T) {
	p := startUserinfo(t)
	o := newOpaque(t, p, newClock(), credential.OpaqueOptions{Rate: 100, Concurrency: 4}, nil)
	for _, v := range []string{"short", strings.Repeat("a", credential.MaxOpaqueToken+1), "has space in it", "ctl\x01character!", "quote\"token\"here", "=leading-padding"} {
		if _, err := o.Verify(context.Background(), v, zap.Skip()); !errors.Is(err, credential.ErrNotOpaqueToken) {
			t.Errorf("%.40q: %v", v, err)
		}
	}
	if p.calls.Load() != 0 {
		t.Fatalf("%d values that cannot be tokens went to the provider", p.calls.Load())
	}
}

// TestOpaqueTokenAfterBackchannelLogout: a back-channel logout that names
// the user makes a cached answer be asked for again.
func TestOpaqueTokenAfterBackchannelLogout(t *testing.T) {
	p := startUserinfo(t)
	p.grant(gitlabToken, "4217", "alice@example.com")
	c := newClock()
	list := revocation.New(24*time.Hour, nil, c.now, zap.NewNop())
	o := newOpaque(t, p, c, credential.OpaqueOptions{Rate: 10, Concurrency: 4}, list)
	ctx := context.Background()
	if _, err := o.Verify(ctx, gitlabToken, zap.Skip()); err != nil {
		t.Fatal(err)
	}
	p.revoke(gitlabToken) // the provider ended the user's grants
	c.add(time.Second)
	list.Revoke(ctx, revocation.Subject, "4217")
	if _, err := o.Verify(ctx, gitlabToken, zap.Skip()); !errors.Is(err, authn.ErrInvalidToken) {
		t.Fatalf("after a back-channel logout of the subject: %v", err)
	}
	if p.calls.Load() != 2 {
		t.Fatalf("%d calls: the cached answer was used", p.calls.Load())
	}
}

// TestOpaqueTokenOfALoggedOutSession: a token the service obtained for a
// session that logged out (the revocation list's entry by digest) is
// refused at once, cached or not, whatever the provider still says.
func TestOpaqueTokenOfALoggedOutSession(t *testing.T) {
	p := startUserinfo(t)
	p.grant(gitlabToken, "4217", "alice@example.com")
	c := newClock()
	list := revocation.New(24*time.Hour, nil, c.now, zap.NewNop())
	o := newOpaque(t, p, c, credential.OpaqueOptions{Rate: 10, Concurrency: 4}, list)
	ctx := context.Background()
	if _, err := o.Verify(ctx, gitlabToken, zap.Skip()); err != nil {
		t.Fatal(err)
	}
	list.RevokeToken(ctx, cache.KeyOf(gitlabToken), c.now().Add(time.Hour).Unix())
	for range 2 {
		if _, err := o.Verify(ctx, gitlabToken, zap.Skip()); !errors.Is(err, credential.ErrTokenRevoked) {
			t.Fatalf("the token of a logged-out session: %v", err)
		}
	}
	// A token revoked before it was ever seen: asked, then refused.
	const other = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	p.grant(other, "4217", "alice@example.com")
	list.RevokeToken(ctx, cache.KeyOf(other), c.now().Add(time.Hour).Unix())
	if _, err := o.Verify(ctx, other, zap.Skip()); !errors.Is(err, credential.ErrTokenRevoked) {
		t.Fatalf("a revoked token seen for the first time: %v", err)
	}
}
