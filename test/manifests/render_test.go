package manifests

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// repoRoot is the repository's root, seen from test/manifests.
var repoRoot = func() string {
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return abs
}()

func deployDir(parts ...string) string {
	return filepath.Join(append([]string{repoRoot, "deploy"}, parts...)...)
}

// object is one rendered Kubernetes object.
type object struct {
	APIVersion, Kind, Name, Namespace string
	JSON                              []byte
	Map                               map[string]any
}

func (o *object) id() string {
	return fmt.Sprintf("%s %s/%s", o.Kind, o.Namespace, o.Name)
}

// rendering is the output of one kustomization.
type rendering struct {
	Name    string // e.g. "overlays/kubeflow"
	Objects []*object
}

func (r *rendering) find(kind, name string) *object {
	for _, o := range r.Objects {
		if o.Kind == kind && o.Name == name {
			return o
		}
	}
	return nil
}

func (r *rendering) all(kind string) []*object {
	var out []*object
	for _, o := range r.Objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// kustomize renders the kustomization in dir, as `kustomize build dir` does.
func kustomize(dir string) ([]*object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, err
	}
	var out []*object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		j, err := yaml.YAMLToJSON(y)
		if err != nil {
			return nil, err
		}
		o := &object{JSON: j}
		if err := yaml.Unmarshal(y, &o.Map); err != nil {
			return nil, err
		}
		o.APIVersion, _ = o.Map["apiVersion"].(string)
		o.Kind, _ = o.Map["kind"].(string)
		md, _ := o.Map["metadata"].(map[string]any)
		o.Name, _ = md["name"].(string)
		o.Namespace, _ = md["namespace"].(string)
		out = append(out, o)
	}
	return out, nil
}

// writeHarness writes, in a new temporary directory, a kustomization with
// these resources and components (absolute paths) and returns the directory.
func writeHarness(resources, components []string) (string, error) {
	dir, err := os.MkdirTemp("", "manifests-")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n")
	// kustomize refuses absolute paths: write them relative to dir.
	rel := func(p string) string {
		r, err := filepath.Rel(dir, p)
		if err != nil {
			return p
		}
		return filepath.ToSlash(r)
	}
	for _, r := range resources {
		fmt.Fprintf(&b, "- %s\n", rel(r))
	}
	if len(components) > 0 {
		b.WriteString("components:\n")
		for _, c := range components {
			fmt.Fprintf(&b, "- %s\n", rel(c))
		}
	}
	return dir, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(b.String()), 0o644)
}

// kustomizations lists the directories under deploy/<sub> holding a
// kustomization.yaml (not descending into them).
func kustomizations(t *testing.T, sub string) []string {
	t.Helper()
	entries, err := os.ReadDir(deployDir(sub))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			if _, err := os.Stat(deployDir(sub, e.Name(), "kustomization.yaml")); err == nil {
				if remote, _ := remoteResources(deployDir(sub, e.Name())); len(remote) > 0 {
					continue // pinned to Kubeflow's repository: istioinstall_test.go
				}
				out = append(out, e.Name())
			}
		}
	}
	sort.Strings(out)
	return out
}

var (
	renderOnce sync.Once
	renderings []*rendering
	renderErrs []string
)

// renderAll renders deploy/base, every overlay and every component applied to
// the base. The result is shared by the tests; rendering errors fail each
// test that asks.
func renderAll(t *testing.T) []*rendering {
	t.Helper()
	renderOnce.Do(func() {
		add := func(name, dir string) {
			objs, err := kustomize(dir)
			if err != nil {
				renderErrs = append(renderErrs, fmt.Sprintf("%s: %v", name, err))
				return
			}
			renderings = append(renderings, &rendering{Name: name, Objects: objs})
		}
		add("base", deployDir("base"))
		for _, o := range kustomizations(t, "overlays") {
			add("overlays/"+o, deployDir("overlays", o))
		}
		inBase := baseComponents(t)
		for _, c := range kustomizations(t, "components") {
			if inBase[c] {
				continue // rendered with the base
			}
			dir, err := writeHarness([]string{deployDir("base")}, []string{deployDir("components", c)})
			if err != nil {
				renderErrs = append(renderErrs, err.Error())
				continue
			}
			add("components/"+c, dir)
			os.RemoveAll(dir)
		}
	})
	if len(renderErrs) > 0 {
		t.Fatalf("kustomize build failed:\n%s", strings.Join(renderErrs, "\n"))
	}
	return renderings
}

// baseComponents are the components deploy/base itself includes (every
// layout has them): rendered as part of the base, not on top of it.
func baseComponents(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(deployDir("base", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Components []string `json:"components"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, c := range k.Components {
		out[filepath.Base(c)] = true
	}
	return out
}

func renderingNamed(t *testing.T, name string) *rendering {
	t.Helper()
	for _, r := range renderAll(t) {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no rendering %s", name)
	return nil
}

// TestRenderAll renders every kustomization and validates every object.
func TestRenderAll(t *testing.T) {
	rs := renderAll(t)
	if len(rs) < 8 {
		t.Fatalf("only %d kustomizations rendered", len(rs))
	}
	for _, r := range rs {
		t.Run(r.Name, func(t *testing.T) {
			if len(r.Objects) == 0 {
				t.Fatal("renders nothing")
			}
			seen := map[string]bool{}
			for _, o := range r.Objects {
				if seen[o.id()] {
					t.Errorf("%s twice", o.id())
				}
				seen[o.id()] = true
				if o.Namespace == "" && !clusterScoped[o.Kind] {
					t.Errorf("%s: no namespace", o.id())
				}
				for _, err := range validateObject(o) {
					t.Errorf("%s: %v", o.id(), err)
				}
			}
			for _, err := range checkConsistency(r) {
				t.Errorf("%v", err)
			}
		})
	}
}

// TestOverlayREADMEs: every overlay says what it is for.
func TestOverlayREADMEs(t *testing.T) {
	for _, o := range kustomizations(t, "overlays") {
		b, err := os.ReadFile(deployDir("overlays", o, "README.md"))
		if err != nil {
			t.Errorf("overlays/%s: %v", o, err)
			continue
		}
		if len(strings.TrimSpace(string(b))) < 200 {
			t.Errorf("overlays/%s/README.md is too short to explain the overlay", o)
		}
	}
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range kustomizations(t, "overlays") {
		if !strings.Contains(string(doc), "overlays/"+o) {
			t.Errorf("docs/deploy.md does not describe overlays/%s", o)
		}
	}
	for _, c := range kustomizations(t, "components") {
		if !strings.Contains(string(doc), "components/"+c) {
			t.Errorf("docs/deploy.md does not describe components/%s", c)
		}
	}
}

// remoteResources lists the resources of the kustomization in dir that
// kustomize would fetch from a repository (a URL), which nothing here may
// do: such kustomizations are rendered with the vendored copy instead.
func remoteResources(dir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		return nil, err
	}
	var out []string
	for _, r := range k.Resources {
		if strings.Contains(r, "://") {
			out = append(out, r)
		}
	}
	return out, nil
}
