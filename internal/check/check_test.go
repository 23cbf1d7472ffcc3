package check

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/authorizer"
	"github.com/oidc-authservice/oidc-authservice/internal/authz"
	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/credential"
	"github.com/oidc-authservice/oidc-authservice/internal/identity"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/pages"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// tokenEndpoint is what the fake provider's token endpoint did and says.
type tokenEndpoint struct {
	calls   atomic.Int64
	answer  atomic.Pointer[string] // nil: the default refresh answer
	revoked chan string            // what its RFC 7009 revocation endpoint was sent: "<hint>:<token>"
	issuer  string
}

var (
	idTokenKeyOnce sync.Once
	idTokenKey     *rsa.PrivateKey
)

// signingKey is the fake provider's ID token key, published at its
// jwks_uri: one per test process (2048-bit generation is slow).
func signingKey() *rsa.PrivateKey {
	idTokenKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		idTokenKey = k
	})
	return idTokenKey
}

// idToken is an ID token of the fake provider for the fixture's client:
// subject "s", valid for an hour, with the claims given on top, signed
// with signingKey (go-oidc verifies it as it would a real provider's).
func (te *tokenEndpoint) idToken(t testing.TB, claims map[string]any) string {
	t.Helper()
	c := map[string]any{"iss": te.issuer, "aud": "kubeflow-oidc-authservice", "sub": "s",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: signingKey()}, (&jose.SignerOptions{}).WithHeader("kid", "k1").WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(c)
	jws, err := sig.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// discoveryOnly serves a discovery document: enough for the service to
// build authorization URLs, with a key set that verifies the ID tokens of
// tokenEndpoint.idToken (refreshes); the code flow itself is tested
// against real providers in test/integration.
func discoveryOnly(t testing.TB, te *tokenEndpoint) string {
	t.Helper()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]any{
				"issuer": srv.URL, "authorization_endpoint": srv.URL + "/auth", "token_endpoint": srv.URL + "/token",
				"jwks_uri": srv.URL + "/keys", "id_token_signing_alg_values_supported": []string{"RS256"},
				"revocation_endpoint": srv.URL + "/revoke",
			})
		case "/revoke":
			r.ParseForm()
			select {
			case te.revoked <- r.PostForm.Get("token_type_hint") + ":" + r.PostForm.Get("token"):
			default:
			}
		case "/keys":
			json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: signingKey().Public(), KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
		case "/token": // a refresh: new access and refresh tokens, no ID token
			te.calls.Add(1)
			w.Header().Set("Content-Type", "application/json")
			if a := te.answer.Load(); a != nil {
				w.Write([]byte(*a))
				return
			}
			w.Write([]byte(`{"access_token":"AT-refreshed","token_type":"Bearer","expires_in":3600,"refresh_token":"RT-refreshed"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	te.issuer = srv.URL
	return srv.URL
}

type fixture struct {
	h     *Handler
	s     *config.Settings
	codec *session.Codec
	now   time.Time
	token *tokenEndpoint
	m     *metrics.Metrics
}

// newFixture builds a Handler from the settings env (on top of a minimal
// Kubeflow-like environment), wired as server.Build wires it, with a
// provider that serves only discovery and a fixed clock.
func newFixture(t testing.TB, env map[string]string) *fixture {
	return newFixtureWith(t, env, nil)
}

// newFixtureWith is newFixture with a bearer-token authenticator.
func newFixtureWith(t testing.TB, env map[string]string, auth credential.Authenticator) *fixture {
	t.Helper()
	te := &tokenEndpoint{revoked: make(chan string, 16)}
	issuer := discoveryOnly(t, te)
	base := map[string]string{
		"OIDC_PROVIDER": issuer, "CLIENT_ID": "kubeflow-oidc-authservice", "CLIENT_SECRET": "secret",
		"SKIP_AUTH_URLS": "/dex", "OIDC_AUTH_URL": "/dex/auth", "SESSION_KEYS": strings.Repeat("k", 32),
	}
	for k, v := range env {
		base[k] = v
	}
	s, err := config.Load(config.FromMap(base))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	clock := func() time.Time { return now }
	p, err := provider.New(provider.Options{Issuer: s.Provider.Issuer, AuthURL: s.Provider.AuthURL, ClientID: s.Provider.ClientID,
		ClientSecret: s.Provider.ClientSecret, RedirectURL: s.Provider.RedirectURL, Scopes: s.Provider.Scopes, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Discover(context.Background()); err != nil {
		t.Fatal(err)
	}
	pg, _ := pages.New(pages.Options{})
	ss := s.Sessions
	codec := session.NewCodec(ss.Secrets, ss.MaxAge, clock)
	m := metrics.New("test")
	rev := revocation.New(time.Hour, nil, clock, zap.NewNop())
	id := s.Identity
	groups := identity.NewGroupsPolicy(identity.GroupsOptions{Filter: id.GroupsFilter, Prefixes: id.GroupsFilterPrefixes, Max: id.GroupsMax,
		MaxBytes: id.GroupsHeaderMaxBytes(), Truncate: id.GroupsTruncate})
	mapper := &identity.Mapper{UserClaim: s.Identity.UserClaim, GroupsClaim: s.Identity.GroupsClaim, AllowUnverifiedEmail: s.Identity.AllowUnverifiedEmail,
		Groups: groups}
	ps := s.Paths
	var az *authorizer.Authorizer
	if a := s.Authorizer; a.URL != "" {
		if az, err = authorizer.New(authorizer.Options{URL: a.URL, Format: a.Format, Timeout: a.Timeout, MaxConcurrent: a.MaxConcurrent,
			CacheTTL: a.CacheTTL, CacheSize: a.CacheSize, Now: clock}); err != nil {
			t.Fatal(err)
		}
	}
	h := New(Options{
		CallbackPath: ps.Callback, LogoutPath: ps.Logout, VerifyPath: ps.Verify, StartPath: ps.Start, SitePrefix: ps.Site,
		BackchannelPath: ps.Backchannel, SkipPrefixes: ps.Skip, APIPrefixes: ps.API, AllowOptions: ps.AllowOptions,
		UserHeader: s.Identity.UserHeader, GroupsHeader: s.Identity.GroupsHeader, UserPrefix: s.Identity.UserPrefix,
		AuthRequestHeaders: s.Identity.AuthRequestHeaders, RenewRedirect: ss.RenewRedirect,
		AfterLogin: ps.AfterLogin, AfterLogout: ps.AfterLogout, AllowedRedirectHosts: ps.AllowedRedirectHosts,
		LoginStateTTL: ss.LoginStateTTL, MaxPendingLogins: ss.MaxPendingLogins, SessionMaxAge: ss.MaxAge,
		StrictValidation: ss.StrictValidation, ProviderTimeout: s.Provider.Timeout, RevokeTokens: s.Logout.RevokeTokens,
		ProviderLogout: s.Logout.ProviderLogout, ForwardAuthProxy: s.ForwardAuth.Proxy, TrustedProxies: s.ForwardAuth.TrustedProxies,
		ForwardAuthRedirect: s.ForwardAuth.Redirect, UpstreamToken: s.Upstream.Mode, KeepBearer: s.Upstream.KeepBearer,
		AcceptProviderIDTokens: s.Bearer.AcceptProviderIDTokens,
		ForwardAnswerMax:       s.ForwardAuth.AnswerMax,
	}, Deps{
		Logger: zap.NewNop(),
		Cookies: session.NewCookies(session.CookieOptions{Name: ss.CookieName, Domain: ss.Domain, SameSite: ss.SameSite,
			HTTPOnly: ss.HTTPOnly, HostPrefix: ss.HostPrefix, AcceptPlain: ss.AcceptPlain, Secure: ss.Secure, MaxCookies: ss.MaxCookies}),
		Codec: codec, Provider: p, Mapper: mapper, Policy: policy(t, s), Authorizer: az, Pages: pg,
		Sessions: credential.NewSessions(credential.SessionOptions{CookieName: ss.CookieName, UserPrefix: s.Identity.UserPrefix, IdleTimeout: ss.IdleTimeout,
			RefreshBeforeExpiry: ss.RefreshBeforeExpiry, StrictValidation: ss.StrictValidation, StrictInterval: ss.StrictInterval,
			StrictGrace: ss.StrictGrace, Budget: ss.CheckProviderBudget, UpstreamIDToken: s.Upstream.Mode == "id_token",
			Groups: groups, MaxCookies: ss.MaxCookies, UpstreamHeaderMax: id.UpstreamHeaderMaxBytes, KeepClaims: az != nil},
			codec, p, rev, m, zap.NewNop(), clock),
		Tokens: credential.NewTokens(credential.TokenOptions{UserPrefix: s.Identity.UserPrefix, Budget: time.Second, ProviderIssuer: s.Provider.Issuer,
			KeepClaims: az != nil}, auth, mapper, rev, m, zap.NewNop(), clock),
		Revocations: rev,
		Backchannel: &revocation.Backchannel{List: rev, Verifier: p, MaxAge: time.Minute, Timeout: time.Second, Metrics: m, Log: zap.NewNop()},
		Metrics:     m, Now: clock, Random: rand.Reader,
	})
	return &fixture{h: h, s: s, codec: codec, now: now, token: te, m: m}
}

func (f *fixture) cookie(t testing.TB, user string, groups []string, expires time.Time) string {
	t.Helper()
	v, err := f.codec.SealSession("authservice_session", &session.Session{Subject: "s", User: user, Groups: groups,
		Created: f.now.Unix(), Expires: expires.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (f *fixture) do(method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	r.Host = "kubeflow.example.com"
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

func TestDecisionTable(t *testing.T) {
	f := newFixture(t, nil)
	valid := f.cookie(t, "user@example.com", []string{"team-a", "team-b"}, f.now.Add(time.Hour))
	expired := f.cookie(t, "user@example.com", nil, f.now.Add(-time.Second))
	other, _ := session.NewCodec([][]byte{[]byte(strings.Repeat("z", 32))}, time.Hour, time.Now).
		SealSession("authservice_session", &session.Session{User: "admin@example.com", Expires: f.now.Add(time.Hour).Unix()})

	cases := []struct {
		name     string
		method   string
		target   string
		hdr      map[string]string
		status   int
		user     string // expected kubeflow-userid on 200
		location string // prefix of Location on 302
		removes  bool   // x-envoy-auth-headers-to-remove names the identity headers
	}{
		{"skip path", "GET", "/dex/auth?x=1", nil, 200, "", "", true},
		{"skip path exact", "GET", "/dex", nil, 200, "", "", true},
		{"skip prefix is segment-aware", "GET", "/dexterity", nil, 302, "", "/dex/auth?", false},
		{"skip path traversal not skipped", "GET", "/dex/../api/x", map[string]string{"Accept": "application/json"}, 401, "", "", false},
		{"own pages skipped", "GET", "/authservice/site/after_logout", nil, 200, "", "", true},
		{"valid cookie", "GET", "/notebook/ns/x?y=1", map[string]string{"Cookie": "a=b; authservice_session=" + valid}, 200, "user@example.com", "", false},
		{"valid cookie as bearer", "POST", "/pipeline/apis/v1/runs", map[string]string{"Authorization": "Bearer " + valid}, 200, "user@example.com", "", false},
		{"expired cookie, navigation", "GET", "/", map[string]string{"Cookie": "authservice_session=" + expired}, 302, "", "/dex/auth?", false},
		{"foreign key cookie, XHR", "GET", "/x", map[string]string{"Cookie": "authservice_session=" + other, "X-Requested-With": "XMLHttpRequest"}, 401, "", "", false},
		{"no session, navigation", "GET", "/jupyter/", nil, 302, "", "/dex/auth?", false},
		{"no session, HEAD", "HEAD", "/", nil, 302, "", "/dex/auth?", false},
		{"no session, XHR", "GET", "/x", map[string]string{"X-Requested-With": "XMLHttpRequest"}, 401, "", "", false},
		{"no session, fetch", "GET", "/x", map[string]string{"Sec-Fetch-Mode": "cors"}, 401, "", "", false},
		{"no session, JSON accept", "GET", "/x", map[string]string{"Accept": "application/json"}, 401, "", "", false},
		{"no session, browser accept", "GET", "/x", map[string]string{"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}, 302, "", "/dex/auth?", false},
		{"no session, API path", "GET", "/api/workgroup/env-info", nil, 401, "", "", false},
		{"no session, apis path", "GET", "/apis/v1beta1/x", nil, 401, "", "", false},
		{"no session, POST", "POST", "/x", nil, 401, "", "", false},
		{"no session, OPTIONS", "OPTIONS", "/x", nil, 401, "", "", false},
		{"garbage bearer", "GET", "/x", map[string]string{"Authorization": "Bearer not-a-session", "Accept": "application/json"}, 401, "", "", false},
		{"logout GET without session", "GET", "/authservice/logout", nil, 302, "", "/authservice/site/after_logout", false},
		{"logout POST without session", "POST", "/authservice/logout", nil, 401, "", "", false},
		{"logout PUT", "PUT", "/authservice/logout", nil, 405, "", "", false},
		{"callback without state", "GET", "/authservice/oidc/callback?code=x", nil, 400, "", "", false},
		{"callback POST", "POST", "/authservice/oidc/callback", nil, 405, "", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := f.do(c.method, c.target, c.hdr)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, c.status, w.Body)
			}
			if got := w.Header().Get("Kubeflow-Userid"); got != c.user {
				t.Errorf("kubeflow-userid %q, want %q", got, c.user)
			}
			if c.status == 200 && c.user != "" {
				if _, ok := w.Header()["Kubeflow-Groups"]; !ok {
					t.Error("kubeflow-groups not set")
				}
			}
			if loc := w.Header().Get("Location"); !strings.HasPrefix(loc, c.location) || (c.location == "" && loc != "") {
				t.Errorf("Location %q, want prefix %q", loc, c.location)
			}
			rm := w.Header().Get("X-Envoy-Auth-Headers-To-Remove")
			// Every allow removes the underscore spellings; anonymous
			// allows remove the identity headers themselves too.
			if c.removes != (rm == "kubeflow-userid,kubeflow-groups,kubeflow_userid,kubeflow_groups") ||
				(c.status == 200 && !c.removes && rm != "kubeflow_userid,kubeflow_groups" && rm != "kubeflow_userid,kubeflow_groups,authorization") {
				t.Errorf("headers-to-remove %q", rm)
			}
			if c.status == 401 && w.Header().Get("Www-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if c.status >= 500 {
				t.Error("5xx")
			}
		})
	}
}

func TestAllowAnswerHeaders(t *testing.T) {
	f := newFixture(t, map[string]string{"USERID_PREFIX": "accounts.google.com:"})
	w := f.do("GET", "/", map[string]string{"Cookie": "authservice_session=" + f.cookie(t, "u@x", []string{"a", "b"}, f.now.Add(time.Hour))})
	if w.Code != 200 || w.Header().Get("Kubeflow-Userid") != "accounts.google.com:u@x" || w.Header().Get("Kubeflow-Groups") != "a,b" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	w = f.do("GET", "/", map[string]string{"Cookie": "authservice_session=" + f.cookie(t, "u@x", nil, f.now.Add(time.Hour))})
	if v, ok := w.Header()["Kubeflow-Groups"]; !ok || v[0] != "" {
		t.Fatalf("empty groups must still be set: %v", w.Header())
	}
}

func TestGroupsAllowlist(t *testing.T) {
	f := newFixture(t, map[string]string{"GROUPS_ALLOWLIST": "admins,ml"})
	in := f.cookie(t, "in@x", []string{"ml"}, f.now.Add(time.Hour))
	out := f.cookie(t, "out@x", []string{"sales"}, f.now.Add(time.Hour))
	if w := f.do("GET", "/", map[string]string{"Cookie": "authservice_session=" + in}); w.Code != 200 {
		t.Fatalf("member: %d", w.Code)
	}
	w := f.do("GET", "/", map[string]string{"Cookie": "authservice_session=" + out})
	if w.Code != 403 || !strings.Contains(w.Body.String(), "out@x") || !strings.Contains(w.Body.String(), "GROUPS_ALLOWLIST") {
		t.Fatalf("non-member: %d %s", w.Code, w.Body)
	}
	if w.Header().Get("Content-Security-Policy") == "" || w.Header().Get("X-Frame-Options") != "DENY" {
		t.Fatal("403 page without CSP/frame protection")
	}
	w = f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + out, "Accept": "application/json"})
	if w.Code != 403 || !strings.Contains(w.Body.String(), `"user":"out@x"`) {
		t.Fatalf("non-member JSON: %d %s", w.Code, w.Body)
	}
}

func TestLoginRedirect(t *testing.T) {
	f := newFixture(t, map[string]string{"OIDC_SCOPES": "profile email groups"})
	w := f.do("GET", "/notebook/ns/x/?a=1&b=%2F", nil)
	if w.Code != 302 {
		t.Fatalf("%d", w.Code)
	}
	u, err := url.Parse(w.Header().Get("Location"))
	if err != nil || u.Path != "/dex/auth" || u.Host != "" {
		t.Fatalf("Location %q", w.Header().Get("Location"))
	}
	q := u.Query()
	for k, want := range map[string]string{"client_id": "kubeflow-oidc-authservice", "redirect_uri": "/authservice/oidc/callback",
		"response_type": "code", "scope": "openid profile email groups", "code_challenge_method": "S256"} {
		if q.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, q.Get(k), want)
		}
	}
	if !session.ValidState(q.Get("state")) || q.Get("nonce") == "" || len(q.Get("code_challenge")) != 43 {
		t.Fatalf("state/nonce/challenge: %v", q)
	}
	// The state cookie is named after the state and holds the original URL.
	var stateCookie *http.Cookie
	for _, c := range w.Result().Cookies() {
		if c.Name == "authservice_state_"+q.Get("state") {
			stateCookie = c
		}
	}
	if stateCookie == nil || !stateCookie.HttpOnly || stateCookie.MaxAge != 600 || stateCookie.SameSite != http.SameSiteLaxMode {
		t.Fatalf("state cookie %+v", stateCookie)
	}
	var ls session.LoginState
	if err := f.codec.Open(stateCookie.Name, stateCookie.Value, &ls); err != nil {
		t.Fatal(err)
	}
	if ls.URL != "http://kubeflow.example.com/notebook/ns/x/?a=1&b=%2F" || ls.Challenge() != q.Get("code_challenge") || ls.Nonce != q.Get("nonce") {
		t.Fatalf("login state %+v", ls)
	}
	// A second navigation starts a second, independent login.
	w2 := f.do("GET", "/other", nil)
	if w2.Code != 302 || len(w2.Result().Cookies()) != 1 || w2.Result().Cookies()[0].Name == stateCookie.Name {
		t.Fatal("second login did not get its own state cookie")
	}
}

func TestPendingLoginsBounded(t *testing.T) {
	f := newFixture(t, map[string]string{"MAX_PENDING_LOGINS": "3"})
	jar := map[string]string{}
	for i := 0; i < 10; i++ {
		var parts []string
		for n, v := range jar {
			parts = append(parts, n+"="+v)
		}
		f.now = f.now.Add(time.Second)
		w := f.do("GET", "/", map[string]string{"Cookie": strings.Join(parts, "; ")})
		for _, c := range w.Result().Cookies() {
			if c.MaxAge < 0 {
				delete(jar, c.Name)
			} else {
				jar[c.Name] = c.Value
			}
		}
		if len(jar) > 3 {
			t.Fatalf("after %d logins the browser holds %d state cookies", i+1, len(jar))
		}
	}
}

func TestSecureCookies(t *testing.T) {
	f := newFixture(t, nil)
	w := f.do("GET", "/", map[string]string{"X-Forwarded-Proto": "https"})
	if c := w.Result().Cookies(); len(c) != 1 || !c[0].Secure {
		t.Fatalf("https request: %+v", c)
	}
	if c := f.do("GET", "/", nil).Result().Cookies(); len(c) != 1 || c[0].Secure {
		t.Fatalf("http request: %+v", c)
	}
}

func TestLogout(t *testing.T) {
	f := newFixture(t, map[string]string{"AFTER_LOGOUT_URL": "/"})
	v := f.cookie(t, "u@x", nil, f.now.Add(time.Hour))
	w := f.do("POST", "/authservice/logout", map[string]string{"Authorization": "Bearer " + v})
	if w.Code != 201 || strings.TrimSpace(w.Body.String()) != `{"afterLogoutURL":"/"}` {
		t.Fatalf("POST logout: %d %s", w.Code, w.Body)
	}
	w = f.do("GET", "/authservice/logout", map[string]string{"Cookie": "authservice_session=" + v})
	if w.Code != 302 || w.Header().Get("Location") != "/" {
		t.Fatalf("GET logout: %d %v", w.Code, w.Header())
	}
	cleared := false
	for _, c := range w.Result().Cookies() {
		cleared = cleared || (c.Name == "authservice_session" && c.MaxAge < 0)
	}
	if !cleared {
		t.Fatal("GET logout did not clear the cookie")
	}
}

// A logout whose Authorization holds more than one credential gets 400 and
// ends nothing, as a check does: which one names the session is not picked.
// Before, the first was taken and the session it named ended.
func TestLogoutWithSeveralCredentials(t *testing.T) {
	f := newFixture(t, map[string]string{"AFTER_LOGOUT_URL": "/"})
	v := f.cookie(t, "u@x", nil, f.now.Add(time.Hour))
	for _, auth := range [][]string{{"Bearer " + v, "Bearer " + v}, {"Bearer " + v, "Basic dTpw"}, {"Bearer " + v + ",Basic dTpw"}} {
		r := httptest.NewRequest("POST", "/authservice/logout", nil)
		for _, a := range auth {
			r.Header.Add("Authorization", a)
		}
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		if w.Code != 400 || len(w.Result().Cookies()) != 0 {
			t.Fatalf("POST logout with Authorization %.30q: %d %s", auth, w.Code, w.Body)
		}
	}
	// The session was not ended: it still logs out.
	if w := f.do("POST", "/authservice/logout", map[string]string{"Authorization": "Bearer " + v}); w.Code != 201 {
		t.Fatalf("the session after the refused logouts: %d %s", w.Code, w.Body)
	}
}

func TestSafeTarget(t *testing.T) {
	f := newFixture(t, map[string]string{"ALLOWED_REDIRECT_HOSTS": "*.apps.example.com,other.example.com"})
	r := httptest.NewRequest("GET", "/authservice/oidc/callback", nil)
	r.Host = "kubeflow.example.com"
	cases := map[string]string{
		"http://kubeflow.example.com/a?b=c":                "/a?b=c",
		"https://KUBEFLOW.example.com/":                    "/",
		"https://other.example.com/x":                      "https://other.example.com/x",
		"https://nb.apps.example.com/x":                    "https://nb.apps.example.com/x",
		"https://apps.example.com.evil.com/x":              "/",
		"https://evil.example/":                            "/",
		"//evil.example/":                                  "/",
		"/\\evil.example":                                  "/",
		"https:evil.example":                               "/",
		"https://user@evil.example/":                       "/",
		"https://kubeflow.example.com@evil.example/":       "/",
		"javascript:alert(1)":                              "/",
		"HTTPS://evil.example/":                            "/",
		"http://kubeflow.example.com//evil.example/":       "/",
		"http://kubeflow.example.com/%2F%2Fevil.example":   "/",
		"http://kubeflow.example.com/a\r\nSet-Cookie: x=y": "/",
		"http://kubeflow.example.com/\tx":                  "/",
		"http://xn--kubflow-5ya.example.com/":              "/",
		"":                                                 "/",
	}
	for in, want := range cases {
		if got := f.h.safeTarget(r.Host, in); got != want {
			t.Errorf("safeTarget(%q) = %q, want %q", in, got, want)
		}
	}
}

func policy(t testing.TB, s *config.Settings) *authz.Policy {
	p, err := authz.New(authz.Options{AllowAll: s.Identity.AllowAllGroups, Groups: s.Identity.AllowedGroups, RulesFile: s.Bearer.RulesFile})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHostPrefixedCookies(t *testing.T) {
	https := map[string]string{"X-Forwarded-Proto": "https"}
	t.Run("https, no domain: __Host- state cookie", func(t *testing.T) {
		f := newFixture(t, nil)
		c := f.do("GET", "/", https).Result().Cookies()
		if len(c) != 1 || !strings.HasPrefix(c[0].Name, "__Host-authservice_state_") || !c[0].Secure || c[0].Path != "/" || c[0].Domain != "" {
			t.Fatalf("%+v", c)
		}
		// The sealed value is bound to the logical name.
		var ls session.LoginState
		if err := f.codec.Open(strings.TrimPrefix(c[0].Name, "__Host-"), c[0].Value, &ls); err != nil {
			t.Fatal(err)
		}
	})
	for name, env := range map[string]map[string]string{
		"with SESSION_DOMAIN":                 {"SESSION_DOMAIN": "example.com"},
		"with SESSION_COOKIE_HOST_PREFIX off": {"SESSION_COOKIE_HOST_PREFIX": "false"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, env)
			c := f.do("GET", "/", https).Result().Cookies()
			if len(c) != 1 || !strings.HasPrefix(c[0].Name, "authservice_state_") || !c[0].Secure {
				t.Fatalf("%+v", c)
			}
		})
	}
	t.Run("http: plain names", func(t *testing.T) {
		f := newFixture(t, nil)
		if c := f.do("GET", "/", nil).Result().Cookies(); len(c) != 1 || !strings.HasPrefix(c[0].Name, "authservice_state_") {
			t.Fatalf("%+v", c)
		}
	})
	t.Run("over https only the __Host- name is read; logout deletes both", func(t *testing.T) {
		f := newFixture(t, nil)
		v := f.cookie(t, "u@example.com", nil, f.now.Add(time.Hour))
		w := f.do("GET", "/x", map[string]string{"Cookie": "__Host-authservice_session=" + v, "X-Forwarded-Proto": "https"})
		if w.Code != 200 || w.Header().Get("Kubeflow-Userid") != "u@example.com" {
			t.Fatalf("__Host- session: %d", w.Code)
		}
		// A plain-named session where the prefixed form is in use may have
		// been planted by a sibling subdomain or over plain http.
		w = f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + v, "X-Forwarded-Proto": "https", "Accept": "application/json"})
		if w.Code != 401 {
			t.Fatalf("plain-named session over https: %d, want 401", w.Code)
		}
		w = f.do("GET", "/authservice/logout", map[string]string{"Cookie": "authservice_session=" + v + "; __Host-authservice_session=" + v, "X-Forwarded-Proto": "https"})
		var names []string
		for _, c := range w.Result().Cookies() {
			if c.MaxAge < 0 {
				names = append(names, c.Name)
			}
		}
		if !slices.Contains(names, "authservice_session") || !slices.Contains(names, "__Host-authservice_session") {
			t.Fatalf("logout over https deleted %v", names)
		}
	})
	t.Run("SESSION_COOKIE_ACCEPT_PLAIN opens a migration window for sessions only", func(t *testing.T) {
		f := newFixture(t, map[string]string{"SESSION_COOKIE_ACCEPT_PLAIN": "true"})
		v := f.cookie(t, "u@example.com", nil, f.now.Add(time.Hour))
		w := f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + v, "X-Forwarded-Proto": "https"})
		if w.Code != 200 || w.Header().Get("Kubeflow-Userid") != "u@example.com" {
			t.Fatalf("plain-named session with SESSION_COOKIE_ACCEPT_PLAIN: %d", w.Code)
		}
	})
	t.Run("over http the plain name is read", func(t *testing.T) {
		f := newFixture(t, nil)
		v := f.cookie(t, "u@example.com", nil, f.now.Add(time.Hour))
		if w := f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + v}); w.Code != 200 {
			t.Fatalf("plain-named session over http: %d", w.Code)
		}
	})
	t.Run("readable session cookie keeps its name for the old dashboard", func(t *testing.T) {
		f := newFixture(t, map[string]string{"SESSION_HTTP_ONLY": "false"})
		v := f.cookie(t, "u@example.com", nil, f.now.Add(time.Hour))
		https := map[string]string{"Cookie": "authservice_session=" + v, "X-Forwarded-Proto": "https"}
		if w := f.do("GET", "/x", https); w.Code != 200 {
			t.Fatalf("with SESSION_HTTP_ONLY=false the session cookie keeps its plain name over https: %d", w.Code)
		}
		if c := f.do("GET", "/", map[string]string{"X-Forwarded-Proto": "https"}).Result().Cookies(); len(c) != 1 || !strings.HasPrefix(c[0].Name, "__Host-authservice_state_") {
			t.Fatalf("state cookies are prefixed whatever SESSION_HTTP_ONLY says: %+v", c)
		}
	})
}

// A bearer token the service accepted does not reach the upstream, which
// could present it to the gateway as its owner for the token's lifetime
// (issue 21): the allow answer removes Authorization, unless
// UPSTREAM_BEARER=keep (a RequestAuthentication reads it after the check and
// removes it there), and a token of UPSTREAM_TOKEN replaces it instead.
func TestBearerTokenIsNotForwarded(t *testing.T) {
	tok := strings.Repeat("a", 40) + "." + strings.Repeat("b", 40) + "." + strings.Repeat("c", 40)
	bearer := map[string]string{"Authorization": "Bearer " + tok, "Cookie": "XSRF-TOKEN=x"}
	removed := func(w *httptest.ResponseRecorder) bool {
		for _, n := range strings.Split(w.Header().Get("X-Envoy-Auth-Headers-To-Remove"), ",") {
			if n == "authorization" {
				return true
			}
		}
		return false
	}
	f := newFixtureWith(t, nil, fixedToken{raw: tok, exp: time.Now().Add(time.Hour)})
	w := f.do("GET", "/pipeline/apis/v2beta1/runs", bearer)
	if w.Code != 200 || w.Header().Get("Kubeflow-Userid") != "system:serviceaccount:ns:sa" || !removed(w) {
		t.Fatalf("default: %d, user %q, headers-to-remove %q", w.Code, w.Header().Get("Kubeflow-Userid"), w.Header().Get("X-Envoy-Auth-Headers-To-Remove"))
	}
	if _, set := w.Header()["Authorization"]; set {
		t.Fatal("default: the answer sets Authorization")
	}

	f = newFixtureWith(t, map[string]string{"UPSTREAM_BEARER": "keep"}, fixedToken{raw: tok, exp: time.Now().Add(time.Hour)})
	if w := f.do("GET", "/pipeline/apis/v2beta1/runs", bearer); w.Code != 200 || removed(w) {
		t.Fatalf("UPSTREAM_BEARER=keep: %d, headers-to-remove %q", w.Code, w.Header().Get("X-Envoy-Auth-Headers-To-Remove"))
	}

	// UPSTREAM_TOKEN=issued: the issued token is set in the client's
	// token's place, and authorization is not also removed (Envoy removes
	// after it sets: the issued token would be lost).
	f = newFixtureWith(t, map[string]string{"UPSTREAM_TOKEN": "issued"}, fixedToken{raw: tok, exp: time.Now().Add(time.Hour)})
	f.h.d.Upstream = fakeSigner{}
	w = f.do("GET", "/pipeline/apis/v2beta1/runs", bearer)
	if w.Code != 200 || removed(w) || w.Header().Get("Authorization") != "Bearer issued-for-system:serviceaccount:ns:sa" {
		t.Fatalf("UPSTREAM_TOKEN=issued: %d, Authorization %q, headers-to-remove %q", w.Code, w.Header().Get("Authorization"), w.Header().Get("X-Envoy-Auth-Headers-To-Remove"))
	}
	// The same for a session value sent as a bearer token.
	v := f.cookie(t, "u@example.com", nil, f.now.Add(time.Hour))
	w = f.do("GET", "/pipeline/apis/v2beta1/runs", map[string]string{"Authorization": "Bearer " + v})
	if w.Code != 200 || removed(w) || w.Header().Get("Authorization") != "Bearer issued-for-u@example.com" {
		t.Fatalf("session as bearer, UPSTREAM_TOKEN=issued: %d, Authorization %q, headers-to-remove %q", w.Code, w.Header().Get("Authorization"), w.Header().Get("X-Envoy-Auth-Headers-To-Remove"))
	}
}

func TestSessionAsBearerIsNotForwarded(t *testing.T) {
	f := newFixture(t, nil)
	v := f.cookie(t, "u@example.com", nil, f.now.Add(time.Hour))
	w := f.do("GET", "/pipeline/apis/v2beta1/runs", map[string]string{"Authorization": "Bearer " + v})
	if w.Code != 200 || w.Header().Get("X-Envoy-Auth-Headers-To-Remove") != "kubeflow_userid,kubeflow_groups,authorization" {
		t.Fatalf("%d, headers-to-remove %q", w.Code, w.Header().Get("X-Envoy-Auth-Headers-To-Remove"))
	}
	// A cookie session with the app's own Authorization header keeps it.
	w = f.do("GET", "/app", map[string]string{"Cookie": "authservice_session=" + v, "Authorization": "Basic dTpw"})
	if w.Code != 200 || strings.Contains(w.Header().Get("X-Envoy-Auth-Headers-To-Remove"), "authorization") {
		t.Fatalf("%d, headers-to-remove %q", w.Code, w.Header().Get("X-Envoy-Auth-Headers-To-Remove"))
	}
}

// fakeSigner signs "issued-for-<sub>" tokens (UPSTREAM_TOKEN=issued).
type fakeSigner struct{}

func (fakeSigner) Sign(sub string, _ []string) (string, time.Time, error) {
	return "issued-for-" + sub, time.Now().Add(5 * time.Minute), nil
}

func (fakeSigner) Lifetime() time.Duration { return 5 * time.Minute }
