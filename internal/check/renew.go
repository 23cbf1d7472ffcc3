package check

import (
	"net/http"
	"strings"

	"github.com/oidc-authservice/oidc-authservice/internal/credential"
)

// maxRenewRedirects bounds the renewal redirects answered per renewed
// session and replica: one. The browser follows it with the new cookie,
// whose session is not due again before two thirds of its tokens' lifetime
// (credential.Sessions), so no navigation is redirected twice; a client
// that ignores Set-Cookie and keeps sending the old cookie is allowed (as
// the new session) from its second request on.
const maxRenewRedirects = 1

// renewRedirect answers a GET or HEAD whose session cookie was just renewed
// with a 307 to the same URL, when SESSION_RENEW_REDIRECT is on: gateways
// that pass no Set-Cookie on allow (Kubeflow's mesh configuration) do pass
// it on a deny, and the browser stores the cookie before following the
// redirect. It reports whether it answers so.
func (h *Handler) renewRedirect(q *request, next *credential.Live, cred credKind, cookies []cookieOp) (verdict, bool) {
	if !h.o.RenewRedirect || q.mode != extAuthz || cred != sessionCookie ||
		(q.Method != http.MethodGet && q.Method != http.MethodHead) || !next.TakeRedirect(maxRenewRedirects) {
		return verdict{}, false
	}
	target := q.URL.RequestURI()
	// Never a protocol-relative URL ("//host", "/\host"): that would leave the site.
	if !strings.HasPrefix(target, "/") || strings.HasPrefix(target, "//") || strings.HasPrefix(target, "/\\") {
		target = "/"
	}
	h.debug(q, "session renewed: new cookie delivered with a redirect to the same URL")
	return verdict{decision: redirect, reason: sessionOK, status: http.StatusTemporaryRedirect, location: target,
		cookies: cookies, final: true}, true
}
