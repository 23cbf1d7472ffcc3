package extauthz

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// The gateway built from the Envoy configuration Istio's translation
// produced for a layout (test/istio/testdata/envoy), with a stub check
// server, a stub Dex and an echoing upstream: these tests are about what
// the gateway does, the service's own behaviour is tested elsewhere.

const dexIssuer = "http://dex.auth.svc.cluster.local:5556/dex"

// testKey loads one of the fixed test keys (test/keys) whose public half
// istiod inlined into the generated configuration.
func testKey(t *testing.T, name string) (*rsa.PrivateKey, string) {
	t.Helper()
	b, err := os.ReadFile("../keys/" + name + ".pem")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	rk := k.(*rsa.PrivateKey)
	der, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	sum := sha256.Sum256(der)
	return rk, base64.RawURLEncoding.EncodeToString(sum[:12])
}

func sign(t *testing.T, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

type seen struct {
	Path    string
	Query   string
	Headers http.Header
}

type envoyFixture struct {
	g          *Envoy
	url        string
	checks     atomic.Int32
	lastCheck  atomic.Pointer[http.Request]
	checkReply atomic.Pointer[func(w http.ResponseWriter, r *http.Request)]
	upstream   atomic.Pointer[seen]
	dexKey     *rsa.PrivateKey
	dexKid     string
	// The gRPC check server (port 9000 of the service): its answer, the
	// CheckRequests it got and their deadlines.
	grpcReply    atomic.Pointer[func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)]
	lastGRPC     atomic.Pointer[authv3.CheckRequest]
	lastDeadline atomic.Pointer[time.Duration]
	grpcChecks   atomic.Int32
	// upstreamHeader is a header the upstream answers with.
	upstreamHeader atomic.Pointer[[2]string]
}

func (f *envoyFixture) setUpstreamHeader(name, value string) {
	f.upstreamHeader.Store(&[2]string{name, value})
}

// authz is the fixture's gRPC Authorization server.
type authz struct {
	authv3.UnimplementedAuthorizationServer
	f *envoyFixture
}

func (a authz) Check(ctx context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	a.f.grpcChecks.Add(1)
	a.f.lastGRPC.Store(r)
	if d, ok := ctx.Deadline(); ok {
		left := time.Until(d)
		a.f.lastDeadline.Store(&left)
	}
	return (*a.f.grpcReply.Load())(ctx, r)
}

func (f *envoyFixture) replyGRPC(fn func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)) {
	f.grpcReply.Store(&fn)
}

