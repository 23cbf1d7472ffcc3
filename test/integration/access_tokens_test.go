package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/provider"
	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// gitlabService is a GitLab-shaped provider with the service behind the
// Envoy-faithful gateway (Kubeflow's corrected EnvoyFilter), configured as
// docs/gitlab.md says, plus env.
type gitlabService struct {
	gl      *peer.GitLab
	svc     *peer.Service
	gateway string
}

func startGitLabService(t *testing.T, o peer.GitLabOptions, env map[string]string) *gitlabService {
	t.Helper()
	port := peer.FreePort(t)
	gateway := fmt.Sprintf("http://127.0.0.1:%d", port)
	o.RedirectURIs = []string{gateway + "/authservice/oidc/callback"}
	g := peer.StartGitLab(t, o)
	e := map[string]string{
		"OIDC_PROVIDER": g.Issuer, "CLIENT_ID": g.Opts.ClientID, "CLIENT_SECRET": g.Opts.ClientSecret,
		"REDIRECT_URL": gateway + "/authservice/oidc/callback", "OIDC_SCOPES": "openid profile email",
		"USERID_CLAIM": "email", "GROUPS_CLAIM": "groups", "SESSION_KEYS": peer.SessionKey,
	}
	for k, v := range env {
		e[k] = v
	}
	svc := peer.StartService(t, e)
	svc.WaitReady(t, 30*time.Second)
	peer.KubeflowGatewayAt(t, sentinelGateway, svc.CheckURL, svc.WebURL, 0, port)
	return &gitlabService{gl: g, svc: svc, gateway: gateway}
}

