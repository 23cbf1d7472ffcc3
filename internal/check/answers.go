package check

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/oidc-authservice/oidc-authservice/internal/pages"
)

// User-facing texts are generic on purpose; the detail goes to the log.
const (
	msgLoginRequired  = "login required"
	msgNotAuthorized  = "You are signed in, but not allowed to use this service."
	msgLoginFailed    = "The login could not be completed."
	msgStateInvalid   = "This login link has expired or has already been used."
	msgProviderDown   = "The identity provider cannot be reached right now. Please try again in a moment."
	msgProviderError  = "The identity provider refused the login."
	msgClaimsUnusable = "Your account's identity cannot be used here."
	msgConfirmLogout  = "Another site asked to sign you out. Sign out only if you meant to."
)

var (
	wwwAuthenticate = []string{`Bearer realm="oidc-authservice"`}
	noStore         = []string{"no-store"}
	jsonType        = []string{"application/json"}
)

// unauthenticated answers a non-browser request without a session.
func (h *Handler) unauthenticated(w http.ResponseWriter) {
	w.Header()["Www-Authenticate"] = wwwAuthenticate
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthenticated", "message": msgLoginRequired})
}

// forbidden answers an authenticated user whom the policy refuses: a page
// for browsers, JSON for the rest. Both name the identity and the reason.
func (h *Handler) forbidden(w http.ResponseWriter, r *http.Request, who, why string) {
	if h.browserNavigation(r) {
		h.Pages.Render(w, http.StatusForbidden, "error", pages.Data{
			Title: "Access denied", Message: msgNotAuthorized, Identity: who, Reason: why,
			Link: h.cfg.AfterLogoutURL, LinkText: "Sign in as someone else", RequestID: requestIDOf(r),
		})
		return
	}
	writeJSON(w, http.StatusForbidden, map[string]string{"error": "forbidden", "user": who, "reason": why})
}

// failPage answers a browser-facing failure of the login flow.
func (h *Handler) failPage(w http.ResponseWriter, r *http.Request, status int, title, msg, retry string) {
	if !h.browserNavigation(r) {
		writeJSON(w, status, map[string]string{"error": http.StatusText(status), "message": msg})
		return
	}
	d := pages.Data{Title: title, Message: msg, RequestID: requestIDOf(r)}
	if retry != "" {
		d.Link, d.LinkText = retry, "Try again"
	}
	h.Pages.Render(w, status, "error", d)
}

// writeJSON writes v, which json.Marshal escapes (<, > and & included).
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	hd := w.Header()
	hd["Content-Type"] = jsonType
	hd["Cache-Control"] = noStore
	hd["X-Content-Type-Options"] = []string{"nosniff"}
	hd["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	w.Write(b)
}