func newEnvoyFixture(t *testing.T, layout string, edits ...Edit) *envoyFixture {
	t.Helper()
	f := &envoyFixture{}
	f.dexKey, f.dexKid = testKey(t, "dex")
	f.reply(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	check := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.checks.Add(1)
		f.lastCheck.Store(r)
		(*f.checkReply.Load())(w, r)
	}))
	t.Cleanup(check.Close)
	dex := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("dex page " + r.URL.RawPath + r.URL.Path))
	}))
	t.Cleanup(dex.Close)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.upstream.Store(&seen{Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Headers: r.Header.Clone()})
		if h := f.upstreamHeader.Load(); h != nil {
			w.Header().Set(h[0], h[1])
		}
		w.Write([]byte("upstream"))
	}))
	t.Cleanup(up.Close)
	f.replyGRPC(func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{Status: &rpcstatus.Status{}}, nil
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, authz{f: f})
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	grpcURL := "http://" + lis.Addr().String()
	g, err := NewEnvoy(EnvoyOptions{Layout: layout, Default: up.URL, Edits: edits, Addresses: map[string]string{
		"oauth2-proxy.oauth2-proxy.svc.cluster.local:80":   check.URL,
		"authservice.istio-system.svc.cluster.local:8080":  check.URL,
		"oauth2-proxy.oauth2-proxy.svc.cluster.local:9000": grpcURL,
		"authservice.istio-system.svc.cluster.local:9000":  grpcURL,
		"dex.auth.svc.cluster.local:5556":                  dex.URL,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	f.g = g
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func (f *envoyFixture) reply(fn func(w http.ResponseWriter, r *http.Request)) {
	f.checkReply.Store(&fn)
}

func (f *envoyFixture) dexToken(t *testing.T, claims map[string]any) string {
	t.Helper()
	c := map[string]any{"iss": dexIssuer, "sub": "Cg1zdWIx", "email": "user@example.com", "aud": "kubeflow-oidc-authservice",
		"exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return sign(t, f.dexKey, f.dexKid, c)
}

// do sends a request with a raw request target (no client-side cleaning).
func (f *envoyFixture) do(t *testing.T, method, target string, hdr http.Header) (*http.Response, string) {
	t.Helper()
	f.upstream.Store(nil)
	req, err := http.NewRequest(method, f.url+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = target
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func (f *envoyFixture) get(t *testing.T, target string, hdr ...string) (*http.Response, string) {
	t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h[http.CanonicalHeaderKey(hdr[i])] = append(h[http.CanonicalHeaderKey(hdr[i])], hdr[i+1])
	}
	return f.do(t, "GET", target, h)
}

// Kubeflow master with the one-line swap, as Istio builds the gateway:
// rbac (CUSTOM, shadow) -> ext_authz -> jwt_authn -> rbac (DENY) -> rbac
// (ALLOW) -> router.
func TestEnvoyFilterOrderFromTheTranslation(t *testing.T) {
	f := newEnvoyFixture(t, "master_kubeflow-oauth2-proxy")
	want := "envoy.filters.http.rbac envoy.filters.http.ext_authz envoy.filters.http.jwt_authn envoy.filters.http.rbac envoy.filters.http.rbac"
	if got := strings.Join(f.g.Filters(), " "); got != want {
		t.Fatalf("filters %s, want %s", got, want)
	}
}

// The design Kubeflow relies on, through the generated configuration: the
// check's answer on deny reaches the browser with set-cookie and
// content-type only (and Location); on allow the token it puts upstream is
// verified by jwt_authn with the key istiod inlined, which sets
// kubeflow-userid from it; DENY needs that principal.
func TestEnvoyKubeflowDesign(t *testing.T) {
	f := newEnvoyFixture(t, "master_kubeflow-oauth2-proxy")
	tok := f.dexToken(t, map[string]any{"groups": []string{"team-a", "team-b"}})
	f.reply(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Cookie"), "session=ok") {
			w.Header().Set("Location", "/dex/auth")
			w.Header().Set("Set-Cookie", "state=1")
			w.Header().Set("X-Other", "not passed on deny")
			w.WriteHeader(302)
			return
		}
		w.Header().Set("Authorization", "Bearer "+tok)
		w.Header().Set("X-Auth-Request-Email", "user@example.com")
		w.Header().Set("Kubeflow-Userid", "from-the-check")
		w.WriteHeader(200)
	})
	resp, _ := f.get(t, "/jupyter/", "Accept", "text/html")
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "/dex/auth" || resp.Header.Get("Set-Cookie") != "state=1" || resp.Header.Get("X-Other") != "" {
		t.Fatalf("deny: %d %v", resp.StatusCode, resp.Header)
	}
	if c := f.lastCheck.Load(); c.Header.Get("Accept") != "" {
		t.Errorf("Accept reached the check: includeRequestHeadersInCheck is authorization, cookie")
	}
	resp, _ = f.get(t, "/jupyter/", "Cookie", "session=ok", "Kubeflow-Userid", "forged", "Kubeflow-Groups", "admins")
	up := f.upstream.Load()
	if resp.StatusCode != 200 || up == nil {
		t.Fatalf("allow: %d", resp.StatusCode)
	}
	if got := up.Headers.Values("Kubeflow-Userid"); len(got) != 1 || got[0] != "user@example.com" {
		t.Errorf("kubeflow-userid %q: jwt_authn sets it from the token (the check's value is not let through)", got)
	}
	// The token is verified and removed (forwardOriginalToken: false).
	if up.Headers.Get("X-Auth-Request-Email") != "user@example.com" || up.Headers.Get("Authorization") != "" {
		t.Errorf("upstream headers %v", up.Headers)
	}
	// A bearer token skips the check (CUSTOM's principal: no Authorization
	// header) and is verified by jwt_authn.
	n := f.checks.Load()
	resp, _ = f.get(t, "/pipeline/apis/v2beta1/runs", "Authorization", "Bearer "+tok)
	if resp.StatusCode != 200 || f.checks.Load() != n {
		t.Fatalf("bearer: %d, checks %d -> %d", resp.StatusCode, n, f.checks.Load())
	}
	// Refused by jwt_authn: 401 with Envoy's reason.
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	for name, bad := range map[string]string{
		"unknown issuer": f.dexToken(t, map[string]any{"iss": "https://elsewhere"}),
		"expired":        f.dexToken(t, map[string]any{"exp": time.Now().Add(-2 * time.Minute).Unix()}),
		"another key":    sign(t, other, f.dexKid, map[string]any{"iss": dexIssuer, "sub": "x", "exp": time.Now().Add(time.Hour).Unix()}),
		"not a JWT":      strings.Join(strings.Split(tok, ".")[:2], "."),
	} {
		if resp, body := f.get(t, "/x", "Authorization", "Bearer "+bad); resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("Www-Authenticate"), `error="invalid_token"`) {
			t.Errorf("%s: %d %q", name, resp.StatusCode, body)
		}
	}
	// Within the 60 s clock skew a just-expired token still passes.
	if resp, _ := f.get(t, "/x", "Authorization", "Bearer "+f.dexToken(t, map[string]any{"exp": time.Now().Add(-20 * time.Second).Unix()})); resp.StatusCode != 200 {
		t.Errorf("expired 20 s ago: %d, want 200 (clock skew)", resp.StatusCode)
	}
	// No principal after an allowing check: the DENY policy.
	f.reply(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	if resp, body := f.get(t, "/jupyter/"); resp.StatusCode != 403 || body != "RBAC: access denied" {
		t.Errorf("no JWT after the check: %d %q, want 403 from the DENY policy", resp.StatusCode, body)
	}
	// Dex's pages: neither checked nor denied.
	n = f.checks.Load()
	if resp, body := f.get(t, "/dex/auth"); resp.StatusCode != 200 || f.checks.Load() != n || !strings.HasPrefix(body, "dex page") {
		t.Errorf("/dex/auth: %d %q, checks %d -> %d", resp.StatusCode, body, n, f.checks.Load())
	}
}

// Mismatch 1: a request principal needs both iss and sub as non-empty
// strings (the DENY policy's metadata matchers on jwt_authn's payload); a
// valid token without sub passes jwt_authn and meets the DENY policy.
func TestEnvoyRequestPrincipalNeedsSub(t *testing.T) {
	f := newEnvoyFixture(t, "master_kubeflow-oauth2-proxy")
	for name, c := range map[string]map[string]any{
		"no sub":    {"sub": nil},
		"empty sub": {"sub": ""},
	} {
		resp, body := f.get(t, "/pipeline/apis/v2beta1/runs", "Authorization", "Bearer "+f.dexToken(t, c))
		if resp.StatusCode != 403 || body != "RBAC: access denied" {
			t.Errorf("%s: %d %q, want 403 from the DENY policy (no request principal)", name, resp.StatusCode, body)
		}
	}
	if resp, _ := f.get(t, "/pipeline/apis/v2beta1/runs", "Authorization", "Bearer "+f.dexToken(t, nil)); resp.StatusCode != 200 {
		t.Errorf("iss and sub: %d", resp.StatusCode)
	}
}

// Mismatch 2: request.headers[authorization] with "*" is a presence match:
// an empty Authorization header skips the CUSTOM check (it is present),
// carries no token, and meets the DENY policy.
func TestEnvoyEmptyAuthorizationSkipsTheCheck(t *testing.T) {
	f := newEnvoyFixture(t, "master_kubeflow-oauth2-proxy")
	f.reply(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "/dex/auth")
		w.WriteHeader(302)
	})
	n := f.checks.Load()
	resp, body := f.do(t, "GET", "/jupyter/", http.Header{"Authorization": {""}})
	if resp.StatusCode != 403 || body != "RBAC: access denied" || f.checks.Load() != n {
		t.Fatalf("empty Authorization: %d %q, checks %d -> %d; want 403 from DENY, no check", resp.StatusCode, body, n, f.checks.Load())
	}
	if resp, _ := f.get(t, "/jupyter/"); resp.StatusCode != 302 || f.checks.Load() != n+1 {
		t.Fatalf("no Authorization: %d, want the check's 302", resp.StatusCode)
	}
}

// Mismatch 3: policies and routes see the path after normalize_path
// (dot segments resolved, %2e too), merge_slashes off and escaped slashes
// kept: /dex/%2e%2e/jupyter/ is /jupyter/ (checked), /dex%2Fx is not under
// /dex/ (checked, routed to the dashboard), /dex//auth stays under /dex/.
func TestEnvoyPathNormalization(t *testing.T) {
	f := newEnvoyFixture(t, "master_kubeflow-oauth2-proxy")
	f.reply(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "/dex/auth")
		w.WriteHeader(302)
	})
	for _, c := range []struct {
		target, checkedAs string // "" = not checked
		status            int
	}{
		{"/dex/%2e%2e/jupyter/", "/jupyter/", 302},
		{"/dex/..%2Fjupyter/", "", 200},
		{"/dex%2Fauth", "/dex%2Fauth", 302},
		{"/dex/./auth", "", 200},
		{"/dex//auth", "", 200},
		{`/dex\..\jupyter/`, "/jupyter/", 302},
		{"/%64ex/auth", "", 200}, // %64 is "d": unreserved, decoded
		{"/a/../../dex/auth?x=%2e%2e", "", 200},
	} {
		n := f.checks.Load()
		resp, _ := f.get(t, c.target)
		checked := f.checks.Load() != n
		if resp.StatusCode != c.status || checked != (c.checkedAs != "") || (checked && f.lastCheck.Load().URL.EscapedPath() != c.checkedAs) {
			got := ""
			if checked {
				got = f.lastCheck.Load().URL.EscapedPath()
			}
			t.Errorf("%s: %d, checked as %q; want %d, checked as %q", c.target, resp.StatusCode, got, c.status, c.checkedAs)
		}
	}
	// An invalid path (an escaped NUL) is a 400 before any filter.
	n := f.checks.Load()
	if resp, _ := f.get(t, "/x%00y"); resp.StatusCode != 400 || f.checks.Load() != n {
		t.Errorf("/x%%00y: %d, want 400", resp.StatusCode)
	}
}

