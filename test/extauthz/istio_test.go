package extauthz

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"sigs.k8s.io/yaml"
)

// kubeflowMaster is Kubeflow master's gateway configuration for
// oauth2-proxy (common/oauth2-proxy, istio-install), in YAML as rendered.
const kubeflowMaster = `
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: istio, namespace: istio-system}
  data:
    mesh: |-
      extensionProviders:
      - envoyExtAuthzHttp:
          headersToDownstreamOnDeny: [content-type, set-cookie]
          headersToUpstreamOnAllow: [authorization, path, x-auth-request-email, x-auth-request-groups, x-auth-request-user]
          includeRequestHeadersInCheck: [authorization, cookie]
          service: oauth2-proxy.oauth2-proxy.svc.cluster.local
          port: 80
        name: oauth2-proxy
- apiVersion: security.istio.io/v1beta1
  kind: AuthorizationPolicy
  metadata: {name: istio-ingressgateway-oauth2-proxy, namespace: istio-system}
  spec:
    action: CUSTOM
    provider: {name: oauth2-proxy}
    selector: {matchLabels: {app: istio-ingressgateway}}
    rules:
    - when:
      - key: request.headers[authorization]
        notValues: ["*"]
      to:
      - operation:
          notPaths: [/dex/*, /dex/**, /oauth2/*]
- apiVersion: security.istio.io/v1beta1
  kind: AuthorizationPolicy
  metadata: {name: istio-ingressgateway-require-jwt, namespace: istio-system}
  spec:
    action: DENY
    selector: {matchLabels: {app: istio-ingressgateway}}
    rules:
    - from:
      - source: {notRequestPrincipals: ["*"]}
      to:
      - operation: {notPaths: [/dex/*, /dex/**, /oauth2/*]}
- apiVersion: security.istio.io/v1beta1
  kind: AuthorizationPolicy
  metadata: {name: global-deny-all, namespace: istio-system}
  spec: {}
- apiVersion: security.istio.io/v1beta1
  kind: AuthorizationPolicy
  metadata: {name: istio-ingressgateway, namespace: istio-system}
  spec:
    action: ALLOW
    selector: {matchLabels: {app: istio-ingressgateway, istio: ingressgateway}}
    rules: [{}]
- apiVersion: security.istio.io/v1beta1
  kind: AuthorizationPolicy
  metadata: {name: elsewhere, namespace: kubeflow}
  spec: {action: DENY, rules: [{}]}
- apiVersion: security.istio.io/v1beta1
  kind: RequestAuthentication
  metadata: {name: dex-jwt, namespace: istio-system}
  spec:
    selector: {matchLabels: {app: istio-ingressgateway}}
    jwtRules:
    - issuer: http://dex.auth.svc.cluster.local:5556/dex
      forwardOriginalToken: true
      outputClaimToHeaders:
      - {header: kubeflow-userid, claim: email}
      - {header: kubeflow-groups, claim: groups}
      fromHeaders:
      - {name: Authorization, prefix: "Bearer "}
- apiVersion: networking.istio.io/v1alpha3
  kind: VirtualService
  metadata: {name: oauth2-proxy, namespace: oauth2-proxy}
  spec:
    http:
    - match: [{uri: {prefix: /oauth2/}}]
      route: [{destination: {host: oauth2-proxy.oauth2-proxy.svc.cluster.local, port: {number: 80}}}]
- apiVersion: networking.istio.io/v1alpha3
  kind: VirtualService
  metadata: {name: centraldashboard, namespace: kubeflow}
  spec:
    http:
    - match: [{uri: {prefix: /}}]
      route: [{destination: {host: centraldashboard.kubeflow.svc.cluster.local, port: {number: 80}}}]
- apiVersion: networking.istio.io/v1alpha3
  kind: VirtualService
  metadata: {name: dex, namespace: auth}
  spec:
    http:
    - match: [{uri: {prefix: /dex/}}]
      route: [{destination: {host: dex.auth.svc.cluster.local, port: {number: 5556}}}]
`

var gatewayLabels = map[string]string{"app": "istio-ingressgateway", "istio": "ingressgateway"}

type istioFixture struct {
	gw         *httptest.Server
	key        *rsa.PrivateKey
	issuer     string
	checks     atomic.Int32
	lastCheck  atomic.Pointer[http.Request]
	checkReply func(w http.ResponseWriter, r *http.Request)
}

