package manifests

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// sessionKeyObjects: components/session-keys, in every layout (the base
// includes it).
var sessionKeyObjects = []string{
	"Role/authservice-session-keys", "RoleBinding/authservice-session-keys",
	"ValidatingAdmissionPolicy/oidc-authservice-session-keys", "ValidatingAdmissionPolicyBinding/oidc-authservice-session-keys",
}

var baseObjects = append([]string{
	"ConfigMap/oidc-authservice-parameters",
	"Deployment/authservice",
	"PodDisruptionBudget/authservice",
	"Secret/oidc-authservice-client",
	"Service/authservice",
	"ServiceAccount/authservice",
}, sessionKeyObjects...)

// oauth2ProxyObjects: the base with Service oauth2-proxy for Service
// authservice, plus what Kubeflow's m2m-dex-only overlay provides besides
// oauth2-proxy itself.
var oauth2ProxyObjects = []string{
	"ConfigMap/oidc-authservice-parameters", "Deployment/authservice", "PodDisruptionBudget/authservice",
	"Secret/oidc-authservice-client", "ServiceAccount/authservice",
	"Namespace/oauth2-proxy", "Service/oauth2-proxy", "VirtualService/oauth2-proxy", "ConfigMap/oauth2-proxy-parameters",
	"NetworkPolicy/default-allow-same-namespace-oauth2-proxy", "NetworkPolicy/allow-istio-ingressgateway",
	"NetworkPolicy/allow-oidc-authservice", "NetworkPolicy/authservice",
	"AuthorizationPolicy/istio-ingressgateway-oauth2-proxy", "AuthorizationPolicy/istio-ingressgateway-require-jwt",
	"RequestAuthentication/dex-jwt",
	"Role/authservice-session-keys", "RoleBinding/authservice-session-keys",
	"ValidatingAdmissionPolicy/oidc-authservice-session-keys", "ValidatingAdmissionPolicyBinding/oidc-authservice-session-keys",
}

// headersObjects: the recommended layout's authenticator line, with
// kubeflow-istio-install: Kubeflow's CUSTOM policy checking every request,
// no DENY policy, no RequestAuthentication.
var headersObjects = slices.DeleteFunc(slices.Clone(oauth2ProxyObjects), func(s string) bool {
	return s == "AuthorizationPolicy/istio-ingressgateway-require-jwt" || s == "RequestAuthentication/dex-jwt"
})

// oidcClientObjects: the swap for Kubeflow 1.9.0's
// common/oidc-client/oauth2-proxy overlays: the workload of the 1.9.1+ swap
// without its /oauth2/ route, the service's bearer-token issuers, and 1.9.0's
// CUSTOM policy (every request) and RequestAuthentications (no DENY policy).
var oidcClientObjects = []string{
	"ConfigMap/oidc-authservice-parameters", "Deployment/authservice", "PodDisruptionBudget/authservice",
	"Secret/oidc-authservice-client", "ServiceAccount/authservice", "ConfigMap/oidc-authservice-authentication",
	"Namespace/oauth2-proxy", "Service/oauth2-proxy", "ConfigMap/oauth2-proxy-parameters",
	"NetworkPolicy/default-allow-same-namespace-oauth2-proxy", "NetworkPolicy/allow-istio-ingressgateway", "NetworkPolicy/authservice",
	"AuthorizationPolicy/istio-ingressgateway-oauth2-proxy",
	"RequestAuthentication/dex-jwt", "RequestAuthentication/m2m-token-issuer",
	"Role/authservice-session-keys", "RoleBinding/authservice-session-keys",
	"ValidatingAdmissionPolicy/oidc-authservice-session-keys", "ValidatingAdmissionPolicyBinding/oidc-authservice-session-keys",
}

