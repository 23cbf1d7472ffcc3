package check

import (
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// In oauth2-proxy's place Kubeflow's gateway passes no Set-Cookie on allow:
// a renewed cookie goes back with a 307 to the same URL, once per renewal,
// so no navigation is redirected twice.
func TestRenewRedirect(t *testing.T) {
	f := newFixture(t, map[string]string{"SESSION_IDLE_TIMEOUT": "10m", "SESSION_RENEW_REDIRECT": "true"})
	s := session.Session{ID: "r", Subject: "s", User: "u@x", Created: f.now.Add(-time.Hour).Unix(),
		Expires: f.now.Add(time.Hour).Unix(), Active: f.now.Add(-2 * time.Minute).Unix()}
	old := "authservice_session=" + f.seal(t, &s)

	w := f.do("GET", "/pipeline/?ns=a%20b", map[string]string{"Cookie": old})
	if w.Code != 307 || w.Header().Get("Location") != "/pipeline/?ns=a%20b" {
		t.Fatalf("renewed session: %d to %q, want 307 to the same URL", w.Code, w.Header().Get("Location"))
	}
	var renewed string
	for _, c := range w.Result().Cookies() {
		if c.Name == "authservice_session" {
			renewed = c.Value
		}
	}
	if ns, err := f.codec.OpenSession("authservice_session", renewed); err != nil || ns.Active != f.now.Unix() {
		t.Fatalf("the redirect carries no renewed cookie: %+v %v", ns, err)
	}
	// The browser follows with the new cookie: allowed.
	if w := f.do("GET", "/pipeline/?ns=a%20b", map[string]string{"Cookie": "authservice_session=" + renewed}); w.Code != 200 {
		t.Fatalf("with the renewed cookie: %d", w.Code)
	}
	// A client that ignores Set-Cookie is not redirected again: the same
	// navigation with the old cookie passes, as the renewed session.
	codes := []int{}
	for range 5 {
		w := f.do("GET", "/pipeline/?ns=a%20b", map[string]string{"Cookie": old})
		codes = append(codes, w.Code)
		if w.Code == 200 && w.Header().Get("Kubeflow-Userid") != "u@x" {
			t.Errorf("old cookie allowed without the identity: %v", w.Header())
		}
	}
	if want := []int{200, 200, 200, 200, 200}; !slices.Equal(codes, want) {
		t.Errorf("old cookie again and again: %v, want %v (one redirect per renewal, the one above)", codes, want)
	}
	// Not for other methods, whose bodies a redirect would put at risk.
	s.ID, s.Active = "r2", f.now.Add(-3*time.Minute).Unix()
	if w := f.do("POST", "/pipeline/apis/v2beta1/runs", map[string]string{"Cookie": "authservice_session=" + f.seal(t, &s)}); w.Code != 200 {
		t.Errorf("POST with a renewed session: %d, want 200", w.Code)
	}
	// Never off-site.
	s.ID, s.Active = "r3", f.now.Add(-3*time.Minute).Unix()
	if w := f.do("GET", "//evil.example/x", map[string]string{"Cookie": "authservice_session=" + f.seal(t, &s)}); w.Code != 307 || w.Header().Get("Location") != "/" {
		t.Errorf("protocol-relative path: %d to %q, want 307 to /", w.Code, w.Header().Get("Location"))
	}
}

func TestRenewRedirectOffByDefault(t *testing.T) {
	f := newFixture(t, map[string]string{"SESSION_IDLE_TIMEOUT": "10m"})
	s := session.Session{ID: "r", Subject: "s", User: "u@x", Created: f.now.Add(-time.Hour).Unix(),
		Expires: f.now.Add(time.Hour).Unix(), Active: f.now.Add(-2 * time.Minute).Unix()}
	w := f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + f.seal(t, &s)})
	if w.Code != 200 || !strings.Contains(strings.Join(w.Header().Values("Set-Cookie"), "\n"), "authservice_session=") {
		t.Fatalf("without SESSION_RENEW_REDIRECT: %d with Set-Cookie %q, want 200 with the renewed cookie", w.Code, w.Header().Values("Set-Cookie"))
	}
}

// /start with a session due for renewal (SESSION_RENEW_REDIRECT) renews it
// with the same redirect as any other request, instead of sending a
// signed-in user to the provider.
func TestStartRenewsASignedInSession(t *testing.T) {
	f := newFixture(t, map[string]string{"SESSION_IDLE_TIMEOUT": "10m", "SESSION_RENEW_REDIRECT": "true"})
	s := session.Session{ID: "r", Subject: "s", User: "u@x", Created: f.now.Add(-time.Hour).Unix(),
		Expires: f.now.Add(time.Hour).Unix(), Active: f.now.Add(-2 * time.Minute).Unix()}
	w := f.do("GET", "/authservice/start?rd=/pipeline/", map[string]string{"Cookie": "authservice_session=" + f.seal(t, &s)})
	if w.Code != 307 || strings.Contains(w.Header().Get("Location"), "/dex/") || !strings.Contains(strings.Join(w.Header().Values("Set-Cookie"), "\n"), "authservice_session=") {
		t.Fatalf("/start with a session due for renewal: %d to %q, want 307 with the renewed cookie", w.Code, w.Header().Get("Location"))
	}
}

func fakeJWT(exp int64) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(`{"exp":`+strconv.FormatInt(exp, 10)+`}`)) + ".sig"
}

