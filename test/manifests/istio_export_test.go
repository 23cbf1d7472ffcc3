package manifests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// test/istio turns each layout we ship into the Envoy configuration istiod
// pushes to the ingress gateway, with Istio's own translation code (make
// istio-config). Its inputs are written here, from the same renderings the
// checks above judge: every composition of the compatibility table (one row
// of `compositions` is one layout), and our own istio-* overlays on
// Kubeflow master's Istio (ownLayouts). UPDATE=1 rewrites them; otherwise a
// difference fails, and make istio-config must be run again.

// istioInputDir is where test/istio reads the rendered layouts.
var istioInputDir = filepath.Join(repoRoot, "test", "istio", "testdata", "input")

// ownLayout is one of our istio-* overlays on a Kubeflow release's Istio:
// its istio-install base (istiod, the gateway, the mesh configuration,
// Kubeflow's default-deny policies), Kubeflow's gateway and the routes of
// Dex and the dashboard, and the overlay with its components.
type ownLayout struct {
	Release    string // the Kubeflow release whose Istio it runs on
	Overlay    string // deploy/overlays/<Overlay>
	Components []string
	// Mesh is a file whose meshConfig.extensionProviders the operator adds
	// to the mesh configuration (the overlay's README, step 1).
	Mesh string
}

func (o ownLayout) name() string { return o.Release + "_" + o.Overlay }