// wantObjects is exactly what each kustomization renders (kind/name).
var wantObjects = map[string][]string{
	"base":                         baseObjects,
	"components/hpa":               append(slices.Clone(baseObjects), "HorizontalPodAutoscaler/authservice"),
	"components/web-route":         append(slices.Clone(baseObjects), "VirtualService/authservice-web"),
	"components/dex-networkpolicy": append(slices.Clone(baseObjects), "NetworkPolicy/allow-oidc-authservice"),
	"components/tokenreview":       append(slices.Clone(baseObjects), "ClusterRole/oidc-authservice-tokenreview", "ClusterRoleBinding/oidc-authservice-tokenreview"),
	"components/networkpolicy":     append(slices.Clone(baseObjects), "NetworkPolicy/authservice"),
	"components/monitoring": append(slices.Clone(baseObjects), "PodMonitor/oidc-authservice", "PrometheusRule/oidc-authservice",
		"ConfigMap/oidc-authservice-dashboard"),
	"overlays/istio-envoyfilter":        append(slices.Clone(baseObjects), "EnvoyFilter/authn-filter", "NetworkPolicy/authservice"),
	"overlays/istio-extension-provider": append(slices.Clone(baseObjects), "AuthorizationPolicy/istio-ingressgateway-oidc-authservice", "NetworkPolicy/authservice"),
	"overlays/istio-envoyfilter-grpc":   append(slices.Clone(baseObjects), "EnvoyFilter/authn-filter", "NetworkPolicy/authservice"),
	"overlays/istio-extension-provider-grpc": append(slices.Clone(baseObjects), "AuthorizationPolicy/istio-ingressgateway-oidc-authservice",
		"NetworkPolicy/authservice"),
	"overlays/dex":    append(slices.Clone(baseObjects), "EnvoyFilter/authn-filter", "VirtualService/authservice-web", "NetworkPolicy/authservice"),
	"overlays/gitlab": append(slices.Clone(baseObjects), "AuthorizationPolicy/istio-ingressgateway-oidc-authservice", "VirtualService/authservice-web", "NetworkPolicy/authservice"),
	// Kubeflow's common/oidc-client/oidc-authservice/base names, the
	// StatefulSet and its PVC replaced by the Deployment.
	"overlays/kubeflow":                              append(slices.Clone(baseObjects), "EnvoyFilter/authn-filter", "VirtualService/authservice-web", "ClusterRole/oidc-authservice-tokenreview", "ClusterRoleBinding/oidc-authservice-tokenreview", "NetworkPolicy/authservice"),
	"overlays/kubeflow-oauth2-proxy":                 oauth2ProxyObjects,
	"overlays/kubeflow-oauth2-proxy-headers":         headersObjects,
	"overlays/kubeflow-oauth2-proxy-m2m-dex-and-eks": append(slices.Clone(oauth2ProxyObjects), "RequestAuthentication/m2m-token-issuer"),
	"overlays/kubeflow-oauth2-proxy-m2m-dex-and-kind": append(slices.Clone(oauth2ProxyObjects), "RequestAuthentication/m2m-token-issuer",
		"Deployment/cluster-jwks-proxy", "Service/cluster-jwks-proxy", "ServiceAccount/cluster-jwks-proxy"),
	"overlays/kubeflow-oidc-client-oauth2-proxy-m2m": oidcClientObjects,
	"overlays/kubeflow-oidc-client-oauth2-proxy-m2m-self-signed": append(slices.Clone(oidcClientObjects),
		"CronJob/kubeflow-m2m-oidc-configurator", "ServiceAccount/kubeflow-m2m-oidc-configurator",
		"Role/kubeflow-m2m-oidc-configurator", "RoleBinding/kubeflow-m2m-oidc-configurator",
		"ConfigMap/kubeflow-m2m-oidc-configurator-envs", "ConfigMap/kubeflow-m2m-oidc-configurator-script",
		"ClusterRoleBinding/unauthenticated-oidc-viewer"),
	"overlays/kubeflow-jwt": append(slices.Clone(baseObjects),
		"AuthorizationPolicy/istio-ingressgateway-oidc-authservice",
		"AuthorizationPolicy/istio-ingressgateway-require-jwt",
		"RequestAuthentication/oidc-authservice-jwt",
		"VirtualService/authservice-web",
		"NetworkPolicy/allow-oidc-authservice", "NetworkPolicy/authservice"),
}

