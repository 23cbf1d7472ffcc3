package integration

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// masterLayout is the service in oauth2-proxy's place in Kubeflow master
// (deploy/overlays/kubeflow-oauth2-proxy/params): the Dex ID token handed
// upstream, refreshed before it expires, and a renewed cookie delivered
// with a 307 because the mesh passes no Set-Cookie on allow.
func masterLayout(dex *peer.Dex) map[string]string {
	env := kubeflowEnv(dex)
	env["OIDC_SCOPES"] = "profile email groups offline_access"
	env["UPSTREAM_TOKEN"] = "id_token"
	env["AUTH_REQUEST_HEADERS"] = "true"
	env["SESSION_RENEW_REDIRECT"] = "true"
	return env
}

// countingDex is a real Dex with ID tokens of the given lifetime, whose
// issuer is a proxy that counts the service's calls (the browser reaches
// Dex straight through the gateway).
func countingDex(t *testing.T, ttl time.Duration) *faultyDex {
	t.Helper()
	dex := peer.NewDex(t, peer.DexOptions{Groups: "team-a,team-b", IDTokenTTL: ttl})
	p := newFaultProxy(t, dex.Port)
	dex.Issuer = p.URL + "/dex"
	p.Up(t)
	dex.Start()
	return &faultyDex{dex: dex, proxy: p}
}

// redirectCounter is a browser that counts the 307s it follows per
// navigation.
type redirectCounter struct {
	*browser
	mu        sync.Mutex
	renewals  int // 307s in the current navigation
	total     int
	maxPerNav int
}

func newRedirectCounter() *redirectCounter {
	b := &redirectCounter{browser: newBrowser()}
	b.Client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		b.visited = append(b.visited, r.URL)
		if r.Response != nil && r.Response.StatusCode == http.StatusTemporaryRedirect {
			b.mu.Lock()
			b.renewals++
			b.total++
			b.maxPerNav = max(b.maxPerNav, b.renewals)
			b.mu.Unlock()
		}
		if len(via) > 15 {
			return fmt.Errorf("too many redirects (a renewal loop)")
		}
		return nil
	}
	return b
}

// navigate is one navigation, redirects followed; it returns the
// Authorization header the upstream got.
func (b *redirectCounter) navigate(t *testing.T, u string) string {
	t.Helper()
	b.mu.Lock()
	b.renewals = 0
	b.mu.Unlock()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Accept", "text/html")
	resp, err := b.Do(req)
	if err != nil {
		t.Fatalf("navigation to %s: %v", u, err)
	}
	e := readEcho(t, resp)
	if got := e.Headers["kubeflow-userid"]; len(got) != 1 || got[0] != legitUser {
		t.Fatalf("upstream saw kubeflow-userid %q", got)
	}
	auth := strings.Join(e.Headers["authorization"], ",")
	if !strings.HasPrefix(auth, "Bearer ") {
		t.Fatalf("upstream got no ID token: %q", auth)
	}
	// The token handed upstream is never expired (Istio's JWT check would
	// refuse it).
	if exp := int64(payloadClaims(t, strings.TrimPrefix(auth, "Bearer "))["exp"].(float64)); exp <= time.Now().Unix() {
		t.Fatalf("upstream got an ID token that expired %d s ago", time.Now().Unix()-exp)
	}
	return strings.TrimPrefix(auth, "Bearer ")
}

