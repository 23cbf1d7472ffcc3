package credential

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/oidc-authservice/oidc-authservice/internal/cache"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// Principal is who a verified credential says the caller is.
type Principal struct {
	Subject string
	User    string   // after USERID_TRANSFORMERS, without USERID_PREFIX
	Groups  []string // sanitized
	Expires int64    // unix seconds: the session's or the token's expiry

	// UserHeader and GroupsHeader are the values of USERID_HEADER
	// (USERID_PREFIX + User) and GROUPS_HEADER (comma-joined Groups).
	UserHeader   []string
	GroupsHeader []string

	// Claims and Extra are what the verified credential said beyond the
	// identity, kept only for the external authorizer (EXTERNAL_AUTHZ_URL):
	// a bearer JWT's verified claims, userinfo's answer for an opaque
	// token, the claims a session keeps; the extra attributes of
	// AUTHENTICATION_CONFIG_FILE's mappings or of a TokenReview. Never a
	// token.
	Claims map[string]any
	Extra  map[string][]string

	// Upstream is the Authorization header the upstream gets for this
	// principal: the issued token (UPSTREAM_TOKEN=issued), re-signed at
	// half its lifetime, or the session's ID token (id_token).
	Upstream atomic.Pointer[UpstreamToken]
}

// UpstreamToken is an identity token's header value.
type UpstreamToken struct {
	Header  []string // "Bearer <jwt>"
	RenewAt int64    // unix seconds (issued tokens)
}

func newPrincipal(prefix, subject, user string, groups []string, expires int64) Principal {
	// One array for both header values: one allocation less per verified
	// credential (every check, when there are more users than the cache holds).
	h := []string{prefix + user, strings.Join(groups, ",")}
	return Principal{Subject: subject, User: user, Groups: groups, Expires: expires,
		UserHeader: h[0:1:1], GroupsHeader: h[1:2:2]}
}

// Live is a verified session and what this replica knows about its life.
type Live struct {
	Principal
	Session *session.Session
	key     cache.Key

	mu         sync.Mutex                    // serializes refresh and validation: concurrent requests collapse into one provider call
	validated  atomic.Int64                  // last successful strict validation, unix seconds
	retryAt    atomic.Int64                  // no refresh before this, after the provider failed
	validateAt atomic.Int64                  // no validation retry before this, after the provider failed
	successor  atomic.Pointer[successor]     // the refreshed or re-sealed session that replaces this one
	redirects  atomic.Int32                  // renewal redirects answered for this (renewed) session
	carryHold  atomic.Int64                  // no renewal sent elsewhere before this, unix seconds (Sessions.Renew's carry)
	ended      atomic.Pointer[TooLargeError] // why the session ended, for the answer that shows it (Sessions.ShowLater)
}

// TakeRedirect counts one more answer that delivers this renewed session's
// cookie with a redirect (SESSION_RENEW_REDIRECT) and reports whether it is
// within max: a client that ignores Set-Cookie is redirected a few times,
// then allowed.
func (l *Live) TakeRedirect(max int32) bool { return l.redirects.Add(1) <= max }

// successor is what replaces a session: requests still carrying the old
// cookie (sent before the browser got the new one) are answered as the new
// session, with the new cookie again, instead of refreshing again.
type successor struct {
	live   *Live
	sealed string
}

// Current is the latest session that replaces l, or l itself.
func (l *Live) Current() *Live {
	for n := l.successor.Load(); n != nil; n = l.successor.Load() {
		l = n.live
	}
	return l
}

// Token is a verified bearer token.
type Token struct {
	Principal
	link *tokenLink // a token of the login provider: what a logout may name; nil otherwise
}

// tokenLink is what ties a provider token to logins and logouts.
type tokenLink struct {
	session string // the session it was obtained for (session.IDFromNonce), or ""
	sub     string // the provider's subject (whatever the username mapping)
	sid     string // the provider's session, or ""
	iat     int64  // issued at, unix seconds; 0 unknown
}