func objectsOf(t *testing.T, y string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	if err := yaml.Unmarshal([]byte(y), &objs); err != nil {
		t.Fatal(err)
	}
	return objs
}

// newIstioFixture builds the gateway from y, with a Dex that signs with key
// (a new one when none is given).
func newIstioFixture(t *testing.T, y string, keys ...*rsa.PrivateKey) *istioFixture {
	t.Helper()
	f := &istioFixture{}
	var key *rsa.PrivateKey
	if len(keys) > 0 {
		key = keys[0]
	} else {
		var err error
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			t.Fatal(err)
		}
	}
	f.key = key
	dex := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/dex/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]string{"issuer": f.issuer, "jwks_uri": f.issuer + "/keys"})
		case "/dex/keys":
			json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
		default:
			w.Write([]byte("dex page"))
		}
	}))
	t.Cleanup(dex.Close)
	f.issuer = dex.URL + "/dex"
	check := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.checks.Add(1)
		f.lastCheck.Store(r)
		f.checkReply(w, r)
	}))
	t.Cleanup(check.Close)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "headers": r.Header})
	}))
	t.Cleanup(up.Close)
	g, err := NewIstio(IstioConfig{
		Objects: objectsOf(t, y), Gateway: gatewayLabels, Default: up.URL,
		Addresses: map[string]string{
			"oauth2-proxy.oauth2-proxy.svc.cluster.local:80": check.URL,
			"dex.auth.svc.cluster.local:5556":                dex.URL,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.gw = httptest.NewServer(g)
	t.Cleanup(f.gw.Close)
	return f
}

func (f *istioFixture) token(t *testing.T, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: f.key}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	c := map[string]any{"iss": f.issuer, "sub": "s1", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	raw, err := jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

type seen struct {
	Path    string
	Headers http.Header
}

func (f *istioFixture) get(t *testing.T, path string, hdr map[string]string) (*http.Response, seen) {
	t.Helper()
	req, _ := http.NewRequest("GET", f.gw.URL+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s seen
	json.NewDecoder(resp.Body).Decode(&s)
	return resp, s
}

// The order Kubeflow's design relies on: CUSTOM first, then jwt_authn
// verifies the token the check put upstream, then DENY requires it.
func TestIstioKubeflowDesign(t *testing.T) {
	f := newIstioFixture(t, kubeflowMaster)
	var tok string
	f.checkReply = func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Cookie"), "session=ok") {
			w.Header().Set("Location", "/dex/auth")
			w.Header().Set("Set-Cookie", "state=1")
			w.Header().Set("X-Other", "not passed on deny")
			w.WriteHeader(302)
			return
		}
		w.Header().Set("Authorization", "Bearer "+tok)
		w.Header().Set("X-Auth-Request-Email", "user@example.com")
		w.Header().Set("X-Not-Listed", "dropped")
		w.WriteHeader(200)
	}
	tok = f.token(t, map[string]any{"email": "user@example.com", "groups": []string{"a", "b"}})

	// No session: the check's redirect reaches the browser with set-cookie
	// (headersToDownstreamOnDeny) and Location, nothing else of its own.
	resp, _ := f.get(t, "/jupyter/", map[string]string{"Accept": "text/html"})
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "/dex/auth" || resp.Header.Get("Set-Cookie") != "state=1" || resp.Header.Get("X-Other") != "" {
		t.Fatalf("deny: %d %v", resp.StatusCode, resp.Header)
	}
	if c := f.lastCheck.Load(); c.Header.Get("Accept") != "" {
		t.Errorf("Accept reached the check: includeRequestHeadersInCheck is authorization, cookie")
	}
	// A session: allowed; dex-jwt verifies the token the check put upstream
	// and sets kubeflow-userid from it, overwriting the client's; the
	// groups list is not copied (Istio copies no list claims).
	resp, s := f.get(t, "/jupyter/", map[string]string{"Cookie": "session=ok", "Kubeflow-Userid": "forged", "Kubeflow-Groups": "admins"})
	if resp.StatusCode != 200 || s.Headers.Get("Kubeflow-Userid") != "user@example.com" || s.Headers.Get("Kubeflow-Groups") != "" ||
		s.Headers.Get("X-Auth-Request-Email") != "user@example.com" || s.Headers.Get("X-Not-Listed") != "" ||
		s.Headers.Get("Authorization") != "Bearer "+tok {
		t.Fatalf("allow: %d %v", resp.StatusCode, s.Headers)
	}
	// A bearer token skips the check (CUSTOM's when) and is verified by jwt_authn.
	n := f.checks.Load()
	resp, s = f.get(t, "/pipeline/apis/v2beta1/runs", map[string]string{"Authorization": "Bearer " + tok})
	if resp.StatusCode != 200 || f.checks.Load() != n || s.Headers.Get("Kubeflow-Userid") != "user@example.com" {
		t.Fatalf("bearer: %d, checks %d -> %d, %v", resp.StatusCode, n, f.checks.Load(), s.Headers)
	}
	// Tokens refused by jwt_authn: 401.
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	forged := f.token(t, nil)
	parts := strings.Split(forged, ".")
	s2, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: other}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
	wrongKey, _ := jwt.Signed(s2).Claims(map[string]any{"iss": f.issuer, "sub": "x", "exp": time.Now().Add(time.Hour).Unix()}).Serialize()
	for name, bad := range map[string]string{
		"unknown issuer": f.token(t, map[string]any{"iss": "https://elsewhere"}),
		"expired":        f.token(t, map[string]any{"exp": time.Now().Add(-2 * time.Minute).Unix()}),
		"wrong key":      wrongKey,
		"not a JWT":      parts[0] + "." + parts[1],
	} {
		if resp, _ := f.get(t, "/x", map[string]string{"Authorization": "Bearer " + bad}); resp.StatusCode != 401 {
			t.Errorf("%s: %d, want 401", name, resp.StatusCode)
		}
	}
	// Within Envoy's 60 s clock skew a just-expired token still passes.
	if resp, _ := f.get(t, "/x", map[string]string{"Authorization": "Bearer " + f.token(t, map[string]any{"exp": time.Now().Add(-20 * time.Second).Unix()})}); resp.StatusCode != 200 {
		t.Errorf("expired 20 s ago: %d, want 200 (clock skew)", resp.StatusCode)
	}
	// No principal and a check that allows without a token: DENY.
	f.checkReply = func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }
	if resp, _ := f.get(t, "/jupyter/", nil); resp.StatusCode != 403 {
		t.Errorf("no JWT after the check: %d, want 403 from the DENY policy", resp.StatusCode)
	}
	// Dex's pages: neither checked nor denied; /oauth2/ is routed to the service.
	n = f.checks.Load()
	if resp, _ := f.get(t, "/dex/auth", nil); resp.StatusCode != 200 || f.checks.Load() != n {
		t.Errorf("/dex/auth: %d, checks %d -> %d", resp.StatusCode, n, f.checks.Load())
	}
	if resp, _ := f.get(t, "/oauth2/callback?code=x", nil); resp.StatusCode != 200 || f.checks.Load() != n+1 || f.lastCheck.Load().URL.Path != "/oauth2/callback" {
		t.Errorf("/oauth2/callback: %d, routed to the service: %v", resp.StatusCode, f.checks.Load() == n+1)
	}
}

