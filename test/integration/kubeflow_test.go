package integration

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/extauthz"
	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

type setup struct {
	dex     *peer.Dex
	svc     *peer.Service
	gateway string
}

func kubeflowEnv(dex *peer.Dex) map[string]string { return peer.KubeflowEnv(dex) }

func newSetup(t *testing.T, gw peer.GatewayLayout, env map[string]string) *setup {
	t.Helper()
	k := peer.StartKubeflow(t, gw, env)
	return &setup{dex: k.Dex, svc: k.Svc, gateway: k.Gateway}
}

func gatewayFor(t *testing.T, gw peer.GatewayLayout, svc *peer.Service, dex *peer.Dex) string {
	return peer.KubeflowGateway(t, gw, svc.CheckURL, svc.WebURL, dex.Port)
}

// browser is an HTTP client with a cookie jar that records every URL it
// visits.
type browser struct {
	*http.Client
	visited []*url.URL
}

func newBrowser() *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{}
	b.Client = &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: func(r *http.Request, via []*http.Request) error {
		b.visited = append(b.visited, r.URL)
		if len(via) > 15 {
			return fmt.Errorf("too many redirects")
		}
		return nil
	}}
	return b
}

// echo is what the demo upstream saw.
type echo struct {
	Path, Query string
	Headers     map[string][]string
}

func readEcho(t *testing.T, resp *http.Response) echo {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP %d at %s: %.400s", resp.StatusCode, resp.Request.URL, b)
	}
	var e echo
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("not the upstream's answer at %s: %.300s", resp.Request.URL, b)
	}
	return e
}

func (s *setup) login(t *testing.T, b *browser, deepLink string) echo {
	t.Helper()
	resp, err := peer.DexLogin(b.Client, s.gateway+deepLink, "user@example.com", "12341234")
	if err != nil {
		t.Fatal(err)
	}
	return readEcho(t, resp)
}

func TestLoginThroughDexLandsOnDeepLink(t *testing.T) {
	s := newSetup(t, peer.EnvoyFilterLayout, nil)
	b := newBrowser()
	e := s.login(t, b, "/notebook/ns/nb/lab?format=json&file=a%20b.ipynb")
	if e.Path != "/notebook/ns/nb/lab" || e.Query != "format=json&file=a%20b.ipynb" {
		t.Fatalf("landed on %s?%s", e.Path, e.Query)
	}
	if got := e.Headers["kubeflow-userid"]; len(got) != 1 || got[0] != "user@example.com" {
		t.Fatalf("kubeflow-userid %q", got)
	}
	if got := e.Headers["kubeflow-groups"]; len(got) != 1 || got[0] != "team-a,team-b" {
		t.Fatalf("kubeflow-groups %q", got)
	}
	// The login went through Dex's form with PKCE, state and nonce.
	var auth *url.URL
	for _, u := range b.visited {
		if u.Path == "/dex/auth" && u.Query().Get("client_id") != "" {
			auth = u
		}
	}
	if auth == nil {
		t.Fatal("never visited /dex/auth")
	}
	q := auth.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("state") == "" || q.Get("nonce") == "" || q.Get("redirect_uri") != "/authservice/oidc/callback" {
		t.Fatalf("authorization request %v", q)
	}
	// A reload needs no new login.
	resp, err := b.Get(s.gateway + "/again?format=json")
	if err != nil {
		t.Fatal(err)
	}
	if e := readEcho(t, resp); e.Headers["kubeflow-userid"][0] != "user@example.com" {
		t.Fatal("second request not authenticated")
	}
	// XHR without a session: 401, not a redirect.
	req, _ := http.NewRequest("GET", s.gateway+"/api/workgroup/env-info", nil)
	req.Header.Set("X-Requested-With", "XMLHttpRequest")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("XHR without session: %d", resp.StatusCode)
	}
}

