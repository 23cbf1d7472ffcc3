package check

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/authz"
	"github.com/oidc-authservice/oidc-authservice/internal/cache"
	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/identity"
	"github.com/oidc-authservice/oidc-authservice/internal/issuer"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/pages"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// Deps are the parts a Handler is built from, each built once at start-up.
type Deps struct {
	Settings *config.Settings
	Logger   *zap.Logger
	Codec    *session.Codec
	Provider *provider.Provider
	Mapper   *identity.Mapper
	Policy   *authz.Policy
	Pages    *pages.Pages
	// Upstream issues identity tokens for upstreams (UPSTREAM_TOKEN=issued).
	Upstream *issuer.Issuer
	// Tokens authenticates bearer JWTs; nil when no issuer is configured.
	Tokens *authn.Authenticator
	// Reviews authenticates the bearer JWTs whose issuer Tokens does not
	// know, by Kubernetes TokenReview; nil when KUBERNETES_AUTHN_ENABLED is
	// off.
	Reviews TokenAuthenticator
	// Revocations lists sessions ended before their expiry.
	Revocations *revocation.List
	Now         func() time.Time
	Random      io.Reader
	// SessionCacheSize bounds the cache of verified session cookies.
	SessionCacheSize int
	// Metrics records decisions, logins and cache lookups; may be nil.
	Metrics *metrics.Metrics
}

// Handler answers ext_authz checks.
type Handler struct {
	Deps
	cfg *config.Settings
	log *zap.Logger

	userHeader, groupsHeader string   // canonical forms
	removeIdentity           []string // the identity headers and their underscore spellings
	removeLookalike          []string // the underscore spellings only (nil when there are none)
	removeBearerSession      []string // the underscore spellings and authorization
	statePrefix              string
	hostSessionName          string // __Host-<SESSION_COOKIE_NAME>
	redirectHTTPS            bool

	// verified caches opened sessions with their header values, under the
	// SHA-256 of the sealed value; only values that opened are stored, so
	// bogus cookies cannot fill it.
	verified *cache.Cache[*principal]
	// usedStates remembers consumed login states so a replayed callback is
	// refused even while its cookie is still around.
	usedStates *cache.Cache[int64]
	// access writes the audit lines of ACCESS_LOG; nil when it is off.
	access *accessLog
}

// New builds the Handler.
func New(d Deps) *Handler {
	if d.SessionCacheSize <= 0 {
		d.SessionCacheSize = 20000
	}
	s := d.Settings
	look := lookalikes(s.UserIDHeader, s.GroupsHeader)
	var access *accessLog
	if s.AccessLog {
		access = &accessLog{log: d.Logger.Named("access"), rate: s.AccessLogRate, metrics: d.Metrics}
	}
	return &Handler{
		access:              access,
		Deps:                d,
		cfg:                 s,
		log:                 d.Logger.Named("check"),
		userHeader:          http.CanonicalHeaderKey(s.UserIDHeader),
		groupsHeader:        http.CanonicalHeaderKey(s.GroupsHeader),
		removeIdentity:      []string{strings.Join(append([]string{strings.ToLower(s.UserIDHeader), strings.ToLower(s.GroupsHeader)}, look...), ",")},
		removeLookalike:     headerList(look),
		removeBearerSession: headerList(append(look, "authorization")),
		statePrefix:         "authservice_state_",
		hostSessionName:     hostPrefix + s.SessionCookieName,
		redirectHTTPS:       strings.HasPrefix(strings.ToLower(s.RedirectURL), "https://"),
		verified:            cache.New[*principal](d.SessionCacheSize),
		usedStates:          cache.New[int64](100000),
	}
}

// ServeHTTP takes the decision documented in the package comment.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == h.cfg.RedirectPath:
		h.callback(w, r)
	case p == h.cfg.LogoutPath:
		h.logout(w, r)
	case p == h.cfg.VerifyPath:
		h.verify(w, r)
	case p == h.cfg.StartPath:
		h.start(w, r)
	default:
		h.decide(w, r, extAuthz)
	}
}

// mode is who asks: Envoy's ext_authz filter, or a forward-auth proxy
// (nginx auth_request, Caddy forward_auth, Traefik forwardAuth) through the
// verify endpoint.
type mode int

const (
	extAuthz mode = iota
	forwardAuth
)

// decide answers for request r (the decision table of the package comment)
// and records the answer in the metrics and the access log.
func (h *Handler) decide(w http.ResponseWriter, r *http.Request, m mode) {
	start := time.Now()
	d, why, pr := h.decision(w, r, m)
	h.Metrics.Check(d, why, time.Since(start))
	if h.access != nil {
		h.access.line(r, d, why, pr)
	}
}

