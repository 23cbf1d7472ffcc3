package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// TestMachineIdentitiesThroughGateway: GitLab CI and user tokens, a
// Kubernetes service-account token, each through the Envoy-faithful
// gateway, with a rules file deciding who reaches which path.
func TestMachineIdentitiesThroughGateway(t *testing.T) {
	gitlab, k8s := peer.StartIssuer(t), peer.StartIssuer(t)
	dir := t.TempDir()
	authnFile := filepath.Join(dir, "authn.yaml")
	os.WriteFile(authnFile, []byte(fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1beta1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: %s
    audiences: ["gitlab-app", "https://kubeflow.example.com"]
    audienceMatchPolicy: MatchAny
  claimMappings:
    username:
      expression: 'has(claims.preferred_username) ? "gitlab:" + claims.preferred_username : "gitlab-ci:" + claims.sub'
    groups:
      claim: groups_direct
      prefix: "gitlab:"
- issuer:
    url: %s
    audiences: ["pipelines.kubeflow.org"]
  claimMappings:
    username:
      expression: '"system:serviceaccount:" + claims["kubernetes.io"].namespace + ":" + claims["kubernetes.io"].serviceaccount.name'
    groups:
      expression: '["system:serviceaccounts", "system:serviceaccounts:" + claims["kubernetes.io"].namespace]'
`, gitlab.URL, k8s.URL)), 0o600)
	rulesFile := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rulesFile, []byte(`rules:
- name: pipelines
  pathPrefix: /pipeline
  allow:
    groups: ["system:serviceaccounts:kubeflow", "gitlab:acme"]
    users: ["gitlab-ci:project_path:foo/bar:ref_type:branch:ref:main"]
- name: admin
  pathPrefix: /admin
  methods: [GET]
  allow:
    emailDomains: [example.com]
default: allow
`), 0o600)

	dex := peer.StartDex(t, peer.DexOptions{})
	env := peer.KubeflowEnv(dex)
	env["AUTHENTICATION_CONFIG_FILE"] = authnFile
	env["AUTHORIZATION_RULES_FILE"] = rulesFile
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	gw := peer.KubeflowGateway(t, peer.EnvoyFilterLayout, svc.CheckURL, svc.WebURL, dex.Port)

	ci := gitlab.Sign(t, map[string]any{"aud": "https://kubeflow.example.com", "sub": "project_path:foo/bar:ref_type:branch:ref:main", "project_path": "foo/bar"})
	user := gitlab.Sign(t, map[string]any{"aud": "gitlab-app", "sub": "4217", "preferred_username": "alice", "groups_direct": []string{"acme", "acme/ml"}})
	sa := k8s.Sign(t, map[string]any{"aud": "pipelines.kubeflow.org", "sub": "system:serviceaccount:kubeflow:pipeline-runner",
		"kubernetes.io": map[string]any{"namespace": "kubeflow", "serviceaccount": map[string]any{"name": "pipeline-runner"}}})
	otherSA := k8s.Sign(t, map[string]any{"aud": "pipelines.kubeflow.org", "sub": "x",
		"kubernetes.io": map[string]any{"namespace": "team-x", "serviceaccount": map[string]any{"name": "default"}}})

	call := func(token, path string) (int, echo) {
		req, _ := http.NewRequest("GET", gw+path+"?format=json", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Kubeflow-Userid", "forged@example.com")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, echo{Path: string(b)}
		}
		return 200, readEcho(t, resp)
	}
	cases := []struct {
		name, token, path, user, groups string
		status                          int
	}{
		{"GitLab CI job", ci, "/pipeline/apis/v2beta1/runs", "gitlab-ci:project_path:foo/bar:ref_type:branch:ref:main", "", 200},
		{"GitLab user", user, "/pipeline/", "gitlab:alice", "gitlab:acme,gitlab:acme/ml", 200},
		{"service account", sa, "/pipeline/apis/v2beta1/runs", "system:serviceaccount:kubeflow:pipeline-runner", "system:serviceaccounts,system:serviceaccounts:kubeflow", 200},
		{"service account of another namespace: rule denies", otherSA, "/pipeline/apis", "", "", 403},
		{"service account elsewhere: default allows", otherSA, "/notebook/x", "system:serviceaccount:team-x:default", "system:serviceaccounts,system:serviceaccounts:team-x", 200},
		{"no email domain for /admin", user, "/admin/x", "", "", 403},
		{"forged token", peer.SignWith(t, peer.ForeignKey(), "key-1", map[string]any{"iss": gitlab.URL, "aud": "gitlab-app", "sub": "1", "preferred_username": "root", "exp": time.Now().Add(time.Hour).Unix()}), "/x", "", "", 401},
		{"expired token", gitlab.Sign(t, map[string]any{"aud": "gitlab-app", "sub": "1", "preferred_username": "a", "exp": time.Now().Add(-time.Minute).Unix()}), "/x", "", "", 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i := 0; i < 2; i++ { // the second time from the cache
				status, e := call(c.token, c.path)
				if status != c.status {
					t.Fatalf("status %d, want %d: %s", status, c.status, e.Path)
				}
				if status == 403 && !strings.Contains(e.Path, "rule") {
					t.Fatalf("403 does not name the rule: %s", e.Path)
				}
				if status == 200 && (e.Headers["kubeflow-userid"][0] != c.user || e.Headers["kubeflow-groups"][0] != c.groups) {
					t.Fatalf("upstream saw %q / %q", e.Headers["kubeflow-userid"], e.Headers["kubeflow-groups"])
				}
			}
		})
	}

	// Key rotation at the issuer is picked up without a restart.
	time.Sleep(10*time.Second + 100*time.Millisecond)
	gitlab.Rotate()
	rotated := gitlab.Sign(t, map[string]any{"aud": "gitlab-app", "sub": "4217", "preferred_username": "alice"})
	if status, e := call(rotated, "/x"); status != 200 || e.Headers["kubeflow-userid"][0] != "gitlab:alice" {
		t.Fatalf("token of the rotated key: %d", status)
	}
}

// TestProviderIDTokenAsBearer: Dex's own ID token, audience CLIENT_ID, as the
// predecessor accepted it.
func TestProviderIDTokenAsBearer(t *testing.T) {
	s := newSetup(t, peer.EnvoyFilterLayout, nil)
	idToken := dexIDToken(t, s.dex)
	req, _ := http.NewRequest("GET", s.gateway+"/pipeline/apis/v2beta1/runs?format=json", nil)
	req.Header.Set("Authorization", "Bearer "+idToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	e := readEcho(t, resp)
	if e.Headers["kubeflow-userid"][0] != "user@example.com" || e.Headers["kubeflow-groups"][0] != "team-a,team-b" {
		t.Fatalf("upstream saw %v", e.Headers)
	}
}
