package check

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/authz"
	"github.com/oidc-authservice/oidc-authservice/internal/cache"
	"github.com/oidc-authservice/oidc-authservice/internal/identity"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

func cacheKey(v string) cache.Key { return cache.KeyOf(v) }

// startLogin sends a browser to the provider: a fresh state, nonce and PKCE
// verifier sealed in a cookie of their own, named after the state, so that
// logins in several tabs do not disturb each other.
// It reports false when it answered with an error page instead.
func (h *Handler) startLogin(w http.ResponseWriter, r *http.Request, reason error) bool {
	ls, err := session.NewLoginState(h.Random, h.originalURL(r), h.Now().Unix())
	if err != nil {
		h.log.Error("no randomness for a login state", zap.Error(err))
		h.failPage(w, r, http.StatusUnauthorized, "Login failed", msgLoginFailed, "")
		return false
	}
	authURL, err := h.Provider.AuthCodeURL(ls.State, ls.Nonce, ls.Challenge())
	if err != nil {
		h.log.Warn("login not started: provider not discovered yet", requestID(r))
		w.Header().Set("Retry-After", "5")
		h.failPage(w, r, http.StatusUnauthorized, "Sign-in unavailable", msgProviderDown, h.retryLink(r))
		return false
	}
	sealed, err := h.Codec.Seal(h.statePrefix+ls.State, ls)
	if err != nil {
		h.log.Error("cannot seal login state", zap.Error(err))
		h.failPage(w, r, http.StatusUnauthorized, "Login failed", msgLoginFailed, "")
		return false
	}
	h.prunePendingLogins(w, r)
	// Lax whatever SESSION_SAME_SITE says: the callback is a top-level
	// navigation from the provider's site, which Strict would not send.
	h.setCookie(w, r, h.statePrefix+ls.State, sealed, int(h.cfg.LoginStateTTL/time.Second), http.SameSiteLaxMode, true)
	hd := w.Header()
	hd["Cache-Control"] = noStore
	hd.Set("Location", authURL)
	w.WriteHeader(http.StatusFound)
	h.debug(r, "redirect", "login started", zap.String("cookie", reasonText(reason)))
	h.Metrics.LoginStarted()
	return true
}

// prunePendingLogins keeps at most MAX_PENDING_LOGINS-1 earlier pending
// logins, dropping unreadable and expired ones first, then the oldest.
func (h *Handler) prunePendingLogins(w http.ResponseWriter, r *http.Request) {
	pending := append(session.CookiesWithPrefix(r.Header, hostPrefix+h.statePrefix, 64),
		session.CookiesWithPrefix(r.Header, h.statePrefix, 64)...)
	if len(pending) < h.cfg.MaxPendingLogins {
		return
	}
	type aged struct {
		name    string
		created int64
	}
	var keep []aged
	now := h.Now().Unix()
	for _, c := range pending {
		var ls session.LoginState
		name := strings.TrimPrefix(c.Name, hostPrefix)
		if h.Codec.Open(name, c.Value, &ls) != nil || now-ls.Created > int64(h.cfg.LoginStateTTL/time.Second) {
			h.expireCookie(w, r, name, http.SameSiteLaxMode, true)
			continue
		}
		keep = append(keep, aged{name, ls.Created})
	}
	sort.Slice(keep, func(i, j int) bool { return keep[i].created < keep[j].created })
	for len(keep) >= h.cfg.MaxPendingLogins {
		h.expireCookie(w, r, keep[0].name, http.SameSiteLaxMode, true)
		keep = keep[1:]
	}
}

// maxKeptURL bounds the original URL kept in the login-state cookie:
// sealed (base64 of AES-CTR plus an HMAC) it grows by about 4/3, and
// browsers drop cookies over 4,096 bytes, which would make the login
// impossible rather than merely lose the deep link.
const maxKeptURL = 2048

