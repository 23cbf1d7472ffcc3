package peer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The forward-auth recipes are read from docs/forward-auth.md, so that the
// tests run what operators copy: StartNginx and StartCaddy put the page's
// blocks, with the placeholder addresses replaced, into a configuration of
// their own (listen address, a route to Dex).

// recipe is the first fenced block of docs/forward-auth.md in lang.
func recipe(t testing.TB, lang string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "docs", "forward-auth.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n```"+lang+"\n")
	if !ok {
		t.Fatalf("docs/forward-auth.md has no %s block", lang)
	}
	text, _, ok := strings.Cut(rest, "\n```")
	if !ok {
		t.Fatalf("docs/forward-auth.md: the %s block does not end", lang)
	}
	return text
}

// block is the body of the block of text whose first line is header (it
// ends in "{"), up to the matching "}".
func block(t testing.TB, text, header string) string {
	t.Helper()
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != header {
			continue
		}
		depth := 1
		for j := i + 1; j < len(lines); j++ {
			depth += strings.Count(lines[j], "{") - strings.Count(lines[j], "}")
			if depth == 0 {
				return strings.Join(lines[i+1:j], "\n")
			}
		}
	}
	t.Fatalf("docs/forward-auth.md: no block %q", header)
	return ""
}

// ingressNginxResponseHeaders is the auth-response-headers annotation of
// docs/forward-auth.md's ingress-nginx recipe.
func ingressNginxResponseHeaders(t testing.TB) []string {
	t.Helper()
	v, ok := ingressNginxAnnotation(t, "auth-response-headers")
	if !ok {
		t.Fatalf("docs/forward-auth.md: no auth-response-headers annotation")
	}
	return strings.Split(v, ",")
}

// ingressNginxAnnotation is the value of the annotation
// nginx.ingress.kubernetes.io/<name> of docs/forward-auth.md's ingress-nginx
// recipe, and whether it has one.
func ingressNginxAnnotation(t testing.TB, name string) (string, bool) {
	t.Helper()
	annotation := "nginx.ingress.kubernetes.io/" + name + ":"
	for _, l := range strings.Split(recipe(t, "yaml"), "\n") {
		if _, v, ok := strings.Cut(l, annotation); ok {
			return strings.Trim(strings.TrimSpace(v), `"`), true
		}
	}
	return "", false
}

// ingressNginxSetCookie is what ingress-nginx's template writes into the
// application's location for every auth-url
// (rootfs/etc/nginx/template/nginx.tmpl): the verify answer's Set-Cookie
// added to the response, on every status with auth-always-set-cookie.
func ingressNginxSetCookie(t testing.TB) string {
	always := ""
	if v, _ := ingressNginxAnnotation(t, "auth-always-set-cookie"); v == "true" {
		always = " always"
	}
	return "\t\t\tauth_request_set $auth_cookie $upstream_http_set_cookie;\n\t\t\tadd_header Set-Cookie $auth_cookie" + always + ";\n"
}

// ingressNginxAuthLines are the lines ingress-nginx's template writes into
// the application's location for auth-response-headers
// (internal/ingress/controller/template/template.go, buildAuthResponseHeaders):
// each header read from the answer and set with proxy_set_header, which
// passes nothing when the value is empty.
func ingressNginxAuthLines(headers []string) string {
	var b strings.Builder
	for i, h := range headers {
		fmt.Fprintf(&b, "\t\t\tauth_request_set $authHeader%d $upstream_http_%s;\n", i, strings.ReplaceAll(strings.ToLower(h), "-", "_"))
		fmt.Fprintf(&b, "\t\t\tproxy_set_header '%s' $authHeader%d;\n", h, i)
	}
	return b.String()
}
