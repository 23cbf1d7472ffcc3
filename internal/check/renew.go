package check

import (
	"net/http"
	"strings"

	"github.com/oidc-authservice/oidc-authservice/internal/credential"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// A renewed session (refresh, idle timeout) must reach the browser in the
// answer that renews it, or it would live only in this replica's memory
// while the browser keeps a cookie whose refresh token the provider may
// have rotated away. What carries it depends on the front:
//
//   - Envoy passes every Set-Cookie of an allow when configured to
//     (allowed_client_headers_on_success), or none: SESSION_RENEW_REDIRECT
//     then answers a GET or HEAD with a 307 to the same URL, which Envoy
//     passes as a deny, every cookie with it.
//   - A forward-auth proxy passes one Set-Cookie of an allow at most
//     (docs/forward-auth.md): nginx's $upstream_http_set_cookie holds the
//     first before 1.23 and all of them joined by ", " (one broken cookie)
//     since; Caddy's {http.reverse_proxy.header.Set-Cookie} joins them with
//     ",". So a forward-auth allow carries the renewed session in exactly
//     one Set-Cookie, and a session of several cookies is renewed only where
//     every cookie can go: behind Caddy and Traefik a navigation's 307 to
//     the same URL (they pass a non-2xx answer as it is), behind nginx the
//     start endpoint, which the recipe's error_page sends a 401 to.

// maxRenewRedirects bounds the renewal redirects answered per renewed
// session and replica: one. The browser follows it with the new cookie,
// whose session is not due again before two thirds of its tokens' lifetime
// (credential.Sessions), so no navigation is redirected twice; a client
// that ignores Set-Cookie and keeps sending the old cookie is allowed (as
// the new session) from its second request on.
const maxRenewRedirects = 1

// carry is how many cookies the answer to q can deliver a renewed session
// in (credential.Sessions.Renew): all of them for Envoy and for a
// navigation behind Caddy or Traefik (a 307), one for any other
// forward-auth answer.
func (h *Handler) carry(q *request) int {
	if q.mode != forwardAuth || h.forwardRedirects(q) {
		return 0
	}
	return 1
}

// forwardRedirects reports whether a forward-auth renewal can go back with
// a 307 to the same URL: a navigation behind a proxy that passes the verify
// answer's redirect to the browser as it is.
func (h *Handler) forwardRedirects(q *request) bool {
	return !nginxFlavour(h.o.ForwardAuthProxy) && (q.Method == http.MethodGet || q.Method == http.MethodHead) && h.nav(q)
}

// nginxFlavour reports whether the forward-auth proxy is nginx or
// ingress-nginx, whose auth_request turns any answer but 2xx, 401 and 403
// into a 500.
func nginxFlavour(proxy string) bool { return proxy == "nginx" || proxy == "ingress-nginx" }

// renewedCookie is how an answer sets a renewed session's cookie: every
// chunk, and the expiry of chunks of a longer session, for Envoy; for a
// forward-auth proxy one Set-Cookie, when the session takes one cookie
// (stale chunks stay in the browser, ignored: the session cookie says how
// many chunks it has), and none when it takes more (the redirect of
// renewRedirect carries them, or another answer did).
func (h *Handler) renewedCookie(q *request, sealed string, maxAge int) (cookieOp, bool) {
	switch {
	case q.mode != forwardAuth:
		return setSessionCookie(sealed, maxAge), true
	case session.Count(sealed) == 1:
		return cookieOp{kind: setSessionOnly, value: sealed, maxAge: maxAge}, true
	}
	return cookieOp{}, false
}

// renewRedirect answers a GET or HEAD whose session cookie was just renewed
// with a 307 to the same URL, where the front passes no Set-Cookie of the
// renewal on allow: Envoy with SESSION_RENEW_REDIRECT (gateways that pass
// no Set-Cookie on allow, as Kubeflow's mesh configuration, do pass it on a
// deny, and the browser stores the cookie before following the redirect),
// and Caddy or Traefik for a session of several cookies. A gRPC check never
// needs it: its allow answer carries the cookie in response_headers_to_add,
// which Envoy always passes. It reports whether it answers so.
func (h *Handler) renewRedirect(q *request, next *credential.Live, cred credKind, sealed string, maxAge int) (verdict, bool) {
	if cred != sessionCookie || (q.Method != http.MethodGet && q.Method != http.MethodHead) {
		return verdict{}, false
	}
	switch q.mode {
	case extAuthz:
		if !h.o.RenewRedirect || q.front != frontHTTP {
			return verdict{}, false
		}
	case forwardAuth:
		if session.Count(sealed) <= 1 || !h.forwardRedirects(q) {
			return verdict{}, false
		}
	}
	if !next.TakeRedirect(maxRenewRedirects) {
		return verdict{}, false
	}
	target := q.URL.RequestURI()
	// Never a protocol-relative URL ("//host", "/\host"): that would leave the site.
	if !strings.HasPrefix(target, "/") || strings.HasPrefix(target, "//") || strings.HasPrefix(target, "/\\") {
		target = "/"
	}
	h.debug(q, "session renewed: new cookie delivered with a redirect to the same URL")
	return verdict{decision: redirect, reason: sessionOK, status: http.StatusTemporaryRedirect, location: target,
		cookies: []cookieOp{setSessionCookie(sealed, maxAge)}, final: true}, true
}
