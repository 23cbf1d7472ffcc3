package manifests

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

// Kubeflow's releases as operators run them: the auth-relevant lines of each
// release's example/kustomization.yaml (testdata/kubeflow, a subset of
// kubeflow/manifests), composed once as Kubeflow ships them ("stock") and
// once with the one line that names the gateway authenticator swapped for an
// overlay of deploy/ ("swapped"), as an operator would.

// kubeflowData is the vendored subset of kubeflow/manifests.
var kubeflowData = func() string {
	abs, err := filepath.Abs(filepath.Join("testdata", "kubeflow"))
	if err != nil {
		panic(err)
	}
	return abs
}()

// composition is one release run one way.
type composition struct {
	Release string // folder of testdata/kubeflow
	// Variant names a layout of the release other than its example's
	// default (e.g. "ambient": Kubeflow's istio-install/overlays/ambient-oauth2-proxy),
	// reached by the Layout substitutions, or ("grpc") by the other line
	// (Also: the gRPC layout's Istio line).
	Variant string
	Form    string // the overlay of deploy/overlays that replaces Kubeflow's line
	// Stock is Kubeflow's line the operator's file has (without the "- ").
	Stock string
	// Layout, when set, turns the release's example into the one an operator
	// of that release runs with this authenticator: line substitutions
	// applied to the shipped example before the swap (Kubeflow 1.9.0's
	// example uses oauth2-proxy; its arrikto layout is 1.8's on 1.9.0's folders).
	Layout map[string]string
	// Lines is how many lines of example/kustomization.yaml the swap
	// changes: 1, or 2 where the Istio line is replaced too (kubeflow-jwt,
	// the recommended layout's kubeflow-istio-install).
	Lines int
	// Also are further line swaps (the Istio line).
	Also map[string]string
	// Dex is the Dex component of deploy/ registering the kubeflow-cli
	// client, for the variant "with the CLI client".
	Dex string
	// Replacements says, for each object of Kubeflow's line that the swap
	// does not keep under its own kind, namespace and name, what replaces it
	// (kind namespace/name in the swapped composition) or, after "none: ",
	// why nothing needs to.
	Replacements map[string]string
	// Scenarios are the integration scenarios test/integration runs on this
	// composition (exported to test/integration/testdata/kubeflow).
	Scenarios []string
}

func (c composition) name() string { return c.release() + "/" + c.Form }

// releaseDoc is the release as docs/compatibility.md names it.
func (c composition) releaseDoc() string {
	if c.Variant == "" {
		return c.Release
	}
	var lines []string
	for _, to := range sortedValues(c.Layout) {
		if to != "" {
			lines = append(lines, "`"+strings.TrimPrefix(to, "../common/istio/")+"`")
		}
	}
	if len(lines) == 0 { // a variant by its other line (grpc): the "by" column says it
		return c.Release
	}
	return c.Release + " (" + c.Variant + ": " + strings.Join(lines, ", ") + ")"
}

// release is the release and its variant: "v26.03", "v26.03-ambient".
func (c composition) release() string {
	if c.Variant == "" {
		return c.Release
	}
	return c.Release + "-" + c.Variant
}

var oauth2ProxyReplacements = map[string]string{
	"Deployment oauth2-proxy/oauth2-proxy":     "Deployment oauth2-proxy/authservice",
	"ServiceAccount oauth2-proxy/oauth2-proxy": "ServiceAccount oauth2-proxy/authservice",
	"ConfigMap oauth2-proxy/oauth2-proxy":      "ConfigMap oauth2-proxy/oidc-authservice-parameters",
	"Secret oauth2-proxy/oauth2-proxy":         "Secret oauth2-proxy/oidc-authservice-client",
	"ConfigMap oauth2-proxy/oauth2-proxy-theme": "none: the logo of oauth2-proxy's sign-in page; the service sends the browser " +
		"straight to Dex's login page",
}

