package kube

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	pipelinesAudience = "pipelines.kubeflow.org"
	gatewayAudience   = "istio-ingressgateway.istio-system.svc.cluster.local" // AUDIENCES' default
)

// serviceAccounts creates the namespaces and ServiceAccounts named
// "namespace/name".
func serviceAccounts(t *testing.T, api *APIServer, names ...string) {
	t.Helper()
	ctx := context.Background()
	for _, n := range names {
		ns, name, _ := strings.Cut(n, "/")
		api.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if _, err := api.Admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// mint asks the API server for a token of "namespace/name" by TokenRequest
// (what `kubectl create token` and a projected volume do).
func mint(t *testing.T, api *APIServer, sa string, audiences []string, lifetime time.Duration) string {
	t.Helper()
	ns, name, _ := strings.Cut(sa, "/")
	secs := int64(lifetime.Seconds())
	tr, err := api.Admin.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// serviceCredentials writes what a pod of the service finds in
// /var/run/secrets/kubernetes.io/serviceaccount: its own token and the CA.
func serviceCredentials(t *testing.T, api *APIServer, sa string) string {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "token"), []byte(mint(t, api, sa, nil, time.Hour)), 0o600)
	os.WriteFile(filepath.Join(dir, "ca.crt"), api.CAPEM, 0o600)
	return dir
}

// inCluster is the environment of the service in a pod with
// KUBERNETES_AUTHN_ENABLED, its credentials in dir.
func inCluster(api *APIServer, dir string) map[string]string {
	port := api.URL[strings.LastIndex(api.URL, ":")+1:]
	return map[string]string{"KUBERNETES_AUTHN_ENABLED": "true", "KUBERNETES_SERVICE_HOST": "127.0.0.1",
		"KUBERNETES_SERVICE_PORT": port, "KUBERNETES_SERVICE_ACCOUNT_DIR": dir}
}

// jwksConfig is docs/machine-identities.md's recipe for service-account
// tokens, with the test API server's discovery URL and CA.
func jwksConfig(api *APIServer) string {
	return AuthenticationConfiguration(fmt.Sprintf(`- issuer:
    url: %s
    discoveryURL: %s/.well-known/openid-configuration
    certificateAuthority: |
%s
    audiences: [%q]
  claimValidationRules:
  - expression: '"kubernetes.io" in claims && "serviceaccount" in claims["kubernetes.io"]'
    message: not a service account token
  claimMappings:
    username:
      expression: '"system:serviceaccount:" + claims["kubernetes.io"].namespace + ":" + claims["kubernetes.io"].serviceaccount.name'
    uid:
      expression: 'claims["kubernetes.io"].serviceaccount.uid'
    groups:
      expression: '["system:serviceaccounts", "system:serviceaccounts:" + claims["kubernetes.io"].namespace]'
`, ServiceAccountIssuer, api.URL, indent(string(api.CAPEM), "      "), pipelinesAudience))
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n")
}

// TestServiceAccountTokensAtTheGateway: tokens minted by the API server,
// presented at the gateway of a service on the JWKS path
// (AUTHENTICATION_CONFIG_FILE naming the API server's issuer) and of one on
// the TokenReview path (KUBERNETES_AUTHN_ENABLED, AUDIENCES' default, the
// RBAC of deploy/components/tokenreview), each accepted or refused as
// docs/machine-identities.md says.
func TestServiceAccountTokensAtTheGateway(t *testing.T) {
	api := StartAPIServer(t, Options{})
	serviceAccounts(t, api, "kubeflow/pipeline-runner", "kubeflow/doomed", "kubeflow/late", "team-x/default", "istio-system/authservice")
	rbac, err := os.ReadFile(filepath.Join(RepoRoot(), "deploy", "components", "tokenreview", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	api.Apply(t, string(rbac))

	authnFile := filepath.Join(t.TempDir(), "authn.yaml")
	os.WriteFile(authnFile, []byte(jwksConfig(api)), 0o600)
	jwks := StartService(t, map[string]string{"AUTHENTICATION_CONFIG_FILE": authnFile})
	review := StartService(t, inCluster(api, serviceCredentials(t, api, "istio-system/authservice")))

	// A token of another cluster whose issuer has the same (default) name.
	other := StartAPIServer(t, Options{})
	serviceAccounts(t, other, "kubeflow/pipeline-runner")
	foreign := mint(t, other, "kubeflow/pipeline-runner", []string{pipelinesAudience, gatewayAudience}, time.Hour)
	other.Stop()

	both := []string{pipelinesAudience, gatewayAudience}
	// The ServiceAccount of this token is deleted before it is presented.
	deleted := mint(t, api, "kubeflow/late", both, time.Hour)
	if err := api.Admin.CoreV1().ServiceAccounts("kubeflow").Delete(context.Background(), "late", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	const (
		runner     = "system:serviceaccount:kubeflow:pipeline-runner"
		jwksGroups = "system:serviceaccounts,system:serviceaccounts:kubeflow"
		// TokenReview gives the API server's groups, system:authenticated
		// included, as arrikto passed them.
		reviewGroups = "system:serviceaccounts,system:serviceaccounts:kubeflow,system:authenticated"
	)
	type want struct {
		status       int
		user, groups string
	}
	refused := want{status: 401}
	cases := []struct {
		name         string
		token        string
		jwks, review want
	}{
		{"audience pipelines.kubeflow.org (KFP SDK)", mint(t, api, "kubeflow/pipeline-runner", []string{pipelinesAudience}, time.Hour),
			want{200, runner, jwksGroups}, refused},
		{"audience of AUDIENCES", mint(t, api, "kubeflow/pipeline-runner", []string{gatewayAudience}, time.Hour),
			refused, want{200, runner, reviewGroups}},
		{"both audiences", mint(t, api, "kubeflow/pipeline-runner", both, time.Hour),
			want{200, runner, jwksGroups}, want{200, runner, reviewGroups}},
		{"no audience (the API server's own)", mint(t, api, "kubeflow/pipeline-runner", nil, time.Hour), refused, refused},
		{"short expiry (10 min, the shortest allowed)", mint(t, api, "kubeflow/pipeline-runner", both, 10*time.Minute),
			want{200, runner, jwksGroups}, want{200, runner, reviewGroups}},
		{"long expiry (48 h)", mint(t, api, "kubeflow/pipeline-runner", both, 48*time.Hour),
			want{200, runner, jwksGroups}, want{200, runner, reviewGroups}},
		{"another namespace", mint(t, api, "team-x/default", both, time.Hour),
			want{200, "system:serviceaccount:team-x:default", "system:serviceaccounts,system:serviceaccounts:team-x"},
			want{200, "system:serviceaccount:team-x:default", "system:serviceaccounts,system:serviceaccounts:team-x,system:authenticated"}},
		// The JWKS path checks a signature: the token stays valid until
		// its exp. The API server knows the ServiceAccount is gone.
		{"ServiceAccount deleted", deleted, want{200, "system:serviceaccount:kubeflow:late", jwksGroups}, refused},
		{"token of another cluster", foreign, refused, refused},
		{"garbage", "not.a.token", refused, refused},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for path, svc := range map[string]*Service{"jwks": jwks, "review": review} {
				w := c.jwks
				if path == "review" {
					w = c.review
				}
				for i := 0; i < 2; i++ { // the second answer from the cache
					got := svc.Call(t, c.token, "/pipeline/apis/v2beta1/runs")
					if got.Status != w.status || got.UpstreamReached != (w.status == 200) || got.User != w.user || got.Groups != w.groups {
						t.Fatalf("%s path: got %d %q %q, want %d %q %q (%.200s)", path, got.Status, got.User, got.Groups, w.status, w.user, w.groups, got.Body)
					}
				}
			}
		})
	}

	// The reviews are counted by result, and the answers taken from the
	// cache too: each case was presented twice, and the second
	// presentation of a refused token is answered from the TokenReview
	// cache (an accepted one, from the cache of verified bearer tokens
	// above it).
	for series, least := range map[string]float64{
		`oidc_authservice_tokenreviews_total{result="authenticated"}`:            5, // AUDIENCES, both, short, long, another namespace
		`oidc_authservice_tokenreviews_total{result="refused"}`:                  4, // pipelines only, no audience, deleted, another cluster
		`oidc_authservice_cache_lookups_total{cache="tokenreview",result="hit"}`: 4,
		`oidc_authservice_tokenreview_duration_seconds_count`:                    9,
	} {
		if got := review.Metric(t, series); got < least {
			t.Errorf("%s = %v, want at least %v", series, got, least)
		}
	}
	if got := review.Metric(t, `oidc_authservice_tokenreviews_total{result="unavailable"}`); got != 0 {
		t.Errorf("unavailable reviews with the API server up: %v", got)
	}

	// A ServiceAccount deleted after its token was accepted: TokenReview
	// notices once the positive answer's 10 s have passed.
	doomed := mint(t, api, "kubeflow/doomed", both, time.Hour)
	if got := review.Call(t, doomed, "/x"); got.Status != 200 {
		t.Fatalf("before deletion: %d", got.Status)
	}
	if err := api.Admin.CoreV1().ServiceAccounts("kubeflow").Delete(context.Background(), "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(11 * time.Second)
	if got := review.Call(t, doomed, "/x"); got.Status != 401 {
		t.Fatalf("10 s after the ServiceAccount's deletion: %d, want 401", got.Status)
	}
	if !strings.Contains(review.Log(), "bearer token refused") {
		t.Fatal("no log line for the refusals")
	}
}

// TestTokenReviewWithoutRBACAndWithTheAPIServerDown: a TokenReview that
// cannot be made refuses the token (401, never a 5xx, never an allow) with
// a log line that says why; the JWKS path keeps the keys it has.
func TestTokenReviewWithoutRBACAndWithTheAPIServerDown(t *testing.T) {
	api := StartAPIServer(t, Options{})
	serviceAccounts(t, api, "kubeflow/pipeline-runner", "istio-system/authservice", "istio-system/unprivileged")
	rbac, _ := os.ReadFile(filepath.Join(RepoRoot(), "deploy", "components", "tokenreview", "rbac.yaml"))
	api.Apply(t, string(rbac))
	both := []string{pipelinesAudience, gatewayAudience}

	// The service's ServiceAccount lacks the binding.
	noRBAC := StartService(t, inCluster(api, serviceCredentials(t, api, "istio-system/unprivileged")))
	if got := noRBAC.Call(t, mint(t, api, "kubeflow/pipeline-runner", both, time.Hour), "/x"); got.Status != 401 || got.UpstreamReached {
		t.Fatalf("without RBAC: %d", got.Status)
	}
	if !strings.Contains(noRBAC.Log(), "tokenreviews") || !strings.Contains(noRBAC.Log(), "HTTP 403") {
		t.Fatalf("the log does not say the service may not create tokenreviews:\n%s", tail(noRBAC.Log(), 2000))
	}
	if got := noRBAC.Metric(t, `oidc_authservice_tokenreviews_total{result="unavailable"}`); got != 1 {
		t.Errorf("a review the API server refused to make counted %v times as unavailable, want 1", got)
	}

	authnFile := filepath.Join(t.TempDir(), "authn.yaml")
	os.WriteFile(authnFile, []byte(jwksConfig(api)), 0o600)
	jwks := StartService(t, map[string]string{"AUTHENTICATION_CONFIG_FILE": authnFile})
	review := StartService(t, inCluster(api, serviceCredentials(t, api, "istio-system/authservice")))
	warm := mint(t, api, "kubeflow/pipeline-runner", both, time.Hour)
	if a, b := jwks.Call(t, warm, "/x"), review.Call(t, warm, "/x"); a.Status != 200 || b.Status != 200 {
		t.Fatalf("before the API server stops: %d %d", a.Status, b.Status)
	}
	fresh := mint(t, api, "kubeflow/pipeline-runner", both, 2*time.Hour)

	api.Stop()
	got := review.Call(t, fresh, "/pipeline/")
	if got.Status != 401 || got.UpstreamReached {
		t.Fatalf("TokenReview with the API server down: %d, want 401", got.Status)
	}
	if log := review.Log(); !strings.Contains(log, "TokenReview failed") || !strings.Contains(log, "connection refused") {
		t.Fatalf("the log does not say the API server is unreachable:\n%s", tail(log, 2000))
	}
	if got := review.Metric(t, `oidc_authservice_tokenreviews_total{result="unavailable"}`); got != 1 {
		t.Errorf("reviews with the API server down: %v unavailable, want 1", got)
	}
	// The JWKS path verifies signatures with the keys it fetched: tokens of
	// a known key keep working while the API server is down.
	if got := jwks.Call(t, fresh, "/pipeline/"); got.Status != 200 {
		t.Fatalf("JWKS path with the API server down: %d", got.Status)
	}
	// A flood of distinct tokens while it is down: 401 each, no 5xx.
	for i := 0; i < 20; i++ {
		if got := review.Call(t, fresh+strconv.Itoa(i), "/x"); got.Status != 401 {
			t.Fatalf("flood %d: %d", i, got.Status)
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