// TestShortLivedIDTokensNoRefreshLoop: with Kubeflow master's layout and
// real Dex ID tokens of 10 s, 30 s, 60 s and 24 h (REFRESH_BEFORE_EXPIRY
// is 60 s), a browser navigating every 300 ms is never sent round in 307s:
// each session refreshes at the provider about once per two thirds of its
// tokens' lifetime, every navigation gets at most one renewal redirect, the
// upstream always gets an unexpired ID token, and once the session is
// logged out every ID token it was handed, refreshed ones included, is
// refused on the bearer path.
func TestShortLivedIDTokensNoRefreshLoop(t *testing.T) {
	for _, c := range []struct {
		ttl, run time.Duration
	}{
		// Each run ends before the login's own token expires, so the
		// replay below also covers a token replaced by a refresh.
		{10 * time.Second, 25 * time.Second},
		{30 * time.Second, 25 * time.Second},
		{60 * time.Second, 50 * time.Second},
		{24 * time.Hour, 8 * time.Second},
	} {
		t.Run(c.ttl.String(), func(t *testing.T) {
			t.Parallel()
			f := countingDex(t, c.ttl)
			svc := peer.StartService(t, masterLayout(f.dex))
			svc.WaitReady(t, 30*time.Second)
			gw := gatewayFor(t, peer.ExtensionProviderLayout, svc, f.dex)

			b := newRedirectCounter()
			start := time.Now()
			resp, err := peer.DexLogin(b.Client, gw+"/x?format=json", legitUser, "12341234")
			if err != nil {
				t.Fatal(err)
			}
			readEcho(t, resp)
			exchanges := f.proxy.Hits("/token") // the login's code exchange
			seen := map[string]bool{}
			navs := 0
			for time.Since(start) < c.run {
				seen[b.navigate(t, gw+"/x?format=json")] = true
				navs++
				time.Sleep(300 * time.Millisecond)
			}
			elapsed := time.Since(start)
			refreshes := f.proxy.Hits("/token") - exchanges
			// Two thirds of the lifetime between refreshes, less a second
			// for the rounding to whole seconds, and one more for the
			// refresh the run may end in.
			interval := c.ttl - c.ttl/3 - time.Second
			want := int(elapsed/interval) + 1
			if c.ttl > time.Hour {
				want = 0
			}
			t.Logf("ID tokens of %s: %d navigations in %s, %d refreshes at Dex (at most %d), %d renewal redirects (at most %d per navigation), %d distinct ID tokens upstream",
				c.ttl, navs, elapsed.Round(time.Second), refreshes, want, b.total, b.maxPerNav, len(seen))
			if refreshes > want {
				t.Errorf("%d refreshes at Dex in %s with %s tokens: want at most %d (a refresh loop)", refreshes, elapsed.Round(time.Second), c.ttl, want)
			}
			if c.ttl < time.Hour && refreshes == 0 {
				t.Errorf("no refresh in %s with %s tokens: the session would have handed an expired token upstream", elapsed.Round(time.Second), c.ttl)
			}
			if b.maxPerNav > 1 {
				t.Errorf("a navigation was redirected %d times for renewal: want at most once", b.maxPerNav)
			}
			if b.total > refreshes {
				t.Errorf("%d renewal redirects for %d refreshes", b.total, refreshes)
			}

			// Every ID token the session was handed upstream, still valid,
			// is accepted on the bearer path while the session lives, and
			// refused once it is logged out.
			bearer := func(tok string) int {
				req, _ := http.NewRequest("GET", gw+"/api/x?format=json", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := noFollowWith(nil).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			valid := []string{}
			for tok := range seen {
				if exp := int64(payloadClaims(t, tok)["exp"].(float64)); exp > time.Now().Unix()+2 {
					valid = append(valid, tok)
				}
			}
			if len(valid) == 0 || (c.ttl < time.Hour && len(valid) < 2) {
				t.Fatalf("%d of %d tokens still valid: the run should end while a replaced token still is", len(valid), len(seen))
			}
			for _, tok := range valid {
				if code := bearer(tok); code != 200 {
					t.Fatalf("a valid ID token of the live session as bearer: %d", code)
				}
			}
			resp, err = noFollowWith(b.Jar).Get(gw + "/authservice/logout")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 302 {
				t.Fatalf("logout: %d", resp.StatusCode)
			}
			for i, tok := range valid {
				if code := bearer(tok); code != 401 {
					t.Errorf("ID token %d of %d handed upstream, replayed after logout: %d, want 401", i+1, len(valid), code)
				}
			}
		})
	}
}

// payloadClaims reads a JWT's claims without verifying it (the tests only
// look at what the service handed on).
func payloadClaims(t *testing.T, raw string) map[string]any {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %.40q", raw)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	var c map[string]any
	if err != nil || json.Unmarshal(b, &c) != nil {
		t.Fatalf("JWT payload unreadable: %v", err)
	}
	return c
}
