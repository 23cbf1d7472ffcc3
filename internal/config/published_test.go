package config

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// published are the keys this repository has published, in plaintext, with
// the digest publishedKeys must hold for each (every encoding of the key
// maps to the same digest).
var published = []string{
	"REPLACE-ME-with-the-output-of-openssl-rand-base64-32",
	"local-development-key-do-not-use-in-production",
	"<two or more base64 secrets for rotation>",
	"7d16fee92f8d11b8940b081b3f8b8acb",
	"pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok",
	"integration-test-session-key-0123456789abcdef",
	"kube-test-session-key-0123456789abcdef0123",
	"loadbench-session-key-0123456789abcdefghij",
	"replica-key-old-0123456789abcdefghijklmnop",
	"replica-key-new-0123456789abcdefghijklmnop",
	"soak-key-old-0123456789abcdefghijklmnopqrst",
	"soak-key-new-0123456789abcdefghijklmnopqrst",
	"another-deployment-session-key-0123456789abcdef",
}

func TestPublishedKeysAreRefused(t *testing.T) {
	for _, k := range published {
		t.Run(k, func(t *testing.T) {
			env := setenv(t, map[string]string{"SESSION_KEYS": k})
			_, err := Load(FromMap(env))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "SESSION_KEYS: key 1 is published") {
				t.Fatalf("SESSION_KEYS=%s: err = %v, want the key refused as published", k, err)
			}
			for _, want := range []string{"openssl rand -base64 32", "leave SESSION_KEYS unset"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the refusal does not say what to do (%q):\n%v", want, err)
				}
			}
			if strings.Contains(err.Error(), k) {
				t.Errorf("the refusal repeats the key:\n%v", err)
			}
			// Beside a good key, in a file, in another encoding: refused all the same.
			good := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7, 1, 3}, 11))
			file := filepath.Join(t.TempDir(), "keys")
			os.WriteFile(file, []byte(good+"\n"+k+"\n"), 0o600)
			env = setenv(t, map[string]string{"SESSION_KEYS_FILE": file})
			if _, err := Load(FromMap(env)); err == nil || !strings.Contains(err.Error(), "SESSION_KEYS_FILE: key 2 is published") {
				t.Errorf("SESSION_KEYS_FILE with it second: err = %v", err)
			}
			if b, err := ParseSecret(k); err == nil {
				for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawURLEncoding} {
					if Published(enc.EncodeToString(b)) == "" {
						t.Errorf("the same key in another encoding is accepted")
					}
				}
			}
		})
	}
}

func TestPublishedKeyDigestsAreExplained(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range published {
		b, err := ParseSecret(k)
		if err != nil {
			continue // refused anyway
		}
		sum := sha256.Sum256(b)
		seen[hex.EncodeToString(sum[:])] = true
	}
	for d := range publishedKeys {
		if !seen[d] {
			t.Errorf("publishedKeys holds %s, which no key of published (this test) gives", d)
		}
	}
}

func TestOwnKeysAccepted(t *testing.T) {
	// What `openssl rand -base64 32` prints, and long passphrases that
	// are nobody's placeholder, pass.
	b := make([]byte, 32)
	rand.Read(b)
	for _, k := range []string{base64.StdEncoding.EncodeToString(b), "correct-horse-battery-staple-" + hex.EncodeToString(b[:8])} {
		if why := Published(k); why != "" {
			t.Errorf("%q refused: %s", k, why)
		}
	}
}

func TestPublishedClientSecretWarns(t *testing.T) {
	env := setenv(t, map[string]string{"CLIENT_SECRET": "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok"})
	s, err := Load(FromMap(env))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "CLIENT_SECRET is published") || !strings.Contains(s.Warnings[0], "dex-oidc-client") {
		t.Fatalf("warnings %q", s.Warnings)
	}
	if strings.Contains(s.Warnings[0], "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok") {
		t.Fatal("the warning repeats the secret")
	}
	env = setenv(t, map[string]string{"CLIENT_SECRET": "REPLACE-ME-gitlab-application-secret"})
	if s, _ := Load(FromMap(env)); s == nil || len(s.Warnings) != 1 {
		t.Fatalf("the GitLab placeholder: no warning")
	}
	own := make([]byte, 24)
	rand.Read(own)
	env = setenv(t, map[string]string{"CLIENT_SECRET": hex.EncodeToString(own)})
	if s, _ := Load(FromMap(env)); s == nil || len(s.Warnings) != 0 {
		t.Fatalf("an own secret: warnings %q", s.Warnings)
	}
}

