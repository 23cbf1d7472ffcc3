package manifests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// The compositions that test/integration runs with real Dex behind the
// Envoy-faithful gateway are exported there (the gateway is configured from
// these rendered objects), and docs/compatibility.md is generated from the
// same table: neither can drift from what is checked. UPDATE=1 rewrites
// both; without it a difference fails.

// exportDir is test/integration's copy of the rendered compositions.
var exportDir = filepath.Join(repoRoot, "test", "integration", "testdata", "kubeflow")

// exported is one composition as test/integration reads it.
type exported struct {
	Release   string   `json:"release"`
	Form      string   `json:"form"`
	Stock     string   `json:"stock"`     // Kubeflow's line the swap replaces
	Scenarios []string `json:"scenarios"` // what test/integration must run
	// Gateway are the ingress gateway's pod labels (policy selectors).
	Gateway map[string]string `json:"gateway"`
	// Namespace and Env are the service's, as rendered.
	Namespace string            `json:"namespace"`
	Env       map[string]string `json:"env"`
	// Check lists the cluster addresses (host:port) of rendered Services
	// that reach the service's check port.
	Check []string `json:"check"`
	// Web lists those that reach its web port (pages, JWKS).
	Web []string `json:"web,omitempty"`
	// GRPC lists those that reach its gRPC check port (GRPC_PORT).
	GRPC []string `json:"grpc,omitempty"`
	// Files are the rendered contents of the files the service's file
	// variables name (AUTHENTICATION_CONFIG_FILE, ...), by path.
	Files map[string]string `json:"files,omitempty"`
	// Exposed is what of the user's credentials still reaches every upstream
	// (exposure: "cookie" in the compatible layouts), which the integration
	// test's replay expects and nothing else.
	Exposed []string `json:"exposed,omitempty"`
	// Objects are the rendered objects the gateway is built from: the mesh
	// configuration, policies, RequestAuthentications, VirtualServices,
	// ext_authz EnvoyFilters, Services, Dex's configuration, the dashboard,
	// CronJobs and the ConfigMaps they read.
	Objects []json.RawMessage `json:"objects"`
}

// fileVariables are the service's variables that name a file whose
// content the integration test needs.
var fileVariables = []string{"AUTHENTICATION_CONFIG_FILE", "AUTHORIZATION_RULES_FILE"}

func exportFile(c composition) string {
	return filepath.Join(exportDir, c.release()+"_"+c.Form+".json")
}

