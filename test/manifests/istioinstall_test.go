package manifests

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// deploy/overlays/kubeflow-istio-install is the Istio line of the
// recommended Kubeflow layout: Kubeflow's istio-install base, pinned to a
// release of kubeflow/manifests, with the mesh component. Nothing here may
// fetch a repository, so its kustomizations are rendered with the vendored
// release instead of the pinned URL, once the URL is checked to be exactly
// that release's folder at that release's tag.

// kubeflowRepo is how the kustomizations name Kubeflow's repository.
const kubeflowRepo = "https://github.com/kubeflow/manifests//"

// kubeflowTags are the tags of the vendored releases (testdata/kubeflow).
var kubeflowTags = map[string]string{"v1.9.1": "v1.9.1", "v1.10.2": "v1.10.2", "v1.11.0": "v1.11.0", "v26.03": "26.03"}

// newestKubeflow is the release the overlay's top folder is for; older ones
// have a folder of their own.
const newestKubeflow = "v26.03"

// istioInstallOverlays are the Istio lines: the recommended layout's and
// the gRPC layout's.
var istioInstallOverlays = []string{"kubeflow-istio-install", "kubeflow-istio-install-grpc"}

// istioInstallDir is the kustomization of an Istio line overlay for a
// release, or "" when there is none (master: docs/kubeflow.md gives the
// local form, Kubeflow's base plus the mesh component).
func istioInstallDir(overlay, rel string) string {
	d := deployDir("overlays", overlay)
	if rel != newestKubeflow {
		d = filepath.Join(d, rel)
	}
	if _, err := os.Stat(filepath.Join(d, "kustomization.yaml")); err != nil {
		return ""
	}
	return d
}

// istioInstallLine writes the Istio line of the recommended layout for a
// composition as it renders here, and returns its folder: the release's
// kustomization with its pinned base replaced by the vendored copy (after
// checking the pin), or the local form. stock is Kubeflow's line it
// replaces (<istio folder>/istio-install/overlays/oauth2-proxy).
func istioInstallLine(t *testing.T, overlay, rel, exampleDir, stock string) (string, error) {
	t.Helper()
	folder := strings.TrimSuffix(strings.TrimPrefix(stock, "../"), "/overlays/oauth2-proxy")
	base := filepath.Join(exampleDir, "..", folder, "base")
	mesh := deployDir("overlays", overlay, "mesh")
	if d := istioInstallDir(overlay, rel); d != "" {
		b, err := os.ReadFile(filepath.Join(d, "kustomization.yaml"))
		if err != nil {
			return "", err
		}
		var k struct {
			Resources  []string `json:"resources"`
			Components []string `json:"components"`
		}
		if err := yaml.Unmarshal(b, &k); err != nil {
			return "", err
		}
		want := kubeflowRepo + folder + "/base?ref=" + kubeflowTags[rel]
		if len(k.Resources) != 1 || k.Resources[0] != want {
			return "", fmt.Errorf("%s: resources %v, want exactly Kubeflow %s's Istio base %s", d, k.Resources, rel, want)
		}
		if len(k.Components) != 1 || filepath.Clean(filepath.Join(d, k.Components[0])) != mesh {
			return "", fmt.Errorf("%s: components %v, want only the mesh component", d, k.Components)
		}
	}
	dir := filepath.Join(t.TempDir(), overlay+"-"+rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	r1, _ := filepath.Rel(dir, base)
	r2, _ := filepath.Rel(dir, mesh)
	k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- %s\ncomponents:\n- %s\n", r1, r2)
	return dir, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644)
}

// TestKubeflowIstioInstallPins: every kustomization of kubeflow-istio-install
// pins a vendored release (and so is composed and checked with it), and
// every vendored release with oauth2-proxy's mesh but master has one.
func TestKubeflowIstioInstallPins(t *testing.T) {
	for _, overlay := range istioInstallOverlays {
		t.Run(overlay, func(t *testing.T) { istioInstallPins(t, overlay) })
	}
}

func istioInstallPins(t *testing.T, overlay string) {
	root := deployDir("overlays", overlay)
	var dirs []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "kustomization.yaml" && filepath.Base(filepath.Dir(p)) != "mesh" {
			dirs = append(dirs, filepath.Dir(p))
		}
		return nil
	})
	var covered []string
	for _, d := range dirs {
		rel := filepath.Base(d)
		if d == root {
			rel = newestKubeflow
		}
		if _, ok := kubeflowTags[rel]; !ok {
			t.Errorf("%s: not a vendored release with oauth2-proxy's mesh (%v)", d, sortedKeys(kubeflowTags))
			continue
		}
		remote, err := remoteResources(d)
		if err != nil || len(remote) != 1 {
			t.Errorf("%s: want one pinned remote resource, have %v (%v)", d, remote, err)
			continue
		}
		covered = append(covered, rel)
	}
	for rel := range kubeflowTags {
		if !slices.Contains(covered, rel) {
			t.Errorf("Kubeflow %s has no kustomization in %s", rel, root)
		}
		found := false
		for _, c := range compositions {
			found = found || (c.Release == rel && c.Also != nil && slices.Contains(sortedValues(c.Also), overlay))
		}
		if !found {
			t.Errorf("Kubeflow %s: no composition renders its %s", rel, overlay)
		}
	}
}

func sortedValues(m map[string]string) []string {
	var out []string
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}