// bearerGet sends a GET with Authorization: Bearer token through gateway.
func bearerGet(t *testing.T, gateway, path, token string) *answer {
	t.Helper()
	req, _ := http.NewRequest("GET", gateway+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	resp, err := noFollowWith(nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return toAnswer(resp)
}

// upstreamAs asserts the upstream got the request as user with groups, and no
// Authorization header (the client's token is removed: UPSTREAM_BEARER).
func upstreamAs(t *testing.T, a *answer, user, groups string) {
	t.Helper()
	e := a.upstreamEcho()
	if e == nil {
		t.Fatalf("not let through: %s", a)
	}
	if got := e.Headers["kubeflow-userid"]; len(got) != 1 || got[0] != user {
		t.Fatalf("kubeflow-userid %q, want %q", got, user)
	}
	if got := e.Headers["kubeflow-groups"]; len(got) != 1 || got[0] != groups {
		t.Fatalf("kubeflow-groups %q, want %q", got, groups)
	}
	if got := e.Headers["authorization"]; len(got) != 0 {
		t.Fatalf("the client's token reached the upstream: %q", got)
	}
}

// jwtHeader is the JOSE header of a compact JWS, or nil when raw is none.
func jwtHeader(raw string) map[string]any {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil
	}
	var h map[string]any
	if json.Unmarshal(b, &h) != nil {
		return nil
	}
	return h
}

// TestOpaqueAccessTokensGitLab: GitLab's OAuth access tokens are opaque; with
// ACCESS_TOKEN_AUTHN=opaque the service asks userinfo once per token, takes
// the user and the groups from its answer, reuses the answer for
// ACCESS_TOKEN_CACHE_TTL, and refuses a token revoked at the provider once
// that time has passed.
func TestOpaqueAccessTokensGitLab(t *testing.T) {
	s := startGitLabService(t, peer.GitLabOptions{}, map[string]string{"ACCESS_TOKEN_AUTHN": "opaque", "ACCESS_TOKEN_CACHE_TTL": "2s"})
	tok := s.gl.Tokens(t, "alice")
	if jwtHeader(tok.AccessToken) != nil || strings.Count(tok.AccessToken, ".") == 2 {
		t.Fatalf("the GitLab-shaped provider's access token is not opaque: %.20s…", tok.AccessToken)
	}
	before := s.gl.Userinfo(t)
	for range 6 {
		upstreamAs(t, bearerGet(t, s.gateway, "/api/pipelines?format=json", tok.AccessToken), "alice@example.com", "acme,acme/ml")
	}
	if n := s.gl.Userinfo(t) - before; n != 1 {
		t.Fatalf("the provider's userinfo endpoint was asked %d times for one token used six times", n)
	}
	m := scrape(t, s.svc)
	if m[`oidc_authservice_access_token_verifications_total{kind="opaque",result="ok"}`] != 1 ||
		m[`oidc_authservice_cache_lookups_total{cache="access_token",result="hit"}`] != 5 {
		t.Errorf("metrics: %v", keysWith(m, "access_token"))
	}

	// An invented token: refused, and the refusal is cached too.
	before = s.gl.Userinfo(t)
	for range 3 {
		if a := bearerGet(t, s.gateway, "/api/x", "invented"+strings.Repeat("0", 56)); a.status != 401 {
			t.Fatalf("an invented token: %s", a)
		}
	}
	if n := s.gl.Userinfo(t) - before; n != 1 {
		t.Fatalf("%d userinfo calls for one invented token sent three times", n)
	}

	// The user revokes the application at the provider: the token stops
	// working once the cached answer is older than ACCESS_TOKEN_CACHE_TTL.
	if err := s.gl.Revoke("4217"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if a := bearerGet(t, s.gateway, "/api/x", tok.AccessToken); a.status != 401 || a.header.Get("Www-Authenticate") == "" {
		t.Fatalf("a token revoked at the provider, after the cache time: %s", a)
	}
}

// TestOpaqueAccessTokenOfALoggedOutSession: the access token the service
// obtained at login (sealed in the session; here read with the test's key,
// as a leak would) works as a bearer token and stops working at once when
// the session logs out: the revocation list names it, whether or not the
// provider revoked it too (REVOKE_TOKENS_ON_LOGOUT), and a token the
// provider still vouches for is refused all the same.
func TestOpaqueAccessTokenOfALoggedOutSession(t *testing.T) {
	for _, revokeAtProvider := range []string{"true", "false"} {
		t.Run("REVOKE_TOKENS_ON_LOGOUT="+revokeAtProvider, func(t *testing.T) {
			// STRICT_SESSION_VALIDATION keeps the access token in the session
			// when it is not kept for the revocation at logout.
			s := startGitLabService(t, peer.GitLabOptions{}, map[string]string{"ACCESS_TOKEN_AUTHN": "opaque",
				"REVOKE_TOKENS_ON_LOGOUT": revokeAtProvider, "STRICT_SESSION_VALIDATION": "true"})
			b := newBrowser()
			resp, err := peer.GitLabLogin(b.Client, s.gateway+"/start?format=json", "alice")
			if err != nil {
				t.Fatal(err)
			}
			readEcho(t, resp)
			var sealed string
			gw, _ := url.Parse(s.gateway)
			for _, c := range b.Jar.Cookies(gw) {
				if c.Name == "authservice_session" {
					sealed = c.Value
				}
			}
			at := peer.OpenSession(t, sealed).AccessToken
			if at == "" || strings.Count(at, ".") == 2 {
				t.Fatalf("the session keeps no opaque access token: %.20q", at)
			}
			upstreamAs(t, bearerGet(t, s.gateway, "/api/x?format=json", at), "alice@example.com", "acme,acme/ml")
			// With the session cookie as well, the token this gateway
			// accepts does not reach the upstream either.
			req, _ := http.NewRequest("GET", s.gateway+"/api/both?format=json", nil)
			req.Header.Set("Authorization", "Bearer "+at)
			resp, err = b.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			upstreamAs(t, toAnswer(resp), "alice@example.com", "acme,acme/ml")

			revocations := func() int {
				c, err := s.gl.Counts()
				if err != nil {
					t.Fatal(err)
				}
				return c["revocation"]
			}
			before := revocations()
			req, _ = http.NewRequest("POST", s.gateway+"/authservice/logout", nil)
			resp, err = b.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 201 {
				t.Fatalf("logout: HTTP %d", resp.StatusCode)
			}
			if revoked := revocations() > before; revoked != (revokeAtProvider == "true") {
				t.Fatalf("revoked at the provider: %v, REVOKE_TOKENS_ON_LOGOUT=%s", revoked, revokeAtProvider)
			}
			// At once: no waiting for ACCESS_TOKEN_CACHE_TTL (60 s).
			if a := bearerGet(t, s.gateway, "/api/x", at); a.status != 401 {
				t.Fatalf("the logged-out session's access token: %s", a)
			}
			// Without the revocation at the provider, the provider still
			// vouches for the token: only the revocation list refuses it.
			req, _ = http.NewRequest("GET", s.gl.Issuer+"/me", nil)
			req.Header.Set("Authorization", "Bearer "+at)
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if stillValid := resp.StatusCode == 200; stillValid != (revokeAtProvider == "false") {
				t.Fatalf("the provider's userinfo answers %d for the token after logout", resp.StatusCode)
			}
		})
	}
}

// TestJWTAccessTokensRFC9068: a provider that issues RFC 9068 access
// tokens (typ at+jwt, here node-oidc-provider with a resource server):
// accepted for ACCESS_TOKEN_AUDIENCES with ACCESS_TOKEN_AUTHN=jwt, without
// any call to the provider; never accepted as an ID token, even for an ID
// token's audience; and the provider's ID token is not an access token.
func TestJWTAccessTokensRFC9068(t *testing.T) {
	const api = "https://kubeflow.example.com"
	s := startGitLabService(t, peer.GitLabOptions{AccessTokenAudience: api},
		map[string]string{"ACCESS_TOKEN_AUDIENCES": api, "GROUPS_CLAIM": "groups_direct", "ACCEPT_PROVIDER_ID_TOKENS": "false"})
	tok := s.gl.Tokens(t, "alice")
	if h := jwtHeader(tok.AccessToken); h == nil || h["typ"] != "at+jwt" {
		t.Fatalf("not an RFC 9068 access token: header %v", h)
	}
	before := s.gl.Userinfo(t)
	upstreamAs(t, bearerGet(t, s.gateway, "/api/x?format=json", tok.AccessToken), "alice@example.com", "acme/ml")
	if n := s.gl.Userinfo(t) - before; n != 0 {
		t.Fatalf("%d userinfo calls for a JWT access token", n)
	}
	if m := scrape(t, s.svc); m[`oidc_authservice_access_token_verifications_total{kind="jwt",result="ok"}`] != 1 {
		t.Errorf("metrics: %v", keysWith(m, "access_token"))
	}
	idToken, _ := tok.Extra("id_token").(string)
	if a := bearerGet(t, s.gateway, "/api/x", idToken); a.status != 401 {
		t.Fatalf("the provider's ID token taken for an access token: %s", a)
	}

	// Access tokens off, ID tokens on for the access token's own audience:
	// an at+jwt token is still not an ID token.
	svc := peer.StartService(t, map[string]string{"OIDC_PROVIDER": s.gl.Issuer, "CLIENT_ID": s.gl.Opts.ClientID,
		"CLIENT_SECRET": s.gl.Opts.ClientSecret, "SESSION_KEYS": peer.SessionKey, "GROUPS_CLAIM": "groups_direct",
		"ACCESS_TOKEN_AUTHN_ENABLED": "false", "PROVIDER_ID_TOKEN_AUDIENCES": s.gl.Opts.ClientID + "," + api})
	svc.WaitReady(t, 30*time.Second)
	if a := bearerGet(t, svc.CheckURL, "/api/x", tok.AccessToken); a.status != 401 {
		t.Fatalf("an at+jwt access token accepted as an ID token: %s", a)
	}
	if a := bearerGet(t, svc.CheckURL, "/api/x", idToken); a.status != 200 || a.header.Get("Kubeflow-Userid") != "alice@example.com" {
		t.Fatalf("the ID token, with ID tokens accepted: %s", a)
	}
}

// TestAccessTokensDex: Dex's access tokens are JWTs with the ID token's
// claims and audience (the client) and no at+jwt type, so they cannot be
// told from ID tokens: they pass as ID tokens (ACCEPT_PROVIDER_ID_TOKENS, the
// default), never as access tokens, and ACCESS_TOKEN_AUTHN=opaque never
// sends them to userinfo. Dex's userinfo endpoint answers for its access
// token, as the service's userinfo client reads it.
func TestAccessTokensDex(t *testing.T) {
	dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a"})
	tok := dexTokens(t, dex)
	h := jwtHeader(tok.AccessToken)
	if h == nil || h["typ"] == "at+jwt" {
		t.Fatalf("Dex's access token: header %v", h)
	}

	// The service's userinfo client against Dex, with its access token.
	p, err := provider.New(provider.Options{Issuer: dex.Issuer, ClientID: dex.Opts.ClientID, ClientSecret: dex.Opts.ClientSecret,
		RedirectURL: "/authservice/oidc/callback", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Discover(context.Background()); err != nil {
		t.Fatal(err)
	}
	claims, err := p.UserInfo(context.Background(), tok.AccessToken)
	if err != nil || claims["email"] != "user@example.com" {
		t.Fatalf("Dex's userinfo with its access token: %v %v", claims, err)
	}
	if _, err := p.UserInfo(context.Background(), "invented-token-0123456789"); !errors.Is(err, provider.ErrRejected) {
		t.Fatalf("Dex's userinfo with an invented token: %v", err)
	}

	for _, c := range []struct {
		name string
		env  map[string]string
		ok   bool
	}{
		{"defaults: an ID token in all but name", nil, true},
		{"ID tokens off, the client listed for access tokens: still an ID token", map[string]string{"ACCEPT_PROVIDER_ID_TOKENS": "false",
			"ACCESS_TOKEN_AUDIENCES": dex.Opts.ClientID}, false},
		{"opaque mode, ID tokens off: a JWT never goes to userinfo", map[string]string{"ACCEPT_PROVIDER_ID_TOKENS": "false",
			"ACCESS_TOKEN_AUTHN": "opaque"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := peer.KubeflowEnv(dex)
			for k, v := range c.env {
				env[k] = v
			}
			svc := peer.StartService(t, env)
			svc.WaitReady(t, 30*time.Second)
			userinfo := `oidc_authservice_provider_requests_total{endpoint="userinfo",result="2xx"}`
			before := scrape(t, svc)[userinfo]
			a := bearerGet(t, svc.CheckURL, "/api/x", tok.AccessToken)
			if c.ok != (a.status == 200) || (c.ok && a.header.Get("Kubeflow-Userid") != "user@example.com") {
				t.Fatalf("Dex's access token: %s", a)
			}
			if n := scrape(t, svc)[userinfo] - before; n != 0 {
				t.Fatalf("%v userinfo calls for a JWT", n)
			}
		})
	}
}

// TestOpaqueAccessTokenGroups: the groups of userinfo's answer enter as
// every other source's do: GROUPS_FILTER keeps what it matches, and groups
// past GROUPS_MAX get a 403 identity_too_large (not a 401 that invites
// another try), never a silent cut.
func TestOpaqueAccessTokenGroups(t *testing.T) {
	many := make([]string, 300)
	for i := range many {
		many[i] = fmt.Sprintf("acme/team-%03d", i)
	}
	s := startGitLabService(t, peer.GitLabOptions{Accounts: map[string]peer.GitLabAccount{
		"alice": {Sub: "4217", Email: "alice@example.com", Name: "Alice", Groups: []string{"acme", "acme/ml", "other/x"}},
		"crowd": {Sub: "5000", Email: "crowd@example.com", Name: "Crowd", Groups: many},
	}}, map[string]string{"ACCESS_TOKEN_AUTHN": "opaque", "GROUPS_FILTER": "^acme(/|$)", "GROUPS_MAX": "256"})
	upstreamAs(t, bearerGet(t, s.gateway, "/api/x?format=json", s.gl.Tokens(t, "alice").AccessToken), "alice@example.com", "acme,acme/ml")
	a := bearerGet(t, s.gateway, "/api/x?format=json", s.gl.Tokens(t, "crowd").AccessToken)
	if a.status != 403 || !strings.Contains(string(a.body), "identity_too_large") || a.upstreamEcho() != nil {
		t.Fatalf("300 groups past GROUPS_MAX=256: %s", a)
	}
}