func TestRenderedObjects(t *testing.T) {
	for _, r := range renderAll(t) {
		want, ok := wantObjects[r.Name]
		if !ok {
			t.Errorf("%s: not in wantObjects: add what it must render", r.Name)
			continue
		}
		var got []string
		for _, o := range r.Objects {
			got = append(got, o.Kind+"/"+hashSuffix.ReplaceAllString(o.Name, ""))
		}
		sort.Strings(got)
		w := slices.Clone(want)
		sort.Strings(w)
		if !slices.Equal(got, w) {
			t.Errorf("%s renders\n  %v\nwant\n  %v", r.Name, got, w)
		}
	}
}

func configMap(t *testing.T, r *rendering) map[string]string {
	t.Helper()
	o := r.find("ConfigMap", paramsName)
	if o == nil {
		t.Fatalf("%s: no ConfigMap %s", r.Name, paramsName)
	}
	return typed[corev1.ConfigMap](o).Data
}

func secretData(t *testing.T, r *rendering) map[string]string {
	t.Helper()
	o := r.find("Secret", secretName)
	if o == nil {
		t.Fatalf("%s: no Secret %s", r.Name, secretName)
	}
	out := map[string]string{}
	for k, v := range typed[corev1.Secret](o).Data {
		out[k] = string(v)
	}
	return out
}

func wantValues(t *testing.T, where string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s: %s is missing", where, k)
		} else if g != v {
			t.Errorf("%s: %s=%q, want %q", where, k, g, v)
		}
	}
}

// kubeflowParams is Kubeflow's common/oidc-client/oidc-authservice/base
// params.env (v1.7 - v1.9.0), without PORT (never read) and STORE_PATH
// (obsolete: sessions are cookies).
var kubeflowParams = map[string]string{
	"OIDC_PROVIDER":          "http://dex.auth.svc.cluster.local:5556/dex",
	"OIDC_AUTH_URL":          "/dex/auth",
	"OIDC_SCOPES":            "profile email groups",
	"AUTHSERVICE_URL_PREFIX": "/authservice/",
	"SKIP_AUTH_URLS":         "/dex",
	"AFTER_LOGOUT_URL":       "/",
	"USERID_HEADER":          "kubeflow-userid",
	"USERID_PREFIX":          "",
	"USERID_CLAIM":           "email",
}

// kubeflowSecret is Kubeflow's secret_params.env, the Dex client.
var kubeflowSecret = map[string]string{
	"CLIENT_ID":     "kubeflow-oidc-authservice",
	"CLIENT_SECRET": "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok",
}

func TestBase(t *testing.T) {
	r := renderingNamed(t, "base")
	cm := configMap(t, r)
	wantValues(t, "base params", cm, kubeflowParams)
	wantValues(t, "base params", cm, map[string]string{"REDIRECT_URL": "/authservice/oidc/callback", "GROUPS_CLAIM": "groups"})
	sec := secretData(t, r)
	wantValues(t, "base secret", sec, kubeflowSecret)
	// No key is shipped: each installation's service keeps its own
	// (components/session-keys, in the base).
	if _, ok := sec["SESSION_KEYS"]; ok {
		t.Errorf("the base ships SESSION_KEYS: a key every installation would share")
	}
	if got := cm["SESSION_KEYS_SECRET"]; got != "" {
		t.Errorf("SESSION_KEYS_SECRET=%q: the default (authservice-session-keys) is what the Role and policy name", got)
	}
	d := typed[appsv1.Deployment](r.find("Deployment", workloadName))
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/oidc-authservice/oidc-authservice:"+releaseVersion(t) {
		t.Errorf("image %q, want the version of VERSION (%s)", img, releaseVersion(t))
	}
	for _, o := range r.Objects {
		if o.Kind == "StatefulSet" || o.Kind == "PersistentVolumeClaim" {
			t.Errorf("%s: the service keeps no state", o.id())
		}
	}
}

