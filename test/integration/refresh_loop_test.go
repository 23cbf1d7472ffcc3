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
	sent := time.Now()
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
	// refuse it). The service handed it on after the request was sent, so
	// a token expired by then was expired when handed on, however long the
	// answer took to come back.
	if exp := expiry(t, strings.TrimPrefix(auth, "Bearer ")); exp <= sent.Unix() {
		t.Fatalf("upstream got an ID token that expired %d s before the request", sent.Unix()-exp)
	}
	return strings.TrimPrefix(auth, "Bearer ")
}

// expiry is a JWT's exp.
func expiry(t *testing.T, tok string) int64 {
	t.Helper()
	exp, ok := payloadClaims(t, tok)["exp"].(float64)
	if !ok {
		t.Fatalf("a JWT without exp: %.40q", tok)
	}
	return int64(exp)
}

// untilRefreshed navigates every 300 ms for at least run and then, with
// ID tokens of ttl shorter than an hour (they are refreshed), until a
// navigation brings a new ID token: a refresh has just replaced the
// previous one, which still has about a third of its lifetime left. It
// returns the ID tokens the upstream got, in the order it got them (the
// last is the session's current one).
func (b *redirectCounter) untilRefreshed(t *testing.T, u string, start time.Time, run, ttl time.Duration) []string {
	t.Helper()
	var toks []string
	for {
		tok := b.navigate(t, u)
		fresh := len(toks) == 0 || tok != toks[len(toks)-1]
		if fresh {
			toks = append(toks, tok)
		}
		if time.Since(start) >= run && (ttl >= time.Hour || (fresh && len(toks) > 1)) {
			return toks
		}
		if ttl < time.Hour && time.Since(start) > run+ttl {
			t.Fatalf("no refresh in the %s after %s with ID tokens of %s", ttl, run, ttl)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// replayAfterLogout replays as bearer tokens the ID tokens a session
// handed upstream (toks, the last its current one): each still unexpired is
// accepted while the session lives, and every one is refused once the
// session is logged out. Whether a token is still valid is judged from its
// own exp at the moment of each replay, so how long the machine takes to
// get there does not matter. It returns how many of the replaced tokens
// (all but the last) and of the current one were refused after the logout
// although still unexpired when the refusal came back: only those show that
// the logout, not the expiry, refused them.
func replayAfterLogout(t *testing.T, gw string, jar http.CookieJar, toks []string) (replaced, current int) {
	t.Helper()
	bearer := func(tok string) (int, bool) {
		req, _ := http.NewRequest("GET", gw+"/api/x?format=json", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := noFollowWith(nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// Unexpired until the answer came back, so when the service
		// judged it (go-oidc refuses a token once now is past exp).
		return resp.StatusCode, time.Now().Before(time.Unix(expiry(t, tok), 0))
	}
	// The replaced tokens first: they expire first.
	var live []int
	for i, tok := range toks {
		if !time.Now().Before(time.Unix(expiry(t, tok), 0)) {
			continue // expired: the bearer path refuses it anyway
		}
		code, valid := bearer(tok)
		if valid && code != 200 {
			t.Fatalf("ID token %d of %d handed upstream (unexpired) as bearer while the session lives: %d, want 200", i+1, len(toks), code)
		}
		if valid {
			live = append(live, i)
		}
	}
	resp, err := noFollowWith(jar).Get(gw + "/authservice/logout")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 302 {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	for _, i := range live {
		code, valid := bearer(toks[i])
		if code != 401 {
			t.Errorf("ID token %d of %d handed upstream, replayed after logout: %d, want 401", i+1, len(toks), code)
		}
		switch {
		case !valid:
		case i < len(toks)-1:
			replaced++
		default:
			current++
		}
	}
	return replaced, current
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
		// Each run lasts at least run and, with refreshes, ends at the
		// first refresh after it (at 24 s, 20 s and 40 s): the replay
		// below then has a replaced token with a third of its lifetime
		// left.
		{10 * time.Second, 20 * time.Second},
		{30 * time.Second, 15 * time.Second},
		{60 * time.Second, 35 * time.Second},
		{24 * time.Hour, 8 * time.Second},
	} {
		t.Run(c.ttl.String(), func(t *testing.T) {
			t.Parallel()
			f := countingDex(t, c.ttl)
			svc := peer.StartService(t, masterLayout(f.dex))
			svc.WaitReady(t, 30*time.Second)
			gw := gatewayFor(t, peer.ExtensionProviderLayout, svc, f.dex)
			refreshing := c.ttl < time.Hour

			b := newRedirectCounter()
			login := func() time.Time {
				start := time.Now()
				resp, err := peer.DexLogin(b.Client, gw+"/x?format=json", legitUser, "12341234")
				if err != nil {
					t.Fatal(err)
				}
				readEcho(t, resp)
				return start
			}
			start := login()
			exchanges := f.proxy.Hits("/token") // the login's code exchange
			toks := b.untilRefreshed(t, gw+"/x?format=json", start, c.run, c.ttl)
			elapsed := time.Since(start)
			refreshes := f.proxy.Hits("/token") - exchanges
			// Two thirds of the lifetime between refreshes, less a second
			// for the rounding to whole seconds, and one more for the
			// refresh the run may end in.
			interval := c.ttl - c.ttl/3 - time.Second
			want := int(elapsed/interval) + 1
			if !refreshing {
				want = 0
			}
			t.Logf("ID tokens of %s: run of %s, %d refreshes at Dex (at most %d), %d renewal redirects (at most %d per navigation), %d distinct ID tokens upstream",
				c.ttl, elapsed.Round(time.Second), refreshes, want, b.total, b.maxPerNav, len(toks))
			if refreshes > want {
				t.Errorf("%d refreshes at Dex in %s with %s tokens: want at most %d (a refresh loop)", refreshes, elapsed.Round(time.Second), c.ttl, want)
			}
			if refreshing && refreshes == 0 {
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
			// refused once it is logged out; among them a token a refresh
			// replaced. The run ended just after a refresh, so the replaced
			// token has a third of its lifetime left for the replay; should
			// the machine stall that long before the refusal comes back,
			// the replay proved nothing about it and a new session is
			// logged in and replayed.
			for attempt := 1; ; attempt++ {
				replaced, current := replayAfterLogout(t, gw, b.Jar, toks)
				t.Logf("replay %d: %d replaced and %d current ID tokens refused after the logout while unexpired", attempt, replaced, current)
				if t.Failed() || (current == 1 && (replaced > 0 || !refreshing)) {
					break
				}
				if attempt == 3 {
					t.Fatalf("in %d sessions, no replaced ID token was still unexpired when its replay after the logout was answered: the logout's refusal of replaced tokens is unproven", attempt)
				}
				toks = b.untilRefreshed(t, gw+"/x?format=json", login(), 0, c.ttl)
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
