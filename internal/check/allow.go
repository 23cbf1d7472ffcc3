package check

import (
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/credential"
)

// credKind is what authenticated a request.
type credKind uint8

const (
	sessionCookie credKind = iota
	sessionBearer          // a session value as Authorization: Bearer (older SDKs)
	bearerJWT              // a bearer JWT of a trusted issuer
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
	// The credential that authenticated the request does not go on to the
	// upstream (a colleague's notebook server, in Kubeflow), which could
	// present it to this gateway as the user: a session value sent as
	// Authorization: Bearer (older SDKs) never, a bearer token unless
	// UPSTREAM_BEARER=keep. The token of UPSTREAM_TOKEN, when there is
	// one, is set in its place; Envoy applies removals after the headers it
	// sets, so authorization is then not listed.
	auth := h.upstreamAuthorization(a)
	strip := a.cred == sessionBearer || (a.cred == bearerJWT && !h.o.KeepBearer)
	if strip && auth == nil {
		h.removeHeaders(hd, q, h.remove.bearerSession, h.remove.bearerSessionCookie)
	} else {
		h.removeHeaders(hd, q, h.remove.lookalike, h.remove.lookalikeCookie)
	}
	if auth != nil {
		hd["Authorization"] = auth
	}
	if h.o.AuthRequestHeaders {
		setAuthRequestHeaders(hd, a)
	}
	if ce := h.log.Check(zap.DebugLevel, "decision"); ce != nil {
		ce.Write(q.rid(), zap.String("decision", "allow"), zap.String("user", a.User), zap.String("method", q.Method),
			zap.String("host", q.Host), zap.String("path", q.URL.Path))
	}
}

// allowAnonymous completes an allow answer without identity: Envoy strips
// any identity header the client sent; forward-auth proxies copy the empty
// values over the client's.
func (h *Handler) allowAnonymous(hd http.Header, q *request) {
	h.removeHeaders(hd, q, h.remove.identity, h.remove.identityCookie)
	if q.mode == forwardAuth {
		hd[h.userHeader] = empty
		hd[h.groupsHeader] = empty
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
// header (docs/forward-auth.md), so that answer always carries one.
func (h *Handler) removeHeaders(hd http.Header, q *request, remove, withCookie []string) {
	rest, changed := h.d.Cookies.WithoutOwn(q.Header)
	if q.mode == forwardAuth {
		if !changed {
			rest = strings.Join(q.Header["Cookie"], "; ")
		}
		hd["Cookie"] = []string{rest}
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