func TestKubeflowDropIn(t *testing.T) {
	r := renderingNamed(t, "overlays/kubeflow")
	cm := configMap(t, r)
	wantValues(t, "kubeflow params", cm, kubeflowParams)
	// Dashboards before 1.10 read the session cookie to log out.
	wantValues(t, "kubeflow params", cm, map[string]string{"REDIRECT_URL": "/authservice/oidc/callback", "SESSION_HTTP_ONLY": "false"})
	wantValues(t, "kubeflow secret", secretData(t, r), kubeflowSecret)
	svc := typed[corev1.Service](r.find("Service", "authservice"))
	if p := servicePortFor(svc, "http-api"); p != 8080 || svc.Spec.Ports[0].Name != "http-authservice" {
		t.Errorf("Service authservice: Kubeflow's port http-authservice 8080 -> http-api, got %v", svc.Spec.Ports)
	}
	// Every key of the overlay's params.env is one of Kubeflow's or a
	// documented addition.
	added := map[string]bool{"REDIRECT_URL": true, "SESSION_HTTP_ONLY": true}
	for k := range envFile(t, deployDir("overlays", "kubeflow", "params.env")) {
		if _, ok := kubeflowParams[k]; !ok && !added[k] {
			t.Errorf("overlays/kubeflow/params.env: %s is not a key of Kubeflow's params.env", k)
		}
	}
}

func TestKubeflowJWT(t *testing.T) {
	r := renderingNamed(t, "overlays/kubeflow-jwt")
	cm := configMap(t, r)
	wantValues(t, "kubeflow-jwt params", cm, kubeflowParams)
	wantValues(t, "kubeflow-jwt params", cm, map[string]string{
		"UPSTREAM_TOKEN":           "issued",
		"UPSTREAM_TOKEN_ISSUER":    "http://authservice.istio-system.svc.cluster.local:8082",
		"UPSTREAM_TOKEN_AUDIENCE":  "kubeflow",
		"UPSTREAM_TOKEN_KEYS_FILE": "/etc/oidc-authservice/upstream-token/keys.pem",
		// The redirect URI Kubeflow 1.9.1+ registers at Dex (oauth2-proxy's).
		"REDIRECT_URL": "/oauth2/callback",
	})
	d := typed[appsv1.Deployment](r.find("Deployment", workloadName))
	var secretVol *corev1.SecretVolumeSource
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			secretVol = v.Secret
		}
	}
	if secretVol == nil || secretVol.SecretName != "oidc-authservice-upstream-token-keys" || secretVol.DefaultMode == nil || *secretVol.DefaultMode != 0o440 {
		t.Errorf("the signing keys: Secret oidc-authservice-upstream-token-keys with mode 0440, got %+v", secretVol)
	}
	// Requests with a bearer token are left to RequestAuthentication, as
	// Kubeflow's oauth2-proxy policy does (m2m tokens).
	custom := r.find("AuthorizationPolicy", "istio-ingressgateway-oidc-authservice")
	applies, err := policyApplies(custom.Map["spec"].(map[string]any), request{path: "/pipeline/apis/v2beta1/runs", authorization: true})
	if err != nil || applies {
		t.Errorf("CUSTOM must skip requests with an Authorization header (got %v, %v)", applies, err)
	}
}

func TestGitLab(t *testing.T) {
	r := renderingNamed(t, "overlays/gitlab")
	cm := configMap(t, r)
	wantValues(t, "gitlab params", cm, map[string]string{
		"OIDC_PROVIDER":             "https://gitlab.example.com",
		"OIDC_AUTH_URL":             "",
		"SKIP_AUTH_URLS":            "",
		"OIDC_SCOPES":               "openid profile email",
		"GROUPS_CLAIM":              "groups",
		"STRICT_SESSION_VALIDATION": "true",
		"PROVIDER_SIGN_OUT_URL":     "https://gitlab.example.com/users/sign_out",
		"PROVIDER_SIGN_OUT_MODE":    "button",
		"AFTER_LOGOUT_URL":          "/authservice/site/after_logout",
	})
	if strings.Contains(" "+cm["OIDC_SCOPES"]+" ", " groups ") {
		t.Error("GitLab refuses the groups scope")
	}
	if u := cm["REDIRECT_URL"]; !strings.HasPrefix(u, "https://") {
		t.Errorf("GitLab needs an absolute redirect URI, got %q", u)
	}
	sec := secretData(t, r)
	if sec["CLIENT_ID"] == kubeflowSecret["CLIENT_ID"] || sec["CLIENT_SECRET"] == kubeflowSecret["CLIENT_SECRET"] {
		t.Error("the GitLab overlay must not keep Dex's client")
	}
	if _, ok := sec["SESSION_KEYS"]; ok {
		t.Error("the GitLab overlay ships SESSION_KEYS")
	}
}