func (h *Handler) decision(w http.ResponseWriter, r *http.Request, m mode) (metrics.Decision, metrics.Reason, *principal) {
	if h.skipped(r.URL.Path) {
		h.allowAnonymous(w, r, "skip path", m)
		return metrics.Allow, metrics.SkipPath, nil
	}
	pr, cred, reason := h.authenticateWith(r)
	if pr != nil {
		next, sealed, err := h.lifecycle(r, pr)
		if err == nil {
			if sealed != "" {
				h.writeSession(w, r, sealed, int(next.sess.Expires-h.Now().Unix()))
			}
			if !h.authorized(w, r, next, cred) {
				return metrics.Forbidden, metrics.Policy, next
			}
			if cred == bearerJWT {
				return metrics.Allow, metrics.Token, next
			}
			return metrics.Allow, metrics.Session, next
		}
		if err == errValidationPending {
			h.failPage(w, r, http.StatusUnauthorized, "Sign-in unavailable", msgProviderDown, h.retryLink(r))
			return metrics.Deny, metrics.ProviderUnavailable, pr
		}
		reason = err
	}
	if r.Method == http.MethodOptions && h.cfg.AllowUnauthenticatedOptions {
		h.allowAnonymous(w, r, "unauthenticated OPTIONS allowed", m)
		return metrics.Allow, metrics.Options, nil
	}
	if errors.Is(reason, authn.ErrInvalidToken) {
		h.log.Info("bearer token refused", requestID(r), zap.Error(reason))
		h.unauthenticated(w)
		return metrics.Deny, metrics.InvalidToken, nil
	}
	why := metrics.NoCredentials
	if reason != nil {
		why = metrics.InvalidSession
		h.clearSession(w, r)
	}
	if h.browserNavigation(r) && (m == extAuthz || h.cfg.ForwardAuthRedirect) {
		if !h.startLogin(w, r, reason) {
			return metrics.Fail, metrics.ProviderUnavailable, nil
		}
		return metrics.Redirect, why, nil
	}
	h.debug(r, "deny", "unauthenticated", zap.NamedError("cookie", reason))
	h.unauthenticated(w)
	return metrics.Deny, why, nil
}

// credential is what authenticated a request.
type credential uint8

const (
	sessionCookie credential = iota
	sessionBearer            // a session value as Authorization: Bearer (older SDKs)
	bearerJWT                // a bearer JWT of a trusted issuer
)

// authenticate finds a valid session in the cookie or, as older SDK clients
// send it, in Authorization: Bearer. It returns the reason a presented
// credential was refused, or nil when there was none.
func (h *Handler) authenticate(r *http.Request) (*principal, error) {
	pr, _, err := h.authenticateWith(r)
	return pr, err
}

// authenticateWith is authenticate that also tells which credential
// authenticated the request.
func (h *Handler) authenticateWith(r *http.Request) (*principal, credential, error) {
	var reason error
	if v, present := h.readSession(r.Header); v != "" {
		pr, err := h.open(v)
		if err == nil {
			return pr, sessionCookie, nil
		}
		reason = err
	} else if present {
		reason = session.ErrMalformed // chunks that do not fit together
	}
	if v, ok := bearer(r.Header); ok {
		if looksLikeJWT(v) {
			pr, err := h.openToken(r, v)
			return pr, bearerJWT, err
		}
		pr, err := h.open(v)
		if err == nil {
			return pr, sessionBearer, nil
		}
		if reason == nil {
			reason = err
		}
	}
	return nil, sessionCookie, reason
}

func (h *Handler) open(value string) (*principal, error) {
	if value == "" || len(value) > session.MaxValue {
		return nil, session.ErrMalformed
	}
	k := cache.KeyOf(value)
	pr, ok := h.verified.Get(k)
	h.Metrics.CacheLookup(metrics.SessionCache, ok)
	if ok {
		if h.Now().Unix() < pr.sess.Expires {
			return pr, nil
		}
		h.verified.Delete(k)
		return nil, session.ErrExpired
	}
	s, err := h.Codec.OpenSession(h.cfg.SessionCookieName, value)
	if err != nil {
		return nil, err
	}
	pr = h.newPrincipal(value, s, max(s.Created, s.Renewed))
	h.verified.Put(k, pr)
	return pr, nil
}

// authorized answers for an authenticated principal: allow with the
// identity headers, or 403 when the policy refuses (then it returns false).
func (h *Handler) authorized(w http.ResponseWriter, r *http.Request, pr *principal, cred credential) bool {
	if ok, why := h.Policy.Decide(authz.Request{Host: r.Host, Path: r.URL.Path, Method: r.Method, User: pr.user[0], Groups: pr.sess.Groups}); !ok {
		h.log.Info("not authorized", requestID(r), zap.String("user", pr.sess.User), zap.String("reason", why))
		h.forbidden(w, r, pr.user[0], why)
		return false
	}
	hd := w.Header()
	hd[h.userHeader] = pr.user
	hd[h.groupsHeader] = pr.groups
	// A session value sent as Authorization: Bearer (older SDKs) is a
	// credential of this service: it does not go on to the upstream.
	if cred == sessionBearer {
		hd["X-Envoy-Auth-Headers-To-Remove"] = h.removeBearerSession
	} else if h.removeLookalike != nil {
		hd["X-Envoy-Auth-Headers-To-Remove"] = h.removeLookalike
	}
	if auth := h.upstreamAuthorization(pr); auth != nil {
		hd["Authorization"] = auth
	}
	w.WriteHeader(http.StatusOK)
	h.debug(r, "allow", "session", zap.String("user", pr.sess.User))
	return true
}

