package check

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

func rulesFile(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// raw sends a request whose target is exactly target (no re-encoding).
func (f *fixture) raw(method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/", nil)
	u, err := url.ParseRequestURI(target)
	if err != nil {
		panic(err)
	}
	r.URL, r.RequestURI = u, target
	r.Host = "kubeflow.example.com"
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

// Rules, skip paths and API prefixes judge one canonical path, and a path
// whose readings differ by the strictest of them.
func TestRulesSeeTheCanonicalPath(t *testing.T) {
	f := newFixture(t, map[string]string{"SKIP_AUTH_URLS": "/dex,/public/", "AUTHORIZATION_RULES_FILE": rulesFile(t, `
rules:
- name: admins-only
  pathPrefix: /pipeline/admin/
  allow: {groups: [admins]}
- name: public-for-all
  pathPrefix: /pipeline/
  allow: {authenticated: true}
`)})
	user := f.cookie(t, "user@example.com", []string{"team-a"}, f.now.Add(time.Hour))
	withUser := map[string]string{"Cookie": "authservice_session=" + user, "Accept": "application/json"}
	if w := f.raw("GET", "/pipeline/x", withUser); w.Code != 200 {
		t.Fatalf("/pipeline/x: %d", w.Code)
	}
	for _, p := range []string{
		"/pipeline/admin/x",
		"/pipeline//admin/x",
		"//pipeline/admin/x",
		"/pipeline/./admin/x",
		"/pipeline/foo/..%2Fadmin/x",
		"/pipeline/foo%2F..%2Fadmin/x",
		"/pipeline/foo%2f%2e%2e%2fadmin/x",
		"/pipeline/foo/%2e%2e/admin/x",
		"/pipeline/%61dmin/x",
		"/pipeline/admin;jsessionid=1/x",
		"/pipeline/foo%5C..%5Cadmin/x",
		"/pipeline/admin",
		"/pipeline/admin%2F",
	} {
		if w := f.raw("GET", p, withUser); w.Code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403 (the rule on /pipeline/admin/ must see it)", p, w.Code)
		}
	}
	// A skip path is skipped only when every reading is under it.
	anon := map[string]string{"Accept": "application/json"}
	for _, p := range []string{"/dex/..%2Fpipeline/x", "/dex/%2e%2e/pipeline/x", "/dex/..%5Cpipeline/x", "/public/..%2F..%2Fpipeline/x", "/dex%2F..%2Fpipeline/x"} {
		if w := f.raw("GET", p, anon); w.Code != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401 (not a skip path once canonical)", p, w.Code)
		}
	}
	if w := f.raw("GET", "/dex/auth?x=1", anon); w.Code != 200 {
		t.Errorf("/dex/auth: %d", w.Code)
	}
	// An API prefix in any reading means 401, not a login redirect.
	if w := f.raw("GET", "/x/..%2Fapi/v1/things", nil); w.Code != http.StatusUnauthorized {
		t.Errorf("API path in its canonical reading: %d, want 401", w.Code)
	}
	// A path no request should carry: 400, with a reason.
	for _, p := range []string{"/pipeline/%00/x", "/a%0d%0aSet-Cookie:%20x=y"} {
		if w := f.raw("GET", p, withUser); w.Code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", p, w.Code)
		}
	}
}

