package check

import (
	"errors"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/credential"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// credKind is what authenticated a request.
type credKind uint8

const (
	sessionCookie credKind = iota
	sessionBearer          // a session value as Authorization: Bearer (older SDKs)
	bearerJWT              // a bearer JWT of a trusted issuer
	bearerOpaque           // the provider's opaque access token, vouched for by its userinfo endpoint
)

// authed is an authenticated principal and how; the zero value is no one.
// It travels by value in the verdict, so a check allocates none.
type authed struct {
	*credential.Principal
	live *credential.Live // the session, when a session authenticated
	cred credKind
}

// ok reports whether a names a principal.
func (a *authed) ok() bool { return a.Principal != nil }

// allowAs completes an allow answer for a principal: the identity headers
// (which Envoy sets on the upstream request, overwriting the client's), the
// headers to remove, the upstream's Cookie header and Authorization.
func (h *Handler) allowAs(hd http.Header, q *request, a *authed) {
	hd[h.userHeader] = a.UserHeader
	hd[h.groupsHeader] = a.GroupsHeader
	auth, strip := h.upstreamAuth(q, a)
	if strip {
		h.removeHeaders(hd, q, h.remove.bearerSession, h.remove.bearerSessionCookie)
	} else {
		h.removeHeaders(hd, q, h.remove.lookalike, h.remove.lookalikeCookie)
	}
	switch {
	case auth != nil:
		hd["Authorization"] = auth
	case q.mode != forwardAuth:
		// Envoy: removed by the list above when strip, else left as it is.
	case strip:
		h.forwardHeader(hd, "Authorization", empty)
	default:
		h.forwardHeader(hd, "Authorization", clientAuthorization(q))
	}
	if q.mode == forwardAuth {
		h.forwardHeader(hd, h.userHeader, a.UserHeader)
		h.forwardHeader(hd, h.groupsHeader, a.GroupsHeader)
		h.warnReplayable(a, auth, strip)
	}
	if h.o.AuthRequestHeaders {
		setAuthRequestHeaders(hd, a)
	}
	if ce := h.log.Check(zap.DebugLevel, "decision"); ce != nil {
		ce.Write(q.rid(), zap.String("decision", "allow"), zap.String("user", a.User), zap.String("method", q.Method),
			zap.String("host", q.Host), zap.String("path", q.URL.Path))
	}
}

// upstreamAuth decides what becomes of the upstream request's Authorization
// header, for every front: the token of UPSTREAM_TOKEN (auth, set in its
// place), or strip: the header carries a credential of this gateway, which
// the upstream (a colleague's notebook server, in Kubeflow) could present
// here as the user. That is a session value sent as Authorization: Bearer
// (older SDKs) always; a bearer token the service accepts unless
// UPSTREAM_BEARER=keep; either also next to the session cookie that
// authenticated the request. Otherwise the client's own header goes on. Envoy sets the answer's Authorization and applies
// removals after the headers it sets, so with auth, authorization is not
// listed for removal; forward-auth proxies copy the answer's Authorization
// (empty: removed), so it always carries the value the upstream gets.
func (h *Handler) upstreamAuth(q *request, a *authed) (auth []string, strip bool) {
	if auth = h.upstreamAuthorization(a); auth != nil {
		return auth, false
	}
	switch a.cred {
	case sessionBearer:
		return nil, true
	case bearerJWT, bearerOpaque:
		return nil, !h.o.KeepBearer
	}
	// A session cookie authenticated. A credential of this gateway in
	// Authorization as well (a client that sends both) is removed all the
	// same: a session value always, a bearer token this service accepts
	// unless UPSTREAM_BEARER=keep. Only such requests pay for the check.
	switch {
	case q.bearer == "":
	case !credential.LooksLikeJWT(q.bearer):
		if _, err := h.d.Sessions.Open(q.bearer); err == nil {
			return nil, true
		}
		// The provider's opaque access token (ACCESS_TOKEN_AUTHN=opaque),
		// asked about within the lookups' bounds; when they are exhausted
		// it cannot be told, and it is removed all the same.
		if h.d.Opaque != nil && !h.o.KeepBearer && !session.LooksSealed(q.bearer) {
			_, err := h.d.Opaque.Verify(q.Context(), q.bearer, q.rid())
			return nil, err == nil || errors.Is(err, credential.ErrLookupLimited)
		}
		return nil, false
	case !h.o.KeepBearer:
		_, err := h.d.Tokens.Verify(q.Context(), q.bearer, q.rid())
		return nil, err == nil
	}
	return nil, false
}

// warnReplayable warns, once per process, when a forward-auth upstream is
// handed a token this service accepts as a bearer token: nothing behind a
// forward-auth proxy removes it after the check, as Istio's
// RequestAuthentication does, so the upstream could use it here as the
// user (docs/forward-auth.md).
func (h *Handler) warnReplayable(a *authed, auth []string, strip bool) {
	switch {
	case auth != nil && h.o.UpstreamToken == "id_token" && h.o.AcceptProviderIDTokens:
		h.replayable[0].Do(func() {
			h.log.Warn("forward auth: the upstream is handed the provider's ID token (UPSTREAM_TOKEN=id_token), which this service accepts as a bearer token " +
				"(ACCEPT_PROVIDER_ID_TOKENS=true): any upstream could use it here as the user until the session ends; set ACCEPT_PROVIDER_ID_TOKENS=false")
		})
	case auth == nil && !strip && a.cred == bearerJWT:
		h.replayable[1].Do(func() {
			h.log.Warn("forward auth: UPSTREAM_BEARER=keep passes a client's bearer token, which this service accepts, on to the upstream, " +
				"and nothing behind a forward-auth proxy removes it: the upstream could use it here as the client; set UPSTREAM_BEARER=remove")
		})
	}
}

// clientAuthorization is the client's own Authorization header, for a
// forward-auth proxy to copy back unchanged ("" when there is none).
func clientAuthorization(q *request) []string {
	if v := q.Header["Authorization"]; len(v) > 0 {
		return v
	}
	return empty
}

// forwardHeader writes a header that the forward-auth recipes copy from the
// answer onto the upstream request (docs/forward-auth.md), where "" means
// that the upstream gets no such header. nginx drops a header set to an
// empty value; the Caddy recipe deletes it, and Caddy 2.6 needs it present
// (it would copy a missing header as its placeholder's text). Traefik
// removes the request's header, then copies the answer's as it is, an empty
// value too: for Traefik an empty header is left out of the answer.
func (h *Handler) forwardHeader(hd http.Header, name string, v []string) {
	if h.o.ForwardAuthProxy == "traefik" && len(v) == 1 && v[0] == "" {
		delete(hd, name)
		return
	}
	hd[name] = v
}

// allowAnonymous completes an allow answer without identity: Envoy strips
// any identity header the client sent; forward-auth proxies copy the empty
// values over the client's, and the client's own Authorization, which
// passes a skip path as it does Envoy.
func (h *Handler) allowAnonymous(hd http.Header, q *request) {
	h.removeHeaders(hd, q, h.remove.identity, h.remove.identityCookie)
	if q.mode == forwardAuth {
		h.forwardHeader(hd, h.userHeader, empty)
		h.forwardHeader(hd, h.groupsHeader, empty)
		h.forwardHeader(hd, "Authorization", clientAuthorization(q))
	}
}

var empty = []string{""}

// removeHeaders lists the headers the upstream must not see (remove, or
// withCookie when that list must also drop the Cookie header), and gives
// the upstream the request's Cookie header without the service's own
// cookies (session, chunks, login states, in both forms), which carry
// credentials no upstream should hold: in Kubeflow, upstreams include
// notebook servers that run their owner's code.
//
// Envoy sets a Cookie header of the answer on the upstream request when
// allowed_upstream_headers lists cookie; when nothing else remains the
// header is removed instead. Forward-auth proxies copy the answer's Cookie
// header (docs/forward-auth.md), so that answer always carries one (but
// for Traefik, forwardHeader).
func (h *Handler) removeHeaders(hd http.Header, q *request, remove, withCookie []string) {
	rest, changed := h.d.Cookies.WithoutOwn(q.Header)
	if q.mode == forwardAuth {
		if !changed {
			rest = strings.Join(q.Header["Cookie"], "; ")
		}
		h.forwardHeader(hd, "Cookie", []string{rest})
		changed = false
	}
	switch {
	case changed && rest == "":
		hd["X-Envoy-Auth-Headers-To-Remove"] = withCookie
		return
	case changed:
		hd["Cookie"] = []string{rest}
	}
	if remove != nil {
		hd["X-Envoy-Auth-Headers-To-Remove"] = remove
	}
}

// upstreamAuthorization is the Authorization header the upstream gets, per
// UPSTREAM_TOKEN: the provider's ID token (its header value cached on the
// principal), or an issued token cached on the principal and re-signed when half its lifetime has passed, so the hot path
// signs once per principal per half-lifetime, not per request.
func (h *Handler) upstreamAuthorization(a *authed) []string {
	switch h.o.UpstreamToken {
	case "id_token":
		if a.live == nil || a.live.Session.IDToken == "" {
			return nil
		}
		// A live session's ID token never changes (a refresh makes a
		// successor): its header value is made once.
		if t := a.Upstream.Load(); t != nil {
			return t.Header
		}
		t := &credential.UpstreamToken{Header: []string{"Bearer " + a.live.Session.IDToken}}
		a.Upstream.Store(t)
		return t.Header
	case "issued":
		if h.d.Upstream == nil {
			return nil
		}
		now := h.d.Now().Unix()
		if t := a.Upstream.Load(); t != nil && now < t.RenewAt {
			return t.Header
		}
		raw, exp, err := h.d.Upstream.Sign(a.UserHeader[0], a.Groups)
		if err != nil {
			h.log.Error("cannot sign the upstream token", zap.Error(err))
			return nil
		}
		t := &credential.UpstreamToken{Header: []string{"Bearer " + raw}, RenewAt: exp.Unix() - int64(h.d.Upstream.Lifetime().Seconds()/2)}
		a.Upstream.Store(t)
		return t.Header
	}
	return nil
}
