package check

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/authz"
	"github.com/oidc-authservice/oidc-authservice/internal/credential"
	"github.com/oidc-authservice/oidc-authservice/internal/identity"
	"github.com/oidc-authservice/oidc-authservice/internal/logtext"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// Login failure reasons, the "reason" label of oidc_authservice_logins_failed_total.
const (
	loginProviderError       = "provider_error"       // the provider answered the callback with an error
	loginBadRequest          = "bad_request"          // not a GET, or a missing or oversized code
	loginInvalidState        = "invalid_state"        // missing, unknown, expired or replayed state
	loginExchangeRejected    = "exchange_rejected"    // the token endpoint refused the code
	loginProviderUnavailable = "provider_unavailable" // the provider could not be reached
	loginInvalidToken        = "invalid_id_token"     // the ID token failed verification
	loginClaims              = "unusable_claims"      // no usable user id in the claims
	loginNotAuthorized       = "not_authorized"       // the policy refused the new identity
	loginTooLarge            = "identity_too_large"   // groups, session or ID token beyond what the service carries (limits.go)
	loginInternal            = "internal"             // randomness or sealing failed
)

// callback completes a login: state, code exchange with the PKCE verifier,
// ID token verification, claims, policy, then the session cookie.
func (h *Handler) callback(w http.ResponseWriter, r *http.Request, f front) {
	q := h.classify(r, extAuthz, f)
	v, failed := h.completeLogin(&q)
	h.answer(w, &q, &v)
	if h.d.Tracer != nil {
		traceLogin(&q, failed)
	}
	if failed != "" {
		h.d.Metrics.LoginFailed(failed)
	} else {
		h.d.Metrics.LoginCompleted()
	}
}

// completeLogin does the work of callback; it returns the answer and why
// the login failed, or "" when it made a session.
func (h *Handler) completeLogin(q *request) (verdict, string) {
	if q.Method != http.MethodGet && q.Method != http.MethodHead {
		h.quiet.Info("callback: method not allowed", q.rid(), zap.String("method", q.Method))
		return methodNotAllowed("GET, HEAD"), loginBadRequest
	}
	ls, v, failed := h.loginState(q)
	if failed != "" {
		return v, failed
	}
	code := q.URL.Query().Get("code")
	if code == "" || len(code) > 4096 {
		h.quiet.Info("callback rejected: missing or oversized code", q.rid())
		return withCookies(failure(http.StatusBadRequest, "Login failed", msgLoginFailed, h.safeTarget(q.Host, ls.URL)), v), loginBadRequest
	}
	// Anyone can bring a state minted for the asking back with a made-up
	// code: the exchanges in flight are bounded, so a flood of them while
	// the provider is slow cannot pile up connections to it.
	if !h.takeExchange() {
		h.quiet.Warn("login failed: too many code exchanges in flight; the provider is slow or flooded", q.rid(), zap.Int("max", maxExchanges))
		f := failure(http.StatusUnauthorized, "Sign-in unavailable", msgProviderDown, h.safeTarget(q.Host, ls.URL))
		f.retry = "5"
		return withCookies(f, v), loginProviderUnavailable
	}
	defer func() { <-h.exchanges }()
	// Token endpoint, keys and userinfo: each call is bounded by
	// PROVIDER_TIMEOUT (the HTTP client's), all of them by twice that,
	// within the server's write timeout.
	ctx, cancel := context.WithTimeout(q.Context(), 2*h.o.ProviderTimeout)
	defer cancel()
	login, err := h.d.Provider.Exchange(ctx, code, ls.Verifier, ls.Nonce)
	if err != nil {
		f, failed := h.loginError(q, ls.URL, err)
		return withCookies(f, v), failed
	}
	// The state is used now, and only now: the provider accepted its code
	// and the ID token carries its nonce. Remembering it any earlier would
	// let anyone fill the replay memory with states minted for the asking
	// (a made-up code, or none). A replay of this code and state is refused
	// here (two callbacks racing, or on another replica with Redis), before
	// the exchange on this replica (loginState), and by the provider, which
	// accepts a code once.
	if !h.d.Revocations.FirstUse(ctx, "state:"+ls.State, h.o.LoginStateTTL+time.Minute) {
		h.log.Warn("callback rejected: replayed state (its code was accepted twice)", q.rid())
		return withCookies(failure(http.StatusBadRequest, "Login failed", msgStateInvalid, "/"), v), loginInvalidState
	}
	id, report, err := h.d.Mapper.FromClaims(login.Claims)
	if errors.Is(err, identity.ErrTooManyGroups) {
		h.d.Metrics.IdentityLimit("login", "groups", "refused")
		h.log.Warn("login refused: more groups than the service forwards (see GROUPS_FILTER, GROUPS_MAX, GROUPS_OVERFLOW)",
			append(groupsFields(report), q.rid(), zap.String("sub", login.IDToken.Subject), zap.Error(err))...)
		f, _ := overLimit(err, h.safeTarget(q.Host, ls.URL))
		return withCookies(f, v), loginTooLarge
	}
	if err != nil {
		h.log.Warn("login refused: unusable claims", q.rid(), zap.String("sub", login.IDToken.Subject), zap.Error(err))
		return withCookies(failure(http.StatusForbidden, "Login refused", msgClaimsUnusable, ""), v), loginClaims
	}
	if report.Changed() {
		if report.Truncated > 0 {
			h.d.Metrics.IdentityLimit("login", "groups", "truncated")
		}
		h.log.Warn("groups left out: unsafe names, or beyond the limits with GROUPS_OVERFLOW=truncate",
			append(groupsFields(report), q.rid(), zap.String("user", id.User))...)
	}
	tp := targetPath(ls.URL)
	if ok, why := h.d.Policy.Decide(authz.Request{Host: q.Host, Path: tp.canon, RawPath: tp.raw, Method: http.MethodGet,
		User: h.o.UserPrefix + id.User, Groups: id.Groups}); !ok {
		h.log.Info("login refused: not authorized", q.rid(), zap.String("user", id.User), zap.String("reason", why))
		return withCookies(h.forbidden(h.o.UserPrefix+id.User, why), v), loginNotAuthorized
	}
	return h.newSession(q, login, id, ls, v)
}