func export(t *testing.T, c *composed) []byte {
	t.Helper()
	v, err := newView(t, c.Objects)
	if err != nil {
		t.Fatal(err)
	}
	e := exported{Release: c.release(), Form: c.Form, Stock: c.Stock, Scenarios: c.Scenarios, Gateway: v.gateway,
		Namespace: v.ns, Env: v.env, Exposed: v.exposure()}
	for _, o := range c.Objects.all("Service") {
		svc := typed[corev1.Service](o)
		for _, p := range svc.Spec.Ports {
			host := o.Name + "." + o.Namespace + ".svc.cluster.local"
			if v.reachesCheck(host, p.Port) == nil {
				e.Check = append(e.Check, fmt.Sprintf("%s:%d", host, p.Port))
			}
			if v.settings.Servers.GRPCPort != 0 && v.reachesGRPC(host, p.Port) == nil {
				e.GRPC = append(e.GRPC, fmt.Sprintf("%s:%d", host, p.Port))
			}
			if selectsMap(svc.Spec.Selector, v.deploy.Spec.Template.Labels) && v.containerPort(p.TargetPort) == int32(v.settings.Servers.WebPort) {
				e.Web = append(e.Web, fmt.Sprintf("%s:%d", host, p.Port))
			}
		}
	}
	for _, k := range fileVariables {
		if f := v.env[k]; f != "" {
			content, err := v.mountedFile(f)
			if err != nil {
				t.Fatalf("%s: %s: %v", c.name(), k, err)
			}
			if e.Files == nil {
				e.Files = map[string]string{}
			}
			e.Files[f] = content
		}
	}
	// The ConfigMaps of kept CronJobs (Kubeflow 1.9.0's m2m issuer
	// configurator: which RequestAuthentication it fills with the keys).
	cronConfig := map[string]bool{}
	for _, o := range c.Objects.all("CronJob") {
		for _, ctr := range typed[batchv1.CronJob](o).Spec.JobTemplate.Spec.Template.Spec.Containers {
			for _, ef := range ctr.EnvFrom {
				if ef.ConfigMapRef != nil {
					cronConfig[o.Namespace+"/"+ef.ConfigMapRef.Name] = true
				}
			}
		}
	}
	var objs []*object
	for _, o := range c.Objects.Objects {
		keep := false
		switch o.Kind {
		case "AuthorizationPolicy", "RequestAuthentication", "VirtualService", "Service", "CronJob":
			keep = true
		case "EnvoyFilter":
			keep = len((&kubeflowView{r: &rendering{Objects: []*object{o}}}).extAuthzFilters()) > 0
		case "ConfigMap":
			keep = (o.Namespace == "istio-system" && o.Name == "istio") || (o.Namespace == "auth" && o.Name == "dex") || cronConfig[o.Namespace+"/"+o.Name]
		case "Deployment":
			keep = o.Namespace == "kubeflow" && slices.Contains(dashboardNames, o.Name) || o.Namespace == "auth" && o.Name == "dex"
		}
		if keep {
			objs = append(objs, o)
		}
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].id() < objs[j].id() })
	for _, o := range objs {
		e.Objects = append(e.Objects, o.JSON)
	}
	b, err := json.MarshalIndent(e, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// TestKubeflowExports: test/integration's copies of the compositions it runs
// are current, and it has no others.
func TestKubeflowExports(t *testing.T) {
	want := map[string]bool{}
	for _, c := range composeAll(t) {
		if len(c.Scenarios) == 0 {
			continue
		}
		if c.Err != nil {
			t.Fatalf("%s: %v", c.name(), c.Err)
		}
		file := exportFile(c.composition)
		want[filepath.Base(file)] = true
		writeOrCompare(t, file, export(t, c))
	}
	entries, _ := os.ReadDir(exportDir)
	for _, e := range entries {
		if !want[e.Name()] {
			t.Errorf("%s: not a composition with scenarios: remove it", filepath.Join(exportDir, e.Name()))
		}
	}
}

// writeOrCompare writes the file with UPDATE=1, else fails when it differs.
func writeOrCompare(t *testing.T, file string, content []byte) {
	t.Helper()
	if os.Getenv("UPDATE") != "" {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, content, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(file)
	if err != nil || !bytes.Equal(got, content) {
		rel, _ := filepath.Rel(repoRoot, file)
		t.Errorf("%s is out of date: run `UPDATE=1 make manifests-check` (%v)", rel, err)
	}
}

// staticChecks are what TestKubeflowCompositions verifies on every
// composition, as docs/compatibility.md lists them.
var staticChecks = []string{
	"exactly the one line of `example/kustomization.yaml` that names the gateway authenticator changes (two where the Istio line is replaced too: `kubeflow-jwt`, and `kubeflow-oauth2-proxy-headers` with `kubeflow-istio-install` or `kubeflow-istio-install-grpc`, whose pinned Kubeflow base is checked to be that release's and rendered from the vendored copy)",
	"every CUSTOM policy names a provider the rendered mesh configuration declares, one provider per gateway, `failOpen` off; a gRPC provider with a timeout a callback fits in and no request body",
	"each provider's `service:port` (or the EnvoyFilter's `server_uri` or gRPC cluster) is a rendered Service that selects the service's pods on the port it checks on (`SERVER_PORT`, or `GRPC_PORT` over gRPC)",
	"Dex's static client has the service's `CLIENT_ID` and `CLIENT_SECRET` and registers its `REDIRECT_URL` exactly",
	"the dashboard's `LOGOUT_URL` is the service's logout path, and it, the callback and the login start reach the service (routed to it, or checked by it) and are not denied by the DENY policy; Dex's pages are not denied, and where the gateway checks them the service lets them through (`SKIP_AUTH_URLS`)",
	"every header the gateway lets through on allow is one the service produces (`path` excepted: no authenticator sets it, nothing reads it); `set-cookie` on deny; renewed cookies reach the browser (`set-cookie` on allow, or `SESSION_RENEW_REDIRECT`)",
	"where Istio turns the forwarded token into `kubeflow-userid` (`UPSTREAM_TOKEN=id_token`), a RequestAuthentication of the gateway verifies the provider's issuer from `Authorization: Bearer` and maps the service's `USERID_CLAIM`; the DENY policy lets such requests through",
	"where the gateway checks requests that carry a bearer token (Kubeflow ≤ 1.9.0, the recommended layout), the service accepts the tokens of every issuer the gateway's RequestAuthentications verify, and the issuer and audience pairs of oauth2-proxy's `EXTRA_JWT_ISSUERS` (ConfigMap `oauth2-proxy-parameters`)",
	"NetworkPolicies that isolate Dex admit the service; those of the service's namespace admit the ingress gateway to the check port (and the gRPC port where the gateway uses it), no notebook server or Kubeflow application to the check or web port, and anyone to the probe port",
	"no token the gateway accepts reaches an upstream: every RequestAuthentication of the gateway removes the token it verified (`forwardOriginalToken: false`), the token the service hands upstream (`UPSTREAM_TOKEN`) is one of them, and a client's bearer token the service keeps (`UPSTREAM_BEARER=keep`) too; what remains exposed (the session cookie where Kubeflow's mesh does not let the service rewrite the Cookie header) is the column above and what test/integration's replay expects",
	"the service's rendered environment passes `check-config`'s offline validation and sets no variable the service ignores",
	"every object of Kubeflow's replaced line is kept or has a declared, rendered replacement; no policy, RequestAuthentication or route is dropped",
	"with the `dex` Component: the public `kubeflow-cli` client without redirect URIs, listed in the gateway client's `trustedPeers`, and Dex's configuration otherwise Kubeflow's",
}

// compatibilityDoc is docs/compatibility.md.
func compatibilityDoc(t *testing.T, cs []*composed) string {
	var b strings.Builder
	b.WriteString(`# Compatibility with Kubeflow

<!-- Generated by make manifests-check (test/manifests/export_test.go) from the compositions it checks and
     the scenarios test/integration runs; UPDATE=1 make manifests-check rewrites it. Do not edit. -->

Every row is Kubeflow's real manifests of that release (` + "`test/manifests/testdata/kubeflow`" + `) composed
as an operator's ` + "`example/kustomization.yaml`" + ` does, with Kubeflow's line for the gateway authenticator
swapped for an overlay of this repository. [kubeflow.md](kubeflow.md) says which line to change.

| Kubeflow | Kubeflow's line | replaced by | lines changed | an upstream receives (a session's request) | rendered and checked | with real Dex through the gateway as Istio builds it (test/istio) |
|---|---|---|---|---|---|---|
`)
	for _, c := range cs {
		v, err := newView(t, c.Objects)
		if err != nil {
			t.Fatalf("%s: %v", c.name(), err)
		}
		by := "`deploy/overlays/" + c.Form + "`"
		for _, o := range istioInstallOverlays {
			if c.Also != nil && slices.Contains(sortedValues(c.Also), o) {
				by += " and `deploy/overlays/" + o + "` for the Istio line"
			}
		}
		if c.Variant == "grpc" {
			by += " (the check over gRPC)"
		}
		status := "all checks below"
		if c.Dex != "" {
			status += "; also with `" + strings.TrimPrefix(c.Dex, "deploy/overlays/") + "`"
		}
		integ := "—"
		if len(c.Scenarios) > 0 {
			integ = strings.Join(c.Scenarios, "; ")
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s | %d | %s | %s | %s |\n", c.releaseDoc(), c.Stock, by, c.Lines, v.upstreamReceives(), status, integ)
	}
	b.WriteString(`
Kubeflow 1.9.0's own example installs oauth2-proxy from ` + "`common/oidc-client/oauth2-proxy`" + `, a design of its own:
every request is checked, bearer tokens included, and there is no DENY policy. Its rows swap the example's line
(` + "`m2m-self-signed`" + `) or its sibling ` + "`m2m`" + `; the 1.9.0 row of ` + "`deploy/overlays/kubeflow`" + ` is the layout of operators who
kept arrikto's ` + "`common/oidc-client/oidc-authservice/base`" + ` on 1.9.0 (1.8's lines on 1.9.0's folders).

## Rendered and checked (make manifests-check)

For every row:

`)
	for _, c := range staticChecks {
		b.WriteString("- " + c + "\n")
	}
	b.WriteString(`
## The gateway as Istio builds it (make istio-config)

For every row, and for ` + ownLayoutList() + ` on
Kubeflow master's Istio, test/istio turns the rendered objects into the ingress gateway's Envoy
configuration with Istio's own translation code (` + "`istio.io/istio`" + `'s ` + "`pilot/pkg/networking/core`" + `, the version
test/istio/go.mod pins), as istiod would push it to a gateway of the release's Istio version:
` + "`test/istio/testdata/envoy/<release>_<overlay>.json`" + `, checked in; CI regenerates it and fails on any
difference. istiod's fetches of the issuers' key sets are answered with fixed test keys (test/keys),
which the tests' Dex and service-account issuer sign with.

## With real Dex through the gateway (make test)

test/integration/kubeflow_compositions_test.go starts a real Dex (test/dex) under Kubeflow's issuer name
` + "`http://dex.auth.svc.cluster.local:5556/dex`" + ` with the rendered Dex client (as many replicas as the rendered
Deployment, on one storage), the service with its rendered environment (cluster addresses reached through a
proxy standing in for cluster DNS), and the Envoy-faithful gateway (test/extauthz) configured from the
generated Envoy configuration of the row: its HTTP connection manager (path normalization, forwarded
headers), its ` + "`ext_authz`" + `, ` + "`rbac`" + ` and ` + "`jwt_authn`" + ` filters in Istio's order, and its route table; then it runs
the scenarios of the last column. Service-account tokens are signed by a local issuer named
` + "`https://kubernetes.default.svc.cluster.local`" + ` with the fixed key istiod inlined for Kubeflow's m2m issuers; the
service's rendered ` + "`AUTHENTICATION_CONFIG_FILE`" + ` is pointed at its discovery. Kubeflow's own programmatic login
client, ` + "`DexSessionManager`" + ` of ` + "`tests/dex_login_test.py`" + ` (kubeflow/community-distribution, copied in
test/integration/testdata/kubeflow-client), logs in through the gateway alone and eight at once.
`)
	return b.String()
}

func TestCompatibilityDoc(t *testing.T) {
	cs := composeAll(t)
	for _, c := range cs {
		if c.Err != nil {
			t.Fatalf("%s: %v", c.name(), c.Err)
		}
	}
	writeOrCompare(t, filepath.Join(repoRoot, "docs", "compatibility.md"), []byte(compatibilityDoc(t, cs)))
}
