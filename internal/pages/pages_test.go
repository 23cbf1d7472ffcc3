package pages

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRenderEscapesAndProtects(t *testing.T) {
	p, err := New(Options{ClientName: "Kubeflow"})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	p.Render(w, 403, "error", Data{Title: "Access denied", Identity: `<script>alert(1)</script>`, Reason: `"><img src=x>`})
	body := w.Body.String()
	if strings.Contains(body, "<script>alert") || strings.Contains(body, `"><img`) {
		t.Fatalf("unescaped input: %s", body)
	}
	csp := w.Header().Get("Content-Security-Policy")
	if w.Code != 403 || !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "script-src") {
		t.Fatalf("status %d CSP %q", w.Code, csp)
	}
	if w.Header().Get("X-Frame-Options") != "DENY" || w.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Fatal("frame/nosniff headers missing")
	}
}

func TestAfterLogoutSignOut(t *testing.T) {
	p, _ := New(Options{})
	for _, auto := range []bool{false, true} {
		w := httptest.NewRecorder()
		p.Render(w, 200, "after_logout", Data{SignOutURL: "https://gitlab.example.com/users/sign_out", ProviderName: "gitlab.example.com", AutoSubmit: auto, Link: "/"})
		body, csp := w.Body.String(), w.Header().Get("Content-Security-Policy")
		if !strings.Contains(body, `action="https://gitlab.example.com/users/sign_out"`) || !strings.Contains(body, `method="post"`) {
			t.Fatalf("no sign-out form: %s", body)
		}
		if auto != strings.Contains(body, "<script>") || auto != strings.Contains(csp, "script-src 'sha256-") {
			t.Fatalf("auto=%v: script %v csp %q", auto, strings.Contains(body, "<script>"), csp)
		}
	}
}

func TestTemplateOverrideAndContext(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "homepage.html"), []byte(`{{define "content"}}<p id="custom">{{.Context.SUPPORT}}</p>{{end}}`), 0o644)
	p, err := New(Options{TemplatePath: dir, Context: map[string]string{"SUPPORT": "help@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	p.Render(w, 200, "homepage", Data{})
	if !strings.Contains(w.Body.String(), `<p id="custom">help@example.com</p>`) {
		t.Fatalf("override not used: %s", w.Body)
	}
	os.WriteFile(filepath.Join(dir, "error.html"), []byte(`{{define "content"}}{{.Nope}`), 0o644)
	if _, err := New(Options{TemplatePath: dir}); err == nil {
		t.Fatal("a broken override template was accepted")
	}
}

func TestExternalTheme(t *testing.T) {
	p, _ := New(Options{Theme: "dark", ThemesURL: "https://themes.example.com/kf"})
	w := httptest.NewRecorder()
	p.Render(w, 200, "homepage", Data{})
	if !strings.Contains(w.Body.String(), `href="https://themes.example.com/kf/dark/styles.css"`) ||
		!strings.Contains(w.Header().Get("Content-Security-Policy"), "https://themes.example.com") {
		t.Fatalf("theme: %s %s", w.Body, w.Header().Get("Content-Security-Policy"))
	}
}