// The ALLOW policies: with global-deny-all and no allow rule for the path,
// a request is refused.
func TestIstioAllowPolicies(t *testing.T) {
	y := strings.Replace(kubeflowMaster, "    rules: [{}]\n", "    rules: [{to: [{operation: {paths: [/dex/*]}}]}]\n", 1)
	f := newIstioFixture(t, y)
	f.checkReply = func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }
	if resp, _ := f.get(t, "/dex/auth", nil); resp.StatusCode != 200 {
		t.Errorf("allowed path: %d", resp.StatusCode)
	}
	tok := f.token(t, map[string]any{"email": "u@x"})
	if resp, _ := f.get(t, "/jupyter/", map[string]string{"Authorization": "Bearer " + tok}); resp.StatusCode != 403 {
		t.Errorf("no ALLOW rule matches: %d, want 403", resp.StatusCode)
	}
}

// Kubeflow ≤ 1.9.0's EnvoyFilter: the ext_authz filter before the router,
// configured from the object.
func TestIstioEnvoyFilter(t *testing.T) {
	y := `
- apiVersion: networking.istio.io/v1alpha3
  kind: EnvoyFilter
  metadata: {name: authn-filter, namespace: istio-system}
  spec:
    workloadSelector: {labels: {istio: ingressgateway}}
    configPatches:
    - applyTo: HTTP_FILTER
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.ext_authz
          typed_config:
            '@type': type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
            http_service:
              server_uri:
                uri: http://authservice.istio-system.svc.cluster.local
                cluster: outbound|8080||authservice.istio-system.svc.cluster.local
                timeout: 10s
              authorization_request:
                allowed_headers:
                  patterns: [{exact: authorization}, {exact: cookie}, {exact: x-auth-token}]
              authorization_response:
                allowed_upstream_headers:
                  patterns: [{exact: kubeflow-userid}]
- apiVersion: networking.istio.io/v1alpha3
  kind: VirtualService
  metadata: {name: centraldashboard, namespace: kubeflow}
  spec:
    http:
    - match: [{uri: {prefix: /}}]
      route: [{destination: {host: centraldashboard.kubeflow.svc.cluster.local, port: {number: 80}}}]
`
	var checked *http.Request
	check := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		checked = r
		w.Header().Set("Kubeflow-Userid", "u@x")
		w.Header().Set("Kubeflow-Groups", "not listed upstream")
		w.WriteHeader(200)
	}))
	defer check.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"headers": r.Header})
	}))
	defer up.Close()
	g, err := NewIstio(IstioConfig{Objects: objectsOf(t, y), Gateway: gatewayLabels, Default: up.URL,
		Addresses: map[string]string{"authservice.istio-system.svc.cluster.local:8080": check.URL}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/x", nil)
	req.Header.Set("Accept", "text/html")
	req.Header.Set("Kubeflow-Groups", "forged")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var s seen
	json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if checked == nil || checked.Header.Get("Accept") != "" {
		t.Errorf("the check got Accept, which the filter does not forward")
	}
	if s.Headers.Get("Kubeflow-Userid") != "u@x" || s.Headers.Get("Kubeflow-Groups") != "forged" {
		t.Errorf("upstream headers %v: kubeflow-userid set, kubeflow-groups (not listed) the client's", s.Headers)
	}
}

func TestIstioRefusesWhatItCannotEmulate(t *testing.T) {
	y := `
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: p, namespace: istio-system}
  spec: {action: AUDIT}
`
	if _, err := NewIstio(IstioConfig{Objects: objectsOf(t, y), Gateway: gatewayLabels}); err == nil {
		t.Error("an AUDIT policy must be refused, not ignored")
	}
	y = `
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: p, namespace: istio-system}
  spec: {action: CUSTOM, provider: {name: missing}, rules: [{}]}
`
	if _, err := NewIstio(IstioConfig{Objects: objectsOf(t, y), Gateway: gatewayLabels}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("an undeclared provider: %v", err)
	}
}

// Kubeflow 1.9.0's m2m-token-issuer: an https issuer istiod cannot reach
// (the API server's self-signed certificate), whose keys a CronJob writes
// into the rule's jwks. The inline keys verify; without them the token is
// refused (the issuer's discovery fails).
func TestIstioInlineJWKS(t *testing.T) {
	const iss = "https://kubernetes.default.svc.cluster.local"
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	rule := `- apiVersion: security.istio.io/v1beta1
  kind: RequestAuthentication
  metadata: {name: m2m-token-issuer, namespace: istio-system}
  spec:
    jwtRules:
    - issuer: ` + iss + `
      forwardOriginalToken: true
      outputClaimToHeaders:
      - {header: kubeflow-userid, claim: sub}
`
	for _, inline := range []bool{true, false} {
		y := kubeflowMaster + rule
		if inline {
			y += "      jwks: '" + string(set) + "'\n"
		}
		f := newIstioFixture(t, y, key)
		tok := f.token(t, map[string]any{"iss": iss, "sub": "system:serviceaccount:ns:sa"})
		resp, s := f.get(t, "/pipeline/apis/v2beta1/runs", map[string]string{"Authorization": "Bearer " + tok})
		switch {
		case inline && (resp.StatusCode != 200 || s.Headers.Get("Kubeflow-Userid") != "system:serviceaccount:ns:sa"):
			t.Errorf("inline jwks: %d %v", resp.StatusCode, s.Headers)
		case !inline && resp.StatusCode != 401:
			t.Errorf("no jwks, discovery unreachable: %d, want 401", resp.StatusCode)
		}
	}
}
