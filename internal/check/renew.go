package check

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// maxRenewRedirects bounds the renewal redirects answered per renewed
// session and replica, so a client that ignores Set-Cookie and keeps sending
// the old cookie is redirected a few times, then allowed.
const maxRenewRedirects = 3

// tokenDeadline is when the session's provider tokens must have been
// renewed: the access token's expiry or, when the ID token is handed to the
// upstream (UPSTREAM_TOKEN=id_token, where Istio's RequestAuthentication
// checks it), the ID token's when that comes first. 0: nothing expires.
func (h *Handler) tokenDeadline(s *session.Session) int64 {
	d := s.TokenExpiry
	if h.cfg.UpstreamToken == "id_token" && s.IDToken != "" && s.IDTokenExpiry > 0 && (d == 0 || s.IDTokenExpiry < d) {
		d = s.IDTokenExpiry
	}
	return d
}

// idTokenExpired reports whether the session would hand an expired ID token
// upstream: the gateway would refuse the request, so the session is over.
func (h *Handler) idTokenExpired(s *session.Session, now int64) bool {
	return h.cfg.UpstreamToken == "id_token" && s.IDToken != "" && s.IDTokenExpiry > 0 && now >= s.IDTokenExpiry
}

// jwtExpiry reads the exp claim of a JWT the provider package has already
// verified (the refreshed ID token); 0 when it has none.
func jwtExpiry(raw string) int64 {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return 0
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return 0
	}
	var c struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(b, &c) != nil {
		return 0
	}
	n, err := c.Exp.Float64()
	if err != nil {
		return 0
	}
	return int64(n)
}

// renewRedirect answers a GET or HEAD whose session cookie was just renewed
// with a 307 to the same URL, when SESSION_RENEW_REDIRECT is on: gateways
// that pass no Set-Cookie on allow (Kubeflow's mesh configuration) do pass
// it on a deny, and the browser stores the cookie before following the
// redirect. It reports whether it answered.
func (h *Handler) renewRedirect(w http.ResponseWriter, r *http.Request, pr *principal, cred credential, m mode) bool {
	if !h.cfg.SessionRenewRedirect || m != extAuthz || cred != sessionCookie ||
		(r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return false
	}
	if pr.redirects.Add(1) > maxRenewRedirects {
		return false
	}
	target := r.URL.RequestURI()
	// Never a protocol-relative URL ("//host", "/\host"): that would leave the site.
	if !strings.HasPrefix(target, "/") || strings.HasPrefix(target, "//") || strings.HasPrefix(target, "/\\") {
		target = "/"
	}
	hd := w.Header()
	hd["Cache-Control"] = noStore
	hd.Set("Location", target)
	w.WriteHeader(http.StatusTemporaryRedirect)
	h.debug(r, "redirect", "session renewed: new cookie delivered with a redirect to the same URL")
	return true
}