// A session that hands its ID token upstream (Istio checks it) ends when
// that token has expired and cannot be refreshed: a 302 to log in again,
// not an allow the gateway would turn into a 401.
func TestExpiredUpstreamIDTokenEndsSession(t *testing.T) {
	f := newFixture(t, map[string]string{"UPSTREAM_TOKEN": "id_token"})
	mk := func(id string, exp time.Time) string {
		return "authservice_session=" + f.seal(t, &session.Session{ID: id, Subject: "s", User: "u@x", Created: f.now.Add(-time.Hour).Unix(),
			Expires: f.now.Add(time.Hour).Unix(), IDToken: fakeJWT(exp.Unix()), IDTokenExpiry: exp.Unix()})
	}
	w := f.do("GET", "/x", map[string]string{"Cookie": mk("a", f.now.Add(time.Minute))})
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Authorization"), "Bearer ") {
		t.Fatalf("valid ID token: %d, Authorization %q", w.Code, w.Header().Get("Authorization"))
	}
	w = f.do("GET", "/x", map[string]string{"Cookie": mk("b", f.now.Add(-time.Second))})
	if w.Code != 302 || !strings.HasPrefix(w.Header().Get("Location"), "/dex/auth?") {
		t.Fatalf("expired ID token, navigation: %d to %q, want a login", w.Code, w.Header().Get("Location"))
	}
	if w := f.do("GET", "/api/x", map[string]string{"Cookie": mk("c", f.now.Add(-time.Second))}); w.Code != 401 {
		t.Fatalf("expired ID token, API call: %d, want 401", w.Code)
	}
	// Without UPSTREAM_TOKEN=id_token the ID token's expiry does not matter.
	g := newFixture(t, nil)
	c := "authservice_session=" + g.seal(t, &session.Session{ID: "d", Subject: "s", User: "u@x", Created: g.now.Unix(),
		Expires: g.now.Add(time.Hour).Unix(), IDToken: fakeJWT(g.now.Add(-time.Hour).Unix()), IDTokenExpiry: g.now.Add(-time.Hour).Unix()})
	if w := g.do("GET", "/x", map[string]string{"Cookie": c}); w.Code != 200 {
		t.Fatalf("ID token not handed upstream: %d", w.Code)
	}
}

func TestAuthRequestHeaders(t *testing.T) {
	f := newFixture(t, map[string]string{"AUTH_REQUEST_HEADERS": "true", "USERID_PREFIX": "p:"})
	full := "authservice_session=" + f.seal(t, &session.Session{ID: "a", Subject: "s", User: "u@x", Email: "u@x",
		Groups: []string{"g1", "g2"}, Created: f.now.Unix(), Expires: f.now.Add(time.Hour).Unix()})
	w := f.do("GET", "/x", map[string]string{"Cookie": full, "X-Auth-Request-User": "admin"})
	if w.Code != 200 {
		t.Fatal(w.Code)
	}
	for name, want := range map[string]string{"X-Auth-Request-User": "p:u@x", "X-Auth-Request-Email": "u@x", "X-Auth-Request-Groups": "g1,g2"} {
		if got := w.Header().Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	// No email, no groups: those two are removed rather than left to the client.
	bare := "authservice_session=" + f.seal(t, &session.Session{ID: "b", Subject: "s", User: "u@x", Created: f.now.Unix(), Expires: f.now.Add(time.Hour).Unix()})
	w = f.do("GET", "/x", map[string]string{"Cookie": bare})
	rm := w.Header().Get("X-Envoy-Auth-Headers-To-Remove")
	if w.Header().Get("X-Auth-Request-Email") != "" || !strings.Contains(rm, "x-auth-request-email") || !strings.Contains(rm, "x-auth-request-groups") ||
		strings.Contains(rm, "x-auth-request-user") {
		t.Errorf("empty values: remove %q, email %q", rm, w.Header().Get("X-Auth-Request-Email"))
	}
	// Anonymous paths strip all of them.
	w = f.do("GET", "/dex/auth", nil)
	for _, n := range authRequestNames {
		if !strings.Contains(w.Header().Get("X-Envoy-Auth-Headers-To-Remove"), n) {
			t.Errorf("skip path does not remove %s: %q", n, w.Header().Get("X-Envoy-Auth-Headers-To-Remove"))
		}
	}
	// Off by default.
	g := newFixture(t, nil)
	if w := g.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + g.seal(t, &session.Session{ID: "c", Subject: "s", User: "u@x", Email: "u@x", Created: g.now.Unix(), Expires: g.now.Add(time.Hour).Unix()})}); w.Header().Get("X-Auth-Request-User") != "" {
		t.Error("X-Auth-Request-User without AUTH_REQUEST_HEADERS")
	}
}

// A refresh keeps the tokens the login kept and no others: a session
// without an access token (no feature needs one) does not grow one.
func TestRefreshKeepsTheSessionsTokenKinds(t *testing.T) {
	f := newFixture(t, nil)
	s := session.Session{ID: "r", Subject: "s", User: "u@x", Created: f.now.Add(-time.Hour).Unix(),
		Expires: f.now.Add(time.Hour).Unix(), RefreshToken: "RT", TokenExpiry: f.now.Add(-time.Minute).Unix()}
	w := f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + f.seal(t, &s)})
	var renewed string
	for _, c := range w.Result().Cookies() {
		if c.Name == "authservice_session" {
			renewed = c.Value
		}
	}
	ns, err := f.codec.OpenSession("authservice_session", renewed)
	if w.Code != 200 || err != nil {
		t.Fatalf("refresh: %d, renewed cookie %v", w.Code, err)
	}
	if ns.RefreshToken != "RT-refreshed" || ns.AccessToken != "" || ns.IDToken != "" {
		t.Fatalf("refreshed session: refresh %q, access %q, ID %q; want the new refresh token and no others", ns.RefreshToken, ns.AccessToken, ns.IDToken)
	}
}