func TestCanonicalizePath(t *testing.T) {
	for in, want := range map[string]string{
		"/a/b/../c":    "/a/c",
		"/a/./b":       "/a/b",
		"/..":          "/",
		"/a/%2E%2e/b":  "/b",
		"/a%2fb":       "/a%2fb",
		"/a%41":        "/aA",
		"/a%2e":        "/a.", // IsDot comes before escape handling
		"/a%2f%2e":     "/a%2f.",
		"/a b":         "/a%20b",
		`/a\b`:         "/a/b",
		"/a/..":        "/",
		"/a/.b":        "/a/.b",
		"/a//b":        "/a//b",
		"/%zz":         "/%zz",
		"/\u00e9":      "/%C3%A9",
		"/a/b/%2e%2e/": "/a/",
	} {
		got, ok := canonicalizePath(in)
		if !ok || got != want {
			t.Errorf("canonicalizePath(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
	if _, ok := canonicalizePath("/a%00"); ok {
		t.Error("an escaped NUL must make the path invalid")
	}
}

// Mismatch 4: the filters run before routing. Without a route for a path
// (here: the layout without Kubeflow's dashboard, whose route is "/"), the
// request is still checked first; the 404 comes after.
func TestEnvoyFiltersBeforeRouting(t *testing.T) {
	f := newEnvoyFixture(t, "master_kubeflow-oauth2-proxy", withoutRoutesTo("dashboard.kubeflow"))
	f.reply(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "/dex/auth")
		w.WriteHeader(302)
	})
	if resp, _ := f.get(t, "/nowhere"); resp.StatusCode != 302 || f.checks.Load() != 1 {
		t.Fatalf("unrouted, no session: %d, checks %d; want the check's 302", resp.StatusCode, f.checks.Load())
	}
	tok := f.dexToken(t, nil)
	f.reply(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Authorization", "Bearer "+tok)
		w.WriteHeader(200)
	})
	if resp, _ := f.get(t, "/nowhere"); resp.StatusCode != 404 || f.checks.Load() != 2 {
		t.Fatalf("unrouted, allowed: %d, checks %d; want 404 after the check", resp.StatusCode, f.checks.Load())
	}
}

