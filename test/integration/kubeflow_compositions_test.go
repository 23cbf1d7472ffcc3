package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"sigs.k8s.io/yaml"

	"github.com/oidc-authservice/oidc-authservice/test/extauthz"
	"github.com/oidc-authservice/oidc-authservice/test/peer"
	"github.com/oidc-authservice/oidc-authservice/test/upstream"
)

// Kubeflow's real manifests, composed with the one-line swap and rendered
// by make manifests-check (test/manifests/export_test.go), which exports here
// the compositions to run and the scenarios to run on each: the gateway is
// the Envoy configuration Istio's translation generated for the composition
// (test/istio/testdata/envoy, make istio-config), the service runs with its
// rendered environment and Dex with its rendered client, all under their
// cluster names (Dex is http://dex.auth.svc.cluster.local:5556/dex and signs
// with the key istiod inlined; the process's cluster DNS proxy sends the
// cluster addresses to the local peers). docs/compatibility.md is generated
// from the same list.

// kfComposition is one exported composition.
type kfComposition struct {
	Release   string            `json:"release"`
	Form      string            `json:"form"`
	Stock     string            `json:"stock"`
	Scenarios []string          `json:"scenarios"`
	Gateway   map[string]string `json:"gateway"`
	Namespace string            `json:"namespace"`
	Env       map[string]string `json:"env"`
	Check     []string          `json:"check"`
	Web       []string          `json:"web"`
	GRPC      []string          `json:"grpc"`
	Files     map[string]string `json:"files"`
	// Exposed is what of the user's credentials still reaches every
	// upstream in this layout ("cookie": the compatible layouts, where
	// Kubeflow's mesh does not let the service rewrite the Cookie header).
	Exposed []string         `json:"exposed"`
	Objects []map[string]any `json:"objects"`
}

// kfRun is a composition running: Dex, the service, the gateway.
type kfRun struct {
	c       *kfComposition
	dex     *peer.Dex
	svc     *peer.Service
	up      *recorder // every upstream behind the gateway
	gateway string
	issuer  *peer.Issuer // the cluster's service-account issuer
	logout  string       // the dashboard's LOGOUT_URL
	ttl     time.Duration
	// saAudience is the audience a client asks for in the service-account
	// tokens it sends; saChecked says the service itself verifies them
	// (the gateway checks bearer requests: Kubeflow ≤ 1.9.0).
	saAudience string
	saChecked  bool
}

// The cluster addresses the rendered objects name, as the tests map them.
const (
	clusterDex  = "dex.auth.svc.cluster.local:5556"
	clusterJWKS = "cluster-jwks-proxy.istio-system.svc.cluster.local:80"
	// saIssuer is the cluster's service-account issuer as Kubeflow's kind
	// overlay names it (m2m-token-issuer).
	saIssuer = "https://kubernetes.default.svc.cluster.local"
	// clusterWeb is the service's web port in istio-system (kubeflow-jwt:
	// the issued tokens' issuer and keys).
	clusterWeb = "authservice.istio-system.svc.cluster.local:8082"
)

var scenarios = map[string]func(t *testing.T, k *kfRun){
	"browser login through Dex":                                            scenarioBrowserLogin,
	"reload without a new login":                                           scenarioReload,
	"login from the login start URL (oauth2-proxy's /oauth2/start?rd=)":    scenarioStart,
	"logout at the dashboard's LOGOUT_URL (GET navigation)":                scenarioLogoutGet,
	"logout at the dashboard's LOGOUT_URL (POST, dashboards before 1.10)":  scenarioLogoutPost,
	"API call with a Dex ID token":                                         scenarioDexToken,
	"API call with a service-account token":                                scenarioSAToken,
	"service-account token refused (no m2m issuer, as Kubeflow's overlay)": scenarioSARefused,
	"session outlives Dex's ID-token lifetime (refresh)":                   scenarioRefresh,
	"client-sent identity headers never reach the upstream":                scenarioForged,
	"no header an upstream receives lets another client in as the user":    scenarioReplay,
	"Kubeflow's DexSessionManager (tests/dex_login_test.py) logs in, alone and eight at once; its cookies reach a page and an API": scenarioPythonClient,
}

func TestKubeflowCompositions(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "kubeflow", "*.json"))
	if len(files) == 0 {
		t.Fatal("no exported compositions in testdata/kubeflow: run `UPDATE=1 make manifests-check`")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c kfComposition
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		t.Run(c.Release+"/"+c.Form, func(t *testing.T) {
			for _, sc := range c.Scenarios {
				if scenarios[sc] == nil {
					t.Fatalf("scenario %q is not implemented here (test/manifests lists it for this composition)", sc)
				}
			}
			k := startComposition(t, &c)
			for _, sc := range c.Scenarios {
				t.Run(sc, func(t *testing.T) { scenarios[sc](t, k) })
			}
		})
	}
}