func TestKeySecretName(t *testing.T) {
	for name, ok := range map[string]bool{"authservice-session-keys": true, "a.b-c": true, "": true,
		"Upper": false, "-x": false, "a/b": false, strings.Repeat("a", 64): false} {
		env := setenv(t, nil)
		env["SESSION_KEYS_SECRET"] = name
		s, err := Load(FromMap(env))
		if (err == nil) != ok {
			t.Errorf("SESSION_KEYS_SECRET=%q: err = %v", name, err)
		} else if ok && s.Sessions.KeySecret != name {
			t.Errorf("SESSION_KEYS_SECRET=%q: %q", name, s.Sessions.KeySecret)
		}
	}
	s, err := Load(FromMap(setenv(t, nil)))
	if err != nil || s.Sessions.KeySecret != "authservice-session-keys" {
		t.Fatalf("default: %v %q", err, s.Sessions.KeySecret)
	}
}

// Where a key can be written down in this repository, and what of it is
// the key (group 1; several keys separated by commas).
var (
	// SESSION_KEYS=..., SESSION_KEYS: ..., "SESSION_KEYS": "...",
	// ${SESSION_KEYS:-...}.
	sessionKeysValue = regexp.MustCompile(`SESSION_KEYS["'` + "`" + `]?\s*[:=]\s*(?:\$\{SESSION_KEYS:-([^}]*)\}|"([^"]*)"|'([^']*)'|(<[^>\n]*>)|([^\s"'` + "`" + `]+))`)
	// In code: a literal of 32 bytes or more given to a name, a field or a
	// map key with "key" or "secret" in it (sessionKey = "...",
	// a, bKey := "...", "...", ClientSecret: "...", "CLIENT_SECRET": "...").
	keyLiteral = regexp.MustCompile(`(?i)(?:\b\w*(?:key|secret)\w*(?:\s*,\s*\w+)*\s*:?=|\b\w*(?:key|secret)\w*:|"[\w.-]*(?:key|secret)[\w.-]*"\s*:)\s*((?:"[^"\n]{32,}"\s*,?\s*)+)`)
	literal    = regexp.MustCompile(`"([^"\n]{32,})"`)
	// In files people copy from: NAME_SECRET=value, cookie-secret=value.
	secretAssignment = regexp.MustCompile(`(?i)[\w-]*(?:secret|key)s?[=:]\s*([^\s"'#,]{32,})`)
	// In the documentation and manifests: base64 of 32 bytes or more
	// (what openssl rand -base64 32 prints), not a hash ($2y$...) or a path.
	base64Blob = regexp.MustCompile(`(?:^|[^A-Za-z0-9+/$])([A-Za-z0-9+/]{42,}={0,2})(?:[^A-Za-z0-9+/=]|$)`)
)

type candidate struct {
	where, key string
}