// withoutRoutesTo removes the routes to clusters whose name contains s.
func withoutRoutesTo(s string) Edit {
	return func(g *Envoy) error {
		for _, vh := range g.routes.VirtualHosts {
			var keep []*route
			for _, r := range vh.Routes {
				if r.Route == nil || !strings.Contains(r.Route.Cluster, s) {
					keep = append(keep, r)
				}
			}
			vh.Routes = keep
		}
		return nil
	}
}

// Mismatch 5: istiod inlines the issuer's key set when it pushes the
// configuration; when its fetch fails it inlines a key set nobody can sign
// for. The EKS layout's issuer was unreachable for istiod: every token of
// it fails, whoever signs it; a Dex token signed with a key Dex publishes
// only later (a rotation istiod has not fetched yet) fails too.
func TestEnvoyInlinedKeySets(t *testing.T) {
	f := newEnvoyFixture(t, "master_kubeflow-oauth2-proxy-m2m-dex-and-eks")
	var iss string
	for _, fl := range f.g.filters {
		if j, ok := fl.(*jwtAuthnFilter); ok {
			for _, p := range j.cfg.Providers {
				if strings.Contains(p.Issuer, "eks") {
					iss = p.Issuer
				}
			}
		}
	}
	if iss == "" {
		t.Fatal("no EKS issuer in the layout")
	}
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	eks := sign(t, key, "any", map[string]any{"iss": iss, "sub": "system:serviceaccount:ns:sa", "exp": time.Now().Add(time.Hour).Unix()})
	if resp, body := f.get(t, "/pipeline/apis/v2beta1/runs", "Authorization", "Bearer "+eks); resp.StatusCode != 401 {
		t.Errorf("EKS token, issuer unreachable for istiod: %d %q, want 401", resp.StatusCode, body)
	}
	rotated := sign(t, key, "next", map[string]any{"iss": dexIssuer, "sub": "x", "exp": time.Now().Add(time.Hour).Unix()})
	if resp, _ := f.get(t, "/pipeline/apis/v2beta1/runs", "Authorization", "Bearer "+rotated); resp.StatusCode != 401 {
		t.Errorf("Dex token with a key istiod did not inline: %d, want 401", resp.StatusCode)
	}
}