// oidcClientReplacements: Kubeflow 1.9.0's common/oidc-client/oauth2-proxy
// overlays (m2m-self-signed, m2m).
var oidcClientReplacements = map[string]string{
	"Deployment oauth2-proxy/oauth2-proxy":     "Deployment oauth2-proxy/authservice",
	"ServiceAccount oauth2-proxy/oauth2-proxy": "ServiceAccount oauth2-proxy/authservice",
	"ConfigMap oauth2-proxy/oauth2-proxy":      "ConfigMap oauth2-proxy/oidc-authservice-parameters",
	"Secret oauth2-proxy/oauth2-proxy":         "Secret oauth2-proxy/oidc-authservice-client",
	"ConfigMap /istio-m2m-params": "none: a kustomize-time parameter of Kubeflow's istio-m2m component (the issuer it writes " +
		"into m2m-token-issuer, written there in place by the overlay); rendered without a namespace, read by nothing on the cluster",
}

// headersReplacements: the recommended layout (kubeflow-oauth2-proxy-headers
// with kubeflow-istio-install), where the service checks every request,
// bearer tokens included, and sets the identity itself.
var headersReplacements = func() map[string]string {
	m := maps.Clone(oauth2ProxyReplacements)
	// The CUSTOM policy, kept under its name, now checks requests with an
	// Authorization header too: none passes unchecked for a DENY policy to
	// catch, and no token reaches Istio.
	m["AuthorizationPolicy istio-system/istio-ingressgateway-require-jwt"] = "AuthorizationPolicy istio-system/istio-ingressgateway-oauth2-proxy"
	m["RequestAuthentication istio-system/dex-jwt"] = "checked: the service verifies Dex's tokens itself (every request is checked) and sets the identity"
	return m
}()

var arriktoReplacements = map[string]string{
	"StatefulSet istio-system/oidc-authservice":          "Deployment istio-system/authservice",
	"PersistentVolumeClaim istio-system/authservice-pvc": "none: sessions are sealed cookies, there is no store",
	// deploy/components/tokenreview brings the TokenReview RBAC.
	"ClusterRole /authn-delegator":         "ClusterRole /oidc-authservice-tokenreview",
	"ClusterRoleBinding /authn-delegators": "ClusterRoleBinding /oidc-authservice-tokenreview",
}

// scenario names, shared with test/integration (kubeflow_compositions_test.go).
const (
	scBrowserLogin = "browser login through Dex"
	scReload       = "reload without a new login"
	scStart        = "login from the login start URL (oauth2-proxy's /oauth2/start?rd=)"
	scLogoutGet    = "logout at the dashboard's LOGOUT_URL (GET navigation)"
	scLogoutPost   = "logout at the dashboard's LOGOUT_URL (POST, dashboards before 1.10)"
	scDexToken     = "API call with a Dex ID token"
	scSAToken      = "API call with a service-account token"
	scSARefused    = "service-account token refused (no m2m issuer, as Kubeflow's overlay)"
	scRefresh      = "session outlives Dex's ID-token lifetime (refresh)"
	scForged       = "client-sent identity headers never reach the upstream"
	scReplay       = "no header an upstream receives lets another client in as the user"
	scPythonClient = "Kubeflow's DexSessionManager (tests/dex_login_test.py) logs in, alone and eight at once; its cookies reach a page and an API"
)