func (c *kfComposition) object(kind, namespace, name string) map[string]any {
	for _, o := range c.Objects {
		md, _ := o["metadata"].(map[string]any)
		if o["kind"] == kind && md["namespace"] == namespace && md["name"] == name {
			return o
		}
	}
	return nil
}

func (c *kfComposition) has(sc string) bool {
	for _, s := range c.Scenarios {
		if s == sc {
			return true
		}
	}
	return false
}

// startComposition starts Dex with the rendered client, the service with its
// rendered environment and the gateway from the rendered objects.
func startComposition(t *testing.T, c *kfComposition) *kfRun {
	t.Helper()
	k := &kfRun{c: c}
	// Dex's client as the rendered Dex configuration registers it.
	dexCM := c.object("ConfigMap", "auth", "dex")
	if dexCM == nil {
		t.Fatal("no rendered Dex configuration")
	}
	var dexCfg struct {
		StaticClients []struct {
			RedirectURIs []string `json:"redirectURIs"`
		} `json:"staticClients"`
	}
	if err := yaml.Unmarshal([]byte(dexCM["data"].(map[string]any)["config.yaml"].(string)), &dexCfg); err != nil || len(dexCfg.StaticClients) == 0 {
		t.Fatalf("Dex's configuration: %v", err)
	}
	opts := peer.DexOptions{ClientID: c.Env["CLIENT_ID"], ClientSecret: c.Env["CLIENT_SECRET"],
		RedirectURIs: dexCfg.StaticClients[0].RedirectURIs, Groups: "team-a,team-b",
		Issuer: "http://" + clusterDex + "/dex", SigningKey: peer.TestKeyFile("dex"), Replicas: c.dexReplicas()}
	if c.has("session outlives Dex's ID-token lifetime (refresh)") {
		k.ttl = 8 * time.Second
		opts.IDTokenTTL = k.ttl
	}
	k.dex = peer.NewDex(t, opts)
	peer.MapClusterHost(t, clusterDex, fmt.Sprintf("http://127.0.0.1:%d", k.dex.Port))
	k.dex.Start()

	// The service: its rendered environment, reaching Dex at its cluster
	// address (through the cluster DNS proxy), on local ports.
	env := map[string]string{}
	for key, v := range c.Env {
		env[key] = v
	}
	if env["OIDC_PROVIDER"] != "http://"+clusterDex+"/dex" {
		t.Fatalf("the rendered OIDC_PROVIDER %q is not Kubeflow's Dex", env["OIDC_PROVIDER"])
	}
	if k.ttl > 0 {
		// Refresh 3 s before the 8 s ID token expires (the default 60 s is
		// for Dex's 24 h tokens).
		env["REFRESH_BEFORE_EXPIRY"] = "3s"
	}
	// The cluster's service-account issuer: its name, its fixed key (the
	// one istiod inlined for Kubeflow's m2m issuers), served here.
	k.issuer = peer.StartClusterIssuer(t, saIssuer)
	k.saAudience = "istio-ingressgateway.istio-system.svc.cluster.local"
	if f := env["AUTHENTICATION_CONFIG_FILE"]; f != "" {
		// The rendered file (Kubeflow 1.9.0's oauth2-proxy place: the
		// cluster's issuer of EXTRA_JWT_ISSUERS), with the issuer's
		// discovery at the local issuer, as DNS would resolve it.
		env["AUTHENTICATION_CONFIG_FILE"], k.saAudience = k.mapAuthenticationFile(t, c.Files[f])
		k.saChecked = true
	} else if c.has("API call with a service-account token") && len(c.Check) > 0 && c.object("RequestAuthentication", "istio-system", "m2m-token-issuer") == nil {
		// Arrikto's place (Kubeflow ≤ 1.9.0): the gateway sends bearer
		// tokens to the service. The overlay accepts the cluster's
		// service-account tokens by TokenReview (components/tokenreview),
		// which needs an API server: that path is proven against a real
		// kube-apiserver in test/kube (make kube-check). Here the same
		// tokens come through AUTHENTICATION_CONFIG_FILE, the other path.
		env["KUBERNETES_AUTHN_ENABLED"] = "false"
		env["AUTHENTICATION_CONFIG_FILE"], _ = k.mapAuthenticationFile(t, fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1beta1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: %s
    audiences: [%q]
  claimMappings:
    username:
      claim: sub
      prefix: ""
`, saIssuer, k.saAudience))
		k.saChecked = true
	}
	if env["UPSTREAM_TOKEN"] == "issued" {
		// The issued tokens' signing key, which the operator puts in a
		// Secret: the fixed test key whose key set istiod fetched from the
		// service's web port and inlined (test/keys); the issuer as istiod
		// and the gateway name it.
		env["UPSTREAM_TOKEN_KEYS_FILE"] = peer.TestKeyFile("upstream-token")
		if env["UPSTREAM_TOKEN_ISSUER"] != "http://"+clusterWeb {
			t.Fatalf("the rendered UPSTREAM_TOKEN_ISSUER %q is not the service's web port %s", env["UPSTREAM_TOKEN_ISSUER"], clusterWeb)
		}
	}
	k.svc = peer.StartService(t, env)
	k.svc.WaitReady(t, 30*time.Second)

	// The gateway: the Envoy configuration Istio's translation generated
	// for this composition, its clusters at the local peers.
	addrs := map[string]string{clusterDex: fmt.Sprintf("http://127.0.0.1:%d", k.dex.Port), clusterJWKS: k.issuer.URL}
	for _, a := range c.Check {
		addrs[a] = k.svc.CheckURL
	}
	for _, a := range c.Web {
		addrs[a] = k.svc.WebURL
	}
	for _, a := range c.GRPC {
		addrs[a] = "http://" + k.svc.GRPCAddr
	}
	k.up = startRecorder(t)
	g, err := extauthz.NewEnvoy(extauthz.EnvoyOptions{Layout: c.layout(), Addresses: addrs, Default: k.up.url})
	if err != nil {
		t.Fatalf("the gateway of %s: %v", c.layout(), err)
	}
	k.gateway = peer.GatewayHandler(t, g)
	if d := c.dashboard(); d != nil {
		for _, ctr := range d["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any) {
			for _, e := range ctr.(map[string]any)["env"].([]any) {
				if em := e.(map[string]any); em["name"] == "LOGOUT_URL" {
					k.logout = em["value"].(string)
				}
			}
		}
	}
	if k.logout == "" {
		t.Fatal("the rendered dashboard has no LOGOUT_URL")
	}
	return k
}

// mapAuthenticationFile writes an AuthenticationConfiguration for the
// service whose cluster issuer (saIssuer) is discovered at the local issuer
// (issuer.discoveryURL: the issuer keeps its name, as the tokens carry it);
// the cluster's CA file, for the API server's certificate, does not apply
// to the local http issuer. It returns the file and the first audience.
func (k *kfRun) mapAuthenticationFile(t *testing.T, content string) (string, string) {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(content), &cfg); err != nil {
		t.Fatalf("AUTHENTICATION_CONFIG_FILE: %v", err)
	}
	aud := ""
	jwts, _ := cfg["jwt"].([]any)
	for _, j := range jwts {
		is := j.(map[string]any)["issuer"].(map[string]any)
		if is["url"] != saIssuer {
			t.Fatalf("AUTHENTICATION_CONFIG_FILE: issuer %v is not the cluster's (%s): no local peer for it", is["url"], saIssuer)
		}
		is["discoveryURL"] = k.issuer.URL + "/.well-known/openid-configuration"
		delete(is, "certificateAuthorityFile")
		if auds, _ := is["audiences"].([]any); len(auds) > 0 && aud == "" {
			aud = auds[0].(string)
		}
	}
	if len(jwts) == 0 || aud == "" {
		t.Fatal("AUTHENTICATION_CONFIG_FILE: no issuer with an audience")
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "authentication.yaml")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return file, aud
}

// layout is the composition's generated gateway configuration.
func (c *kfComposition) layout() string { return c.Release + "_" + c.Form }

// dashboard is the rendered central dashboard (dashboard v2 on master).
func (c *kfComposition) dashboard() map[string]any {
	for _, n := range []string{"centraldashboard", "dashboard"} {
		if d := c.object("Deployment", "kubeflow", n); d != nil {
			return d
		}
	}
	return nil
}

// dexReplicas is the rendered Dex Deployment's replicas (Kubeflow master
// runs two on shared storage).
func (c *kfComposition) dexReplicas() int {
	if d := c.object("Deployment", "auth", "dex"); d != nil {
		if n, ok := dig(d, "spec")["replicas"].(float64); ok {
			return int(n)
		}
	}
	return 1
}

// dig walks nested maps.
func dig(m map[string]any, keys ...string) map[string]any {
	for _, key := range keys {
		m, _ = m[key].(map[string]any)
	}
	return m
}

// login logs in through the gateway from a deep link and returns the
// browser and what the upstream saw.
func (k *kfRun) login(t *testing.T, deepLink string) (*browser, echo) {
	t.Helper()
	b := newBrowser()
	resp, err := peer.DexLogin(b.Client, k.gateway+deepLink, "user@example.com", "12341234")
	if err != nil {
		t.Fatal(err)
	}
	return b, readEcho(t, resp)
}

func (k *kfRun) get(t *testing.T, c *http.Client, path string, hdr map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", k.gateway+path, nil)
	for h, v := range hdr {
		req.Header.Set(h, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// wantIdentity: the upstream saw user@example.com as Kubeflow's design
// makes it (by the service's headers, or by Istio from the forwarded token).
func (k *kfRun) wantIdentity(t *testing.T, e echo) {
	t.Helper()
	if got := e.Headers["kubeflow-userid"]; len(got) != 1 || got[0] != "user@example.com" {
		t.Fatalf("kubeflow-userid %q, want user@example.com", got)
	}
	// No token goes on to the upstream, whoever handed it to the gateway:
	// Istio removes the one it verified (forwardOriginalToken: false).
	if auth := e.Headers["authorization"]; len(auth) > 0 {
		t.Fatalf("a token reached the upstream (Authorization: %.12s…): the upstream could present it to the gateway", auth[0])
	}
	// Where the service sets the identity (no RequestAuthentication maps
	// it), the groups come with it.
	if !k.mapsHeader("kubeflow-groups") {
		if got := e.Headers["kubeflow-groups"]; len(got) != 1 || got[0] != "team-a,team-b" {
			t.Fatalf("kubeflow-groups %q, want team-a,team-b", got)
		}
	}
	if k.c.Env["AUTH_REQUEST_HEADERS"] == "true" {
		for h, want := range map[string]string{"x-auth-request-email": "user@example.com", "x-auth-request-user": "user@example.com", "x-auth-request-groups": "team-a,team-b"} {
			// The service's values: jwt_authn's providers stop at the first
			// that verifies a token (Dex's, which maps only kubeflow-userid
			// and kubeflow-groups), so the headers another
			// RequestAuthentication maps (Kubeflow 1.9.0's m2m-token-issuer:
			// x-auth-request-user) are neither removed nor rewritten.
			got := e.Headers[h]
			if len(got) != 1 || got[0] != want {
				t.Errorf("%s %q, want %q", h, got, want)
			}
		}
	}
}

// mapsHeader reports whether any rendered RequestAuthentication maps a
// claim to header h.
func (k *kfRun) mapsHeader(h string) bool {
	for _, o := range k.c.Objects {
		if o["kind"] != "RequestAuthentication" {
			continue
		}
		for _, r := range dig(o, "spec")["jwtRules"].([]any) {
			for _, m := range asAnyList(r.(map[string]any)["outputClaimToHeaders"]) {
				if strings.EqualFold(fmt.Sprint(m.(map[string]any)["header"]), h) {
					return true
				}
			}
		}
	}
	return false
}

func asAnyList(v any) []any {
	l, _ := v.([]any)
	return l
}

func scenarioBrowserLogin(t *testing.T, k *kfRun) {
	b, e := k.login(t, "/notebook/ns/nb/lab?format=json&file=a%20b.ipynb")
	if e.Path != "/notebook/ns/nb/lab" || e.Query != "format=json&file=a%20b.ipynb" {
		t.Fatalf("landed on %s?%s", e.Path, e.Query)
	}
	k.wantIdentity(t, e)
	var auth *url.URL
	for _, u := range b.visited {
		if u.Path == "/dex/auth" && u.Query().Get("client_id") != "" {
			auth = u
		}
	}
	if auth == nil || auth.Query().Get("redirect_uri") != k.c.Env["REDIRECT_URL"] || auth.Query().Get("code_challenge_method") != "S256" {
		t.Fatalf("the login did not go through Dex's /dex/auth with REDIRECT_URL and PKCE: %v", auth)
	}
}

func scenarioReload(t *testing.T, k *kfRun) {
	b, _ := k.login(t, "/?format=json")
	b.visited = nil
	e := readEcho(t, k.get(t, b.Client, "/pipeline/?format=json", nil))
	k.wantIdentity(t, e)
	for _, u := range b.visited {
		if strings.HasPrefix(u.Path, "/dex/") {
			t.Fatalf("a reload went to Dex (%s)", u)
		}
	}
}

// scenarioStart: a login started at the login start endpoint
// (<prefix>start?rd=<url>, /oauth2/start in oauth2-proxy's place) lands on rd.
func scenarioStart(t *testing.T, k *kfRun) {
	start := k.c.Env["AUTHSERVICE_URL_PREFIX"] + "start?rd=" + url.QueryEscape("/pipeline/?format=json")
	b := newBrowser()
	resp, err := peer.DexLogin(b.Client, k.gateway+start, "user@example.com", "12341234")
	if err != nil {
		t.Fatal(err)
	}
	e := readEcho(t, resp)
	if e.Path != "/pipeline/" || e.Query != "format=json" {
		t.Fatalf("landed on %s?%s, want /pipeline/?format=json", e.Path, e.Query)
	}
	k.wantIdentity(t, e)
}

// mustLogInAgain: after logout, a page sends the browser to Dex.
func (k *kfRun) mustLogInAgain(t *testing.T, b *browser) {
	t.Helper()
	resp := k.get(t, b.Client, "/jupyter/", nil)
	resp.Body.Close()
	if !strings.HasPrefix(resp.Request.URL.Path, "/dex/auth") {
		t.Fatalf("after logout a page ended at %s (HTTP %d), want Dex's login", resp.Request.URL, resp.StatusCode)
	}
}

func scenarioLogoutGet(t *testing.T, k *kfRun) {
	b, _ := k.login(t, "/?format=json")
	noFollow := *b.Client
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp := k.get(t, &noFollow, k.logout, map[string]string{"Accept": "text/html"})
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != k.c.Env["AFTER_LOGOUT_URL"] {
		t.Fatalf("GET %s: %d to %q, want 302 to AFTER_LOGOUT_URL %q", k.logout, resp.StatusCode, resp.Header.Get("Location"), k.c.Env["AFTER_LOGOUT_URL"])
	}
	k.mustLogInAgain(t, b)
}

// scenarioLogoutPost is the dashboard before 1.10: its script POSTs to
// LOGOUT_URL with Authorization: Bearer <authservice_session cookie> (empty
// when the script cannot read it) and goes to afterLogoutURL.
func scenarioLogoutPost(t *testing.T, k *kfRun) {
	b, _ := k.login(t, "/?format=json")
	u, _ := url.Parse(k.gateway)
	cookie := ""
	for _, c := range b.Jar.Cookies(u) {
		// The script reads the cookie only when it is not HttpOnly.
		if c.Name == "authservice_session" && k.c.Env["SESSION_HTTP_ONLY"] == "false" {
			cookie = c.Value
		}
	}
	req, _ := http.NewRequest("POST", k.gateway+k.logout, nil)
	req.Header.Set("Authorization", "Bearer "+cookie)
	req.Header.Set("Accept", "application/json")
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var out struct {
		AfterLogoutURL string `json:"afterLogoutURL"`
	}
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &out) != nil || out.AfterLogoutURL != k.c.Env["AFTER_LOGOUT_URL"] {
		t.Fatalf("POST %s: %d %s, want 201 {\"afterLogoutURL\": %q}", k.logout, resp.StatusCode, body, k.c.Env["AFTER_LOGOUT_URL"])
	}
	k.mustLogInAgain(t, b)
}

// dexToken logs in at Dex directly as a client (an SDK) would, with the
// gateway's client, and returns the ID token.
func (k *kfRun) dexToken(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	op, err := oidc.NewProvider(ctx, k.dex.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	redirect := k.c.Env["REDIRECT_URL"]
	conf := oauth2.Config{ClientID: k.dex.Opts.ClientID, ClientSecret: k.dex.Opts.ClientSecret, Endpoint: op.Endpoint(),
		RedirectURL: redirect, Scopes: []string{"openid", "email", "profile", "groups"}}
	jar, _ := cookiejar.New(nil)
	var code string
	c := &http.Client{Jar: jar, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if r.URL.Path == redirect {
			code = r.URL.Query().Get("code")
			return http.ErrUseLastResponse
		}
		return nil
	}}
	v := oauth2.GenerateVerifier()
	resp, err := peer.DexLogin(c, conf.AuthCodeURL("s", oauth2.S256ChallengeOption(v)), "user@example.com", "12341234")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	return tok.Extra("id_token").(string)
}

func scenarioDexToken(t *testing.T, k *kfRun) {
	tok := k.dexToken(t)
	e := readEcho(t, k.get(t, http.DefaultClient, "/pipeline/apis/v2beta1/runs?format=json", map[string]string{"Authorization": "Bearer " + tok}))
	if got := e.Headers["kubeflow-userid"]; len(got) != 1 || got[0] != "user@example.com" {
		t.Fatalf("kubeflow-userid %q for a Dex token", got)
	}
	wantNoClientToken(t, e)
	// A token of the right issuer signed by someone else is refused.
	forged := peer.SignWith(t, peer.ForeignKey(), "k", map[string]any{"iss": k.dex.Issuer, "sub": "x", "email": "admin@example.com",
		"aud": k.c.Env["CLIENT_ID"], "exp": time.Now().Add(time.Hour).Unix()})
	resp := k.get(t, http.DefaultClient, "/pipeline/apis/v2beta1/runs?format=json", map[string]string{"Authorization": "Bearer " + forged})
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a forged Dex token: %d, want 401", resp.StatusCode)
	}
}

// saToken is a token shaped as the cluster's service-account tokens (the
// cluster's issuer), for audience aud.
func (k *kfRun) saToken(t *testing.T, aud string) string {
	t.Helper()
	return k.issuer.Sign(t, map[string]any{"sub": saUser, "aud": []string{aud},
		"kubernetes.io": map[string]any{"namespace": "kubeflow-user-example-com", "serviceaccount": map[string]any{"name": "default-editor"}}})
}

const saUser = "system:serviceaccount:kubeflow-user-example-com:default-editor"

func scenarioSAToken(t *testing.T, k *kfRun) {
	tok := k.saToken(t, k.saAudience)
	e := readEcho(t, k.get(t, http.DefaultClient, "/pipeline/apis/v2beta1/runs?format=json",
		map[string]string{"Authorization": "Bearer " + tok, "Kubeflow-Userid": "user@example.com"}))
	if got := e.Headers["kubeflow-userid"]; len(got) != 1 || got[0] != saUser {
		t.Fatalf("kubeflow-userid %q for a service-account token", got)
	}
	wantNoClientToken(t, e)
	if k.saChecked && k.c.Env["AUTH_REQUEST_HEADERS"] == "true" {
		if got := e.Headers["x-auth-request-user"]; len(got) != 1 || got[0] != saUser {
			t.Errorf("x-auth-request-user %q for a service-account token", got)
		}
	}
	if !k.saChecked {
		return
	}
	// The service checks the token first: one for another audience, or
	// signed by another key, is refused before Istio sees it.
	for what, bad := range map[string]string{
		"another audience": k.saToken(t, "pipelines.kubeflow.org"),
		"another key": peer.SignWith(t, peer.ForeignKey(), "key-1", map[string]any{"iss": saIssuer, "sub": saUser,
			"aud": []string{k.saAudience}, "exp": time.Now().Add(time.Hour).Unix()}),
	} {
		resp := k.get(t, http.DefaultClient, "/pipeline/apis/v2beta1/runs?format=json", map[string]string{"Authorization": "Bearer " + bad})
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a service-account token for %s: %d, want 401", what, resp.StatusCode)
		}
	}
}

// wantNoClientToken: the client's bearer token did not go on to the
// upstream, which could present it to the gateway for its lifetime: the
// service or Istio (forwardOriginalToken: false) removed it.
func wantNoClientToken(t *testing.T, e echo) {
	t.Helper()
	if got := e.Headers["authorization"]; len(got) != 0 {
		t.Errorf("the client's bearer token reached the upstream")
	}
}

func scenarioSARefused(t *testing.T, k *kfRun) {
	resp := k.get(t, http.DefaultClient, "/pipeline/apis/v2beta1/runs?format=json", map[string]string{"Authorization": "Bearer " + k.saToken(t, k.saAudience)})
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a service-account token without m2m-token-issuer: %d, want 401 (as with Kubeflow's m2m-dex-only)", resp.StatusCode)
	}
}

// scenarioRefresh: Dex's ID tokens live 8 s here; a session used after
// that is still let in without a new login, because the service refreshed
// its ID token (the one dex-jwt verifies) and delivered the new cookie
// (Kubeflow's mesh passes set-cookie only on deny: a redirect to the same
// URL, which the service answers only for a renewed session). The token
// itself never reaches the upstream (forwardOriginalToken: false).
func scenarioRefresh(t *testing.T, k *kfRun) {
	b, e := k.login(t, "/first?format=json")
	k.wantIdentity(t, e)
	time.Sleep(k.ttl + 2*time.Second)
	b.visited = nil
	gw, _ := url.Parse(k.gateway)
	before := cookieHeader(b, gw)
	e = readEcho(t, k.get(t, b.Client, "/later?format=json", nil))
	k.wantIdentity(t, e)
	for _, u := range b.visited {
		if strings.HasPrefix(u.Path, "/dex/") {
			t.Fatalf("the browser was sent to Dex (%s): the session did not outlive the ID token", u)
		}
	}
	if cookieHeader(b, gw) == before {
		t.Fatal("the renewed cookie did not reach the browser")
	}
	switch {
	case k.c.Env["SESSION_RENEW_REDIRECT"] == "true" && len(b.visited) == 0:
		t.Fatal("no redirect carried the renewed cookie")
	case k.c.Env["SESSION_RENEW_REDIRECT"] != "true" && len(b.visited) != 0:
		// The gRPC layout: the allow itself carries it.
		t.Fatalf("redirected (%v): the allow should have carried the renewed cookie", b.visited)
	}
	// The browser now holds the renewed cookie: no further redirect.
	b.visited = nil
	readEcho(t, k.get(t, b.Client, "/again?format=json", nil))
	if len(b.visited) != 0 {
		t.Fatalf("redirected again (%v): the renewed cookie did not reach the browser", b.visited)
	}
}

func scenarioForged(t *testing.T, k *kfRun) {
	b, _ := k.login(t, "/?format=json")
	forged := map[string]string{"Kubeflow-Userid": "admin@example.com", "Kubeflow-Groups": "admins", "Kubeflow_Userid": "admin@example.com"}
	if k.c.Env["AUTH_REQUEST_HEADERS"] == "true" {
		// oauth2-proxy's headers, which Kubeflow 1.9.1+ lets through on allow.
		forged["X-Auth-Request-Email"], forged["X-Auth-Request-User"], forged["X-Auth-Request-Groups"] = "admin@example.com", "admin", "admins"
	}
	e := readEcho(t, k.get(t, b.Client, "/x?format=json", forged))
	k.wantIdentity(t, e)
	for h := range forged {
		for _, v := range e.Headers[strings.ToLower(h)] {
			if strings.Contains(v, "admin") {
				t.Errorf("the client's %s: %q reached the upstream", h, v)
			}
		}
	}
	// Without a session the request does not reach the upstream at all.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp := k.get(t, noFollow, "/x?format=json", forged)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Errorf("forged identity headers without a session reached the upstream (HTTP 200)")
	}
}

// recorder is every upstream behind the composition's gateway (Kubeflow's
// applications, a notebook server): the demo upstream, which records every
// request it receives, headers included, and sets a cookie of its own as
// Kubeflow's web applications do (XSRF-TOKEN), so that a browser's Cookie
// header holds more than the service's cookies, as it does in Kubeflow.
type recorder struct {
	url  string
	next http.Handler
	mu   sync.Mutex
	got  []recorded
}

// recorded is one request an upstream received.
type recorded struct {
	path   string
	header http.Header
}

func startRecorder(t *testing.T) *recorder {
	t.Helper()
	rc := &recorder{next: upstream.Handler("")}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rc, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	rc.url = "http://" + l.Addr().String()
	return rc
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	rc.got = append(rc.got, recorded{r.URL.Path, r.Header.Clone()})
	rc.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "XSRF-TOKEN", Value: "app-cookie-" + strconv.Itoa(len(rc.got)), Path: "/"})
	rc.next.ServeHTTP(w, r)
}

// since returns the requests received after the first n.
func (rc *recorder) since(n int) []recorded {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]recorded(nil), rc.got[n:]...)
}

func (rc *recorder) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.got)
}

// scenarioReplay (issue 21): a browser logs in and works, machine clients
// call with their tokens; the upstream records every header it receives.
// Then a second client, with nothing of its own, replays each recorded
// header, and each recorded request's whole header set, at the gateway: it
// must never be let in as the user (or the machine client). Only what the
// layout declares exposed (the session cookie where Kubeflow's own mesh does
// not let the service rewrite the Cookie header: the compatible layouts,
// docs/security.md) may be, and then it must be, so that the declaration
// stays true.
func scenarioReplay(t *testing.T, k *kfRun) {
	start := k.up.count()
	b, _ := k.login(t, "/notebook/ns/nb/lab?format=json")
	// The browser goes on: a page, then an API call as a page's script makes it.
	readEcho(t, k.get(t, b.Client, "/pipeline/?format=json", map[string]string{"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}))
	readEcho(t, k.get(t, b.Client, "/api/workgroup/env-info?format=json", map[string]string{"Accept": "application/json", "X-Requested-With": "XMLHttpRequest"}))
	victims := map[string]bool{"user@example.com": true}
	if k.c.has("API call with a Dex ID token") {
		readEcho(t, k.get(t, http.DefaultClient, "/pipeline/apis/v2beta1/runs?format=json", map[string]string{"Authorization": "Bearer " + k.dexToken(t)}))
	}
	if k.c.has("API call with a service-account token") {
		readEcho(t, k.get(t, http.DefaultClient, "/pipeline/apis/v2beta1/runs?format=json", map[string]string{"Authorization": "Bearer " + k.saToken(t, k.saAudience)}))
		victims[saUser] = true
	}
	seen := k.up.since(start)
	if len(seen) < 3 {
		t.Fatalf("the upstream recorded %d requests", len(seen))
	}

	sessionName := k.c.Env["SESSION_COOKIE_NAME"]
	if sessionName == "" {
		sessionName = "authservice_session"
	}
	// hasSession: a Cookie header value carrying the service's session
	// cookie (or a chunk of it), in either form.
	hasSession := func(cookie string) bool {
		for _, c := range strings.Split(cookie, ";") {
			name, _, _ := strings.Cut(strings.TrimSpace(c), "=")
			name = strings.TrimPrefix(name, "__Host-")
			if name == sessionName || strings.HasPrefix(name, sessionName+"_") {
				return true
			}
		}
		return false
	}
	withoutSession := func(cookie string) string {
		var keep []string
		for _, c := range strings.Split(cookie, ";") {
			if !hasSession(c) {
				keep = append(keep, strings.TrimSpace(c))
			}
		}
		return strings.Join(keep, "; ")
	}
	exposed := slices.Contains(k.c.Exposed, "cookie")
	other := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// replay sends h from another client and reports whom the upstream
	// took it for, "" when it was not let in as a victim.
	replay := func(h http.Header) string {
		req, _ := http.NewRequest("GET", k.gateway+"/notebook/ns/other/api/contents?format=json", nil)
		for name, vals := range h {
			if name != "Content-Length" {
				req.Header[name] = vals
			}
		}
		resp, err := other.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e echo
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &e) != nil {
			return ""
		}
		for _, h := range []string{"kubeflow-userid", "x-auth-request-user", "x-auth-request-email"} {
			for _, u := range e.Headers[h] {
				if victims[u] {
					return u
				}
			}
		}
		return ""
	}
	leaked := false
	for i, rec := range seen {
		for name, vals := range rec.header {
			for _, v := range vals {
				who := replay(http.Header{name: {v}})
				switch {
				case who == "":
				case exposed && name == "Cookie" && hasSession(v):
					leaked = true // the declared exposure
				default:
					t.Errorf("request %d (%s): replaying the %s header the upstream received lets another client in as %s", i, rec.path, name, who)
				}
				if name == "Cookie" && hasSession(v) && !exposed {
					t.Errorf("request %d (%s): the upstream received the session cookie, which this layout declares it never does", i, rec.path)
				}
			}
		}
		all := rec.header.Clone()
		if c := all.Get("Cookie"); exposed && hasSession(c) {
			all.Set("Cookie", withoutSession(c)) // everything but the declared exposure
		}
		if who := replay(all); who != "" {
			t.Errorf("request %d (%s): replaying the whole header set the upstream received lets another client in as %s", i, rec.path, who)
		}
	}
	if exposed && !leaked {
		t.Errorf("the layout declares that the session cookie reaches the upstream (%v), but no recorded Cookie header let a replay in: correct the exposure (test/manifests) and docs/security.md", k.c.Exposed)
	}
}

// scenarioPythonClient runs Kubeflow's own programmatic login client,
// DexSessionManager of tests/dex_login_test.py (testdata/kubeflow-client,
// unmodified), against the gateway: once, then eight sessions at once; the
// cookies each obtained reach a protected page and an API path with the
// user's identity.
func scenarioPythonClient(t *testing.T, k *kfRun) {
	py := pythonWithRequests(t)
	for _, parallel := range []int{1, 8} {
		cmd := exec.Command(py, filepath.Join("testdata", "kubeflow-client", "session_manager.py"), k.gateway+"/", strconv.Itoa(parallel))
		// The gateway is on 127.0.0.1: no proxy (requests would use the
		// cluster DNS proxy of HTTP_PROXY for it).
		cmd.Env = append(os.Environ(), "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost", "HTTP_PROXY=", "http_proxy=")
		out, err := cmd.Output()
		var res struct {
			Cookies []string `json:"cookies"`
			Errors  []string `json:"errors"`
		}
		if jerr := json.Unmarshal(out, &res); jerr != nil || err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("%d at once: %v %v %s %s", parallel, err, res.Errors, out, stderr)
		}
		if len(res.Cookies) != parallel {
			t.Fatalf("%d at once: %d cookie strings", parallel, len(res.Cookies))
		}
		seen := map[string]bool{}
		for _, c := range res.Cookies {
			if seen[c] {
				t.Errorf("two logins got the same cookies")
			}
			seen[c] = true
			for _, path := range []string{"/jupyter/?format=json", "/pipeline/apis/v2beta1/runs?format=json"} {
				e := readEcho(t, k.get(t, http.DefaultClient, path, map[string]string{"Cookie": c, "X-Requested-With": "XMLHttpRequest"}))
				k.wantIdentity(t, e)
			}
		}
	}
}

// pythonWithRequests is a Python 3 with the requests package (Debian's
// python3-requests; .ci/run installs it).
func pythonWithRequests(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if p, err := exec.LookPath(py); err == nil && exec.Command(p, "-c", "import requests").Run() == nil {
			return p
		}
	}
	peer.Require(t, "python3 with requests (apt-get install python3-requests)", errors.New("not found"))
	return ""
}
