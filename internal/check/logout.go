package check

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/credential"
	"github.com/oidc-authservice/oidc-authservice/internal/logtext"
	"github.com/oidc-authservice/oidc-authservice/internal/pages"
)

// logout ends the session. POST is the Kubeflow dashboard's contract before
// v1.10 (Authorization: Bearer <session cookie value>, answer 201 with
// JSON); GET is the contract since v1.10 (a navigation, answered 302).
//
// Ending a session: the cookie is cleared, the session id goes on the
// revocation list (so a copy of the cookie stops working, on every replica
// with Redis), the tokens are revoked at the provider when it has a
// revocation endpoint, and the browser goes to the provider's end-session
// endpoint when it has one, else to AFTER_LOGOUT_URL. A logout the browser
// does not mark as the site's own (Sec-Fetch-Site other than same-origin or
// none: another site, a sibling subdomain) ends nothing.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request, f front) {
	q := h.classify(r, extAuthz, f)
	v := h.logoutVerdict(&q)
	h.answer(w, &q, &v)
}

func (h *Handler) logoutVerdict(q *request) verdict {
	get := q.Method == http.MethodGet || q.Method == http.MethodHead
	if !get && q.Method != http.MethodPost {
		return methodNotAllowed("GET, HEAD, POST")
	}
	if q.foreignSite() {
		// Any page on the web, or on a sibling subdomain, could otherwise
		// log a user out of Kubeflow and the provider with one navigation.
		// Nothing is ended or cleared; the page offers a same-origin link
		// that does it.
		h.quiet.Info("logout refused: not started by the site itself (Sec-Fetch-Site); confirmation page shown", q.rid(),
			zap.String("method", q.Method), zap.String("sec_fetch_site", logtext.Bound(strings.Join(q.Header["Sec-Fetch-Site"], ","), 64)))
		return verdict{decision: deny, reason: policyRefused, status: http.StatusForbidden,
			page: &pages.Data{Title: "Sign out?", Message: msgConfirmLogout, Link: h.o.LogoutPath, LinkText: "Sign out"},
			body: map[string]string{"error": "cross_site_logout", "message": msgConfirmLogout}}
	}
	if h.credential(q); q.authMany {
		// Which credential names the session to end? Not one picked at
		// random: the same 400 as at the check (authenticate).
		h.quiet.Info("logout refused: Authorization holds more than one credential", q.rid(), zap.Int("lines", len(q.Header["Authorization"])))
		return badRequest("Authorization holds more than one credential (sent twice, or several in one line): send one")
	}
	a, err := h.endable(q)
	if !get {
		if a == nil {
			h.quiet.Info("logout refused: no valid session", q.rid(), zap.String("reason", reasonText(err)))
			return verdict{reason: invalidSession}.unauthenticated()
		}
		after, providerOK := h.endSession(q, a)
		body := map[string]string{"afterLogoutURL": after}
		if !providerOK {
			body["providerLogout"] = "failed"
		}
		return verdict{decision: deny, status: http.StatusCreated, body: body, cookies: []cookieOp{clearSessionCookie}}
	}
	after := h.o.AfterLogout
	if a != nil {
		var providerOK bool
		if after, providerOK = h.endSession(q, a); !providerOK && after == h.o.AfterLogout {
			after += sep(after) + "provider_logout=failed"
		}
	}
	return redirectTo(after, clearSessionCookie)
}

// endable is authenticate for logout: only a session (the cookie, or its
// value as Authorization: Bearer) can be ended; a bearer JWT is valid until
// its own expiry and logging it out would end nothing.
func (h *Handler) endable(q *request) (*authed, error) {
	h.credential(q)
	var reason error
	for _, v := range []string{q.sealed, q.bearer} {
		if v == "" || (v == q.bearer && v != q.sealed && credential.LooksLikeJWT(v)) {
			continue
		}
		live, err := h.d.Sessions.Open(v)
		if err == nil {
			return &authed{Principal: &live.Principal, live: live}, nil
		}
		if reason == nil {
			reason = err
		}
	}
	if reason == nil && q.bearer != "" {
		reason = errors.New("a bearer token is not a session: it cannot be logged out")
	}
	return nil, reason
}

// endSession ends a's session and returns where the browser goes next and
// whether the provider could be told.
func (h *Handler) endSession(q *request, a *authed) (string, bool) {
	s := a.live.Current().Session
	ctx, cancel := context.WithTimeout(q.Context(), h.o.ProviderTimeout)
	defer cancel()
	h.d.Sessions.End(ctx, a.live, "logout")
	if q.bearer != "" {
		h.d.Sessions.Forget(q.bearer)
	}
	providerOK := true
	if h.o.RevokeTokens {
		for _, t := range []struct{ token, hint string }{{s.RefreshToken, "refresh_token"}, {s.AccessToken, "access_token"}} {
			if err := h.d.Provider.Revoke(ctx, t.token, t.hint); err != nil {
				providerOK = false
				h.log.Warn("logout: token revocation at the provider failed; local session ended anyway", q.rid(),
					zap.String("user", s.User), zap.String("token", t.hint), zap.Error(err))
			}
		}
	}
	after := h.o.AfterLogout
	if h.o.ProviderLogout {
		// Without the ID token (dropped at login: too large for the
		// cookies) the provider cannot check a post_logout_redirect_uri
		// (Dex refuses one without id_token_hint): it signs the user out on
		// its own page instead of coming back.
		post := ""
		if s.IDToken != "" {
			post = h.postLogoutURL(q)
		}
		if u := h.d.Provider.EndSessionURL(s.IDToken, post); u != "" {
			after = u
		}
	}
	h.log.Info("logout", q.rid(), zap.String("user", s.User), zap.String("sub", s.Subject), zap.Bool("provider_ok", providerOK))
	return after, providerOK
}

// postLogoutURL is the post_logout_redirect_uri for the provider: the
// configured one, or AFTER_LOGOUT_URL made absolute with the request's host.
func (h *Handler) postLogoutURL(q *request) string {
	if h.o.PostLogoutRedirectURL != "" {
		return h.o.PostLogoutRedirectURL
	}
	u, err := url.Parse(h.o.AfterLogout)
	if err != nil || u.IsAbs() || !strings.HasPrefix(u.Path, "/") {
		return h.o.AfterLogout
	}
	return q.scheme() + "://" + q.Host + h.o.AfterLogout
}
