package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// anonymousPair is what anyone can do without an account: start a login
// (one navigation mints a sealed login state) and bring its state back to
// the callback, without a code or with a made-up one. It returns the
// callback's status.
func anonymousPair(c *http.Client, gw string, code string) (int, error) {
	state, cookie, err := anonymousStart(c, gw)
	if err != nil {
		return 0, err
	}
	return anonymousCallback(c, gw, state, cookie, code)
}

// anonymousStart starts a login and returns its state and state cookie.
func anonymousStart(c *http.Client, gw string) (state, cookie string, err error) {
	req, _ := http.NewRequest("GET", gw+"/notebook/", nil)
	req.Header.Set("Accept", "text/html")
	resp, err := c.Do(req)
	if err != nil {
		return "", "", err
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != 302 {
		return "", "", fmt.Errorf("no login started: %d", resp.StatusCode)
	}
	state = loc.Query().Get("state")
	for _, ck := range resp.Cookies() {
		if ck.Name == "authservice_state_"+state {
			cookie = ck.Name + "=" + ck.Value
		}
	}
	return state, cookie, nil
}

// anonymousCallback brings a state and its cookie back to the callback.
func anonymousCallback(c *http.Client, gw, state, cookie, code string) (int, error) {
	q := "state=" + state
	if code != "" {
		q += "&code=" + code
	}
	req, _ := http.NewRequest("GET", gw+callbackPath+"?"+q, nil)
	req.Header.Set("Cookie", cookie)
	req.Header.Set("Accept", "text/html")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestAnonymousCallbacksLeaveNothingBehind floods the gateway with
// anonymous login starts and callbacks carrying their states (without a
// code and with made-up codes, which Dex refuses), while real users log
// in. Afterwards the replay memory holds, here and in Redis, only the
// states of the real logins (which the provider accepted); the refusals
// were logged a few lines a second, not once each; a real callback
// replayed with its own state cookie is still refused.
func TestAnonymousCallbacksLeaveNothingBehind(t *testing.T) {
	os.Remove(filepath.Join(peer.ArtifactsDir(t), "service.log")) // from an earlier run
	redisURL := peer.StartRedis(t)
	k := peer.StartKubeflow(t, sentinelGateway, map[string]string{"REDIS_URL": redisURL, "LOG_LEVEL": "info"})
	opt, _ := redis.ParseURL(redisURL)
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	onceKeys := func() int {
		keys, err := rdb.Keys(context.Background(), "oidc-authservice:once:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		return len(keys)
	}

	const perKind = 1500
	start := time.Now()
	var wg sync.WaitGroup
	var refused, other atomic.Int64
	codes := make(chan string, 2*perKind)
	for i := range perKind {
		codes <- ""
		codes <- fmt.Sprintf("made-up-%d", i)
	}
	close(codes)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := noFollowWith(nil)
			for code := range codes {
				st, err := anonymousPair(c, k.Gateway, code)
				switch {
				case err != nil:
					t.Error(err)
					return
				case st == 400 || st == 401:
					refused.Add(1)
				default:
					other.Add(1)
				}
			}
		}()
	}
	// Real users log in during the flood.
	s := &setup{dex: k.Dex, svc: k.Svc, gateway: k.Gateway}
	for i := range 3 {
		b := newBrowser()
		if e := s.login(t, b, fmt.Sprintf("/during-flood-%d?format=json", i)); e.Path != fmt.Sprintf("/during-flood-%d", i) {
			t.Fatalf("real login %d during the flood landed on %s", i, e.Path)
		}
	}
	wg.Wait()
	took := time.Since(start)
	t.Logf("%d anonymous pairs (half without a code, half with a made-up one) in %s: %d refused (400/401), %d other",
		2*perKind, took.Round(time.Millisecond), refused.Load(), other.Load())
	if refused.Load() != 2*perKind {
		t.Errorf("%d of %d anonymous callbacks refused", refused.Load(), 2*perKind)
	}
	if n := onceKeys(); n != 3 {
		t.Errorf("Redis holds %d one-time keys after the flood and 3 real logins: want 3 (the logins' states)", n)
	}
	if n := scrape(t, k.Svc)["oidc_authservice_replay_memory_entries"]; n != 3 {
		t.Errorf("the replay memory holds %v values: want 3", n)
	}

	// A real callback replayed with its own state cookie (as if both had
	// been stolen) is refused, and leaves no second key.
	b := newBrowser()
	var cb *url.URL
	b.Client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if r.URL.Path == callbackPath {
			cb = r.URL
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := peer.DexLogin(b.Client, k.Gateway+"/replayed?format=json", legitUser, "12341234")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cb == nil {
		t.Fatal("Dex did not redirect to the callback")
	}
	gw, _ := url.Parse(k.Gateway)
	var stateCookie string
	for _, c := range b.Jar.Cookies(gw) {
		if strings.HasPrefix(c.Name, "authservice_state_") {
			stateCookie = c.Name + "=" + c.Value
		}
	}
	for i, want := range []int{302, 400, 400} {
		req, _ := http.NewRequest("GET", k.Gateway+cb.RequestURI(), nil)
		req.Header.Set("Cookie", stateCookie)
		a := (&hostileEnv{}).do(t, noFollowWith(nil), req)
		if a.status != want || (want != 302 && a.sessionIssued()) {
			t.Fatalf("callback %d with its state cookie: %s, want %d", i+1, a, want)
		}
	}
	if n := onceKeys(); n != 4 {
		t.Errorf("Redis holds %d one-time keys: want 4", n)
	}

	// The refusals were logged a few lines a second, the rest counted.
	log, _ := os.ReadFile(filepath.Join(peer.ArtifactsDir(t), "service.log"))
	rejected, suppressed := 0, 0
	for _, line := range strings.Split(string(log), "\n") {
		switch {
		case strings.Contains(line, `"callback rejected`), strings.Contains(line, `"login failed: code rejected`):
			rejected++
		case strings.Contains(line, `"log lines suppressed`):
			suppressed++
		}
	}
	seconds := int(took/time.Second) + 2
	t.Logf("refusal lines logged: %d for %d refusals (%d summary lines)", rejected, 2*perKind, suppressed)
	if rejected > 2*5*seconds+10 {
		t.Errorf("%d refusal lines for %d refusals in %s: want at most 5 a second per message", rejected, 2*perKind, took.Round(time.Second))
	}
	if suppressed == 0 {
		t.Error("no line says how many refusal lines were left out")
	}
}
