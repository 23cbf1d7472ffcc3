package check

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/authorizer"
	"github.com/oidc-authservice/oidc-authservice/internal/authz"
	"github.com/oidc-authservice/oidc-authservice/internal/credential"
	"github.com/oidc-authservice/oidc-authservice/internal/identity"
	"github.com/oidc-authservice/oidc-authservice/internal/logtext"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/pages"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
	"github.com/oidc-authservice/oidc-authservice/internal/tracing"
)

// Options configure the check: the endpoints, the paths it judges by and
// the login and logout behaviour.
type Options struct {
	CallbackPath, LogoutPath, VerifyPath, StartPath, SitePrefix, BackchannelPath string

	SkipPrefixes []string // SKIP_AUTH_URLS
	APIPrefixes  []string // API_PATH_PREFIXES
	AllowOptions bool     // ALLOW_UNAUTHENTICATED_OPTIONS

	UserHeader, GroupsHeader string
	UserPrefix               string
	AuthRequestHeaders       bool // oauth2-proxy's X-Auth-Request-* too

	AfterLogin           string
	AfterLogout          string
	AllowedRedirectHosts []string
	LoginStateTTL        time.Duration
	MaxPendingLogins     int
	SessionMaxAge        time.Duration
	RenewRedirect        bool          // SESSION_RENEW_REDIRECT
	StrictValidation     bool          // the session keeps its access token
	ProviderTimeout      time.Duration // one provider call; a callback's calls get twice this

	RevokeTokens          bool
	ProviderLogout        bool
	PostLogoutRedirectURL string

	ForwardAuthProxy    string
	TrustedProxies      []netip.Prefix
	ForwardAuthRedirect bool
	// ForwardAnswerMax bounds the answers of a session whose login started
	// at the start endpoint, and those that renew a session behind nginx
	// (FORWARD_AUTH_ANSWER_MAX_BYTES); 0: none.
	ForwardAnswerMax int

	UpstreamToken string // none, id_token or issued
	// KeepBearer leaves a client's accepted bearer token on the upstream
	// request (UPSTREAM_BEARER=keep); otherwise the allow answer removes it.
	KeepBearer bool
	// AcceptProviderIDTokens: the provider's ID tokens are bearer tokens
	// here (ACCEPT_PROVIDER_ID_TOKENS), the one of UPSTREAM_TOKEN=id_token
	// too.
	AcceptProviderIDTokens bool

	AccessLog     bool
	AccessLogRate float64
}

// Deps are the parts a Handler works with, each built once at start-up.
type Deps struct {
	Logger      *zap.Logger
	Cookies     *session.Cookies
	Codec       *session.Codec
	Provider    *provider.Provider
	Mapper      *identity.Mapper
	Policy      *authz.Policy
	Authorizer  *authorizer.Authorizer // EXTERNAL_AUTHZ_URL; nil: none
	Pages       *pages.Pages
	Sessions    *credential.Sessions
	Tokens      *credential.Tokens
	Opaque      *credential.Opaque // ACCESS_TOKEN_AUTHN=opaque; nil otherwise
	Upstream    Signer             // UPSTREAM_TOKEN=issued; nil otherwise
	Revocations *revocation.List
	Backchannel http.Handler
	Metrics     *metrics.Metrics
	Tracer      *tracing.Tracer // nil: no traces
	Now         func() time.Time
	Random      io.Reader
}

// Signer mints the identity tokens upstreams get with UPSTREAM_TOKEN=issued
// (upstreamtoken.Issuer).
type Signer interface {
	Sign(sub string, groups []string) (string, time.Time, error)
	Lifetime() time.Duration
}