// allowAnonymous lets a request through without identity, telling Envoy to
// strip any identity header the client sent.
func (h *Handler) allowAnonymous(w http.ResponseWriter, r *http.Request, why string, m mode) {
	w.Header()["X-Envoy-Auth-Headers-To-Remove"] = h.removeIdentity
	if m == forwardAuth {
		// Forward-auth proxies copy the listed headers from this answer
		// onto the request: empty values overwrite what the client sent.
		w.Header()[h.userHeader] = empty
		w.Header()[h.groupsHeader] = empty
	}
	w.WriteHeader(http.StatusOK)
	h.debug(r, "allow", why)
}

// skipped reports whether p is under SKIP_AUTH_URLS or the service's own
// pages. Both the path as sent and its cleaned form must match, so that
// "/dex/../api" is not skipped.
func (h *Handler) skipped(p string) bool {
	clean := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	if underPrefix(clean, h.cfg.SitePrefix) && underPrefix(p, h.cfg.SitePrefix) {
		return true
	}
	if p == h.cfg.BackchannelPath {
		return true
	}
	for _, pre := range h.cfg.SkipPrefixes {
		if underPrefix(p, pre) && underPrefix(clean, pre) {
			return true
		}
	}
	return false
}

// underPrefix matches path prefixes on segment boundaries: "/dex" matches
// "/dex" and "/dex/auth" but not "/dexterity"; "/api/" matches "/api" and
// everything below it.
func underPrefix(p, prefix string) bool {
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(p, prefix) || p == prefix[:len(prefix)-1]
	}
	return p == prefix || (strings.HasPrefix(p, prefix) && p[len(prefix)] == '/')
}

// browserNavigation reports whether an unauthenticated request should be
// sent to the login page rather than answered 401: a top-level GET/HEAD from
// a browser. Accept, X-Requested-With and Sec-Fetch-Mode are used when the
// gateway forwards them; without them a GET is taken as a navigation.
func (h *Handler) browserNavigation(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	hd := r.Header
	if strings.EqualFold(hd.Get("X-Requested-With"), "XMLHttpRequest") {
		return false
	}
	if m := hd.Get("Sec-Fetch-Mode"); m != "" && m != "navigate" && m != "nested-navigate" {
		return false
	}
	if a := hd.Get("Accept"); a != "" && !acceptsHTML(a) {
		return false
	}
	clean := path.Clean("/" + r.URL.Path)
	for _, pre := range h.cfg.APIPrefixes {
		if underPrefix(r.URL.Path, pre) || underPrefix(clean, pre) {
			return false
		}
	}
	return true
}

func acceptsHTML(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		mt, _, _ := strings.Cut(part, ";")
		switch strings.ToLower(strings.TrimSpace(mt)) {
		case "text/html", "application/xhtml+xml", "*/*", "text/*":
			return true
		}
	}
	return false
}

var empty = []string{""}

// lookalikes are the underscore spellings of the identity headers, for
// x-envoy-auth-headers-to-remove: Envoy passes kubeflow_userid through by
// default, and some upstream servers (WSGI, CGI) read it as kubeflow-userid.
func lookalikes(user, groups string) []string {
	var out []string
	for _, n := range []string{user, groups} {
		if u := strings.ReplaceAll(strings.ToLower(n), "-", "_"); u != strings.ToLower(n) {
			out = append(out, u)
		}
	}
	return out
}

// headerList is names as one header value, or nil when there are none.
func headerList(names []string) []string {
	if len(names) == 0 {
		return nil
	}
	return []string{strings.Join(names, ",")}
}

func joinGroups(g []string) string { return strings.Join(g, ",") }

func bearer(h http.Header) (string, bool) {
	a := h.Get("Authorization")
	if len(a) < 7 || !strings.EqualFold(a[:7], "bearer ") {
		return "", false
	}
	v := strings.TrimSpace(a[7:])
	return v, v != ""
}

// secure reports whether cookies set in answer to r get the Secure flag.
func (h *Handler) secure(r *http.Request) bool {
	switch h.cfg.SessionSecure {
	case "true":
		return true
	case "false":
		return false
	}
	return h.redirectHTTPS || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func requestID(r *http.Request) zap.Field {
	return zap.String("request_id", r.Header.Get("X-Request-Id"))
}

func (h *Handler) debug(r *http.Request, decision, reason string, fields ...zap.Field) {
	if ce := h.log.Check(zap.DebugLevel, "decision"); ce != nil {
		ce.Write(append(fields, requestID(r), zap.String("decision", decision), zap.String("reason", reason),
			zap.String("method", r.Method), zap.String("host", r.Host), zap.String("path", r.URL.Path))...)
	}
}

// providerContext bounds a call to the provider made while Envoy waits.
func (h *Handler) providerContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), h.cfg.ProviderTimeout)
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
	case errors.Is(err, session.ErrMalformed):
		return "malformed"
	case err == errRevoked, err == errIdle, err == errRefreshRejected, err == errValidationRejected:
		return err.Error()
	default:
		return "malformed"
	}
}
