package check

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/pages"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
)

// logout ends the session. POST is the Kubeflow dashboard's contract before
// v1.10 (Authorization: Bearer <session cookie value>, answer 201 with
// JSON); GET is the contract since v1.10 (a navigation, answered 302).
//
// Ending a session: the cookie is cleared, the session id goes on the
// revocation list (so a copy of the cookie stops working, on every replica
// with Redis), the tokens are revoked at the provider when it has a
// revocation endpoint, and the browser goes to the provider's end-session
// endpoint when it has one, else to AFTER_LOGOUT_URL.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if crossSite(r) && (r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodPost) {
		// Any page on the web could otherwise log a user out of Kubeflow and
		// the provider with one navigation. Nothing is ended or cleared;
		// the page offers a same-origin link that does it.
		h.log.Info("logout refused: cross-site request; confirmation page shown", requestID(r), zap.String("method", r.Method))
		if h.browserNavigation(r) {
			h.Pages.Render(w, http.StatusForbidden, "error", pages.Data{Title: "Sign out?", Message: msgConfirmLogout,
				Link: h.cfg.LogoutPath, LinkText: "Sign out", RequestID: requestIDOf(r)})
			return
		}
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "cross_site_logout", "message": msgConfirmLogout})
		return
	}
	switch r.Method {
	case http.MethodPost:
		pr, reason := h.authenticateSession(r)
		if pr == nil {
			h.log.Info("logout refused: no valid session", requestID(r), zap.String("reason", reasonText(reason)))
			h.unauthenticated(w)
			return
		}
		after, providerOK := h.endSession(w, r, pr)
		body := map[string]string{"afterLogoutURL": after}
		if !providerOK {
			body["providerLogout"] = "failed"
		}
		writeJSON(w, http.StatusCreated, body)
	case http.MethodGet, http.MethodHead:
		after := h.cfg.AfterLogoutURL
		if pr, _ := h.authenticateSession(r); pr != nil {
			var providerOK bool
			if after, providerOK = h.endSession(w, r, pr); !providerOK && after == h.cfg.AfterLogoutURL {
				after += sep(after) + "provider_logout=failed"
			}
		} else {
			h.clearSession(w, r)
		}
		hd := w.Header()
		hd["Cache-Control"] = noStore
		hd.Set("Location", after)
		w.WriteHeader(http.StatusFound)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
	}
}

// endSession ends pr's session and returns where the browser goes next and
// whether the provider could be told.
func (h *Handler) endSession(w http.ResponseWriter, r *http.Request, pr *principal) (string, bool) {
	if n := pr.successor.Load(); n != nil {
		pr = n.pr
	}
	s := pr.sess
	h.clearSession(w, r)
	h.verified.Delete(pr.key)
	if v, ok := bearer(r.Header); ok {
		h.verified.Delete(cacheKey(v))
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.ProviderTimeout)
	defer cancel()
	h.Revocations.Revoke(ctx, revocation.Session, s.ID)
	h.Metrics.Revocation("logout")

	providerOK := true
	if h.cfg.RevokeOnLogout {
		for _, t := range []struct{ token, hint string }{{s.RefreshToken, "refresh_token"}, {s.AccessToken, "access_token"}} {
			if err := h.Provider.Revoke(ctx, t.token, t.hint); err != nil {
				providerOK = false
				h.log.Warn("logout: token revocation at the provider failed; local session ended anyway", requestID(r),
					zap.String("user", s.User), zap.String("token", t.hint), zap.Error(err))
			}
		}
	}
	after := h.cfg.AfterLogoutURL
	if h.cfg.ProviderLogout {
		if u := h.Provider.EndSessionURL(s.IDToken, h.postLogoutURL(r)); u != "" {
			after = u
		}
	}
	h.log.Info("logout", requestID(r), zap.String("user", s.User), zap.String("sub", s.Subject), zap.Bool("provider_ok", providerOK))
	return after, providerOK
}

// postLogoutURL is the post_logout_redirect_uri for the provider: the
// configured one, or AFTER_LOGOUT_URL made absolute with the request's host.
func (h *Handler) postLogoutURL(r *http.Request) string {
	if h.cfg.PostLogoutRedirectURL != "" {
		return h.cfg.PostLogoutRedirectURL
	}
	u, err := url.Parse(h.cfg.AfterLogoutURL)
	if err != nil || u.IsAbs() || !strings.HasPrefix(u.Path, "/") {
		return h.cfg.AfterLogoutURL
	}
	scheme := "http"
	if h.secure(r) {
		scheme = "https"
	}
	return scheme + "://" + r.Host + h.cfg.AfterLogoutURL
}

// authenticateSession is authenticate for logout: only a session (the
// cookie, or its value as Authorization: Bearer) can be ended; a bearer JWT
// is valid until its own expiry and logging it out would end nothing.
func (h *Handler) authenticateSession(r *http.Request) (*principal, error) {
	pr, cred, err := h.authenticateWith(r)
	if pr != nil && cred == bearerJWT {
		return nil, errors.New("a bearer token is not a session: it cannot be logged out")
	}
	return pr, err
}

// crossSite reports whether the browser says the request was started by a
// page of another site (Sec-Fetch-Site). Browsers that send no such header,
// or gateways that do not pass it to the check, leave SameSite as the only
// protection (docs/security.md).
func crossSite(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Sec-Fetch-Site"), "cross-site")
}
