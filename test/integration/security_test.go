package integration

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// The security issue's findings, each through the Envoy-faithful gateway
// with a real Dex: what an attacker tried, and what must happen instead.

// A bearer JWT is never turned into a cookie session: no Set-Cookie, no
// idle timeout, no logout that "ends" it while it keeps working.
func TestBearerTokenIsNotASession(t *testing.T) {
	s := newSetup(t, sentinelGateway, map[string]string{"SESSION_IDLE_TIMEOUT": "1s"})
	tok := dexIDToken(t, s.dex)
	get := func() *answer {
		req, _ := http.NewRequest("GET", s.gateway+"/pipeline/apis/v2beta1/runs?format=json", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := noFollowWith(nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return toAnswer(resp)
	}
	a := get()
	if e := a.upstreamEcho(); e == nil || len(e.Headers["kubeflow-userid"]) != 1 || e.Headers["kubeflow-userid"][0] != "user@example.com" {
		t.Fatalf("bearer token: %s", a)
	}
	if sc := a.header.Values("Set-Cookie"); len(sc) != 0 {
		t.Fatalf("a bearer-token request got cookies: %v", sc)
	}
	// Past the idle timeout since the token was first seen: still the
	// token's own validity that counts.
	time.Sleep(2500 * time.Millisecond)
	if a := get(); a.upstreamEcho() == nil {
		t.Fatalf("bearer token after SESSION_IDLE_TIMEOUT: %s", a)
	}
	// Logout with the token: refused, nothing claims to be ended.
	req, _ := http.NewRequest("POST", s.gateway+"/authservice/logout", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("logout with a bearer JWT: %d, want 401 (it is not a session)", resp.StatusCode)
	}
}

// Rules, skip paths and API prefixes see one canonical path through the
// gateway, whatever the client's spelling.
func TestRulesSeeCanonicalPathsThroughTheGateway(t *testing.T) {
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(rules, []byte("rules:\n- name: admins\n  pathPrefix: /pipeline/admin/\n  allow: {groups: [admins]}\n"), 0o600)
	s := newSetup(t, sentinelGateway, map[string]string{"AUTHORIZATION_RULES_FILE": rules, "SKIP_AUTH_URLS": "/dex,/public"})
	b := newBrowser()
	s.login(t, b, "/start?format=json")
	gw, _ := url.Parse(s.gateway)
	for _, p := range []string{"/pipeline/admin/x", "/pipeline//admin/x", "/pipeline/foo/..%2Fadmin/x", "/pipeline/foo%2F..%2Fadmin/x",
		"/pipeline/%2e%2e/pipeline/admin/x", "/pipeline/adm%69n/x", "/pipeline/admin;x=1/y", "/pipeline/x%5C..%5Cadmin/y"} {
		a := raw(t, gw.Host, rawGet(p, gw.Host, "Cookie: "+cookieHeader(b, gw), "Accept: application/json"))
		if a.status != 403 {
			t.Errorf("%s: %s, want 403", p, a)
		}
	}
	for _, p := range []string{"/public/..%2Fpipeline/x", "/dex/%2e%2e/pipeline/x", "/dex/..%5Cx"} {
		a := raw(t, gw.Host, rawGet(p, gw.Host, "Accept: application/json"))
		if a.status != 401 {
			t.Errorf("%s without a session: %s, want 401", p, a)
		}
	}
}

func cookieHeader(b *browser, u *url.URL) string {
	var parts []string
	for _, c := range b.Jar.Cookies(u) {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return strings.Join(parts, "; ")
}

// A logout started by another site ends nothing; the same-origin one works.
func TestCrossSiteLogoutThroughTheGateway(t *testing.T) {
	s := newSetup(t, sentinelGateway, nil)
	b := newBrowser()
	s.login(t, b, "/start?format=json")
	req, _ := http.NewRequest("GET", s.gateway+"/authservice/logout", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	resp, err := noFollowWith(b.Jar).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	a := toAnswer(resp)
	if a.status != 403 || len(a.header.Values("Set-Cookie")) != 0 || !strings.Contains(string(a.body), "Sign out") {
		t.Fatalf("cross-site logout: %s, cookies %v", a, a.header.Values("Set-Cookie"))
	}
	resp, err = b.Get(s.gateway + "/still?format=json")
	if err != nil {
		t.Fatal(err)
	}
	readEcho(t, resp)
	req, _ = http.NewRequest("GET", s.gateway+"/authservice/logout", nil)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err = noFollowWith(b.Jar).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if a := toAnswer(resp); a.status != 302 {
		t.Fatalf("same-origin logout: %s", a)
	}
}

// The upstream never sees the service's cookies; the application's own
// cookies reach it byte for byte.
func TestSessionCookieNeverReachesTheUpstream(t *testing.T) {
	s := newSetup(t, sentinelGateway, nil)
	b := newBrowser()
	e := s.login(t, b, "/notebook/ns/nb?format=json")
	if c := strings.Join(e.Headers["cookie"], "; "); strings.Contains(c, "authservice") {
		t.Fatalf("the upstream got the service's cookies right after login: %q", c)
	}
	gw, _ := url.Parse(s.gateway)
	b.Jar.SetCookies(gw, []*http.Cookie{{Name: "_xsrf", Value: "2|d1b7|9a1f", Path: "/"}, {Name: "jupyterhub-session-id", Value: "abc", Path: "/"}})
	resp, err := b.Get(s.gateway + "/notebook/ns/nb/api?format=json")
	if err != nil {
		t.Fatal(err)
	}
	e = readEcho(t, resp)
	c := strings.Join(e.Headers["cookie"], "; ")
	if strings.Contains(c, "authservice") || !strings.Contains(c, "_xsrf=2|d1b7|9a1f") || !strings.Contains(c, "jupyterhub-session-id=abc") {
		t.Fatalf("upstream Cookie header %q", c)
	}
}

// A provider-signed token with an invented kid, sent anonymously as a
// back-channel logout token or a bearer token, makes the service fetch the
// provider's keys at most once per interval, however many arrive.
func TestInventedKidsDoNotAmplifyKeyFetches(t *testing.T) {
	s := newSetup(t, sentinelGateway, nil)
	// One login: the provider's keys are known.
	s.login(t, newBrowser(), "/start?format=json")
	jwksFetches := func() float64 {
		return scrape(t, s.svc)[`oidc_authservice_provider_requests_total{endpoint="jwks",result="2xx"}`]
	}
	forged := func(i int, extra map[string]any) string {
		claims := map[string]any{"iss": s.dex.Issuer, "aud": s.dex.Opts.ClientID, "sub": "x", "iat": time.Now().Unix(),
			"exp": time.Now().Add(time.Hour).Unix(), "email": "admin@example.com"}
		for k, v := range extra {
			claims[k] = v
		}
		return peer.SignWith(t, peer.ForeignKey(), fmt.Sprintf("invented-%d", i), claims)
	}
	// Back-channel logout tokens.
	before, start := jwksFetches(), time.Now()
	for i := 0; i < 50; i++ {
		tok := forged(i, map[string]any{"jti": fmt.Sprint(i), "events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}}})
		resp, err := http.PostForm(s.svc.WebURL+"/authservice/oidc/backchannel-logout", url.Values{"logout_token": {tok}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("forged logout token %d: %d", i, resp.StatusCode)
		}
	}
	// The key set may be fetched once per 2 s interval, and once more at
	// the end of the last one.
	if n, max := jwksFetches()-before, float64(time.Since(start)/(2*time.Second))+2; n > max {
		t.Fatalf("%v key set fetches for 50 logout tokens with invented kids in %s, want at most %v", n, time.Since(start), max)
	}
	// Bearer tokens: the same, and no check is held waiting for the next
	// allowed fetch (the interval is 2 s; the median answer must come well
	// before it).
	before, start = jwksFetches(), time.Now()
	var took []time.Duration
	for i := 0; i < 20; i++ {
		req, _ := http.NewRequest("GET", s.gateway+"/x", nil)
		req.Header.Set("Authorization", "Bearer "+forged(100+i, nil))
		t0 := time.Now()
		a := (&hostileEnv{client: noFollowWith(nil)}).do(t, nil, req)
		took = append(took, time.Since(t0))
		if a.status != 401 {
			t.Fatalf("forged bearer token %d: %s", i, a)
		}
	}
	if n, max := jwksFetches()-before, float64(time.Since(start)/(2*time.Second))+2; n > max {
		t.Fatalf("%v key set fetches for 20 bearer tokens with invented kids in %s, want at most %v", n, time.Since(start), max)
	}
	slices.Sort(took)
	if med := took[len(took)/2]; med > time.Second {
		t.Fatalf("anonymous checks with invented kids were held (median %s): they must be answered at once", med)
	}
}