// loginState finds, opens and consumes the login state the callback names.
// It returns the state, a verdict carrying the cookie that ends it, or a
// failure verdict and its reason.
func (h *Handler) loginState(q *request) (*session.LoginState, verdict, string) {
	query := q.URL.Query()
	state := query.Get("state")
	valid := session.ValidState(state)
	var v verdict
	sealed, have := "", false
	if valid {
		sealed, have = h.d.Cookies.ReadState(q.Header, q.secure, state)
		if have { // whatever happens next, this login is over
			v.cookies = []cookieOp{clearStateCookie(state)}
		}
	}
	refuse := func(why string) (*session.LoginState, verdict, string) {
		h.quiet.Info("callback rejected: "+why, q.rid())
		return nil, withCookies(failure(http.StatusBadRequest, "Login failed", msgStateInvalid, "/"), v), loginInvalidState
	}
	if e := query.Get("error"); e != "" {
		h.quiet.Info("login failed: provider returned an error", q.rid(),
			zap.String("error", logtext.Bound(e, 64)), zap.String("error_description", logtext.Bound(query.Get("error_description"), 256)))
		return nil, withCookies(failure(http.StatusUnauthorized, "Login failed", msgProviderError, h.loginRetry(q, sealed, state)), v), loginProviderError
	}
	switch {
	case !valid:
		return refuse("missing or malformed state")
	case !have:
		return refuse("no login state for this state (expired, replayed or another browser)")
	}
	var ls session.LoginState
	if err := h.d.Codec.Open(statePrefixed(state), sealed, &ls); err != nil {
		return refuse("login state does not open: " + err.Error())
	}
	now := h.d.Now()
	if subtle.ConstantTimeCompare([]byte(ls.State), []byte(state)) != 1 || now.Unix()-ls.Created > int64(h.o.LoginStateTTL.Seconds()) {
		return refuse("login state expired or mismatched")
	}
	if h.d.Revocations.Used("state:" + state) {
		return refuse("replayed state")
	}
	return &ls, v, ""
}

// maxExchanges bounds the code exchanges in flight per replica; a callback
// waits at most exchangeWait for one to finish. Logins take one each for
// about as long as the provider answers (milliseconds), so only a flood
// while the provider is slow reaches the bound.
const (
	maxExchanges = 64
	exchangeWait = time.Second
)

