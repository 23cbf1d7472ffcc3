// Package pages owns every HTML page the service shows a person: error pages
// of the check server (not authorized, login failed, provider unreachable)
// and the web server's after-logout and home pages. Templates are embedded
// html/template files, so every value is escaped for its context; a
// TEMPLATE_PATH folder may override any of them. Every page carries a
// Content-Security-Policy that allows only the page's own inline style (and
// THEMES_URL's stylesheet, and the one auto-submit script when configured),
// and forbids framing.
package pages

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

//go:embed templates
var files embed.FS

// Data is what a page shows. Every field is escaped by html/template.
type Data struct {
	Title   string
	Message string
	Reason  string
	// Details are lines listed under the message (what an administrator
	// can set, for a limit the user met).
	Details   []string
	Identity  string
	Link      string
	LinkText  string
	RequestID string
	// SignOutURL, on the after-logout page, offers the provider's own
	// sign-out (a POST form).
	SignOutURL   string
	ProviderName string
	AutoSubmit   bool
}

// Options configure the pages.
type Options struct {
	ClientName   string
	Theme        string            // "kubeflow" (embedded) or a folder under ThemesURL
	ThemesURL    string            // base of external themes
	TemplatePath string            // folder of overriding templates
	Context      map[string]string // TEMPLATE_CONTEXT_<KEY>, as .Context.KEY
}

// Pages renders the templates.
type Pages struct {
	opts     Options
	css      template.CSS
	themeCSS string
	csp      string
	cspAuto  string // with the auto-submit script allowed
	tmpl     map[string]*template.Template
}

// autoSubmitJS submits the provider sign-out form (PROVIDER_SIGN_OUT_MODE=auto).
const autoSubmitJS = `document.getElementById('provider-sign-out').submit();`

// New parses the templates once: the embedded ones, overridden file by file
// by TemplatePath.
func New(o Options) (*Pages, error) {
	if o.ClientName == "" {
		o.ClientName = "Kubeflow"
	}
	css, err := files.ReadFile("templates/style.css")
	if err != nil {
		return nil, err
	}
	p := &Pages{opts: o, css: template.CSS(css), tmpl: map[string]*template.Template{}}
	styleSrc := "'sha256-" + sum(css) + "'"
	if o.ThemesURL != "" && o.Theme != "" && o.Theme != "kubeflow" {
		p.themeCSS = strings.TrimSuffix(o.ThemesURL, "/") + "/" + url.PathEscape(o.Theme) + "/styles.css"
		if u, err := url.Parse(o.ThemesURL); err == nil {
			styleSrc += " " + u.Scheme + "://" + u.Host
		}
	}
	base := "default-src 'none'; style-src " + styleSrc + "; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
	p.csp = base + "; form-action 'self' https: http:"
	p.cspAuto = p.csp + "; script-src 'sha256-" + sum([]byte(autoSubmitJS)) + "'"
	for _, name := range []string{"error", "after_logout", "homepage"} {
		t := template.New(name)
		for _, f := range []string{"layout.html", name + ".html"} {
			src, err := read(o.TemplatePath, f)
			if err != nil {
				return nil, fmt.Errorf("template %s: %w", f, err)
			}
			if _, err := t.Parse(string(src)); err != nil {
				return nil, fmt.Errorf("template %s: %w", f, err)
			}
		}
		p.tmpl[name] = t
	}
	return p, nil
}

// read returns a template file from the override folder when it has it.
func read(dir, name string) ([]byte, error) {
	if dir != "" {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err == nil {
			return b, nil
		}
		if !os.IsNotExist(err) {
			return nil, err
		}
	}
	return fs.ReadFile(files, "templates/"+name)
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(s[:])
}

// SecurityHeaders sets the headers every page and error answer carries.
func (p *Pages) SecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", p.csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// Render writes page name with status.
func (p *Pages) Render(w http.ResponseWriter, status int, name string, d Data) {
	t, ok := p.tmpl[name]
	if !ok {
		t = p.tmpl["error"]
	}
	var buf bytes.Buffer
	err := t.ExecuteTemplate(&buf, "layout", struct {
		Data
		ClientName   string
		CSS          template.CSS
		ThemeCSS     string
		AutoSubmitJS template.JS
		Context      map[string]string
	}{d, p.opts.ClientName, p.css, p.themeCSS, template.JS(autoSubmitJS), p.opts.Context})
	if err != nil {
		// A broken override template: answer plainly rather than half a page.
		buf.Reset()
		buf.WriteString(template.HTMLEscapeString(d.Title + ": " + d.Message))
	}
	h := w.Header()
	p.SecurityHeaders(h)
	if d.AutoSubmit && d.SignOutURL != "" {
		h.Set("Content-Security-Policy", p.cspAuto)
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