// originalURL is the full URL the browser asked for, shortened to fit the
// login-state cookie: without its query string when too long, then the
// site root.
func (h *Handler) originalURL(r *http.Request) string {
	scheme := "http"
	if h.secure(r) {
		scheme = "https"
	}
	target := r.RequestURI
	if !strings.HasPrefix(target, "/") {
		target = r.URL.RequestURI()
	}
	base := scheme + "://" + r.Host
	if len(base)+len(target) <= maxKeptURL {
		return base + target
	}
	p, _, _ := strings.Cut(target, "?")
	if len(base)+len(p) > maxKeptURL {
		p = "/"
	}
	h.log.Info("deep link too long to keep through the login; the user will land on a shorter URL", requestID(r),
		zap.Int("length", len(target)), zap.Int("kept", len(p)))
	return base + p
}

// retryLink is where "try again" leads: the request itself when it was a
// navigation, else the site root.
func (h *Handler) retryLink(r *http.Request) string {
	if r.URL.Path == h.cfg.RedirectPath {
		return "/"
	}
	if t := r.RequestURI; strings.HasPrefix(t, "/") && !strings.HasPrefix(t, "//") {
		return t
	}
	return "/"
}

// callback completes a login: state, code exchange with the PKCE verifier,
// ID token verification, claims, policy, then the session cookie.
func (h *Handler) callback(w http.ResponseWriter, r *http.Request) {
	if failed := h.completeLogin(w, r); failed != "" {
		h.Metrics.LoginFailed(failed)
	} else {
		h.Metrics.LoginCompleted()
	}
}