var compositions = func() []composition {
	var out []composition
	arrikto := func(rel string, layout map[string]string, dex string, sc []string) composition {
		return composition{Release: rel, Form: "kubeflow", Stock: "../common/oidc-client/oidc-authservice/base", Layout: layout,
			Lines: 1, Dex: dex, Replacements: arriktoReplacements, Scenarios: sc}
	}
	out = append(out,
		arrikto("v1.8.1", nil, "deploy/overlays/kubeflow/dex-v1.8",
			[]string{scBrowserLogin, scReload, scStart, scLogoutPost, scLogoutGet, scDexToken, scSAToken, scForged, scReplay, scPythonClient}),
		arrikto("v1.9.0", map[string]string{
			"../common/istio-1-22/istio-install/overlays/oauth2-proxy":    "../common/istio-1-22/istio-install/base",
			"../common/oidc-client/oauth2-proxy/overlays/m2m-self-signed": "../common/oidc-client/oidc-authservice/base",
			"../common/dex/overlays/oauth2-proxy":                         "../common/dex/overlays/istio",
			"../apps/centraldashboard/upstream/overlays/oauth2-proxy":     "../apps/centraldashboard/upstream/overlays/kserve",
		}, "deploy/overlays/kubeflow/dex", nil),
		// 1.9.0's own example: oauth2-proxy from common/oidc-client, every
		// request checked, bearer tokens included.
		composition{Release: "v1.9.0", Form: "kubeflow-oidc-client-oauth2-proxy-m2m-self-signed",
			Stock: "../common/oidc-client/oauth2-proxy/overlays/m2m-self-signed", Lines: 1, Dex: "deploy/overlays/kubeflow-oauth2-proxy/dex",
			Replacements: oidcClientReplacements,
			Scenarios:    []string{scBrowserLogin, scReload, scStart, scLogoutPost, scLogoutGet, scDexToken, scSAToken, scForged, scReplay, scPythonClient}},
		composition{Release: "v1.9.0", Form: "kubeflow-oidc-client-oauth2-proxy-m2m",
			Stock: "../common/oidc-client/oauth2-proxy/overlays/m2m", Lines: 1, Replacements: oidcClientReplacements},
	)
	for _, rel := range []string{"v1.9.1", "v1.10.2", "v1.11.0", "v26.03", "master"} {
		istio := "../common/istio/istio-install"
		if rel == "v1.9.1" {
			istio = "../common/istio-1-22/istio-install"
		}
		var dexOnly, kind, eks, headers, jwt []string
		if rel == "master" || rel == "v26.03" {
			dexOnly = []string{scBrowserLogin, scReload, scStart, scLogoutGet, scLogoutPost, scDexToken, scSARefused, scRefresh, scForged, scReplay, scPythonClient}
			kind = []string{scBrowserLogin, scDexToken, scSAToken, scForged, scReplay, scPythonClient}
			eks = []string{scBrowserLogin, scDexToken, scReplay}
			headers = []string{scBrowserLogin, scReload, scStart, scLogoutGet, scLogoutPost, scDexToken, scSARefused, scForged, scReplay, scPythonClient}
			jwt = []string{scBrowserLogin, scReload, scLogoutGet, scForged, scReplay}
		}
		out = append(out,
			composition{Release: rel, Form: "kubeflow-oauth2-proxy", Stock: "../common/oauth2-proxy/overlays/m2m-dex-only",
				Lines: 1, Dex: "deploy/overlays/kubeflow-oauth2-proxy/dex", Replacements: oauth2ProxyReplacements, Scenarios: dexOnly},
			composition{Release: rel, Form: "kubeflow-oauth2-proxy-m2m-dex-and-kind", Stock: "../common/oauth2-proxy/overlays/m2m-dex-and-kind",
				Lines: 1, Replacements: oauth2ProxyReplacements, Scenarios: kind},
			composition{Release: rel, Form: "kubeflow-oauth2-proxy-m2m-dex-and-eks", Stock: "../common/oauth2-proxy/overlays/m2m-dex-and-eks",
				Lines: 1, Replacements: oauth2ProxyReplacements, Scenarios: eks},
			// The recommended layout: the Istio line too, with the mesh's
			// provider letting through what the service needs.
			composition{Release: rel, Form: "kubeflow-oauth2-proxy-headers", Stock: "../common/oauth2-proxy/overlays/m2m-dex-only",
				Lines: 2, Also: map[string]string{istio + "/overlays/oauth2-proxy": "kubeflow-istio-install"},
				Dex: "deploy/overlays/kubeflow-oauth2-proxy/dex", Replacements: headersReplacements, Scenarios: headers},
			// The gRPC layout: the same authenticator line, the mesh's
			// provider oauth2-proxy as gRPC to the service.
			composition{Release: rel, Form: "kubeflow-oauth2-proxy-headers", Variant: "grpc", Stock: "../common/oauth2-proxy/overlays/m2m-dex-only",
				Lines: 2, Also: map[string]string{istio + "/overlays/oauth2-proxy": "kubeflow-istio-install-grpc"},
				Dex: "deploy/overlays/kubeflow-oauth2-proxy/dex", Replacements: headersReplacements, Scenarios: grpcScenarios(headers)},
			composition{Release: rel, Form: "kubeflow-jwt", Stock: "../common/oauth2-proxy/overlays/m2m-dex-only", Lines: 2,
				Also: map[string]string{istio + "/overlays/oauth2-proxy": "kubeflow-jwt-istio"},
				Replacements: map[string]string{
					"Namespace /oauth2-proxy":                                              "none: the service runs in istio-system",
					"Deployment oauth2-proxy/oauth2-proxy":                                 "Deployment istio-system/authservice",
					"ServiceAccount oauth2-proxy/oauth2-proxy":                             "ServiceAccount istio-system/authservice",
					"Service oauth2-proxy/oauth2-proxy":                                    "Service istio-system/authservice",
					"ConfigMap oauth2-proxy/oauth2-proxy":                                  "ConfigMap istio-system/oidc-authservice-parameters",
					"ConfigMap oauth2-proxy/oauth2-proxy-parameters":                       "ConfigMap istio-system/oidc-authservice-parameters",
					"Secret oauth2-proxy/oauth2-proxy":                                     "Secret istio-system/oidc-authservice-client",
					"ConfigMap oauth2-proxy/oauth2-proxy-theme":                            oauth2ProxyReplacements["ConfigMap oauth2-proxy/oauth2-proxy-theme"],
					"VirtualService oauth2-proxy/oauth2-proxy":                             "VirtualService istio-system/authservice-web",
					"NetworkPolicy oauth2-proxy/default-allow-same-namespace-oauth2-proxy": "none: the namespace oauth2-proxy is not used",
					"NetworkPolicy oauth2-proxy/allow-istio-ingressgateway":                "none: the namespace oauth2-proxy is not used",
					"AuthorizationPolicy istio-system/istio-ingressgateway-oauth2-proxy":   "AuthorizationPolicy istio-system/istio-ingressgateway-oidc-authservice",
					"RequestAuthentication istio-system/dex-jwt":                           "RequestAuthentication istio-system/oidc-authservice-jwt",
				}, Scenarios: jwt},
		)
	}
	// Kubeflow 26.03 in ambient mode: the example's Istio line swapped for
	// the ambient overlay its comment names, then the one-line swap.
	out = append(out, composition{Release: "v26.03", Variant: "ambient", Form: "kubeflow-oauth2-proxy",
		Stock: "../common/oauth2-proxy/overlays/m2m-dex-only", Lines: 1, Dex: "deploy/overlays/kubeflow-oauth2-proxy/dex",
		Layout: map[string]string{"../common/istio/istio-install/overlays/oauth2-proxy": "../common/istio/istio-install/overlays/ambient-oauth2-proxy",
			// The ambient overlay brings the Namespace istio-system itself
			// (privileged, for ztunnel and the CNI): kustomize cannot build
			// the example with both lines, Kubeflow's install scripts apply
			// them one after the other. Its NetworkPolicies do not touch the
			// gateway's authentication.
			"../common/istio/istio-namespace/base": ""},
		Replacements: oauth2ProxyReplacements,
		Scenarios:    []string{scBrowserLogin, scReload, scStart, scLogoutGet, scLogoutPost, scDexToken, scSARefused, scRefresh, scForged, scReplay, scPythonClient}})
	return out
}()

