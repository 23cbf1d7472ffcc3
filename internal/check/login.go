package check

import (
	"net/http"
	"sort"
	"strings"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// startLogin sends a browser to the provider: a fresh state, nonce and PKCE
// verifier sealed in a cookie of their own, named after the state, so that
// logins in several tabs do not disturb each other. v's reason and cookies
// (a failed session being cleared) are kept. forward marks a login started
// at the forward-auth start endpoint (FORWARD_AUTH_ANSWER_MAX_BYTES).
func (h *Handler) startLogin(q *request, v verdict, forward bool) verdict {
	ls, err := session.NewLoginState(h.d.Random, h.originalURL(q), h.d.Now().Unix())
	if err == nil {
		ls.Forward = forward
	}
	if err != nil {
		h.log.Error("no randomness for a login state", zap.Error(err))
		return h.startFailed(failure(http.StatusUnauthorized, "Login failed", msgLoginFailed, ""))
	}
	authURL, err := h.d.Provider.AuthCodeURL(ls.State, ls.Nonce, ls.Challenge())
	if err != nil {
		h.quiet.Warn("login not started: provider not discovered yet", q.rid())
		f := failure(http.StatusUnauthorized, "Sign-in unavailable", msgProviderDown, h.retryLink(q))
		f.retry = "5"
		return h.startFailed(f)
	}
	sealed, err := h.d.Codec.Seal(statePrefixed(ls.State), ls)
	if err != nil {
		h.log.Error("cannot seal login state", zap.Error(err))
		return h.startFailed(failure(http.StatusUnauthorized, "Login failed", msgLoginFailed, ""))
	}
	cookies := append(v.cookies, h.prunePendingLogins(q)...)
	h.debug(q, "login started")
	h.d.Metrics.LoginStarted()
	r := redirectTo(authURL, append(cookies, stateCookie(ls.State, sealed))...)
	r.reason = v.reason
	return r
}

func (h *Handler) startFailed(v verdict) verdict {
	v.reason = providerUnavailable
	return v
}

// prunePendingLogins keeps at most MAX_PENDING_LOGINS-1 earlier pending
// logins, dropping unreadable and expired ones first, then the oldest.
func (h *Handler) prunePendingLogins(q *request) []cookieOp {
	pending := h.d.Cookies.PendingStates(q.Header, q.secure, 64)
	if len(pending) < h.o.MaxPendingLogins {
		return nil
	}
	type aged struct {
		state   string
		created int64
	}
	var drop []cookieOp
	var keep []aged
	now := h.d.Now().Unix()
	for _, c := range pending {
		var ls session.LoginState
		if h.d.Codec.Open(statePrefixed(c.Name), c.Value, &ls) != nil || now-ls.Created > int64(h.o.LoginStateTTL.Seconds()) {
			drop = append(drop, clearStateCookie(c.Name))
			continue
		}
		keep = append(keep, aged{c.Name, ls.Created})
	}
	sort.Slice(keep, func(i, j int) bool { return keep[i].created < keep[j].created })
	for len(keep) >= h.o.MaxPendingLogins {
		drop = append(drop, clearStateCookie(keep[0].state))
		keep = keep[1:]
	}
	return drop
}

// maxKeptURL bounds the original URL kept in the login-state cookie:
// sealed (base64 of AES-CTR plus an HMAC) it grows by about 4/3, and
// browsers drop cookies over 4,096 bytes, which would make the login
// impossible rather than merely lose the deep link.
const maxKeptURL = 2048

// originalURL is the full URL the browser asked for, shortened to fit the
// login-state cookie: without its query string when too long, then the
// site root.
func (h *Handler) originalURL(q *request) string {
	target := q.RequestURI
	if !strings.HasPrefix(target, "/") {
		target = q.URL.RequestURI()
	}
	base := q.scheme() + "://" + q.Host
	if len(base)+len(target) <= maxKeptURL {
		return base + target
	}
	p, _, _ := strings.Cut(target, "?")
	if len(base)+len(p) > maxKeptURL {
		p = "/"
	}
	h.quiet.Info("deep link too long to keep through the login; the user will land on a shorter URL", q.rid(),
		zap.Int("length", len(target)), zap.Int("kept", len(p)))
	return base + p
}

// retryLink is where "try again" leads: the request itself when it was a
// navigation, else the site root.
func (h *Handler) retryLink(q *request) string {
	if q.URL.Path == h.o.CallbackPath {
		return "/"
	}
	if t := q.RequestURI; strings.HasPrefix(t, "/") && !strings.HasPrefix(t, "//") {
		return t
	}
	return "/"
}