// completeLogin does the work of callback; it returns why the login failed,
// or "" when it made a session.
func (h *Handler) completeLogin(w http.ResponseWriter, r *http.Request) string {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.log.Info("callback: method not allowed", requestID(r), zap.String("method", r.Method))
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
		return metrics.LoginBadRequest
	}
	q := r.URL.Query()
	state := q.Get("state")
	validState := session.ValidState(state)
	stateCookie := h.statePrefix + state
	if validState {
		// Whatever happens next, this login is over.
		if _, ok := cookieValue(r.Header, stateCookie); ok {
			h.expireCookie(w, r, stateCookie, http.SameSiteLaxMode, true)
		}
	}

	if e := q.Get("error"); e != "" {
		h.log.Info("login failed: provider returned an error", requestID(r),
			zap.String("error", truncate(e, 64)), zap.String("error_description", truncate(q.Get("error_description"), 256)))
		h.failPage(w, r, http.StatusUnauthorized, "Login failed", msgProviderError, h.loginRetry(r, state))
		return metrics.LoginProviderError
	}
	if !validState {
		h.log.Info("callback rejected: missing or malformed state", requestID(r))
		h.failPage(w, r, http.StatusBadRequest, "Login failed", msgStateInvalid, "/")
		return metrics.LoginInvalidState
	}
	sealed, ok := cookieValue(r.Header, stateCookie)
	if !ok {
		h.log.Info("callback rejected: no login state for this state (expired, replayed or another browser)", requestID(r))
		h.failPage(w, r, http.StatusBadRequest, "Login failed", msgStateInvalid, "/")
		return metrics.LoginInvalidState
	}
	var ls session.LoginState
	if err := h.Codec.Open(stateCookie, sealed, &ls); err != nil {
		h.log.Info("callback rejected: login state does not open", requestID(r), zap.Error(err))
		h.failPage(w, r, http.StatusBadRequest, "Login failed", msgStateInvalid, "/")
		return metrics.LoginInvalidState
	}
	now := h.Now().Unix()
	if subtle.ConstantTimeCompare([]byte(ls.State), []byte(state)) != 1 || now-ls.Created > int64(h.cfg.LoginStateTTL/time.Second) {
		h.log.Info("callback rejected: login state expired or mismatched", requestID(r))
		h.failPage(w, r, http.StatusBadRequest, "Login failed", msgStateInvalid, "/")
		return metrics.LoginInvalidState
	}
	stateKey := cache.KeyOf(state)
	if _, used := h.usedStates.Get(stateKey); used {
		h.log.Warn("callback rejected: replayed state", requestID(r))
		h.failPage(w, r, http.StatusBadRequest, "Login failed", msgStateInvalid, "/")
		return metrics.LoginInvalidState
	}
	h.usedStates.Put(stateKey, now)

	code := q.Get("code")
	if code == "" || len(code) > 4096 {
		h.log.Info("callback rejected: missing or oversized code", requestID(r))
		h.failPage(w, r, http.StatusBadRequest, "Login failed", msgLoginFailed, h.safeTarget(r, ls.URL))
		return metrics.LoginBadRequest
	}

	// Token endpoint, keys and userinfo: each call is bounded by
	// PROVIDER_TIMEOUT (the HTTP client's), all of them by twice that,
	// within the server's write timeout.
	ctx, cancel := context.WithTimeout(r.Context(), 2*h.cfg.ProviderTimeout)
	defer cancel()
	login, err := h.Provider.Exchange(ctx, code, ls.Verifier, ls.Nonce)
	if err != nil {
		return h.loginError(w, r, ls.URL, err)
	}
	id, dropped, err := h.Mapper.FromClaims(login.Claims)
	if err != nil {
		h.log.Warn("login refused: unusable claims", requestID(r), zap.String("sub", login.IDToken.Subject), zap.Error(err))
		h.failPage(w, r, http.StatusForbidden, "Login refused", msgClaimsUnusable, "")
		return metrics.LoginClaims
	}
	if len(dropped) > 0 {
		h.log.Warn("groups left out: unsafe characters or too many", requestID(r), zap.String("user", id.User), zap.Strings("groups", dropped))
	}
	if ok, why := h.Policy.Decide(authz.Request{Host: r.Host, Path: pathOf(ls.URL), Method: http.MethodGet, User: h.cfg.UserIDPrefix + id.User, Groups: id.Groups}); !ok {
		h.log.Info("login refused: not authorized", requestID(r), zap.String("user", id.User), zap.String("reason", why))
		h.forbidden(w, r, h.cfg.UserIDPrefix+id.User, why)
		return metrics.LoginNotAuthorized
	}

	s, err := h.newSession(login, id)
	if err != nil {
		h.log.Error("no randomness for a session id", zap.Error(err))
		h.failPage(w, r, http.StatusUnauthorized, "Login failed", msgLoginFailed, "")
		return metrics.LoginInternal
	}
	sealedSession, err := h.Codec.SealSession(h.cfg.SessionCookieName, s)
	if err == nil && !h.writeSession(w, r, sealedSession, h.cfg.SessionMaxAge) {
		// Too large for the cookies: keep identity and refresh, drop the rest.
		s.IDToken, s.AccessToken = "", ""
		sealedSession, err = h.Codec.SealSession(h.cfg.SessionCookieName, s)
		if err == nil && !h.writeSession(w, r, sealedSession, h.cfg.SessionMaxAge) {
			err = errors.New("session too large for cookies")
		}
	}
	if err != nil {
		h.log.Error("login failed: cannot store session", requestID(r), zap.String("user", id.User), zap.Error(err))
		h.failPage(w, r, http.StatusForbidden, "Login failed", msgLoginFailed, "")
		return metrics.LoginInternal
	}
	target := h.safeTarget(r, ls.URL)
	if h.cfg.AfterLoginURL != "" {
		target = h.cfg.AfterLoginURL + sep(h.cfg.AfterLoginURL) + "next=" + url.QueryEscape(target)
	}
	h.log.Info("login", requestID(r), zap.String("user", id.User), zap.String("sub", s.Subject), zap.Int("groups", len(id.Groups)))
	hd := w.Header()
	hd["Cache-Control"] = noStore
	hd.Set("Location", target)
	w.WriteHeader(http.StatusFound)
	return ""
}

