// Package pages owns every HTML page the service shows a person: error pages
// of the check server (not authorized, login failed, provider unreachable)
// and the web server's after-logout and home pages. Templates are embedded
// html/template files, so every value is escaped for its context, and every
// page carries a Content-Security-Policy that allows nothing but the page's
// own inline style, and forbids framing.
package pages

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
)

//go:embed templates
var files embed.FS

// Data is what a page shows. Every field is escaped by html/template.
type Data struct {
	Title     string
	Message   string
	Reason    string
	Identity  string
	Link      string
	LinkText  string
	RequestID string
}

// Pages renders the templates.
type Pages struct {
	clientName string
	css        template.CSS
	csp        string
	tmpl       map[string]*template.Template
}

// New parses the embedded templates once.
func New(clientName string) (*Pages, error) {
	css, err := files.ReadFile("templates/style.css")
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(css)
	p := &Pages{
		clientName: clientName,
		css:        template.CSS(css),
		csp: "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
			"'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
		tmpl: map[string]*template.Template{},
	}
	for _, name := range []string{"error", "after_logout", "homepage"} {
		t, err := template.New(name).ParseFS(files, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		p.tmpl[name] = t
	}
	return p, nil
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
		name, t = "error", p.tmpl["error"]
	}
	var buf bytes.Buffer
	err := t.ExecuteTemplate(&buf, "layout", struct {
		Data
		ClientName string
		CSS        template.CSS
	}{d, p.clientName, p.css})
	if err != nil {
		// Templates are fixed at build time; this cannot happen with the
		// embedded ones. Answer plainly rather than half a page.
		buf.Reset()
		buf.WriteString(template.HTMLEscapeString(d.Title))
	}
	h := w.Header()
	p.SecurityHeaders(h)
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
