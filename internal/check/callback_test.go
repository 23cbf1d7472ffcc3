package check

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A login state is remembered as used only once the provider accepted its
// code: a callback an anonymous client makes with the state it was just
// given — without a code, with a made-up one, with a provider error — is
// refused and leaves nothing behind, so no flood of them can grow the
// replay memory. (A replayed code and state are refused in
// test/integration, with real Dex codes.)
func TestCallbacksThatConsumeNothingAreNotRemembered(t *testing.T) {
	f := newFixture(t, nil)
	pending := func() (state, cookie string) {
		w := f.do("GET", "/notebook/", nil)
		loc, err := url.Parse(w.Header().Get("Location"))
		if err != nil || w.Code != 302 {
			t.Fatalf("no login started: %d %v", w.Code, err)
		}
		state = loc.Query().Get("state")
		for _, c := range w.Result().Cookies() {
			if c.Name == "authservice_state_"+state {
				cookie = c.Name + "=" + c.Value
			}
		}
		if cookie == "" {
			t.Fatal("no login-state cookie")
		}
		return state, cookie
	}
	for _, c := range []struct {
		name, query string
		want        int
	}{
		{"no code", "", 400},
		{"made-up code", "&code=made-up", 401}, // the provider's token endpoint refuses it
		{"oversized code", "&code=" + strings.Repeat("c", 5000), 400},
		{"provider error", "&error=access_denied", 401},
	} {
		t.Run(c.name, func(t *testing.T) {
			state, cookie := pending()
			for i := range 3 { // the same callback again and again
				w := f.do("GET", "/authservice/oidc/callback?state="+state+c.query, map[string]string{"Cookie": cookie})
				if w.Code != c.want {
					t.Fatalf("callback %d: %d, want %d", i, w.Code, c.want)
				}
			}
			if n := f.h.d.Revocations.OnceLen(); n != 0 {
				t.Fatalf("the replay memory holds %d values after callbacks that consumed nothing", n)
			}
		})
	}
}

// Code exchanges in flight are bounded: with a provider whose token
// endpoint hangs, a flood of anonymous callbacks with made-up codes holds
// at most maxExchanges connections to it; the rest are answered 401
// ("Sign-in unavailable", Retry-After) within exchangeWait, not held.
func TestCodeExchangesInFlightAreBounded(t *testing.T) {
	var inflight, peak atomic.Int64
	release := make(chan struct{})
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "authorization_endpoint": srv.URL + "/auth",
				"token_endpoint": srv.URL + "/token", "jwks_uri": srv.URL + "/keys", "id_token_signing_alg_values_supported": []string{"RS256"}})
		case "/token":
			n := inflight.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			<-release
			inflight.Add(-1)
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	f := newFixture(t, map[string]string{"OIDC_PROVIDER": srv.URL, "PROVIDER_TIMEOUT": "30s"})
	const n = maxExchanges + 16
	type pendingLogin struct{ state, cookie string }
	logins := make([]pendingLogin, n)
	for i := range logins {
		w := f.do("GET", "/notebook/", nil)
		loc, _ := url.Parse(w.Header().Get("Location"))
		logins[i].state = loc.Query().Get("state")
		for _, c := range w.Result().Cookies() {
			if c.Name == "authservice_state_"+logins[i].state {
				logins[i].cookie = c.Name + "=" + c.Value
			}
		}
	}
	var wg sync.WaitGroup
	var busy atomic.Int64
	for i := range logins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := f.do("GET", "/authservice/oidc/callback?code=made-up&state="+logins[i].state, map[string]string{"Cookie": logins[i].cookie})
			if w.Code == 401 && w.Header().Get("Retry-After") != "" {
				busy.Add(1)
			}
		}()
	}
	// The ones beyond the bound are answered while the others still hang.
	for deadline := time.Now().Add(10 * time.Second); busy.Load() < n-maxExchanges && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if b := busy.Load(); b != n-maxExchanges {
		t.Fatalf("%d callbacks answered busy while %d exchanges hang, want %d", b, inflight.Load(), n-maxExchanges)
	}
	if p := peak.Load(); p > maxExchanges {
		t.Fatalf("%d code exchanges at the provider at once, bound is %d", p, maxExchanges)
	}
	release <- struct{}{} // let one through, then the rest
	for range maxExchanges - 1 {
		release <- struct{}{}
	}
	wg.Wait()
}