// Mismatch 6: an EnvoyFilter INSERT_BEFORE without a sub-filter put
// ext_authz first (Istio < 1.19, the plain gateway: its check runs before
// anything else); a patch naming envoy.http_connection_manager matches
// nothing on Istio 1.19 and later (Kubeflow 1.8.1's own EnvoyFilter,
// translated by today's Istio, adds no ext_authz filter at all), while our
// overlay names envoy.filters.network.http_connection_manager and the
// router, and Istio inserts its filter just before the router.
func TestEnvoyEnvoyFilterPlacement(t *testing.T) {
	stock := newEnvoyFixture(t, "v1.8.1_stock-oidc-authservice")
	for _, n := range stock.g.Filters() {
		if n == "envoy.filters.http.ext_authz" {
			t.Errorf("Kubeflow 1.8.1's EnvoyFilter (envoy.http_connection_manager) matched on Istio %s", "1.31")
		}
	}
	ours := newEnvoyFixture(t, "v1.8.1_kubeflow")
	if got := strings.Join(ours.g.Filters(), " "); got != "envoy.filters.http.rbac envoy.filters.http.ext_authz" {
		t.Errorf("our EnvoyFilter on Kubeflow 1.8.1: %s, want ext_authz after Istio's RBAC, before the router", got)
	}
	plain, err := New(KubeflowEnvoyFilter("http://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(plain.Filters(), " "); got != "envoy.filters.http.ext_authz" {
		t.Errorf("plain gateway: %s", got)
	}
}

// Mismatch 7: the extension provider as Kubeflow (1.9.1+) declares it:
// Istio's default timeout is 600 s (the old preset: 10 s), and the check's
// kubeflow-userid and kubeflow-groups are not let through (the old preset
// did): only jwt_authn sets them, from the token.
func TestEnvoyKubeflowProviderAsTranslated(t *testing.T) {
	for _, layout := range []string{"v1.9.1_kubeflow-oauth2-proxy", "v1.10.2_kubeflow-oauth2-proxy", "v1.11.0_kubeflow-oauth2-proxy",
		"v26.03_kubeflow-oauth2-proxy", "master_kubeflow-oauth2-proxy"} {
		f := newEnvoyFixture(t, layout)
		for _, fl := range f.g.filters {
			if ea, ok := fl.(*extAuthzFilter); ok {
				hc := ea.client.(*httpCheck)
				if hc.timeout != 600*time.Second {
					t.Errorf("%s: check timeout %s, want Istio's 600s", layout, hc.timeout)
				}
				for _, h := range []string{"kubeflow-userid", "kubeflow-groups"} {
					if hc.upstream.match(h) {
						t.Errorf("%s: %s is let through from the check", layout, h)
					}
				}
			}
		}
		f.reply(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Kubeflow-Userid", "from-the-check")
			w.Header().Set("Kubeflow-Groups", "from-the-check")
			w.WriteHeader(200)
		})
		tok := f.dexToken(t, nil)
		f.get(t, "/jupyter/", "Cookie", "s=1") // no token: DENY; nothing reaches the upstream
		if up := f.upstream.Load(); up != nil {
			t.Errorf("%s: a request without a JWT reached the upstream", layout)
		}
		f.reply(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Authorization", "Bearer "+tok)
			w.Header().Set("Kubeflow-Userid", "from-the-check")
			w.WriteHeader(200)
		})
		f.get(t, "/jupyter/", "Cookie", "s=1")
		if up := f.upstream.Load(); up == nil || strings.Join(up.Headers.Values("Kubeflow-Userid"), ",") != "user@example.com" {
			t.Errorf("%s: kubeflow-userid upstream %v, want the token's email only", layout, up)
		}
	}
}