// exampleLines reads a release's example/kustomization.yaml, with the
// composition's layout substitutions applied.
func exampleLines(t *testing.T, c composition) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(kubeflowData, c.Release, "example", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for from, to := range c.Layout {
		n := 0
		for i, l := range lines {
			if p, ok := resourceLine(l); ok && p == from {
				lines[i] = "- " + to
				if to == "" { // the operator leaves the line out
					lines[i] = "# " + l
				}
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%s: layout: %q is not a resource line of the example", c.name(), from)
		}
	}
	return lines
}

var resourceRE = regexp.MustCompile(`^\s*-\s+(\S+)\s*(#.*)?$`)

// resourceLine returns the path of an uncommented "- path" line.
func resourceLine(l string) (string, bool) {
	m := resourceRE.FindStringSubmatch(l)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// operatorFile is the file an operator of this composition has before the
// swap: the example with Kubeflow's line for this variant (the kind and EKS
// lines are commented alternatives of the default one; 1.9.0's m2m is a
// sibling of its m2m-self-signed).
func operatorFile(t *testing.T, c composition) []string {
	t.Helper()
	lines := exampleLines(t, c)
	found := false
	for i, l := range lines {
		p, ok := resourceLine(l)
		if !ok {
			continue
		}
		if p == c.Stock {
			found = true
		} else if dir, _, ok := strings.Cut(c.Stock, "/overlays/"); ok && strings.HasPrefix(p, dir+"/overlays/") {
			lines[i] = "- " + c.Stock // the operator picked this variant
			found = true
		}
	}
	if !found {
		t.Fatalf("%s: %q is not a resource line of the example", c.name(), c.Stock)
	}
	return lines
}

// swappedFile is the operator's file with Kubeflow's line(s) swapped, and
// the number of lines that differ. dir is where the file will live (paths
// into deploy/ are written relative to it, as an operator would).
func swappedFile(t *testing.T, c composition, dir string, also map[string]string) ([]string, int) {
	t.Helper()
	stock := operatorFile(t, c)
	out := append([]string(nil), stock...)
	rel := func(p string) string {
		r, err := filepath.Rel(dir, p)
		if err != nil {
			t.Fatal(err)
		}
		return filepath.ToSlash(r)
	}
	swaps := map[string]string{c.Stock: rel(deployDir("overlays", c.Form))}
	for from, to := range also {
		swaps[from] = rel(to)
	}
	for i, l := range out {
		if p, ok := resourceLine(l); ok {
			if to, ok := swaps[p]; ok {
				out[i] = "- " + to
			}
		}
	}
	changed := 0
	for i := range out {
		if out[i] != stock[i] {
			changed++
		}
	}
	return out, changed
}

// renderExample renders the resource lines of an example file that exist in
// the snapshot (the auth-relevant ones: the others are not vendored), from
// exampleDir (the release's example folder), with extra components.
func renderExample(t *testing.T, lines []string, exampleDir string, components []string) ([]*object, error) {
	t.Helper()
	var resources []string
	for _, l := range lines {
		p, ok := resourceLine(l)
		if !ok {
			continue
		}
		abs := p
		if !filepath.IsAbs(p) {
			abs = filepath.Join(exampleDir, p)
		}
		if _, err := os.Stat(filepath.Join(abs, "kustomization.yaml")); err != nil {
			continue // not vendored: not auth-relevant
		}
		resources = append(resources, abs)
	}
	dir, err := writeHarness(resources, components)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	return kustomize(dir)
}

// composed is a composition rendered both ways.
type composed struct {
	composition
	Operator, Swapped    []string // the example files
	Changed              int      // lines that differ
	StockRender, Objects *rendering
	WithDex              *rendering // Swapped plus the Dex component (nil without one)
	Line                 []*object  // Kubeflow's replaced line rendered alone
	Err                  error
}

var (
	composeOnce sync.Once
	composedAll []*composed
)

// composeAll renders every composition (once per test process).
func composeAll(t *testing.T) []*composed {
	t.Helper()
	composeOnce.Do(func() {
		for _, c := range compositions {
			composedAll = append(composedAll, compose(t, c))
		}
	})
	return composedAll
}

func compose(t *testing.T, c composition) *composed {
	out := &composed{composition: c}
	exampleDir := filepath.Join(kubeflowData, c.Release, "example")
	out.Operator = operatorFile(t, c)
	also := map[string]string{}
	for from, to := range c.Also {
		if to == "kubeflow-istio-install" || to == "kubeflow-istio-install-grpc" {
			dir, err := istioInstallLine(t, to, c.Release, exampleDir, from)
			if err != nil {
				out.Err = err
				return out
			}
			also[from] = dir
			continue
		}
		if to == "kubeflow-jwt-istio" {
			// The Istio line of kubeflow-jwt: Kubeflow's istio-install base
			// with the kubeflow-jwt/mesh component, as its README says.
			base := filepath.Join(exampleDir, strings.TrimSuffix(from, "/overlays/oauth2-proxy")+"/base")
			dir := filepath.Join(t.TempDir(), "istio-kubeflow-jwt")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			r1, _ := filepath.Rel(dir, base)
			r2, _ := filepath.Rel(dir, deployDir("overlays", "kubeflow-jwt", "mesh"))
			k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- %s\ncomponents:\n- %s\n", r1, r2)
			if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
				t.Fatal(err)
			}
			to = dir
		}
		also[from] = to
	}
	out.Swapped, out.Changed = swappedFile(t, c, exampleDir, also)
	objs, err := renderExample(t, out.Operator, exampleDir, nil)
	if err != nil {
		out.Err = fmt.Errorf("stock: %w", err)
		return out
	}
	out.StockRender = &rendering{Name: c.name() + " (stock)", Objects: objs}
	if objs, err = renderExample(t, out.Swapped, exampleDir, nil); err != nil {
		out.Err = fmt.Errorf("swapped: %w", err)
		return out
	}
	out.Objects = &rendering{Name: c.name(), Objects: objs}
	if c.Dex != "" {
		if objs, err = renderExample(t, out.Swapped, exampleDir, []string{filepath.Join(repoRoot, c.Dex)}); err != nil {
			out.Err = fmt.Errorf("with %s: %w", c.Dex, err)
			return out
		}
		out.WithDex = &rendering{Name: c.name() + " + " + c.Dex, Objects: objs}
	}
	for _, line := range append([]string{c.Stock}, sortedKeys(c.Also)...) {
		objs, err := kustomize(filepath.Join(exampleDir, line))
		if err != nil {
			out.Err = fmt.Errorf("Kubeflow's line %s alone: %w", line, err)
			return out
		}
		out.Line = append(out.Line, objs...)
	}
	return out
}

// objectKey is "Kind namespace/name" with the hash suffix of generated
// ConfigMaps and Secrets removed.
func objectKey(o *object) string {
	name := o.Name
	if o.Kind == "ConfigMap" || o.Kind == "Secret" {
		name = hashSuffix.ReplaceAllString(name, "")
	}
	return fmt.Sprintf("%s %s/%s", o.Kind, o.Namespace, name)
}

// hashSuffix is the suffix kustomize appends to generated names: 10
// characters of an alphabet without vowels, so it never eats a word.
var hashSuffix = regexp.MustCompile(`-[bcdfghjklmnpqrstvwxz2-9]{10}$`)

func keys(objs []*object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, objectKey(o))
	}
	sort.Strings(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// grpcScenarios are the gRPC layout's: the recommended layout's, and the
// refresh, whose renewed cookie goes back on the allow itself
// (response_headers_to_add), with no redirect.
func grpcScenarios(headers []string) []string {
	if len(headers) == 0 {
		return nil
	}
	return append(slices.Clone(headers), scRefresh)
}
