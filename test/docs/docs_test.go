// Package docs checks that what README.md, docs/ and `make help` say about
// the repository matches the repository: every make target is listed by
// `make help`, every relative link (and its anchor) resolves, and the
// README's documentation index names every document of docs/ once.
package docs

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"
)

var root = func() string {
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return abs
}()

// makefileTargets are the rules of the Makefile (not variables, not
// special targets such as .PHONY).
func makefileTargets(t *testing.T) []string {
	b, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	rule := regexp.MustCompile(`^([A-Za-z0-9_./-]+):([^=]|$)`)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if m := rule.FindStringSubmatch(line); m != nil && !strings.HasPrefix(m[1], ".") {
			out = append(out, m[1])
		}
	}
	sort.Strings(out)
	return out
}

func TestMakeHelpListsEveryTarget(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("SKIPPED: no make here")
	}
	cmd := exec.Command("make", "-s", "help")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make help: %v\n%s", err, out)
	}
	ansi := regexp.MustCompile("\x1b\\[[0-9;]*m")
	listed := map[string]string{}
	for _, line := range strings.Split(ansi.ReplaceAllString(string(out), ""), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			listed[f[0]] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), f[0]))
		}
	}
	targets := makefileTargets(t)
	if len(targets) < 10 {
		t.Fatalf("found only %v in the Makefile", targets)
	}
	for _, target := range targets {
		if desc, ok := listed[target]; !ok || desc == "" {
			t.Errorf("make help does not list %q with what it does (give its rule a \"## description\")", target)
		}
		delete(listed, target)
	}
	for name := range listed {
		t.Errorf("make help lists %q, which is no target of the Makefile", name)
	}
}

// documents are the Markdown files whose links are checked.
func documents(t *testing.T) []string {
	files := []string{filepath.Join(root, "README.md"), filepath.Join(root, "CHANGELOG.md")}
	for _, pattern := range []string{"docs/*.md", "deploy/*/*/README.md", "deploy/*/README.md", "test/*/README.md"} {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	return files
}

var (
	link     = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	fence    = regexp.MustCompile("(?s)```.*?```")
	inline   = regexp.MustCompile("`[^`\n]*`")
	heading  = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*#*\s*$`)
	htmlAnch = regexp.MustCompile(`<a (?:id|name)="([^"]+)"`)
)

// anchors are the fragments GitHub gives a Markdown file's headings.
func anchors(b []byte) map[string]bool {
	out := map[string]bool{}
	text := fence.ReplaceAllString(string(b), "")
	for _, m := range heading.FindAllStringSubmatch(text, -1) {
		h := strings.ToLower(m[1])
		h = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`).ReplaceAllString(h, "$1")
		var s strings.Builder
		for _, r := range h {
			switch {
			case r == ' ':
				s.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				s.WriteRune(r)
			}
		}
		slug := s.String()
		for i := 0; ; i++ { // repeated headings get -1, -2, ...
			a := slug
			if i > 0 {
				a += "-" + string(rune('0'+i))
			}
			if !out[a] {
				out[a] = true
				break
			}
		}
	}
	for _, m := range htmlAnch.FindAllStringSubmatch(text, -1) {
		out[m[1]] = true
	}
	return out
}

func TestRelativeLinksResolve(t *testing.T) {
	for _, doc := range documents(t) {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, doc)
		text := inline.ReplaceAllString(fence.ReplaceAllString(string(b), ""), "")
		for _, m := range link.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, frag, _ := strings.Cut(target, "#")
			path := doc
			if file != "" {
				path = filepath.Join(filepath.Dir(doc), file)
				if _, err := os.Stat(path); err != nil {
					t.Errorf("%s links %s, which does not exist", rel, target)
					continue
				}
			}
			if frag != "" && strings.HasSuffix(path, ".md") {
				tb, _ := os.ReadFile(path)
				if !anchors(tb)[frag] {
					t.Errorf("%s links %s: no heading of %s has the anchor #%s", rel, target, filepath.Base(path), frag)
				}
			}
		}
	}
}

// The README's documentation index names each document of docs/ once.
func TestReadmeIndexesEveryDocumentOnce(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, index, ok := strings.Cut(string(b), "\n## Documentation\n")
	if !ok {
		t.Fatal("README.md has no \"## Documentation\" section")
	}
	index, _, _ = strings.Cut(index, "\n## ")
	seen := map[string]int{}
	for _, line := range strings.Split(index, "\n") {
		if m := link.FindStringSubmatch(line); m != nil && strings.HasPrefix(line, "- ") {
			seen[m[1]]++
		}
	}
	docs, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	for _, d := range docs {
		name := "docs/" + filepath.Base(d)
		if seen[name] == 0 {
			t.Errorf("README.md's documentation index does not list %s", name)
		}
	}
	for name, n := range seen {
		if n > 1 {
			t.Errorf("README.md's documentation index lists %s %d times", name, n)
		}
	}
}