// Mismatch 8: the gateway is the edge (use_remote_address): the upstream
// gets X-Forwarded-For with the client's address appended and
// X-Forwarded-Proto set to the connection's scheme, whatever the client
// sent; X-Envoy-* headers from the client are dropped.
func TestEnvoyForwardedHeaders(t *testing.T) {
	f := newEnvoyFixture(t, "master_istio-envoyfilter")
	f.get(t, "/x", "X-Forwarded-For", "203.0.113.7", "X-Forwarded-Proto", "https", "X-Envoy-Internal", "true",
		"X-Forwarded-Client-Cert", "By=spiffe://forged")
	up := f.upstream.Load()
	if up == nil {
		t.Fatal("nothing reached the upstream")
	}
	if got := up.Headers.Get("X-Forwarded-For"); got != "203.0.113.7,127.0.0.1" {
		t.Errorf("X-Forwarded-For %q", got)
	}
	if got := up.Headers.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("X-Forwarded-Proto %q, want http (the connection's scheme)", got)
	}
	if up.Headers.Get("X-Envoy-Internal") != "" || up.Headers.Get("X-Forwarded-Client-Cert") != "" || up.Headers.Get("X-Request-Id") == "" {
		t.Errorf("upstream headers %v", up.Headers)
	}
	// The check sees the same X-Forwarded-Proto (our EnvoyFilter passes it).
	if c := f.lastCheck.Load(); c.Header.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("check's X-Forwarded-Proto %q", c.Header.Get("X-Forwarded-Proto"))
	}
}

// jwt_authn copies a list claim named in claim_to_headers as the base64 of
// its JSON (Envoy >= 1.29, authenticator.cc addJWTClaimToHeader): Dex's
// groups reach kubeflow-groups as base64(["team-a","team-b"]), not
// "team-a,team-b"; a string claim as is, a number as an integer.
func TestEnvoyClaimToHeadersListClaim(t *testing.T) {
	f := newEnvoyFixture(t, "master_kubeflow-oauth2-proxy")
	tok := f.dexToken(t, map[string]any{"groups": []string{"team-a", "team-b"}, "email": "user@example.com"})
	f.get(t, "/pipeline/", "Authorization", "Bearer "+tok, "Kubeflow-Groups", "admins")
	up := f.upstream.Load()
	if up == nil {
		t.Fatal("nothing reached the upstream")
	}
	want := base64.StdEncoding.EncodeToString([]byte(`["team-a","team-b"]`))
	if got := up.Headers.Values("Kubeflow-Groups"); len(got) != 1 || got[0] != want {
		t.Errorf("kubeflow-groups %q, want %q", got, want)
	}
	for claim, want := range map[any]string{"a@b": "a@b", float64(42): "42", 1.5: "1.500000", true: "true"} {
		got, _ := claimHeaderValue(map[string]any{"c": claim}, "c")
		if got != want {
			t.Errorf("claim %v: %q, want %q", claim, got, want)
		}
	}
	got, _ := claimHeaderValue(map[string]any{"c": map[string]any{"b": 1.0, "a": "x"}}, "c")
	if b, _ := base64.StdEncoding.DecodeString(got); string(b) != `{"a":"x","b":1}` {
		t.Errorf("object claim: %q", b)
	}
}