// candidates lists the key-looking values of one file.
func candidates(path string, data []byte) []candidate {
	var out []candidate
	goFile := strings.HasSuffix(path, ".go")
	docs := strings.HasSuffix(path, ".md") || strings.HasSuffix(path, ".env") || strings.HasSuffix(path, ".yaml") ||
		strings.HasSuffix(path, ".yml") || strings.HasSuffix(path, ".sh") || strings.HasSuffix(path, ".json")
	for i, line := range strings.Split(string(data), "\n") {
		where := path + ":" + strconv.Itoa(i+1)
		seen := map[string]bool{}
		add := func(v string) {
			for _, k := range strings.Split(v, ",") {
				if k = strings.TrimSpace(k); k != "" && !strings.HasPrefix(k, "$") && !seen[k] {
					seen[k] = true
					out = append(out, candidate{where, k})
				}
			}
		}
		for _, m := range sessionKeysValue.FindAllStringSubmatchIndex(line, -1) {
			for g := 1; g < len(m)/2; g++ {
				if m[2*g] < 0 {
					continue
				}
				// In Go, SESSION_KEYS= is inside a literal ("SESSION_KEYS=abc")
				// whose tail is the value; anything else unquoted is a name
				// ("SESSION_KEYS": keys).
				if goFile {
					inLiteral := strings.HasPrefix(line[m[0]:], "SESSION_KEYS=")
					if inLiteral != (g == 5) || (g == 5 && (m[2*g+1] >= len(line) || line[m[2*g+1]] != '"')) {
						continue
					}
				}
				add(line[m[2*g]:m[2*g+1]])
			}
		}
		for _, m := range keyLiteral.FindAllStringSubmatch(line, -1) {
			for _, l := range literal.FindAllStringSubmatch(m[1], -1) {
				if v := l[1]; !strings.HasPrefix(v, "/") && !strings.Contains(v, "://") {
					add(v) // not a path or a URL
				}
			}
		}
		if docs {
			for _, m := range secretAssignment.FindAllStringSubmatch(line, -1) {
				add(m[1])
			}
			if !strings.HasSuffix(path, ".json") {
				for _, m := range base64Blob.FindAllStringSubmatchIndex(line, -1) {
					b, before := line[m[2]:m[3]], line[:m[2]]
					if looksRandom(b) && !strings.HasSuffix(before, "h1:") && !strings.HasSuffix(before, "sha256-") && !strings.HasSuffix(before, "sha512-") {
						add(b)
					}
				}
			}
		}
	}
	return out
}

// looksRandom: base64 that decodes to 32 bytes or more and mixes digits,
// upper and lower case, as random bytes do (words do not), and is not a
// path.
func looksRandom(b string) bool {
	if strings.HasPrefix(b, "/") && strings.Count(b, "/") >= 3 {
		return false // a path (random base64 rarely has three slashes)
	}
	var digit, upper, lower bool
	for _, r := range b {
		digit = digit || (r >= '0' && r <= '9')
		upper = upper || (r >= 'A' && r <= 'Z')
		lower = lower || (r >= 'a' && r <= 'z')
	}
	if !digit || !upper || !lower {
		return false
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding} {
		if d, err := enc.DecodeString(b); err == nil && len(d) >= 32 {
			return true
		}
	}
	return false
}