func TestTwoInterleavedLogins(t *testing.T) {
	s := newSetup(t, peer.EnvoyFilterLayout, nil)
	b := newBrowser()
	noFollow := *b.Client
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	// Two tabs start logins before either completes.
	var starts []string
	for _, p := range []string{"/tab-one?format=json", "/tab-two?format=json"} {
		resp, err := noFollow.Get(s.gateway + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 302 {
			t.Fatalf("start %s: %d", p, resp.StatusCode)
		}
		starts = append(starts, s.gateway+resp.Header.Get("Location"))
	}
	// Complete them in reverse order.
	for i, want := range []string{"/tab-two", "/tab-one"} {
		resp, err := peer.DexLogin(b.Client, starts[1-i], "user@example.com", "12341234")
		if err != nil {
			t.Fatal(err)
		}
		if e := readEcho(t, resp); e.Path != want {
			t.Fatalf("login %d landed on %s, want %s", i, e.Path, want)
		}
	}
}

func TestReplayedCallbackAndBadCookies(t *testing.T) {
	s := newSetup(t, peer.EnvoyFilterLayout, nil)
	b := newBrowser()
	s.login(t, b, "/x?format=json")
	var callback *url.URL
	for _, u := range b.visited {
		if u.Path == "/authservice/oidc/callback" {
			callback = u
		}
	}
	if callback == nil {
		t.Fatal("callback not seen")
	}
	resp, err := b.Get(callback.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 || !strings.Contains(string(body), "expired or has already been used") {
		t.Fatalf("replayed callback: %d %.200s", resp.StatusCode, body)
	}

	// Take the session cookie and tamper with it.
	gw, _ := url.Parse(s.gateway)
	var sess string
	for _, c := range b.Jar.Cookies(gw) {
		if c.Name == "authservice_session" {
			sess = c.Value
		}
	}
	if sess == "" {
		t.Fatal("no session cookie")
	}
	for name, v := range map[string]string{
		"tampered":  sess[:10] + strings.Map(func(r rune) rune { return r ^ 1 }, sess[10:14]) + sess[14:],
		"truncated": sess[:len(sess)-8],
		"garbage":   "x",
	} {
		req, _ := http.NewRequest("GET", s.gateway+"/x", nil)
		req.Header.Set("Cookie", "authservice_session="+v)
		req.Header.Set("Accept", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("%s cookie: %d", name, resp.StatusCode)
		}
	}
}

func TestExpiredSessionGetsNoAccess(t *testing.T) {
	s := newSetup(t, peer.EnvoyFilterLayout, map[string]string{"SESSION_MAX_AGE": "2"})
	b := newBrowser()
	s.login(t, b, "/x?format=json")
	time.Sleep(2500 * time.Millisecond)
	noFollow := *b.Client
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noFollow.Get(s.gateway + "/x?format=json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 302 || !strings.HasPrefix(resp.Header.Get("Location"), "/dex/auth?") {
		t.Fatalf("expired session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestClientIdentityHeadersNeverReachUpstream(t *testing.T) {
	s := newSetup(t, peer.EnvoyFilterLayout, map[string]string{"SKIP_AUTH_URLS": "/dex,/public"})
	req, _ := http.NewRequest("GET", s.gateway+"/public/page?format=json", nil)
	req.Header.Set("Kubeflow-Userid", "admin@example.com")
	req.Header.Set("Kubeflow-Groups", "admins")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	e := readEcho(t, resp)
	if len(e.Headers["kubeflow-userid"]) != 0 || len(e.Headers["kubeflow-groups"]) != 0 {
		t.Fatalf("client identity reached the upstream: %v", e.Headers)
	}
	// With a session, the client's values are overwritten.
	b := newBrowser()
	s.login(t, b, "/x?format=json")
	req, _ = http.NewRequest("GET", s.gateway+"/y?format=json", nil)
	req.Header.Set("Kubeflow-Userid", "admin@example.com")
	req.Header.Set("Kubeflow-Groups", "admins")
	resp, err = b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	e = readEcho(t, resp)
	if e.Headers["kubeflow-userid"][0] != "user@example.com" || e.Headers["kubeflow-groups"][0] != "team-a,team-b" {
		t.Fatalf("upstream saw %v", e.Headers)
	}
}

func TestBothLogoutContracts(t *testing.T) {
	s := newSetup(t, peer.EnvoyFilterLayout, map[string]string{"SESSION_HTTP_ONLY": "false"})
	noFollow := func(b *browser) *http.Client {
		c := *b.Client
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		return &c
	}
	gw, _ := url.Parse(s.gateway)

	// New dashboard: GET navigation.
	b := newBrowser()
	s.login(t, b, "/x?format=json")
	resp, err := noFollow(b).Get(s.gateway + "/authservice/logout")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "/" {
		t.Fatalf("GET logout: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = noFollow(b).Get(s.gateway + "/x?format=json")
	resp.Body.Close()
	if resp.StatusCode != 302 {
		t.Fatalf("after GET logout: %d, want a new login", resp.StatusCode)
	}

	// Old dashboard: POST with the cookie value as bearer.
	b = newBrowser()
	s.login(t, b, "/x?format=json")
	var sess string
	for _, c := range b.Jar.Cookies(gw) {
		if c.Name == "authservice_session" {
			sess = c.Value
		}
	}
	req, _ := http.NewRequest("POST", s.gateway+"/authservice/logout", nil)
	req.Header.Set("Authorization", "Bearer "+sess)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || strings.TrimSpace(string(body)) != `{"afterLogoutURL":"/"}` {
		t.Fatalf("POST logout: %d %s", resp.StatusCode, body)
	}
	// The logged-out cookie no longer opens a session, even if replayed.
	req, _ = http.NewRequest("GET", s.gateway+"/x", nil)
	req.Header.Set("Cookie", "authservice_session="+sess)
	req.Header.Set("Accept", "application/json")
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("cookie after logout: %d", resp.StatusCode)
	}
	// POST logout without a session: 401.
	resp, _ = http.Post(s.gateway+"/authservice/logout", "", nil)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("POST logout without session: %d", resp.StatusCode)
	}
}

// After logout, the after-logout page's "Sign in again" leads to the
// provider's login in one step (it went through a "Sign in to continue"
// page first), and the new login lands on /.
func TestSignInAgainGoesStraightToTheProvider(t *testing.T) {
	s := newSetup(t, peer.EnvoyFilterLayout, map[string]string{"AFTER_LOGOUT_URL": "/authservice/site/after_logout"})
	b := newBrowser()
	s.login(t, b, "/x?format=json")
	resp, err := b.Get(s.gateway + "/authservice/logout")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`id="login" href="([^"]+)"`).FindSubmatch(page)
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/authservice/site/after_logout" || m == nil {
		t.Fatalf("after logout: HTTP %d at %s: %.600s", resp.StatusCode, resp.Request.URL, page)
	}
	link := html.UnescapeString(string(m[1]))
	nf := *b.Client
	nf.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err = nf.Get(s.gateway + link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != 302 || !strings.HasPrefix(loc, "/dex/auth?") {
		t.Fatalf("Sign in again (%s): HTTP %d to %q, want 302 to the provider's login", link, resp.StatusCode, loc)
	}
	resp, err = peer.DexLogin(b.Client, s.gateway+link, "user@example.com", "12341234")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/" {
		t.Fatalf("after signing in again: HTTP %d at %s", resp.StatusCode, resp.Request.URL)
	}
}

func TestProviderUpLateMakesServiceReady(t *testing.T) {
	dex := peer.NewDex(t, peer.DexOptions{})
	svc := peer.StartService(t, kubeflowEnv(dex))
	resp, err := http.Get(svc.ProbeURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("ready without a provider: %d", resp.StatusCode)
	}
	gw := gatewayFor(t, peer.EnvoyFilterLayout, svc, dex)
	// A login attempt now gets a clear 4xx page, not an error.
	resp, err = http.Get(gw + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(body), "cannot be reached") {
		t.Fatalf("login before discovery: %d %.200s", resp.StatusCode, body)
	}
	dex.Start()
	svc.WaitReady(t, 40*time.Second)
	s := &setup{dex: dex, svc: svc, gateway: gw}
	e := s.login(t, newBrowser(), "/late?format=json")
	if e.Headers["kubeflow-userid"][0] != "user@example.com" {
		t.Fatal("login after late discovery failed")
	}
}

func TestKubeflowGatewayConfigurations(t *testing.T) {
	for name, gw := range map[string]peer.GatewayLayout{
		"envoyfilter (Kubeflow ≤1.9.0's own, as Istio < 1.19 applied it)":     {Plain: extauthz.KubeflowEnvoyFilter},
		"envoyfilter (deploy/overlays/istio-envoyfilter)":                     peer.EnvoyFilterLayout,
		"istio extension provider (deploy/overlays/istio-extension-provider)": peer.ExtensionProviderLayout,
	} {
		t.Run(name, func(t *testing.T) {
			s := newSetup(t, gw, nil)
			e := s.login(t, newBrowser(), "/deep/link?format=json&a=1")
			if e.Path != "/deep/link" || e.Headers["kubeflow-userid"][0] != "user@example.com" {
				t.Fatalf("%s: %+v", name, e)
			}
		})
	}
}