func TestDexClient(t *testing.T) {
	b, err := os.ReadFile(deployDir("overlays", "dex", "dex-static-client.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type client struct {
		ID           string   `json:"id"`
		Name         string   `json:"name"`
		Secret       string   `json:"secret"`
		Public       bool     `json:"public"`
		RedirectURIs []string `json:"redirectURIs"`
		TrustedPeers []string `json:"trustedPeers"`
	}
	var dex struct {
		StaticClients []client `json:"staticClients"`
	}
	if errs := strictDecodeYAML(b, &dex); len(errs) > 0 {
		t.Fatal(errs)
	}
	r := renderingNamed(t, "overlays/dex")
	cm, sec := configMap(t, r), secretData(t, r)
	if len(dex.StaticClients) != 2 {
		t.Fatalf("two static clients expected: the service's and kubeflow-cli")
	}
	c, cli := dex.StaticClients[0], dex.StaticClients[1]
	if c.ID != sec["CLIENT_ID"] || c.Secret != sec["CLIENT_SECRET"] || !slices.Contains(c.RedirectURIs, cm["REDIRECT_URL"]) {
		t.Errorf("Dex client %+v does not match CLIENT_ID, CLIENT_SECRET and REDIRECT_URL %q", c, cm["REDIRECT_URL"])
	}
	// The command-line client: public, no secret, the device grant's
	// callback under the issuer's path, loopback redirects; the service's
	// client trusts it (--audience) and the service accepts its tokens.
	issuerPath := strings.TrimSuffix(strings.SplitN(strings.TrimPrefix(cm["OIDC_PROVIDER"], "http://"), "/", 2)[1], "/")
	if cli.ID != "kubeflow-cli" || !cli.Public || cli.Secret != "" ||
		!slices.Contains(cli.RedirectURIs, "/"+issuerPath+"/device/callback") || !slices.Contains(cli.RedirectURIs, "http://127.0.0.1:8000/") {
		t.Errorf("kubeflow-cli client %+v: want public, no secret, redirect URIs /%s/device/callback and http://127.0.0.1:8000/", cli, issuerPath)
	}
	if !slices.Contains(c.TrustedPeers, cli.ID) {
		t.Errorf("the service's client does not list %s in trustedPeers", cli.ID)
	}
	auds := strings.Split(cm["PROVIDER_ID_TOKEN_AUDIENCES"], ",")
	if !slices.Contains(auds, sec["CLIENT_ID"]) || !slices.Contains(auds, cli.ID) {
		t.Errorf("PROVIDER_ID_TOKEN_AUDIENCES %q must list CLIENT_ID and %s", cm["PROVIDER_ID_TOKEN_AUDIENCES"], cli.ID)
	}
}

func strictDecodeYAML(y []byte, v any) []error {
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		return []error{err}
	}
	return strictDecode(j, v)
}

// envFile reads a kustomize env file: KEY=VALUE lines, # comments.
func envFile(t *testing.T, file string) map[string]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: %q is not KEY=VALUE", file, line)
			continue
		}
		if _, dup := out[k]; dup {
			t.Errorf("%s: %s twice", file, k)
		}
		out[k] = v
	}
	return out
}

// TestEnvFiles: every key of every env file under deploy/ is a variable of
// docs/configuration.md (rendered or not).
func TestEnvFiles(t *testing.T) {
	vars, err := loadVariables()
	if err != nil {
		t.Fatal(err)
	}
	if len(vars.Known) < 50 || vars.Known["SERVER_PORT"] != "8080" || !vars.Obsolete["STORE_PATH"] {
		t.Fatalf("could not read docs/configuration.md's table (%d variables)", len(vars.Known))
	}
	n := 0
	err = filepath.WalkDir(deployDir(), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".env") {
			return err
		}
		n++
		for k := range envFile(t, p) {
			if !vars.knownVariable(k) || vars.Obsolete[k] {
				t.Errorf("%s: %s is not a variable of docs/configuration.md", p, k)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 6 {
		t.Errorf("only %d env files found", n)
	}
}

// releaseVersion is the version in the repository's VERSION file.
func releaseVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