// Handler answers ext_authz checks and the login and logout flows.
type Handler struct {
	o   Options
	d   Deps
	log *zap.Logger
	// quiet logs what anonymous requests can cause (refused callbacks,
	// tokens, paths, forward-auth headers): a few lines a second per
	// message, the rest counted (logtext.Limited).
	quiet *zap.Logger
	// exchanges are the code exchanges in flight (maxExchanges): a callback
	// needs no account, and each holds a connection to the provider.
	exchanges chan struct{}

	userHeader, groupsHeader string // canonical forms
	remove                   removals
	counters                 [nFronts][nDecisions][nReasons]*metrics.CheckCounter
	access                   *accessLog // nil when ACCESS_LOG is off
	// epoch starts the monotonic clock that times checks: time.Since(epoch)
	// reads only the monotonic clock, half the cost of time.Now.
	epoch time.Time
	// replayable warns, once per process and kind, that a forward-auth
	// upstream was handed a token this service accepts (allow.go).
	replayable [2]sync.Once
	// fitsVerify bounds a verify answer that renews a session behind
	// nginx (answerFits), made once: no allocation per check.
	fitsVerify func(*session.Session, string) error
}

// New builds the Handler.
func New(o Options, d Deps) *Handler {
	log := d.Logger.Named("check")
	h := &Handler{o: o, d: d, log: log, quiet: logtext.Limited(log, quietBurst, quietReport), exchanges: make(chan struct{}, maxExchanges),
		userHeader: http.CanonicalHeaderKey(o.UserHeader), groupsHeader: http.CanonicalHeaderKey(o.GroupsHeader),
		remove: newRemovals(o.UserHeader, o.GroupsHeader, o.AuthRequestHeaders), epoch: time.Now()}
	for f := range nFronts {
		for dc := range nDecisions {
			for rs := range nReasons {
				h.counters[f][dc][rs] = d.Metrics.CheckCounter(f.String(), dc.String(), rs.String())
			}
		}
	}
	if o.AccessLog {
		h.access = &accessLog{log: d.Logger.Named("access"), rate: o.AccessLogRate, metrics: d.Metrics}
	}
	h.fitsVerify = func(s *session.Session, sealed string) error { return h.fitsForward(s, sealed, "") }
	return h
}

// Lines of the quiet logger: per message at most quietBurst a second, and
// a count of the rest at most every quietReport.
const (
	quietBurst  = 5
	quietReport = 10 * time.Second
)

// ServeHTTP answers a request of the HTTP check port (SERVER_PORT): the
// service's own endpoints, and the decision of the package comment for
// every other request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.route(w, r, frontHTTP, nil)
}

// route is where every check starts, whatever its front (front.go): the
// server span (TRACING) continuing the trace context of carrier (nil: the
// request's header), then the service's own endpoints, else the decision.
func (h *Handler) route(w http.ResponseWriter, r *http.Request, f front, carrier propagation.TextMapCarrier) {
	if h.d.Tracer != nil {
		var span tracing.Span
		r, span = h.traceStart(r, carrier, f)
		defer span.End()
	}
	switch p := r.URL.Path; {
	case p == h.o.CallbackPath:
		h.callback(w, r, f)
		endpoint(w, "callback")
	case p == h.o.LogoutPath:
		h.logout(w, r, f)
		endpoint(w, "logout")
	case p == h.o.VerifyPath:
		h.verify(w, r, f)
	case p == h.o.StartPath:
		h.start(w, r, f)
		endpoint(w, "start")
	case p == h.o.BackchannelPath && r.Method == http.MethodPost && r.ContentLength != 0:
		// The delivery itself, not Envoy's check of it (a check carries no
		// body): forward-auth recipes route <prefix>* to this port.
		h.d.Backchannel.ServeHTTP(w, r)
	default:
		h.check(w, r, extAuthz, f)
	}
}

// check answers for r, read top to bottom: classify the request once,
// authenticate its credential, authorize the principal, write the answer.
func (h *Handler) check(w http.ResponseWriter, r *http.Request, m mode, f front) {
	h.serve(w, r, m, f, nil)
}

// refusal is the answer to a request its front refused before any
// decision (a forward-auth request that does not describe the original
// one, a gRPC CheckRequest that cannot be translated): the verdict, and
// the log line saying why, given the request's id.
type refusal struct {
	v   verdict
	log func(rid zap.Field)
}