// A token a provider verifies ends the verification: the providers after
// it do not remove the headers they would write. On Kubeflow's kind layout
// a Dex token is verified by dex-jwt first, m2m-token-issuer never runs.
func TestEnvoyJWTProvidersStopAtTheFirstSuccess(t *testing.T) {
	f := newEnvoyFixture(t, "master_kubeflow-oauth2-proxy-m2m-dex-and-kind")
	sa, kid := testKey(t, "serviceaccount")
	satok := sign(t, sa, kid, map[string]any{"iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:ns:sa",
		"exp": time.Now().Add(time.Hour).Unix()})
	resp, _ := f.get(t, "/pipeline/", "Authorization", "Bearer "+satok)
	if up := f.upstream.Load(); resp.StatusCode != 200 || up == nil || up.Headers.Get("Kubeflow-Userid") != "system:serviceaccount:ns:sa" {
		t.Fatalf("service-account token: %d %v", resp.StatusCode, up)
	}
	// Two tokens at once, a Dex token and a service-account token, in two
	// Authorization headers. Each provider must verify every token it finds:
	// Dex's verifies the last one, adds its claims, removes the header (not
	// forwarded), then fails on the other token; the providers after it then
	// find no token, and the allow-missing branch of Istio's requirement
	// succeeds. Envoy lets the request through with the Dex token's payload
	// as the principal, and without kubeflow-userid (each provider removed
	// it before looking) or any token: the upstream gets no identity.
	resp, _ = f.do(t, "GET", "/pipeline/", http.Header{"Authorization": {"Bearer " + satok, "Bearer " + f.dexToken(t, nil)}})
	up := f.upstream.Load()
	if resp.StatusCode != 200 || up == nil || up.Headers.Get("Kubeflow-Userid") != "" || up.Headers.Get("Authorization") != "" {
		t.Errorf("two tokens of two issuers: %d %v; want through, without identity or token", resp.StatusCode, up)
	}
}

// The plain gateway (Kubeflow ≤ 1.9.0's EnvoyFilter as Istio < 1.19
// applied it) has the same HCM: the check sees the normalized path, the
// upstream the forwarded headers.
func TestPlainGatewayHCM(t *testing.T) {
	var checked atomic.Pointer[http.Request]
	check := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { checked.Store(r); w.WriteHeader(200) }))
	defer check.Close()
	up, got := recorder(t)
	cfg := KubeflowEnvoyFilter(check.URL)
	cfg.Upstream = up.URL
	gw := gateway(t, cfg)
	req, _ := http.NewRequest("GET", gw.URL+"/", nil)
	req.URL.Opaque = "/dex/%2e%2e/x"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if c := checked.Load(); c == nil || c.URL.EscapedPath() != "/x" {
		t.Fatalf("check saw %v", c)
	}
	if got.Get("X-Forwarded-Proto") != "http" || got.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Errorf("upstream %v", got)
	}
}

// The generated configuration is read strictly: a field of an emulated
// filter that the emulation does not implement is an error, not ignored.
func TestEnvoyRefusesWhatItCannotEmulate(t *testing.T) {
	raw, err := os.ReadFile(mustLayoutFile(t, "master_kubeflow-oauth2-proxy"))
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	json.Compact(&compact, raw)
	b := compact.Bytes()
	for _, c := range []struct{ from, to, want string }{
		{`"bypassCorsPreflight":true`, `"bypassCorsPreflight":true,"fromCookies":["x"]`, "fromCookies"},
		{`"shadowRulesStatPrefix":"istio_ext_authz_"`, `"shadowRulesStatPrefix":"istio_ext_authz_","matcher":{}`, "matcher"},
		{`"name":"envoy.filters.http.fault"`, `"name":"envoy.filters.http.lua"`, "lua"},
		{`"useRemoteAddress":true`, `"useRemoteAddress":true,"xffNumTrustedHops":1`, "trusted hops"},
	} {
		mod := strings.Replace(string(b), c.from, c.to, 1)
		if mod == string(b) {
			t.Fatalf("%s: not found in the layout", c.from)
		}
		file := t.TempDir() + "/l.json"
		os.WriteFile(file, []byte(mod), 0o644)
		if _, err := NewEnvoy(EnvoyOptions{File: file}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.to, err)
		}
	}
}

// The provider overlays as translated: deploy/overlays/gitlab removes the
// /dex/* exemption of istio-extension-provider's CUSTOM policy (no Dex behind
// the gateway), so /dex/ is checked too; deploy/overlays/dex keeps
// istio-envoyfilter's filter, which checks every path.
func TestEnvoyProviderOverlays(t *testing.T) {
	for _, c := range []struct {
		layout string
		checks int32
	}{
		{"master_istio-extension-provider", 0},
		{"master_gitlab", 1},
		{"master_dex", 1},
	} {
		f := newEnvoyFixture(t, c.layout)
		f.reply(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(403) })
		resp, _ := f.get(t, "/dex/auth")
		want := 200
		if c.checks > 0 {
			want = 403
		}
		if f.checks.Load() != c.checks || resp.StatusCode != want {
			t.Errorf("%s: GET /dex/auth: %d checks, HTTP %d; want %d, %d", c.layout, f.checks.Load(), resp.StatusCode, c.checks, want)
		}
	}
}