// A plain-named login state is never read where the __Host- form is in
// use: a sibling subdomain or a plain-http attacker cannot make a browser
// complete the attacker's login.
func TestPlantedPlainLoginStateRefused(t *testing.T) {
	f := newFixture(t, nil)
	state := "AAAAAAAAAAAAAAAAAAAAAA"
	sealed, err := f.codec.Seal(session.StatePrefix+state, &session.LoginState{State: state, Verifier: strings.Repeat("v", 43),
		Nonce: "n", URL: "https://kubeflow.example.com/x", Created: f.now.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	w := f.do("GET", "/authservice/oidc/callback?state="+state+"&code=attackers-code", map[string]string{
		"Cookie": session.StatePrefix + state + "=" + sealed, "X-Forwarded-Proto": "https"})
	if w.Code != http.StatusBadRequest {
		t.Fatalf("plain-named login state over https: %d, want 400", w.Code)
	}
}

// A GET (or POST) logout started by another site ends nothing and clears
// nothing; a same-origin one does.
func TestCrossSiteLogoutRefused(t *testing.T) {
	f := newFixture(t, nil)
	v, err := f.codec.SealSession("authservice_session", &session.Session{ID: "sid-1", Subject: "s", User: "u@example.com",
		Created: f.now.Unix(), Expires: f.now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{"GET", "POST"} {
		w := f.do(method, "/authservice/logout", map[string]string{"Cookie": "authservice_session=" + v, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
		if w.Code != http.StatusForbidden || len(w.Result().Cookies()) != 0 {
			t.Fatalf("cross-site %s logout: %d, cookies %v", method, w.Code, w.Result().Cookies())
		}
		if method == "GET" && !strings.Contains(w.Body.String(), `href="/authservice/logout"`) {
			t.Fatalf("the confirmation page offers no same-origin sign-out: %s", w.Body)
		}
	}
	if w := f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + v}); w.Code != 200 {
		t.Fatalf("the session ended after a cross-site logout: %d", w.Code)
	}
	w := f.do("GET", "/authservice/logout", map[string]string{"Cookie": "authservice_session=" + v, "Sec-Fetch-Site": "same-origin"})
	if w.Code != http.StatusFound {
		t.Fatalf("same-origin logout: %d", w.Code)
	}
	if w := f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + v, "Accept": "application/json"}); w.Code != 401 {
		t.Fatalf("the session survived a same-origin logout: %d", w.Code)
	}
}

// A back-channel logout delivered to the check port is read, not answered
// with the skip path's 200; Envoy's check of it (no body) still passes.
func TestBackchannelLogoutOnTheCheckPort(t *testing.T) {
	f := newFixture(t, nil)
	r := httptest.NewRequest("POST", "/authservice/oidc/backchannel-logout", strings.NewReader("logout_token=a.b.c"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest {
		t.Fatalf("back-channel delivery on the check port: %d, want 400 for a forged token", w.Code)
	}
	r = httptest.NewRequest("POST", "/authservice/oidc/backchannel-logout", nil)
	r.Header.Set("Content-Length", "0")
	w = httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("Envoy's check of a back-channel delivery: %d, want 200 (routed on to the web port)", w.Code)
	}
}

// The allow answer rewrites the upstream's Cookie header without the
// service's cookies, keeping every other cookie byte for byte.
func TestUpstreamCookieRewrite(t *testing.T) {
	f := newFixture(t, nil)
	v := f.cookie(t, "u@example.com", nil, f.now.Add(time.Hour))
	cases := []struct {
		cookie, want string
		removed      bool // the Cookie header is removed altogether
	}{
		{"_xsrf=2|a|b; authservice_session=" + v + "; theme=\"dark mode\"", "_xsrf=2|a|b; theme=\"dark mode\"", false},
		{"authservice_session=" + v + "; authservice_state_AAAAAAAAAAAAAAAAAAAAAA=x; __Host-authservice_session_1=y", "", true},
		{"authservice_session=" + v + ";authservice_session_3=z;  a=1 ;b=", "a=1; b=", false},
		{"authservice_session=" + v + "; authservice_session_x=keep; authservice_sessionx=keep", "authservice_session_x=keep; authservice_sessionx=keep", false},
	}
	for _, c := range cases {
		w := f.do("GET", "/x", map[string]string{"Cookie": c.cookie})
		if w.Code != 200 {
			t.Fatalf("%q: %d", c.cookie, w.Code)
		}
		remove := w.Header().Get("X-Envoy-Auth-Headers-To-Remove")
		if c.removed {
			if !strings.Contains(remove, "cookie") || w.Header().Get("Cookie") != "" {
				t.Errorf("%q: remove %q, Cookie %q; want the header removed", c.cookie, remove, w.Header().Get("Cookie"))
			}
			continue
		}
		if got := w.Header().Get("Cookie"); got != c.want || strings.Contains(remove, "cookie") {
			t.Errorf("%q: upstream Cookie %q (remove %q), want %q", c.cookie, got, remove, c.want)
		}
	}
	// Skip paths too: no upstream holds the session.
	w := f.do("GET", "/dex/auth", map[string]string{"Cookie": "authservice_session=" + v + "; dex=1"})
	if w.Code != 200 || w.Header().Get("Cookie") != "dex=1" {
		t.Fatalf("skip path: %d, Cookie %q", w.Code, w.Header().Get("Cookie"))
	}
	// Nothing of the service's: the header is left alone.
	w = f.do("GET", "/dex/auth", map[string]string{"Cookie": "dex=1"})
	if _, set := w.Header()["Cookie"]; set || strings.Contains(w.Header().Get("X-Envoy-Auth-Headers-To-Remove"), "cookie") {
		t.Fatalf("a request without the service's cookies got a rewrite: %v", w.Header())
	}
}

// Only a logout the browser marks as the site's own (Sec-Fetch-Site:
// same-origin, or none for a typed URL or a bookmark), or that carries no
// Sec-Fetch-Site at all, ends the session. A sibling subdomain's navigation
// (same-site), another site's, an unknown value, an empty one or the header
// sent twice gets the confirmation page (HTML) or JSON and ends nothing.
func TestLogoutOnlyFromTheSiteItself(t *testing.T) {
	f := newFixture(t, nil)
	n := 0
	fresh := func() string {
		n++
		v, err := f.codec.SealSession("authservice_session", &session.Session{ID: fmt.Sprintf("sfs-%d", n), Subject: "s", User: "u@example.com",
			Created: f.now.Unix(), Expires: f.now.Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return "authservice_session=" + v
	}
	logout := func(method string, cookie string, values []string, accept string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "/authservice/logout", nil)
		r.Host = "kubeflow.example.com"
		r.Header.Set("Cookie", cookie)
		if accept != "" {
			r.Header.Set("Accept", accept)
		}
		for _, v := range values {
			r.Header.Add("Sec-Fetch-Site", v)
		}
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		return w
	}
	alive := func(cookie string) bool {
		return f.do("GET", "/x", map[string]string{"Cookie": cookie, "Accept": "application/json"}).Code == 200
	}
	for _, c := range []struct {
		name   string
		values []string
	}{
		{"same-site (a sibling subdomain)", []string{"same-site"}},
		{"cross-site", []string{"cross-site"}},
		{"garbage", []string{"evil"}},
		{"upper case", []string{"SAME-ORIGIN"}},
		{"padded", []string{" same-origin"}},
		{"empty", []string{""}},
		{"a list", []string{"same-origin, cross-site"}},
		{"sent twice, same value", []string{"same-origin", "same-origin"}},
		{"sent twice, same-origin then same-site", []string{"same-origin", "same-site"}},
		{"sent twice, none then cross-site", []string{"none", "cross-site"}},
		{"NUL", []string{"same-origin\x00"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, method := range []string{"GET", "POST"} {
				cookie := fresh()
				w := logout(method, cookie, c.values, "text/html")
				if w.Code != http.StatusForbidden || len(w.Result().Cookies()) != 0 {
					t.Fatalf("%s: %d, cookies %v; want 403 and nothing cleared", method, w.Code, w.Result().Cookies())
				}
				if method == "GET" && !strings.Contains(w.Body.String(), `href="/authservice/logout"`) {
					t.Fatalf("no confirmation page: %s", w.Body)
				}
				if !alive(cookie) {
					t.Fatalf("%s: the session ended", method)
				}
				w = logout(method, cookie, c.values, "application/json")
				if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), `"cross_site_logout"`) {
					t.Fatalf("%s, JSON: %d %s", method, w.Code, w.Body)
				}
			}
		})
	}
	for _, c := range []struct {
		name   string
		values []string
	}{{"same-origin", []string{"same-origin"}}, {"none", []string{"none"}}, {"absent", nil}} {
		t.Run(c.name, func(t *testing.T) {
			cookie := fresh()
			if w := logout("GET", cookie, c.values, ""); w.Code != http.StatusFound {
				t.Fatalf("GET: %d, want 302", w.Code)
			}
			if alive(cookie) {
				t.Fatal("GET: the session survived")
			}
			cookie = fresh()
			if w := logout("POST", cookie, c.values, ""); w.Code != http.StatusCreated {
				t.Fatalf("POST: %d, want 201", w.Code)
			}
			if alive(cookie) {
				t.Fatal("POST: the session survived")
			}
		})
	}
}
