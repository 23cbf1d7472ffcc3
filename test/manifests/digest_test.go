package manifests

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// TestDigestPinningAsDocumented: the kustomization docs/deploy.md gives for
// pinning the image by digest, rendered as an operator would (the overlay
// from this checkout instead of the pinned URL), runs the image by digest
// and nothing by tag.
func TestDigestPinningAsDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "### Pinning the image by digest")
	if i < 0 {
		t.Fatal("docs/deploy.md has no section \"Pinning the image by digest\"")
	}
	block := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindStringSubmatch(doc[i:])
	if block == nil {
		t.Fatal("the section has no yaml example")
	}
	remote := regexp.MustCompile(`https://github.com/oidc-authservice/oidc-authservice//(deploy/overlays/[a-z0-9-]+)\?ref=v[0-9.]+`)
	m := remote.FindStringSubmatch(block[1])
	if m == nil || !strings.Contains(block[1], "<the sha256:… digest of IMAGE>") {
		t.Fatalf("the example names no pinned overlay or no digest placeholder:\n%s", block[1])
	}
	dir := t.TempDir()
	overlay, _ := filepath.Rel(dir, filepath.Join(repoRoot, m[1]))
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	k := strings.Replace(remote.ReplaceAllString(block[1], overlay), "<the sha256:… digest of IMAGE>", digest, 1)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	objs, err := kustomize(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, o := range objs {
		if o.Kind != "Deployment" {
			continue
		}
		for _, c := range typed[appsv1.Deployment](o).Spec.Template.Spec.Containers {
			if strings.HasPrefix(c.Image, "ghcr.io/oidc-authservice/oidc-authservice") {
				n++
				if c.Image != "ghcr.io/oidc-authservice/oidc-authservice@"+digest {
					t.Errorf("%s runs %s, want the image by digest", o.id(), c.Image)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("the example renders no container of the service")
	}
}