func mustLayoutFile(t *testing.T, layout string) string {
	t.Helper()
	f, err := LayoutFile(layout)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// PolicyMatches (test/manifests' static checks) reads "*" in a header
// condition as a presence match, as Istio translates it.
func TestPolicyMatchesHeaderPresence(t *testing.T) {
	spec := map[string]any{"rules": []any{map[string]any{"when": []any{map[string]any{"key": "request.headers[authorization]", "notValues": []any{"*"}}}}}}
	r, _ := http.NewRequest("GET", "/x", nil)
	if ok, err := PolicyMatches(spec, r, ""); err != nil || !ok {
		t.Errorf("no header: %v %v", ok, err)
	}
	r.Header["Authorization"] = []string{""}
	if ok, err := PolicyMatches(spec, r, ""); err != nil || ok {
		t.Errorf("empty header: matched (%v), want not: it is present", err)
	}
}

// Every generated layout is read (nothing in it goes unemulated), and in
// every layout we ship a request without a session that is not for Dex is
// checked by the service, with the client's Cookie and Authorization
// (Kubeflow 1.8.1's own EnvoyFilter, on today's Istio, has no check at all:
// TestEnvoyEnvoyFilterPlacement).
func TestEveryGeneratedLayout(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(filepath.Dir(mustLayoutFile(t, "master_istio-envoyfilter")), "*.json"))
	if err != nil || len(files) < 20 {
		t.Fatalf("generated layouts: %d, %v", len(files), err)
	}
	for _, file := range files {
		layout := strings.TrimSuffix(filepath.Base(file), ".json")
		t.Run(layout, func(t *testing.T) {
			f := newEnvoyFixture(t, layout)
			if strings.Contains(layout, "_stock-") {
				return
			}
			var ea *extAuthzFilter
			for _, fl := range f.g.filters {
				if e, ok := fl.(*extAuthzFilter); ok {
					ea = e
				}
			}
			if _, ok := ea.client.(*grpcCheck); ok {
				everyGRPCLayout(t, f)
				return
			}
			f.reply(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Location", "/dex/auth")
				w.WriteHeader(302)
			})
			resp, _ := f.get(t, "/pipeline/?ns=a", "Cookie", "authservice_session=x")
			c := f.lastCheck.Load()
			if resp.StatusCode != 302 || c == nil || c.Header.Get("Cookie") != "authservice_session=x" || c.URL.RequestURI() != "/pipeline/?ns=a" {
				t.Fatalf("no session: %d, check %v", resp.StatusCode, c)
			}
			// Where the check is ours to configure (our EnvoyFilter, our
			// provider), it gets what tells a navigation from an API call and
			// a cross-site request, the scheme Envoy set and the request id.
			if hc := ea.client.(*httpCheck); hc.allowed.match("accept") {
				f.get(t, "/pipeline/", "Accept", "text/html", "X-Requested-With", "XMLHttpRequest", "Sec-Fetch-Mode", "navigate",
					"Sec-Fetch-Site", "same-origin", "X-Forwarded-Proto", "https")
				c := f.lastCheck.Load()
				for h, want := range map[string]string{"Accept": "text/html", "X-Requested-With": "XMLHttpRequest", "Sec-Fetch-Mode": "navigate",
					"Sec-Fetch-Site": "same-origin", "X-Forwarded-Proto": "http"} {
					if got := c.Header.Get(h); got != want {
						t.Errorf("the check got %s %q, want %q", h, got, want)
					}
				}
				if c.Header.Get("X-Request-Id") == "" {
					t.Error("the check got no X-Request-Id")
				}
				// And the client's trace context, W3C and B3
				// (docs/operations.md, Traces).
				trace := []string{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate", "vendor=x",
					"b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", "x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736",
					"x-b3-spanid", "00f067aa0ba902b7", "x-b3-parentspanid", "0a1b2c3d4e5f6071", "x-b3-sampled", "1", "x-b3-flags", "1"}
				f.get(t, "/pipeline/", trace...)
				c = f.lastCheck.Load()
				for i := 0; i < len(trace); i += 2 {
					if got := c.Header.Get(trace[i]); got != trace[i+1] {
						t.Errorf("the check got %s %q, want %q", trace[i], got, trace[i+1])
					}
				}
			}
			// The service's logout reaches it (checked, or routed to it:
			// Kubeflow's oauth2-proxy VirtualService of the swaps).
			n := f.checks.Load()
			f.get(t, "/oauth2/sign_out")
			f.get(t, "/authservice/logout")
			if f.checks.Load() == n {
				t.Errorf("neither /oauth2/sign_out nor /authservice/logout reached the service")
			}
		})
	}
}