// TestCandidates: the scan finds keys in each form they are written in.
func TestCandidates(t *testing.T) {
	var random string
	for !looksRandom(random) { // almost always the first draw
		b := make([]byte, 32)
		rand.Read(b)
		random = base64.StdEncoding.EncodeToString(b)
	}
	cases := map[string]struct{ path, text, want string }{
		"env":           {"a.env", "SESSION_KEYS=abc,def\n", "abc def"},
		"shell default": {"run.sh", "export SESSION_KEYS=${SESSION_KEYS:-dev-key}\n", "dev-key"},
		"yaml":          {"x.yaml", "  SESSION_KEYS: \"q\"\n", "q"},
		"kustomize":     {"k.md", "  - SESSION_KEYS=<openssl rand -base64 32>\n", "<openssl rand -base64 32>"},
		"json":          {"e.json", `  "SESSION_KEYS": "REPLACE-ME",`, "REPLACE-ME"},
		"go map":        {"x_test.go", `	"SESSION_KEYS": "kube-test-session-key-0123456789abcdef0123",`, "kube-test-session-key-0123456789abcdef0123"},
		"go const":      {"x.go", `const SessionKey = "integration-test-session-key-0123456789abcdef"`, "integration-test-session-key-0123456789abcdef"},
		"go pair": {"x_test.go", `	const oldKey, newKey = "replica-key-old-0123456789abcdefghijklmnop", "replica-key-new-0123456789abcdefghijklmnop"`,
			"replica-key-old-0123456789abcdefghijklmnop replica-key-new-0123456789abcdefghijklmnop"},
		"kustomize literal": {"k.yaml", "  - cookie-secret=7d16fee92f8d11b8940b081b3f8b8acb\n", "7d16fee92f8d11b8940b081b3f8b8acb"},
		"base64 in docs":    {"d.md", "set it to `" + random + "` and", random},
		"a variable":        {"x.go", `"SESSION_KEYS": keys,`, ""},
		"a path":            {"p.yaml", "- ../../applications/centraldashboard/overlays/oauth2-proxy\n", ""},
		"a JSON pointer":    {"k.yaml", "      path: /spec/ingress/0/from/0/namespaceSelector/matchLabels/kubernetes.io~1metadata.name\n", ""},
		"a Go module sum":   {"R.md", "module sum `h1:5Yb5ihcz4YQsCkciusK7DnFpBMwRB6EFWeUKH1Atuyk=`", ""},
		"a file variable":   {"x_test.go", `		"UPSTREAM_TOKEN_KEYS_FILE": "/etc/oidc-authservice/upstream-token/keys.pem",`, ""},
		"a string literal":  {"x.go", `"SESSION_KEYS=abcdef", "X=1"`, "abcdef"},
		"a call":            {"x.go", `{"SESSION_KEYS": base64.StdEncoding.EncodeToString([]byte("x"))}`, ""},
		"a kind and a type": {"x.go", `secret{Kind: "Secret", Type: "kubernetes.io/service-account-token"}`, ""},
		"a struct field":    {"x.go", `Options{ClientSecret: "REPLACE-ME-client-secret-0123456789abcdef"}`, "REPLACE-ME-client-secret-0123456789abcdef"},
		"an empty tail":     {"x.go", `"SESSION_KEYS=" + key, "SERVER_PORT=1"`, ""},
		"a bcrypt hash":     {"p.yaml", "hash: $2y$12$4K/VkmDd1q1Orb3xAt82zu8gk7Ad6ReFR4LCP9UeYE90NLiN9Df72\n", ""},
	}
	for name, c := range cases {
		var got []string
		for _, k := range candidates(c.path, []byte(c.text)) {
			got = append(got, k.key)
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("%s: found %q, want %q", name, got, c.want)
		}
	}
}

// trackedFiles lists the repository's files: git ls-files, or a walk
// without what .gitignore names when there is no git.
func trackedFiles(t *testing.T, root string) []string {
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil && len(out) > 0 {
		return strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	}
	var files []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			switch rel {
			case ".git", "bin", "node_modules", "dist", filepath.Join("test", "artifacts"):
				return filepath.SkipDir
			}
			if d.Name() == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		files = append(files, rel)
		return nil
	})
	return files
}

// TestNoPublishedKeyWorks scans every file of the repository for session
// keys and key-looking values — SESSION_KEYS in any form, literals given to
// a key or secret in code, NAME_SECRET= lines, base64 blobs in documents —
// and fails on any the service would accept as a session key.
func TestNoPublishedKeyWorks(t *testing.T) {
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	files := trackedFiles(t, root)
	if len(files) < 100 {
		t.Fatalf("found %d files under %s: not the repository", len(files), root)
	}
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "go.sum") || strings.HasSuffix(f, "package-lock.json") {
			continue // checksums
		}
		if strings.HasPrefix(filepath.ToSlash(f), "test/istio/testdata/envoy/") {
			continue // Istio's translation of test/istio/testdata/input, scanned itself ("key": a metadata key's name)
		}
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil || bytes.IndexByte(data[:min(len(data), 8000)], 0) >= 0 {
			continue // gone, or binary
		}
		for _, c := range candidates(filepath.ToSlash(f), data) {
			n++
			if testing.Verbose() {
				t.Logf("%s: %q", c.where, c.key)
			}
			if Published(c.key) != "" {
				continue
			}
			if _, err := ParseSecret(c.key); err == nil {
				t.Errorf("%s: %q would work as a session key: add it to publishedKeys (and published in this test), or remove it", c.where, c.key)
			}
		}
	}
	if n < 20 {
		t.Fatalf("only %d candidates in %d files: the scan is broken", n, len(files))
	}
	t.Logf("%d key-looking values in %d files, none accepted", n, len(files))
}