func (h *Handler) newSession(l *provider.Login, id identity.Identity) (*session.Session, error) {
	var rnd [16]byte
	if _, err := io.ReadFull(h.Random, rnd[:]); err != nil {
		return nil, err
	}
	now := h.Now()
	s := &session.Session{
		ID:           base64.RawURLEncoding.EncodeToString(rnd[:]),
		Subject:      l.IDToken.Subject,
		Issuer:       l.IDToken.Issuer,
		User:         id.User,
		Groups:       id.Groups,
		Created:      now.Unix(),
		Expires:      now.Add(time.Duration(h.cfg.SessionMaxAge) * time.Second).Unix(),
		Active:       now.Unix(),
		Renewed:      now.Unix(),
		RefreshToken: l.Token.RefreshToken,
	}
	// Every request carries the cookie: keep a token only when a feature
	// needs it, so sessions stay in one cookie (which the old dashboard's
	// logout needs) and cheap to send.
	if h.cfg.StrictValidation || (h.cfg.RevokeOnLogout && h.Provider.RevocationEndpoint() != "") {
		s.AccessToken = l.Token.AccessToken
	}
	if (h.cfg.ProviderLogout && h.Provider.EndSessionEndpoint() != "") || h.cfg.UpstreamToken == "id_token" {
		s.IDToken, s.IDTokenExpiry = l.RawID, l.IDToken.Expiry.Unix()
	}
	if email, ok := l.Claims["email"].(string); ok && h.cfg.AuthRequestHeaders {
		s.Email = email
	}
	if s.RefreshToken != "" && !l.Token.Expiry.IsZero() {
		s.TokenExpiry = l.Token.Expiry.Unix()
	}
	if sid, ok := l.Claims["sid"].(string); ok {
		s.SID = sid
	}
	return s, nil
}

// loginError answers a failed code exchange and returns the metrics reason.
func (h *Handler) loginError(w http.ResponseWriter, r *http.Request, original string, err error) string {
	retry := h.safeTarget(r, original)
	switch {
	case errors.Is(err, provider.ErrUnavailable), errors.Is(err, provider.ErrNotReady), errors.Is(err, context.DeadlineExceeded):
		h.log.Warn("login failed: provider unavailable", requestID(r), zap.Error(err))
		h.failPage(w, r, http.StatusUnauthorized, "Sign-in unavailable", msgProviderDown, retry)
		return metrics.LoginProviderUnavailable
	case errors.Is(err, provider.ErrRejected):
		h.log.Info("login failed: code rejected by the provider", requestID(r), zap.Error(err))
		h.failPage(w, r, http.StatusUnauthorized, "Login failed", msgLoginFailed, retry)
		return metrics.LoginExchangeRejected
	default:
		h.log.Warn("login failed: ID token invalid", requestID(r), zap.Error(err))
		h.failPage(w, r, http.StatusUnauthorized, "Login failed", msgLoginFailed, retry)
		return metrics.LoginInvalidToken
	}
}

// loginRetry is the retry link after a provider error: the original URL when
// the state cookie still tells it.
func (h *Handler) loginRetry(r *http.Request, state string) string {
	if session.ValidState(state) {
		if v, ok := cookieValue(r.Header, h.statePrefix+state); ok {
			var ls session.LoginState
			if h.Codec.Open(h.statePrefix+state, v, &ls) == nil {
				return h.safeTarget(r, ls.URL)
			}
		}
	}
	return "/"
}

// pathOf is the path of the URL a login started from: the request the
// user will be sent back to, which the policy judges.
func pathOf(u string) string {
	if p, err := url.Parse(u); err == nil && p.Path != "" {
		return p.Path
	}
	return "/"
}

func sep(u string) string {
	if strings.Contains(u, "?") {
		return "&"
	}
	return "?"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
