package monitoring

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// live is the service with its peers and a Prometheus scraping it.
type live struct {
	dex        *peer.Dex
	redis      *peer.Redis
	svc        *peer.Service
	gateway    string
	prometheus string // http://127.0.0.1:<port>
}

// saIssuer is the cluster's service-account issuer, which the service
// reviews tokens of.
const saIssuer = "https://kubernetes.default.svc.cluster.local"

// startLive runs Dex, Redis and the service with every part the dashboard
// shows switched on: Redis, TokenReview, refresh, strict validation, the
// access log, an external authorizer and opaque access tokens. The
// TokenReview API server is an address nothing listens on (test/kube holds
// TokenReview to a real kube-apiserver, its metrics included): every
// review is "unavailable", as when the API server is down.
func startLive(t *testing.T) *live {
	t.Helper()
	l := &live{}
	l.redis = peer.RunRedis(t)
	// big@example.com is in more groups than GROUPS_MAX (256) keeps: its
	// login is refused.
	big := make([]string, 300)
	for i := range big {
		big[i] = fmt.Sprintf("big-team-%03d", i)
	}
	// Tokens live 8 s and are refreshed 6 s before they expire: a refresh
	// every 2 s of use.
	l.dex = peer.StartDex(t, peer.DexOptions{Groups: "team-a", IDTokenTTL: 8 * time.Second,
		ExtraUsers: []string{"big@example.com:12341234:" + strings.Join(big, ";")}})
	env := peer.KubeflowEnv(l.dex)
	for k, v := range map[string]string{
		"EXTERNAL_AUTHZ_URL": externalAuthorizer(t), "ACCESS_TOKEN_AUTHN": "opaque",
		"OIDC_SCOPES": "openid profile email groups offline_access", "REFRESH_BEFORE_EXPIRY": "6s",
		"STRICT_SESSION_VALIDATION": "true", "STRICT_SESSION_VALIDATION_INTERVAL": "1s",
		"ACCESS_LOG": "true", "REDIS_URL": l.redis.URL,
		"KUBERNETES_AUTHN_ENABLED": "true", "KUBERNETES_SERVICE_ACCOUNT_DIR": serviceAccountDir(t),
	} {
		env[k] = v
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
	t.Setenv("KUBERNETES_SERVICE_PORT", strconv.Itoa(peer.FreePort(t)))
	l.svc = peer.StartService(t, env)
	l.svc.WaitReady(t, 30*time.Second)
	l.gateway = peer.KubeflowGateway(t, peer.EnvoyFilterLayout, l.svc.CheckURL, l.svc.WebURL, l.dex.Port)
	return l
}

// externalAuthorizer is an external authorizer in the predecessor's
// protocol that allows every request but those under /authz-broken/, which
// it answers with a 500 (an error: the service refuses them).
func externalAuthorizer(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Request struct {
				Path string `json:"path"`
			} `json:"request"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if strings.HasPrefix(in.Request.Path, "/authz-broken/") {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// serviceAccountDir writes what a pod has mounted for TokenReview: a CA
// and the service's own token, whose iss names the cluster's issuer.
func serviceAccountDir(t *testing.T) string {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "token"), []byte(serviceAccountToken("system:serviceaccount:istio-system:authservice")), 0o600)
	return dir
}

// serviceAccountToken is shaped as the cluster's tokens are (the service
// reads iss and exp before asking the API server, which alone verifies).
func serviceAccountToken(sub string) string {
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	return enc(map[string]string{"alg": "RS256", "kid": "k"}) + "." +
		enc(map[string]any{"iss": saIssuer, "sub": sub, "aud": []string{"istio-ingressgateway.istio-system.svc.cluster.local"},
			"exp": time.Now().Add(time.Hour).Unix()}) + "." + base64.RawURLEncoding.EncodeToString([]byte("signature"))
}

func newBrowser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 15 * time.Second}
}

func get(t *testing.T, c *http.Client, u string, header map[string]string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// traffic makes every counter the dashboard and the rules read move: a
// login, allowed requests (cache hits), refreshes and strict validations,
// a forged cookie, a replayed login link, a service-account token the API
// server cannot review, requests the external authorizer cannot decide on,
// an invented access token, a login with too many groups, a logout; then
// Redis and the provider go away and the service meets both.
func (l *live) traffic(t *testing.T) {
	t.Helper()
	noRedirect := func(c *http.Client) *http.Client {
		cc := *c
		cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		return &cc
	}
	json := map[string]string{"Accept": "application/json"}
	// An API call with a bearer token, as a client without a session makes.
	bearer := func(token string) int {
		return get(t, http.DefaultClient, l.gateway+"/api/x", map[string]string{"Accept": "application/json", "Authorization": "Bearer " + token})
	}
	if code := get(t, http.DefaultClient, l.gateway+"/api/anything", json); code != 401 {
		t.Fatalf("anonymous API call: %d", code)
	}
	b := newBrowser()
	resp, err := peer.DexLogin(b, l.gateway+"/notebook/?format=json", "user@example.com", "12341234")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("login: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	// Use over 5 s: refreshes (every 2 s) and validations (every 1 s).
	for range 10 {
		if code := get(t, b, l.gateway+"/notebook/?format=json", nil); code != 200 {
			t.Fatalf("with the session: %d", code)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if code := get(t, http.DefaultClient, l.gateway+"/api/x", map[string]string{"Accept": "application/json",
		"Cookie": "authservice_session=forged"}); code != 401 {
		t.Fatalf("forged cookie: %d", code)
	}
	if code := get(t, noRedirect(b), l.gateway+"/authservice/oidc/callback?code=c&state="+strings.Repeat("s", 43), nil); code != 400 {
		t.Fatalf("callback without its login state: %d", code)
	}
	if code := bearer(serviceAccountToken("system:serviceaccount:kubeflow:pipeline-runner")); code != 401 {
		t.Fatalf("service-account token without an API server: %d", code)
	}
	// The external authorizer fails for these paths: refused (403).
	for i := range 3 {
		if code := get(t, b, fmt.Sprintf("%s/authz-broken/%d?format=json", l.gateway, i), nil); code != 403 {
			t.Fatalf("a request the external authorizer cannot decide on: %d", code)
		}
	}
	// An invented opaque access token: Dex's userinfo refuses it.
	if code := bearer("invented-opaque-token-0001"); code != 401 {
		t.Fatalf("invented access token: %d", code)
	}
	// A user in more groups than the service forwards: the login is refused.
	resp, err = peer.DexLogin(newBrowser(), l.gateway+"/big/?format=json", "big@example.com", "12341234")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("login with 300 groups: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	if code := get(t, noRedirect(b), l.gateway+"/authservice/logout", nil); code != 302 {
		t.Fatalf("logout: %d", code)
	}

	// Redis goes away: the subscription drops, a second user's login and
	// logout meet it (remember, publish).
	b2 := newBrowser()
	resp, err = peer.DexLogin(b2, l.gateway+"/second/?format=json", "user@example.com", "12341234")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	l.redis.Kill()
	time.Sleep(time.Second)
	b3 := newBrowser()
	resp, err = peer.DexLogin(b3, l.gateway+"/third/?format=json", "user@example.com", "12341234")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code := get(t, noRedirect(b2), l.gateway+"/authservice/logout", nil); code != 302 {
		t.Fatalf("logout without Redis: %d", code)
	}
	// The provider goes away: the next refresh of the third session fails,
	// and a new access token cannot be looked up.
	l.dex.Stop()
	time.Sleep(2500 * time.Millisecond)
	get(t, b3, l.gateway+"/third/?format=json", nil)
	if code := bearer("invented-opaque-token-0002"); code != 401 {
		t.Fatalf("access token with the provider down: %d", code)
	}
}

// exported reads /metrics: metric name → label names seen on its series.
func exported(t *testing.T, probeURL string) map[string]map[string]bool {
	t.Helper()
	resp, err := http.Get(probeURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	out := map[string]map[string]bool{}
	add := func(name string, m *dto.Metric, extra ...string) {
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for _, lp := range m.GetLabel() {
			out[name][lp.GetName()] = true
		}
		for _, e := range extra {
			out[name][e] = true
		}
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				add(name+"_bucket", m, "le")
				add(name+"_sum", m)
				add(name+"_count", m)
			case dto.MetricType_SUMMARY:
				add(name, m, "quantile")
				add(name+"_sum", m)
				add(name+"_count", m)
			default:
				add(name, m)
			}
		}
	}
	return out
}

// TestLive runs the service with real Dex, Redis and traffic, scraped by a
// real Prometheus server loaded with the PrometheusRule's rules:
//   - every series a panel or a rule queries is on /metrics, with every
//     label the query matches or groups by, and every series of the
//     service's own is read by a panel or a rule;
//   - Prometheus evaluates every panel query and every variable's selector
//     with data, and every rule without error;
//   - the alerts for what the test broke (TokenReview without an API
//     server, Redis gone with a logout not shared, the external authorizer
//     failing, access tokens the provider cannot check, a user refused for
//     too many groups) are active, those for what works are not.
func TestLive(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	peer.Require(t, "prometheus (apt-get install prometheus)", err)
	l := startLive(t)
	l.prometheus = startPrometheus(t, promBin, strings.TrimPrefix(l.svc.ProbeURL, "http://"))
	l.traffic(t)

	// Every series queried is exported, with the labels the query reads.
	got := exported(t, l.svc.ProbeURL)
	for _, q := range queries(t) {
		u, err := uses(q.Expr)
		if err != nil {
			t.Errorf("%s: %v", q.Where, err)
			continue
		}
		for _, name := range sortedKeys(u) {
			have, ok := got[name]
			if !ok {
				t.Errorf("%s: %s is not on /metrics", q.Where, name)
				continue
			}
			for _, lbl := range sortedKeys(u[name]) {
				if !have[lbl] {
					t.Errorf("%s: %s has no label %q (it has %v)", q.Where, name, lbl, sortedKeys(have))
				}
			}
		}
	}

	// And the converse: every series of the service's own is on the
	// dashboard or in a rule (a histogram by any of its series).
	read := map[string]bool{}
	for _, q := range queries(t) {
		u, _ := uses(q.Expr)
		for name := range u {
			read[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")] = true
		}
	}
	for _, name := range sortedKeys(got) {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if strings.HasPrefix(name, "oidc_authservice_") && !read[base] && !read[name] {
			t.Errorf("%s is exported but no panel or rule reads it", name)
		}
	}

	// Prometheus has scraped the traffic (two scrapes after it: rates).
	time.Sleep(3 * time.Second)
	d, _ := loadDashboard(t)
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			expr, _ := expand(tg.Expr)
			res, err := promQuery(l.prometheus, expr)
			if err != nil {
				t.Errorf("panel %q %s: %v\n  %s", p.Title, tg.RefID, err, expr)
				continue
			}
			if len(res) == 0 {
				t.Errorf("panel %q %s: no data after the traffic\n  %s", p.Title, tg.RefID, expr)
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			sel, _ := labelValuesSelector(v)
			sel, _ = expand(sel)
			if res, err := promQuery(l.prometheus, sel); err != nil || len(res) == 0 {
				t.Errorf("variable %s: %q: %v, %d series", v.Name, sel, err, len(res))
			}
		}
	}

	// Every rule evaluates without error; the broken parts alert.
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name, Health, LastError string
				}
			}
		}
	}
	promGet(t, l.prometheus+"/api/v1/rules", &rules)
	n := 0
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" {
				t.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	want, _ := loadRules(t)
	if n != len(want.alerts()) {
		t.Errorf("Prometheus loaded %d rules, the PrometheusRule has %d alerts", n, len(want.alerts()))
	}
	broken := []string{"OIDCAuthserviceTokenReviewUnavailable", "OIDCAuthserviceRedisSubscriptionDown", "OIDCAuthserviceRedisErrors",
		"OIDCAuthserviceRevocationsUnshared", "OIDCAuthserviceAuthorizerFailing", "OIDCAuthserviceAccessTokensUnverifiable",
		"OIDCAuthserviceIdentitiesRefused"}
	active := map[string]bool{}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Second) {
		var alerts struct {
			Data struct {
				Alerts []struct {
					Labels map[string]string
					State  string
				}
			}
		}
		promGet(t, l.prometheus+"/api/v1/alerts", &alerts)
		for _, a := range alerts.Data.Alerts {
			active[a.Labels["alertname"]] = true
		}
		all := true
		for _, a := range broken {
			all = all && active[a]
		}
		if all || time.Now().After(deadline) {
			break
		}
	}
	for _, a := range broken {
		if !active[a] {
			t.Errorf("%s is not pending or firing; active: %v", a, sortedKeys(active))
		}
	}
	for _, a := range []string{"OIDCAuthserviceAbsent", "OIDCAuthserviceNoReadyReplica", "OIDCAuthserviceNotReady", "OIDCAuthserviceCheckLatencyHigh"} {
		if active[a] {
			t.Errorf("%s is active for a ready, fast service", a)
		}
	}
}

// startPrometheus runs a Prometheus server scraping target every second
// with the PrometheusRule's rules, evaluated every second.
func startPrometheus(t *testing.T, bin, target string) string {
	t.Helper()
	dir := t.TempDir()
	_, rules := loadRules(t)
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
- rules.yaml
scrape_configs:
- job_name: oidc-authservice
  static_configs:
  - targets: [%q]
`, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// Started again on another port if its own was taken meanwhile.
	port := peer.StartOnFreePorts(t, "prometheus", "prometheus.log", 1, func(ports []int) *exec.Cmd {
		os.RemoveAll(filepath.Join(dir, "data"))
		cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
			"--web.listen-address=127.0.0.1:"+strconv.Itoa(ports[0]), "--web.console.templates=", "--web.console.libraries=")
		cmd.Dir = dir
		return cmd
	}, func(ports []int) func() error {
		return peer.HTTPReady(fmt.Sprintf("http://127.0.0.1:%d/-/ready", ports[0]))
	}, 30*time.Second)[0]
	u := fmt.Sprintf("http://127.0.0.1:%d", port)
	// Wait for a first scrape.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if res, err := promQuery(u, "oidc_authservice_build_info"); err == nil && len(res) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus did not scrape the service (log: %s)", filepath.Join(peer.ArtifactsDir(t), "prometheus.log"))
		}
	}
	return u
}

// promQuery evaluates expr now; an error is Prometheus' (parse, type).
func promQuery(base, expr string) ([]json.RawMessage, error) {
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Error  string
		Data   struct {
			ResultType string
			Result     json.RawMessage
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s", r.Error)
	}
	if r.Data.ResultType == "scalar" {
		return []json.RawMessage{r.Data.Result}, nil
	}
	var out []json.RawMessage
	if err := json.Unmarshal(r.Data.Result, &out); err != nil {
		return nil, err
	}
	// NaN results (0/0 ratios) are not data.
	kept := out[:0]
	for _, s := range out {
		if !strings.Contains(string(s), `"NaN"`) {
			kept = append(kept, s)
		}
	}
	return kept, nil
}

func promGet(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