// ownLayoutList names the overlays of ownLayouts for docs/compatibility.md.
func ownLayoutList() string {
	var names []string
	for _, o := range ownLayouts {
		names = append(names, "`deploy/overlays/"+o.Overlay+"`")
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

var ownLayouts = []ownLayout{
	{Release: "master", Overlay: "istio-envoyfilter", Components: []string{"components/web-route"}},
	{Release: "master", Overlay: "istio-extension-provider", Components: []string{"components/web-route"},
		Mesh: "overlays/istio-extension-provider/mesh/istiod-values.yaml"},
	// The gRPC variants of both (the check over Envoy's Authorization
	// service, GRPC_PORT).
	{Release: "master", Overlay: "istio-envoyfilter-grpc", Components: []string{"components/web-route"}},
	{Release: "master", Overlay: "istio-extension-provider-grpc", Components: []string{"components/web-route"},
		Mesh: "overlays/istio-extension-provider-grpc/mesh/istiod-values.yaml"},
	// The provider overlays build on those two and bring web-route themselves.
	{Release: "master", Overlay: "dex"},
	{Release: "master", Overlay: "gitlab",
		Mesh: "overlays/istio-extension-provider/mesh/istiod-values.yaml"},
}

// istioInput is one layout as test/istio reads it.
type istioInput struct {
	Name string `json:"name"`
	// Objects are what istiod and the gateway are configured from: Istio's
	// objects, Services, the mesh configuration, istiod's and the
	// gateway's Deployments, CronJobs and the ConfigMaps they read.
	Objects []json.RawMessage `json:"objects"`
}

func istioInputFile(name string) string { return filepath.Join(istioInputDir, name+".json") }

func renderOwn(t *testing.T, o ownLayout) *rendering {
	t.Helper()
	kf := filepath.Join(kubeflowData, o.Release)
	resources := []string{
		filepath.Join(kf, "common/istio/istio-namespace/base"),
		filepath.Join(kf, "common/istio/istio-install/base"),
		filepath.Join(kf, "common/istio/kubeflow-istio-resources/base"),
		filepath.Join(kf, "common/dex/overlays/istio"),
		filepath.Join(kf, "applications/dashboard/overlays/istio"),
		deployDir("overlays", o.Overlay),
	}
	var components []string
	for _, c := range o.Components {
		components = append(components, deployDir(c))
	}
	dir, err := writeHarness(resources, components)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	objs, err := kustomize(dir)
	if err != nil {
		t.Fatalf("%s: %v", o.name(), err)
	}
	if o.Mesh != "" {
		addExtensionProviders(t, objs, deployDir(o.Mesh))
	}
	return &rendering{Name: o.name(), Objects: objs}
}

// addExtensionProviders appends the extension providers of a Helm values
// file (meshConfig.extensionProviders) to the rendered mesh configuration,
// as `helm upgrade --reuse-values -f` or editing the ConfigMap does.
func addExtensionProviders(t *testing.T, objs []*object, valuesFile string) {
	t.Helper()
	b, err := os.ReadFile(valuesFile)
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		MeshConfig struct {
			ExtensionProviders []any `json:"extensionProviders"`
		} `json:"meshConfig"`
	}
	if err := yaml.Unmarshal(b, &values); err != nil || len(values.MeshConfig.ExtensionProviders) == 0 {
		t.Fatalf("%s: no meshConfig.extensionProviders (%v)", valuesFile, err)
	}
	for _, o := range objs {
		if o.Kind != "ConfigMap" || o.Namespace != "istio-system" || o.Name != "istio" {
			continue
		}
		data, _ := o.Map["data"].(map[string]any)
		var mesh map[string]any
		if err := yaml.Unmarshal([]byte(data["mesh"].(string)), &mesh); err != nil {
			t.Fatal(err)
		}
		providers, _ := mesh["extensionProviders"].([]any)
		mesh["extensionProviders"] = append(providers, values.MeshConfig.ExtensionProviders...)
		y, err := yaml.Marshal(mesh)
		if err != nil {
			t.Fatal(err)
		}
		data["mesh"] = string(y)
		if o.JSON, err = json.Marshal(o.Map); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatal("no ConfigMap istio-system/istio to add the extension providers to")
}

// istioObjects are the objects of a rendering that istiod and the gateway
// are configured from, in a stable order.
func istioObjects(r *rendering) []json.RawMessage {
	cronConfig := map[string]bool{}
	for _, o := range r.all("CronJob") {
		pod, _ := digMap(o.Map, "spec", "jobTemplate", "spec", "template", "spec")["containers"].([]any)
		for _, c := range pod {
			for _, ef := range asList(c.(map[string]any)["envFrom"]) {
				if name, ok := digMap(ef.(map[string]any), "configMapRef")["name"].(string); ok {
					cronConfig[o.Namespace+"/"+name] = true
				}
			}
		}
	}
	var keep []*object
	for _, o := range r.Objects {
		group, _, _ := strings.Cut(o.APIVersion, "/")
		switch {
		case strings.HasSuffix(group, ".istio.io") && strings.Contains(o.APIVersion, "/"):
		case o.Kind == "Service" && o.APIVersion == "v1":
		case o.Kind == "ConfigMap" && (o.Namespace == "istio-system" && o.Name == "istio" || cronConfig[o.Namespace+"/"+o.Name]):
		case o.Kind == "Deployment" && o.Namespace == "istio-system" && (o.Name == "istiod" || o.Name == "istio-ingressgateway"):
		case o.Kind == "CronJob":
		default:
			continue
		}
		keep = append(keep, o)
	}
	sort.Slice(keep, func(i, j int) bool { return keep[i].id() < keep[j].id() })
	var out []json.RawMessage
	for _, o := range keep {
		out = append(out, o.JSON)
	}
	return out
}

func digMap(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		m, _ = m[k].(map[string]any)
	}
	return m
}

func writeIstioInput(t *testing.T, name string, r *rendering) {
	t.Helper()
	b, err := json.MarshalIndent(istioInput{Name: name, Objects: istioObjects(r)}, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	writeOrCompare(t, istioInputFile(name), append(b, '\n'))
}

// TestIstioInputs: test/istio's inputs are the current renderings of every
// composition and of our own istio-* overlays, and there are no others.
func TestIstioInputs(t *testing.T) {
	want := map[string]bool{}
	for _, c := range composeAll(t) {
		if c.Err != nil {
			t.Fatalf("%s: %v", c.name(), c.Err)
		}
		name := c.release() + "_" + c.Form
		want[name+".json"] = true
		writeIstioInput(t, name, c.Objects)
		if c.Form == "kubeflow" {
			// Kubeflow ≤ 1.9.0's own EnvoyFilter (arrikto's), as shipped:
			// its patch names envoy.http_connection_manager, which Istio
			// 1.19 and later match to nothing.
			stock := c.release() + "_stock-oidc-authservice"
			want[stock+".json"] = true
			writeIstioInput(t, stock, c.StockRender)
		}
	}
	for _, o := range ownLayouts {
		want[o.name()+".json"] = true
		writeIstioInput(t, o.name(), renderOwn(t, o))
	}
	entries, _ := os.ReadDir(istioInputDir)
	for _, e := range entries {
		if !want[e.Name()] {
			if os.Getenv("UPDATE") != "" {
				os.Remove(filepath.Join(istioInputDir, e.Name()))
				continue
			}
			t.Errorf("%s: not a layout of the table: remove it (UPDATE=1 does)", filepath.Join(istioInputDir, e.Name()))
		}
	}
}