// takeExchange reserves a code exchange, waiting at most exchangeWait.
func (h *Handler) takeExchange() bool {
	select {
	case h.exchanges <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(exchangeWait)
	defer t.Stop()
	select {
	case h.exchanges <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// newSession seals the new session into the cookie and sends the browser
// back where the login started.
func (h *Handler) newSession(q *request, login *provider.Login, id identity.Identity, ls *session.LoginState, v verdict) (verdict, string) {
	s := h.sessionOf(login, id, ls.Nonce)
	maxAge := int(h.o.SessionMaxAge.Seconds())
	target := h.safeTarget(q.Host, ls.URL)
	if h.o.AfterLogin != "" {
		target = h.o.AfterLogin + sep(h.o.AfterLogin) + "next=" + url.QueryEscape(target)
	}
	var fits func(string) error
	if ls.Forward && h.o.ForwardAnswerMax > 0 {
		// The proxy of the nginx recipes reads every answer into a buffer
		// of its own (proxy_buffer_size): beyond it the user would meet
		// its bare 500 or 502 on every request, not this page.
		fits = func(sealed string) error { return h.fitsForward(s, sealed, target) }
	}
	sealed, err := h.storeSession(q, s, fits)
	if errors.Is(err, credential.ErrTooLarge) {
		var tl *credential.TooLargeError
		errors.As(err, &tl)
		h.d.Metrics.IdentityLimit("login", tl.Part, "refused")
		h.log.Warn("login refused: the session cannot be carried (see SESSION_MAX_COOKIES, UPSTREAM_HEADER_MAX_BYTES, GROUPS_FILTER)", q.rid(),
			zap.String("user", id.User), zap.String("part", tl.Part), zap.Int("bytes", tl.Bytes), zap.Int("limit", tl.Limit),
			zap.Int("groups", len(id.Groups)), zap.Int("id_token_bytes", len(s.IDToken)), zap.Int("access_token_bytes", len(s.AccessToken)))
		f, _ := overLimit(err, h.safeTarget(q.Host, ls.URL))
		return withCookies(f, v), loginTooLarge
	}
	if err != nil {
		h.log.Error("login failed: cannot store session", q.rid(), zap.String("user", id.User), zap.Error(err))
		return withCookies(failure(http.StatusForbidden, "Login failed", msgLoginFailed, ""), v), loginInternal
	}
	h.d.Metrics.SessionBytes(len(sealed))
	h.log.Info("login", q.rid(), zap.String("user", id.User), zap.String("sub", s.Subject), zap.Int("groups", len(id.Groups)),
		zap.Int("session_bytes", len(sealed)))
	return redirectTo(target, append(v.cookies, setSessionCookie(sealed, maxAge))...), ""
}

// storeSession seals a new session for its cookies. Tokens it keeps only
// for logout go first when it does not fit, each with a log line and a
// count: the ID token (the logout then reaches the provider's end-session
// endpoint without id_token_hint), then the access token (the logout
// revokes the refresh token only, which at most providers ends the grant's
// access tokens too). What a feature needs (the ID token handed upstream,
// the access token of strict validation, the refresh token) is never
// dropped: the login is refused instead (credential.TooLargeError). fits,
// when not nil, is a further bound on the sealed session.
func (h *Handler) storeSession(q *request, s *session.Session, fits func(string) error) (string, error) {
	seal := func() (string, error) {
		sealed, err := h.d.Sessions.Seal(s)
		if err == nil && fits != nil {
			err = fits(sealed)
		}
		return sealed, err
	}
	sealed, err := seal()
	for _, t := range []struct {
		token    *string
		expiry   *int64
		needed   bool
		name, so string
	}{
		{&s.IDToken, &s.IDTokenExpiry, h.o.UpstreamToken == "id_token", "id_token", "logout goes to the provider's end-session endpoint without id_token_hint"},
		{&s.AccessToken, nil, h.o.StrictValidation, "access_token", "logout revokes the refresh token only"},
	} {
		var tl *credential.TooLargeError
		if !errors.As(err, &tl) || (tl.Part != credential.PartSession && tl.Part != PartForwardAnswer) || t.needed || *t.token == "" {
			continue
		}
		h.d.Metrics.IdentityLimit("login", t.name, "dropped")
		h.log.Info("session too large with the "+t.name+" it keeps for logout: kept without it; "+t.so, q.rid(),
			zap.String("user", s.User), zap.String("part", tl.Part), zap.Int("bytes", tl.Bytes), zap.Int("limit", tl.Limit),
			zap.Int(t.name+"_bytes", len(*t.token)))
		*t.token = ""
		if t.expiry != nil {
			*t.expiry = 0
		}
		sealed, err = seal()
	}
	return sealed, err
}

// sessionOf is the session a login with this nonce makes. Its id is
// derived from the nonce, so that the provider's tokens of the login, which
// carry it, name the session (session.IDFromNonce).
func (h *Handler) sessionOf(l *provider.Login, id identity.Identity, nonce string) *session.Session {
	now := h.d.Now()
	s := &session.Session{
		ID:           session.IDFromNonce(nonce),
		Subject:      l.IDToken.Subject,
		Issuer:       l.IDToken.Issuer,
		User:         id.User,
		Groups:       id.Groups,
		Created:      now.Unix(),
		Expires:      now.Add(h.o.SessionMaxAge).Unix(),
		Active:       now.Unix(),
		Renewed:      now.Unix(),
		RefreshToken: l.Token.RefreshToken,
		GroupsPolicy: h.d.Mapper.Policy().Fingerprint(),
	}
	// Every request carries the cookie: keep a token only when a feature
	// needs it, so sessions stay in one cookie (which the old dashboard's
	// logout needs) and cheap to send.
	if h.o.StrictValidation || (h.o.RevokeTokens && h.d.Provider.RevocationEndpoint() != "") {
		s.AccessToken = l.Token.AccessToken
	}
	if (h.o.ProviderLogout && h.d.Provider.EndSessionEndpoint() != "") || h.o.UpstreamToken == "id_token" {
		s.IDToken, s.IDTokenExpiry = l.RawID, l.IDToken.Expiry.Unix()
	}
	if email, ok := l.Claims["email"].(string); ok && h.o.AuthRequestHeaders {
		s.Email = email
	}
	if s.RefreshToken != "" && !l.Token.Expiry.IsZero() {
		s.TokenExpiry = l.Token.Expiry.Unix()
	}
	if sid, ok := l.Claims["sid"].(string); ok {
		s.SID = sid
	}
	return s
}

// loginError answers a failed code exchange and returns the metrics reason.
func (h *Handler) loginError(q *request, original string, err error) (verdict, string) {
	retry := h.safeTarget(q.Host, original)
	switch {
	case errors.Is(err, provider.ErrUnavailable), errors.Is(err, provider.ErrNotReady), errors.Is(err, context.DeadlineExceeded):
		h.quiet.Warn("login failed: provider unavailable", q.rid(), zap.Error(err))
		return failure(http.StatusUnauthorized, "Sign-in unavailable", msgProviderDown, retry), loginProviderUnavailable
	case errors.Is(err, provider.ErrRejected):
		h.quiet.Info("login failed: code rejected by the provider", q.rid(), zap.Error(err))
		return failure(http.StatusUnauthorized, "Login failed", msgLoginFailed, retry), loginExchangeRejected
	default:
		h.quiet.Warn("login failed: ID token invalid", q.rid(), zap.Error(err))
		return failure(http.StatusUnauthorized, "Login failed", msgLoginFailed, retry), loginInvalidToken
	}
}

// loginRetry is the retry link after a provider error: the original URL when
// the state cookie still tells it.
func (h *Handler) loginRetry(q *request, sealed, state string) string {
	var ls session.LoginState
	if sealed != "" && h.d.Codec.Open(statePrefixed(state), sealed, &ls) == nil {
		return h.safeTarget(q.Host, ls.URL)
	}
	return "/"
}

// withCookies is f with the cookies of v (the login state being ended).
func withCookies(f, v verdict) verdict {
	f.cookies = append(v.cookies, f.cookies...)
	return f
}

// targetPath is the path of the URL a login started from: the request the
// user will be sent back to, which the policy judges.
func targetPath(u string) requestPath {
	if p, err := url.Parse(u); err == nil && p.Path != "" {
		if rp, ok := readPath(p); ok {
			return rp
		}
	}
	return requestPath{raw: "/", canon: "/"}
}

func sep(u string) string {
	if strings.Contains(u, "?") {
		return "&"
	}
	return "?"
}