// serve classifies, decides (h.decide, or pre's verdict when the front
// refused the request), answers, and records the check (counter, latency,
// access log): every answer of a check goes through it. decide is called
// directly, not through a function value, so that the request stays on the
// stack (the hot path allocates nothing for it).
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, m mode, f front, pre *refusal) {
	start := time.Since(h.epoch)
	q := h.classify(r, m, f)
	var v verdict
	if pre != nil {
		pre.log(q.rid())
		v = pre.v
	} else {
		v = h.decide(&q)
	}
	h.answer(w, &q, &v)
	h.counters[f][v.decision][v.reason].Add(time.Since(h.epoch) - start)
	if h.d.Tracer != nil {
		traceCheck(&q, &v)
	}
	if h.access != nil {
		h.access.line(&q, &v)
	}
}

// decide is the decision table of the package comment.
func (h *Handler) decide(q *request) verdict {
	switch {
	case !q.pathOK:
		h.quiet.Info("refused: path malformed once decoded (control character, bad escape)", q.rid())
		return badRequest("malformed path")
	case h.skipped(q.path):
		return verdict{decision: allow, reason: skipPath, status: http.StatusOK}
	}
	a, v := h.authenticate(q)
	switch {
	case a.ok():
		return h.authorize(q, a, v)
	case v.final:
		return v
	case q.Method == http.MethodOptions && h.o.AllowOptions:
		return verdict{decision: allow, reason: options, status: http.StatusOK}
	case v.reason != invalidToken && h.nav(q) && (q.mode == extAuthz || h.o.ForwardAuthRedirect):
		return h.startLogin(q, v, false)
	}
	return v.unauthenticated()
}

// skipped reports whether the request's path is under SKIP_AUTH_URLS or
// the service's own pages (or is the back-channel logout path) in both
// readings, as sent and canonical, so that neither "/dex/../api" nor
// "/dex/..%2Fapi" is skipped.
func (h *Handler) skipped(p requestPath) bool {
	if p.under(h.o.SitePrefix) || (p.raw == h.o.BackchannelPath && p.canon == h.o.BackchannelPath) {
		return true
	}
	for _, pre := range h.o.SkipPrefixes {
		if p.under(pre) {
			return true
		}
	}
	return false
}

// removals are the values of x-envoy-auth-headers-to-remove, built once.
type removals struct {
	identity      []string // the identity headers and their underscore spellings
	lookalike     []string // the underscore spellings only (nil when there are none)
	bearerSession []string // the underscore spellings and authorization
	// The same lists with "cookie" added, for an allow that must remove the
	// Cookie header because only the service's cookies were in it.
	identityCookie, lookalikeCookie, bearerSessionCookie []string
}

// newRemovals lists the underscore spellings of the identity headers too:
// Envoy passes kubeflow_userid through by default, and some upstream
// servers (WSGI, CGI) read it as kubeflow-userid. With authRequest,
// anonymous answers remove oauth2-proxy's identity headers as well.
func newRemovals(user, groups string, authRequest bool) removals {
	var look []string
	for _, n := range []string{user, groups} {
		if u := strings.ReplaceAll(strings.ToLower(n), "-", "_"); u != strings.ToLower(n) {
			look = append(look, u)
		}
	}
	list := func(names ...string) []string {
		if len(names) == 0 {
			return nil
		}
		return []string{strings.Join(names, ",")}
	}
	all := append([]string{strings.ToLower(user), strings.ToLower(groups)}, look...)
	if authRequest {
		all = append(all, authRequestNames...)
	}
	bearer := append(append([]string{}, look...), "authorization")
	return removals{
		identity: list(all...), lookalike: list(look...), bearerSession: list(bearer...),
		identityCookie: list(append(all, "cookie")...), lookalikeCookie: list(append(append([]string{}, look...), "cookie")...),
		bearerSessionCookie: list(append(bearer, "cookie")...),
	}
}
