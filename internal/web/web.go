// Package web owns the server on WEB_SERVER_PORT: the pages a browser is
// sent to outside the login flow.
//
//	GET <prefix>site/after_logout   the after-logout page (default AFTER_LOGOUT_URL)
//	GET <prefix>site/homepage       the home page (default HOMEPAGE_URL)
//	GET /site/...                   the same, for gateways that strip the prefix
//	POST <prefix>oidc/backchannel-logout  OpenID Connect back-channel logout
//	GET /.well-known/openid-configuration, /.well-known/jwks.json
//	                                the issuer of upstream tokens (UPSTREAM_TOKEN=issued)
//
// Kubeflow routes <prefix> to this port; the check server lets <prefix>site/
// through without a session so these pages are reachable when signed out.
package web

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/oidc-authservice/oidc-authservice/internal/pages"
	"github.com/oidc-authservice/oidc-authservice/internal/upstreamtoken"
)

// Options configure the web server.
type Options struct {
	SitePrefix          string // <prefix>site/
	BackchannelPath     string
	Homepage            string // HOMEPAGE_URL
	ProviderSignOutURL  string
	ProviderSignOutMode string // button or auto
}

// Handler serves the pages.
type Handler struct {
	o           Options
	pages       *pages.Pages
	backchannel http.Handler
	issuer      *upstreamtoken.Issuer
}

// New builds the web Handler; backchannel serves back-channel logout; iss,
// when not nil, publishes the upstream token issuer's discovery and keys.
func New(o Options, p *pages.Pages, backchannel http.Handler, iss *upstreamtoken.Issuer) *Handler {
	return &Handler{o: o, pages: p, backchannel: backchannel, issuer: iss}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == h.o.BackchannelPath {
		h.backchannel.ServeHTTP(w, r)
		return
	}
	if h.issuer != nil {
		switch r.URL.Path {
		case "/.well-known/jwks.json":
			writeDoc(w, h.issuer.JWKS())
			return
		case "/.well-known/openid-configuration":
			writeDoc(w, h.issuer.Discovery())
			return
		}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	page := strings.TrimPrefix(r.URL.Path, h.o.SitePrefix)
	if page == r.URL.Path {
		page = strings.TrimPrefix(r.URL.Path, "/site/")
	}
	switch page {
	case "after_logout":
		d := pages.Data{
			Title:   "Signed out",
			Message: "Your session has ended on this site.",
			Link:    h.o.Homepage,
		}
		if r.URL.Query().Get("provider_logout") == "failed" {
			d.Reason = "The identity provider could not be reached to revoke your tokens. Your session here has ended; the provider's own session may still be active."
		}
		if h.o.ProviderSignOutURL != "" {
			d.SignOutURL = h.o.ProviderSignOutURL
			d.ProviderName = providerName(h.o.ProviderSignOutURL)
			d.AutoSubmit = h.o.ProviderSignOutMode == "auto"
		}
		h.pages.Render(w, http.StatusOK, "after_logout", d)
	case "homepage":
		h.pages.Render(w, http.StatusOK, "homepage", pages.Data{
			Title:   "Home",
			Message: "Sign in to continue.",
			Link:    "/",
		})
	default:
		h.pages.Render(w, http.StatusNotFound, "error", pages.Data{Title: "Not found", Message: "There is no such page.", Link: "/", LinkText: "Home"})
	}
}

// providerName is the host of the provider's sign-out URL, for the button.
func providerName(u string) string {
	if p, err := url.Parse(u); err == nil && p.Host != "" {
		return p.Host
	}
	return "your identity provider"
}

func writeDoc(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(b)
}
