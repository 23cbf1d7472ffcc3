package manifests

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The operator's auth/ folder of docs/kubeflow.md ("Your own secrets"): each
// auth/kustomization.yaml shown there, with the remote overlay read from
// this checkout, takes the place of the two lines its comment names in the
// example of every release that has them. The composition passes every
// check of TestKubeflowCompositions, both Secrets hold the operator's client
// secret, and no public default (Dex's client secret, a session key
// placeholder, the EKS issuer placeholders) is left.

const docClientSecret = "operator-client-secret" // shorter than a session key (internal/config TestNoPublishedKeyWorks)

// docBlock is one fenced block of a document.
type docBlock struct{ lang, text string }

func docBlocks(t *testing.T, doc string) []docBlock {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", doc))
	if err != nil {
		t.Fatal(err)
	}
	var out []docBlock
	for _, m := range regexp.MustCompile("(?ms)^```([a-z]*)\n(.*?)^```").FindAllStringSubmatch(string(b), -1) {
		out = append(out, docBlock{m[1], m[2]})
	}
	return out
}

var (
	remoteOverlay = regexp.MustCompile(`(?m)^- https://github\.com/oidc-authservice/oidc-authservice//deploy/overlays/([a-z0-9-]+)\?ref=v[0-9.]+$`)
	replacedLine  = regexp.MustCompile(`(?m)^#\s+- (\S+)$`)
	envsFiles     = regexp.MustCompile(`envs: \[([a-z.]+)\]`)
	publicValues  = []string{"pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok", "REPLACE-ME", "oidc.eks.AWS_REGION.amazonaws.com/id/CLUSTER_ID", "oidc.eks.region.amazonaws.com/id/1234abcd"}
)

func TestDocumentedOperatorKustomizations(t *testing.T) {
	blocks := docBlocks(t, "kubeflow.md")
	files := map[string]string{} // other files of auth/ shown in the document
	for _, b := range blocks {
		if name, ok := strings.CutPrefix(strings.SplitN(b.text, "\n", 2)[0], "# auth/"); ok && !strings.HasPrefix(name, "kustomization.yaml") {
			files[name] = b.text
		}
	}
	n := 0
	for _, b := range blocks {
		if !strings.HasPrefix(b.text, "# auth/kustomization.yaml") {
			continue
		}
		m := remoteOverlay.FindStringSubmatch(b.text)
		replaced := replacedLine.FindAllStringSubmatch(b.text, -1)
		if m == nil || len(replaced) != 2 {
			t.Errorf("docs/kubeflow.md: an auth/kustomization.yaml without the overlay's URL or the two lines it replaces:\n%s", b.text)
			continue
		}
		form, stock, dexLine := m[1], replaced[0][1], replaced[1][1]
		matched := 0
		for _, c := range composeAll(t) {
			if c.Form != form || c.Stock != stock {
				continue
			}
			matched++
			n++
			t.Run(c.name(), func(t *testing.T) {
				if c.Err != nil {
					t.Fatal(c.Err)
				}
				r := renderOperatorAuth(t, c, b.text, m[0], dexLine, files)
				cc := *c
				cc.Lines = cc.Changed // the count of the one-line swap is not this folder's concern
				for _, err := range checkComposition(t, &cc, r) {
					t.Error(err)
				}
				for _, err := range checkOwnSecrets(r) {
					t.Error(err)
				}
			})
		}
		if matched == 0 {
			t.Errorf("docs/kubeflow.md: no composition of %s replacing %s (test/manifests/compose_test.go)", form, stock)
		}
	}
	if n < 7 {
		t.Errorf("only %d compositions checked: docs/kubeflow.md shows fewer auth/ folders than expected", n)
	}
}

// renderOperatorAuth writes the auth/ folder beside the release's common/
// (a symbolic link), swaps it into the composition's example in place of
// the overlay's line and Dex's line, and renders the example.
func renderOperatorAuth(t *testing.T, c *composed, kustomization, remoteLine, dexLine string, files map[string]string) *rendering {
	t.Helper()
	exampleDir := filepath.Join(kubeflowData, c.Release, "example")
	root := t.TempDir()
	auth := filepath.Join(root, "auth")
	if err := os.Mkdir(auth, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(kubeflowData, c.Release, "common"), filepath.Join(root, "common")); err != nil {
		t.Fatal(err)
	}
	local, err := filepath.Rel(auth, deployDir("overlays", c.Form))
	if err != nil {
		t.Fatal(err)
	}
	k := strings.Replace(kustomization, remoteLine, "- "+filepath.ToSlash(local), 1)
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(auth, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("kustomization.yaml", k)
	for _, m := range envsFiles.FindAllStringSubmatch(k, -1) {
		switch m[1] {
		case "authservice.env":
			write(m[1], "CLIENT_SECRET="+docClientSecret+"\n")
		case "dex.env":
			write(m[1], "OIDC_CLIENT_SECRET="+docClientSecret+"\n")
		default:
			t.Fatalf("auth/kustomization.yaml reads %s, which the document does not describe", m[1])
		}
	}
	for name, content := range files {
		if strings.Contains(k, name) {
			write(name, content)
		}
	}
	overlayLine, _ := filepath.Rel(exampleDir, deployDir("overlays", c.Form))
	authLine, _ := filepath.Rel(exampleDir, auth)
	var lines []string
	swapped, dexRemoved := false, false
	for _, l := range c.Swapped {
		p, ok := resourceLine(l)
		switch {
		case ok && p == filepath.ToSlash(overlayLine):
			lines = append(lines, "- "+filepath.ToSlash(authLine))
			swapped = true
		case ok && p == dexLine:
			dexRemoved = true
		default:
			lines = append(lines, l)
		}
	}
	if !swapped || !dexRemoved {
		t.Fatalf("the example of %s has no line %s or %s to replace", c.name(), overlayLine, dexLine)
	}
	objs, err := renderExample(t, lines, exampleDir, nil)
	if err != nil {
		t.Fatalf("kustomize build with auth/: %v\n%s", err, k)
	}
	return &rendering{Name: c.name() + " with auth/", Objects: objs}
}

// checkOwnSecrets: the service's and Dex's Secrets hold the operator's
// values, and no object carries a public default.
func checkOwnSecrets(r *rendering) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	want := map[string]map[string]string{
		"oidc-authservice-client": {"CLIENT_SECRET": docClientSecret, "CLIENT_ID": "kubeflow-oidc-authservice"},
		"dex-oidc-client":         {"OIDC_CLIENT_SECRET": docClientSecret, "OIDC_CLIENT_ID": "kubeflow-oidc-authservice"},
	}
	for name, keys := range want {
		o := r.find("Secret", name)
		if o == nil {
			bad("no Secret %s", name)
			continue
		}
		data := typed[corev1.Secret](o).Data
		for k, v := range keys {
			if string(data[k]) != v {
				bad("Secret %s: %s = %q, want the operator's %q", o.id(), k, data[k], v)
			}
		}
	}
	for _, o := range r.Objects {
		for _, p := range publicValues {
			if strings.Contains(string(o.JSON), p) || strings.Contains(string(o.JSON), base64.StdEncoding.EncodeToString([]byte(p))) {
				bad("%s still carries the public %q", o.id(), p)
			}
		}
	}
	return errs
}
