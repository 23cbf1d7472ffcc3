package check

import (
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/authorizer"
	"github.com/oidc-authservice/oidc-authservice/internal/authz"
	"github.com/oidc-authservice/oidc-authservice/internal/credential"
	"github.com/oidc-authservice/oidc-authservice/internal/logtext"
	"github.com/oidc-authservice/oidc-authservice/internal/pages"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// authenticate finds the request's credential: the session cookie, a
// session value sent as Authorization: Bearer (older SDKs), a bearer JWT, or
// the provider's opaque access token.
// A session is then kept alive (credential.Sessions.Renew); a bearer token
// is valid until its own expiry. Without a usable credential it returns a
// verdict that says why (its cookies clear a session that failed), which is
// final when the session must be refused as it is (provider unreachable
// past the grace period).
func (h *Handler) authenticate(q *request) (authed, verdict) {
	h.credential(q)
	if q.authMany {
		// Only one credential could be judged; another, a credential of
		// this gateway included, would reach the upstream (request.go).
		h.quiet.Info("refused: Authorization holds more than one credential", q.rid(), zap.Int("lines", len(q.Header["Authorization"])))
		v := badRequest("Authorization holds more than one credential (sent twice, or several in one line): send one")
		v.final = true
		return authed{}, v
	}
	var reason error
	if q.sealed != "" {
		live, err := h.d.Sessions.Open(q.sealed)
		if err == nil {
			return h.renew(q, live, sessionCookie)
		}
		if f, ok := overLimit(err, h.retryLink(q)); ok {
			// A session sealed under other settings whose groups exceed the
			// limits now: it ends, and the user learns why.
			f.cookies, f.final = []cookieOp{clearSessionCookie}, true
			return authed{}, f
		}
		reason = err
	} else if q.cookieSent {
		reason = session.ErrMalformed // chunks that do not fit together
	}
	if q.bearer != "" {
		if credential.LooksLikeJWT(q.bearer) {
			tok, err := h.d.Tokens.Verify(q.Context(), q.bearer, q.rid())
			if f, ok := overLimit(err, ""); ok {
				// A valid token whose identity cannot be carried: 403 with
				// the figures, not a 401 that invites another try.
				f.final = true
				return authed{}, f
			}
			if err != nil {
				h.quiet.Info("bearer token refused", q.rid(), zap.Error(err))
				return authed{}, verdict{reason: invalidToken}
			}
			return authed{Principal: &tok.Principal, cred: bearerJWT}, verdict{}
		}
		live, err := h.d.Sessions.Open(q.bearer)
		if err == nil {
			return h.renew(q, live, sessionBearer)
		}
		// Not a session: the provider's opaque access token, when they are
		// accepted. A value shaped like a sealed session (one that no
		// longer opens) never goes to the provider.
		if h.d.Opaque != nil && !session.LooksSealed(q.bearer) {
			return h.opaque(q)
		}
		if reason == nil {
			reason = err
		}
	}
	if reason == nil {
		return authed{}, verdict{reason: noCredentials}
	}
	h.debug(q, "session refused", zap.String("cookie", reasonText(reason)))
	return authed{}, verdict{reason: invalidSession, cookies: []cookieOp{clearSessionCookie}}
}

// opaque authenticates the provider's opaque access token
// (ACCESS_TOKEN_AUTHN=opaque). A refusal is a 401, at once when the lookups
// of new tokens are exhausted (with Retry-After).
func (h *Handler) opaque(q *request) (authed, verdict) {
	tok, err := h.d.Opaque.Verify(q.Context(), q.bearer, q.rid())
	if f, ok := overLimit(err, ""); ok {
		// The provider vouches for the token, but its groups cannot be
		// carried: 403 with the figures, as for a bearer JWT.
		f.final = true
		return authed{}, f
	}
	if err != nil {
		h.quiet.Info("access token refused", q.rid(), zap.Error(err))
		v := verdict{reason: invalidToken}
		if errors.Is(err, credential.ErrLookupLimited) {
			v.retry = "1"
		}
		return authed{}, v
	}
	return authed{Principal: &tok.Principal, cred: bearerOpaque}, verdict{}
}

// renew applies the session's life (revocation, idle timeout, refresh,
// strict validation); a renewed session comes back as a new cookie, in a
// form the front carries (h.carry).
func (h *Handler) renew(q *request, live *credential.Live, cred credKind) (authed, verdict) {
	next, sealed, err := h.d.Sessions.Renew(q.Context(), live, q.rid(), credential.Carry{Cookies: h.carry(q), Fits: h.answerFits(q)})
	switch {
	case err == nil:
		v := verdict{}
		if sealed != "" {
			maxAge := int(next.Expires - h.d.Now().Unix())
			if c, ok := h.renewedCookie(q, sealed, maxAge); ok {
				v.cookies = []cookieOp{c}
			}
			if r, ok := h.renewRedirect(q, next, cred, sealed, maxAge); ok {
				return authed{}, r
			}
		}
		return authed{Principal: &next.Principal, live: next, cred: cred}, v
	case errors.Is(err, credential.ErrNotCarried):
		// Due for a renewal this answer cannot carry (forward auth, a
		// session of several cookies): nothing was renewed. A navigation
		// behind nginx goes (401, the recipe's error_page) through the
		// start endpoint, which renews it with every cookie; anything else
		// goes on with the session's still-valid tokens, or past them gets
		// the 401.
		if !(h.nav(q) && nginxFlavour(h.o.ForwardAuthProxy)) && h.d.Sessions.Usable(next) {
			return authed{Principal: &next.Principal, live: next, cred: cred}, verdict{}
		}
		h.d.Sessions.SentElsewhere(next)
		h.debug(q, "session due for a renewal the forward-auth answer cannot carry: 401 (nginx: renewed at the start endpoint)")
		return authed{}, verdict{reason: renewal, final: true}.unauthenticated()
	case errors.Is(err, credential.ErrValidationPending):
		v := failure(http.StatusUnauthorized, "Sign-in unavailable", msgProviderDown, h.retryLink(q))
		v.decision, v.reason, v.final = deny, providerUnavailable, true
		return authed{}, v
	}
	if f, ok := overLimit(err, h.retryLink(q)); ok {
		// The renewed session could not be stored: it ended (on every
		// replica) rather than live on in this one's memory.
		if q.mode == forwardAuth && nginxFlavour(h.o.ForwardAuthProxy) && h.nav(q) {
			// nginx shows a page of its own for auth_request's 403: the
			// navigation goes (401, the recipe's error_page) to the start
			// endpoint, whose answer reaches the browser as it is, and
			// which shows this page there (on this replica; on another,
			// the session is gone and a login starts, which the same
			// limits judge).
			h.d.Sessions.ShowLater(live, err)
			h.debug(q, "session ended: its renewal cannot be carried; 401 to the start endpoint, which says why")
			return authed{}, verdict{reason: tooLarge, final: true}.unauthenticated()
		}
		f.cookies, f.final = []cookieOp{clearSessionCookie}, true
		return authed{}, f
	}
	h.debug(q, "session refused", zap.String("cookie", reasonText(err)))
	return authed{}, verdict{reason: invalidSession, cookies: []cookieOp{clearSessionCookie}}
}

// authorize decides for an authenticated principal: allow with the identity
// headers, or 403 when GROUPS_ALLOWLIST and the rules, then the external
// authorizer (EXTERNAL_AUTHZ_URL), refuse. Both must allow, whatever the
// front (ext_authz, forward auth) and the credential. The cookies of v (a
// renewed session) go out either way.
func (h *Handler) authorize(q *request, a authed, v verdict) verdict {
	v.who = a
	if ok, why := h.d.Policy.Decide(authz.Request{Host: q.Host, Path: q.path.canon, RawPath: q.path.raw, Method: q.Method,
		User: a.UserHeader[0], Groups: a.Groups}); !ok {
		h.log.Info("not authorized", q.rid(), zap.String("user", a.User), zap.String("reason", why))
		f := h.forbidden(a.UserHeader[0], why)
		f.who, f.cookies = a, v.cookies
		return f
	}
	if h.d.Authorizer != nil {
		if f, refused := h.external(q, a); refused {
			f.who, f.cookies = a, v.cookies
			return f
		}
	}
	v.decision, v.status, v.reason = allow, http.StatusOK, sessionOK
	if a.cred == bearerJWT || a.cred == bearerOpaque {
		v.reason = tokenOK
	}
	return v
}

// external asks the external authorizer about the canonical path and, when
// the path as sent reads differently, about that reading too: the request
// passes only when both are allowed, as with the rules. An error, a timeout
// or saturation refuses (fail closed) with a 403 that says the decision
// could not be made, never an allow and never a 5xx.
func (h *Handler) external(q *request, a authed) (verdict, bool) {
	host, port := authorizer.PortOf(q.Host, q.secure)
	groups := a.Groups
	if groups == nil {
		groups = []string{}
	}
	in := authorizer.Input{
		User:    authorizer.User{Name: a.User, ID: a.Subject, Groups: groups, Extra: a.Extra, Claims: a.Claims},
		Request: authorizer.Request{Host: host, Port: port, Path: q.path.canon, Method: q.Method}}
	paths := [2]string{q.path.canon, q.path.raw}
	for i, p := range paths {
		if i == 1 && (p == paths[0] || p == "") {
			break
		}
		in.Request.Path = p
		d, err := h.d.Authorizer.Decide(q.Context(), in)
		if err != nil {
			h.quiet.Warn("external authorizer could not decide: refused", q.rid(), zap.String("user", a.User), zap.Error(err))
			return h.authorizerUnavailable(q, a.UserHeader[0]), true
		}
		if !d.Allowed {
			why := d.Reason
			if i == 1 {
				why += " (path as sent: " + logtext.Bound(p, 128) + ")"
			}
			h.log.Info("not authorized by the external authorizer", q.rid(), zap.String("user", a.User), zap.String("reason", why))
			f := h.forbidden(a.UserHeader[0], why)
			f.reason = authorizerRefused
			return f, true
		}
	}
	return verdict{}, false
}

// forbidden is the 403 for an identity the policy refuses: a page for
// browsers, JSON for the rest. Both name the identity and the reason. The
// page's button logs out (a same-origin navigation to the logout path), so
// that the next login can be someone else's.
func (h *Handler) forbidden(who, why string) verdict {
	return verdict{decision: forbidden, reason: policyRefused, status: http.StatusForbidden,
		page: &pages.Data{Title: "Access denied", Message: msgNotAuthorized, Identity: who, Reason: why,
			Link: h.o.LogoutPath, LinkText: "Sign in as someone else"},
		body: map[string]string{"error": "forbidden", "user": who, "reason": why}}
}

// authorizerUnavailable is the 403 when the external authorizer could not
// decide: nothing is allowed without its answer. Not a 5xx (Envoy would
// turn it into a bare 403) and not a 401 (the user is signed in: a client
// would only log in again).
func (h *Handler) authorizerUnavailable(q *request, who string) verdict {
	return verdict{decision: forbidden, reason: authorizerUnavailable, status: http.StatusForbidden, retry: "5",
		page: &pages.Data{Title: "Access cannot be checked", Message: msgAuthorizerDown, Identity: who,
			Reason: "the authorization service did not answer", Link: h.retryLink(q), LinkText: "Try again"},
		body: map[string]string{"error": "forbidden", "user": who, "reason": "authorization service unavailable", "message": msgAuthorizerDown}}
}

// reasonText turns an error into a short log reason.
func reasonText(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, session.ErrExpired):
		return "expired"
	case errors.Is(err, session.ErrForged):
		return "not sealed by a configured key"
	case errors.Is(err, credential.ErrRevoked), errors.Is(err, credential.ErrIdle), errors.Is(err, credential.ErrIDTokenExpired),
		errors.Is(err, credential.ErrRefreshRejected), errors.Is(err, credential.ErrValidationRejected):
		return err.Error()
	default:
		return "malformed"
	}
}

func (h *Handler) debug(q *request, what string, fields ...zap.Field) {
	if ce := h.log.Check(zap.DebugLevel, what); ce != nil {
		ce.Write(append(fields, q.rid(), zap.String("method", q.Method), zap.String("host", q.Host), zap.String("path", q.URL.Path))...)
	}
}
