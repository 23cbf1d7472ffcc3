package credential

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/oidc-authservice/oidc-authservice/internal/cache"
	"github.com/oidc-authservice/oidc-authservice/internal/identity"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// Reasons a session that opened is nevertheless no longer accepted.
var (
	ErrRevoked            = errors.New("session ended by logout or back-channel logout")
	ErrIdle               = errors.New("session idle for longer than SESSION_IDLE_TIMEOUT")
	ErrRefreshRejected    = errors.New("provider refused the refresh token; session ended")
	ErrValidationRejected = errors.New("provider refused the access token (strict session validation); session ended")
	// ErrValidationPending does not end the session: the provider cannot be
	// asked and the last successful validation is older than the grace
	// period. The cookie is kept so the session resumes when it answers.
	ErrValidationPending = errors.New("provider unreachable for longer than STRICT_SESSION_VALIDATION_GRACE")
	// ErrIDTokenExpired: the ID token handed upstream (UPSTREAM_TOKEN=id_token)
	// expired and could not be refreshed; the gateway's JWT check would refuse it.
	ErrIDTokenExpired = errors.New("the ID token handed upstream expired and was not refreshed")
	// ErrNotCarried does not end the session: it is due for renewal, but
	// its renewed cookie would take more cookies than the answer can carry
	// (Renew's carry: a forward-auth proxy passes one Set-Cookie on allow),
	// so it is not renewed here and nothing is redeemed. Renew returns the
	// session as it is with this error; Usable says whether its tokens are
	// still valid (the answer may allow on them).
	ErrNotCarried = errors.New("the renewed session would take more cookies than this answer carries")
)

// Provider is what a session's life needs from the provider.
type Provider interface {
	Refresh(ctx context.Context, refreshToken, subject string) (*oauth2.Token, error)
	Validate(ctx context.Context, accessToken string) error
	// Revoke revokes a token at the provider (RFC 7009); nil, doing
	// nothing, when the provider has no revocation endpoint.
	Revoke(ctx context.Context, token, hint string) error
}

// SessionOptions configure Sessions.
type SessionOptions struct {
	CookieName          string // the name sealed sessions are bound to
	UserPrefix          string // USERID_PREFIX
	IdleTimeout         time.Duration
	RefreshBeforeExpiry time.Duration
	StrictValidation    bool
	StrictInterval      time.Duration
	StrictGrace         time.Duration
	Budget              time.Duration // CHECK_PROVIDER_BUDGET: longest a check waits for the provider
	CacheSize           int           // verified sessions kept; default 20,000
	// UpstreamIDToken: the session's ID token is handed upstream
	// (UPSTREAM_TOKEN=id_token), where Istio checks it, so it is refreshed
	// before it expires and a session whose ID token expired ends.
	UpstreamIDToken bool
	// Groups is the groups policy: a session sealed under another one (an
	// earlier release, another GROUPS_FILTER) has its groups filtered and
	// bounded again when opened. nil: none.
	Groups *identity.GroupsPolicy
	// MaxCookies (SESSION_MAX_COOKIES) bounds a sealed session; 0:
	// session.MaxCookies.
	MaxCookies int
	// UpstreamHeaderMax (UPSTREAM_HEADER_MAX_BYTES) bounds the Authorization
	// line of an ID token handed upstream; 0: no bound.
	UpstreamHeaderMax int
	// KeepClaims gives each verified session the claims it keeps
	// (Principal.Claims), for the external authorizer.
	KeepClaims bool
}

// ErrTooLarge: a session or a token is larger than what carries it (the
// cookies, an upstream's header line). Errors of this kind are a
// *TooLargeError.
var ErrTooLarge = errors.New("too large to carry")

// TooLargeError says what does not fit, by how much.
type TooLargeError struct {
	Part  string // PartSession, PartIDToken, or a part of the caller's (Carry.Fits)
	Bytes int    // the sealed session's bytes, the Authorization line's, or the answer's
	Limit int    // what fits
	// Refresh: the session's refreshed tokens do not fit (or, decided
	// before refreshing, would not); the session ended.
	Refresh bool
	// Carry: the limit was not SESSION_MAX_COOKIES but the cookies the
	// answer could carry (a forward-auth allow: one).
	Carry int
}

// Parts of a session that may not fit.
const (
	PartSession = "session"  // the sealed session, in SESSION_MAX_COOKIES cookies
	PartIDToken = "id_token" // the ID token handed upstream, in UPSTREAM_HEADER_MAX_BYTES
)

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%v: %s of %d bytes, %d fit", ErrTooLarge, e.Part, e.Bytes, e.Limit)
}

// Unwrap makes errors.Is(err, ErrTooLarge) hold.
func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// authorizationPrefix is what an upstream's header line adds to an ID
// token: "Authorization: Bearer " and CRLF.
const authorizationPrefix = len("Authorization: Bearer ") + 2

// Sessions opens sealed sessions and keeps them alive.
type Sessions struct {
	o        SessionOptions
	codec    *session.Codec
	provider Provider
	revoked  *revocation.List
	metrics  *metrics.Metrics
	lookups  *metrics.CacheCounter
	log      *zap.Logger
	now      func() time.Time
	verified *cache.Cache[*Live]
	// revoking bounds the revocations of dropped refresh tokens in flight
	// (dropToken): each runs in the background, at most Budget long.
	revoking chan struct{}
}

// maxRevoking is how many dropped refresh tokens are revoked at once; one
// more is not revoked (logged): only sessions that outgrow their cookies
// drop one, a rare event that no anonymous request can cause.
const maxRevoking = 8

// NewSessions builds Sessions.
func NewSessions(o SessionOptions, codec *session.Codec, p Provider, revoked *revocation.List, m *metrics.Metrics, log *zap.Logger, now func() time.Time) *Sessions {
	if o.CacheSize <= 0 {
		o.CacheSize = 20000
	}
	return &Sessions{o: o, codec: codec, provider: p, revoked: revoked, metrics: m, lookups: m.CacheCounter("session"),
		log: log.Named("session"), now: now, verified: cache.New[*Live](o.CacheSize), revoking: make(chan struct{}, maxRevoking)}
}

// Open verifies a sealed session value: from the cache when it verified
// before, else with the codec.
func (s *Sessions) Open(sealed string) (*Live, error) {
	if sealed == "" || len(sealed) > session.MaxValue {
		return nil, session.ErrMalformed
	}
	k := cache.KeyOf(sealed)
	l, ok := s.verified.Get(k)
	s.lookups.Lookup(ok)
	if ok {
		if s.now().Unix() < l.Expires {
			return l, nil
		}
		s.verified.Delete(k)
		return nil, session.ErrExpired
	}
	sess, err := s.codec.OpenSession(s.o.CookieName, sealed)
	if err != nil {
		return nil, err
	}
	if err := s.refilter(sess); err != nil {
		return nil, err
	}
	l = s.newLive(k, sess, max(sess.Created, sess.Renewed))
	s.verified.Put(k, l)
	return l, nil
}

func (s *Sessions) newLive(k cache.Key, sess *session.Session, validated int64) *Live {
	l := &Live{Principal: newPrincipal(s.o.UserPrefix, sess.Subject, sess.User, sess.Groups, sess.Expires), Session: sess, key: k}
	if s.o.KeepClaims {
		l.Claims = sessionClaims(sess)
	}
	l.validated.Store(validated)
	return l
}

// refilter applies the groups policy to a session sealed under another
// one: sessions sealed before GROUPS_FILTER was set (or changed) forward
// only the groups it keeps from the moment the new settings run, without a
// new login. Groups beyond the limits refuse the session (an
// *identity.OverflowError) unless the policy truncates them.
func (s *Sessions) refilter(sess *session.Session) error {
	p := s.o.Groups
	if p == nil || sess.GroupsPolicy == p.Fingerprint() {
		return nil
	}
	groups, report, err := p.Apply(sess.Groups)
	if err != nil {
		s.metrics.IdentityLimit("session", "groups", "refused")
		s.log.Info("session refused: its groups exceed the limits (sealed under other settings)", zap.String("user", sess.User),
			zap.Int("groups_received", report.Received), zap.Int("groups_filtered", report.Filtered), zap.Int("groups_unsafe", report.Unsafe),
			zap.Error(err))
		return err
	}
	if report.Truncated > 0 {
		s.metrics.IdentityLimit("session", "groups", "truncated")
		s.log.Info("session's groups truncated (GROUPS_OVERFLOW=truncate)", zap.String("user", sess.User),
			zap.Int("groups_received", report.Received), zap.Int("groups_filtered", report.Filtered), zap.Int("groups_kept", report.Kept),
			zap.Int("groups_truncated", report.Truncated))
	}
	sess.Groups, sess.GroupsPolicy = groups, p.Fingerprint()
	return nil
}

// Seal seals a session for its cookie, or says why it cannot be carried: a
// *TooLargeError when it needs more than SESSION_MAX_COOKIES cookies, or
// when the ID token it hands upstream (UPSTREAM_TOKEN=id_token) makes an
// Authorization line longer than UPSTREAM_HEADER_MAX_BYTES. Nothing is
// ever kept that could not be stored: a session lives in its cookie, and
// any replica must be able to open it.
func (s *Sessions) Seal(sess *session.Session) (string, error) {
	if n := authorizationPrefix + len(sess.IDToken); s.o.UpstreamIDToken && sess.IDToken != "" && s.o.UpstreamHeaderMax > 0 && n > s.o.UpstreamHeaderMax {
		return "", &TooLargeError{Part: PartIDToken, Bytes: n, Limit: s.o.UpstreamHeaderMax}
	}
	sealed, err := s.codec.SealSession(s.o.CookieName, sess)
	if err != nil {
		return "", err
	}
	max := s.maxCookies()
	if n := session.Count(sealed); n == 0 || n > max {
		return "", &TooLargeError{Part: PartSession, Bytes: len(sealed), Limit: max * session.CookieBytes}
	}
	return sealed, nil
}

func (s *Sessions) maxCookies() int {
	if s.o.MaxCookies <= 0 || s.o.MaxCookies > session.MaxCookies {
		return session.MaxCookies
	}
	return s.o.MaxCookies
}

// Forget drops a sealed value from the cache, so a copy is checked afresh.
func (s *Sessions) Forget(sealed string) { s.verified.Delete(cache.KeyOf(sealed)) }

// End ends l's session everywhere the revocation list reaches, and forgets
// it and its successor here. The provider's tokens it holds (and any other
// token of its login that carries the login's nonce) end with it: the
// bearer path refuses them from now on (Tokens).
func (s *Sessions) End(ctx context.Context, l *Live, source string) {
	s.verified.Delete(l.key)
	c := l.Current()
	if c != l {
		s.verified.Delete(c.key)
	}
	s.revoked.Revoke(ctx, revocation.Session, l.Session.ID)
	// By digest too, for the tokens that carry no nonce (providers that
	// leave it out of refreshed ID tokens) and for opaque access tokens
	// (ACCESS_TOKEN_AUTHN=opaque), kept until the session says the access
	// token expires, or as long as the list remembers when it does not.
	for _, sess := range []*session.Session{l.Session, c.Session} {
		for _, raw := range []string{sess.IDToken, sess.AccessToken} {
			switch {
			case LooksLikeJWT(raw):
				if exp := jwtExpiry(raw); exp > 0 {
					s.revoked.RevokeToken(ctx, cache.KeyOf(raw), exp)
				}
			case raw != "":
				exp := sess.TokenExpiry
				if exp <= 0 {
					exp = s.now().Add(s.revoked.TTL()).Unix()
				}
				s.revoked.RevokeToken(ctx, cache.KeyOf(raw), exp)
			}
		}
		if c == l {
			break
		}
	}
	s.metrics.Revocation(source)
}

// Carry is what the answer to a request can deliver a renewed session in.
type Carry struct {
	// Cookies is how many cookies (0: all it may take, SESSION_MAX_COOKIES).
	Cookies int
	// Fits, when not nil, bounds the whole answer that would carry the
	// renewed session (the session and its sealed value): a
	// *TooLargeError when it would not fit, for instance a forward-auth
	// proxy's buffer for the service's answers.
	Fits func(sess *session.Session, sealed string) error
}

// Renew applies revocation, idle timeout, refresh and strict validation to
// a session that opened. It returns the session to answer for, a sealed
// value to send back as the new cookie (or ""), or why the session is not
// accepted. rid names the request in log lines. c is what the answer can
// carry: a renewal that would need more cookies than c.Cookies is not made
// (ErrNotCarried); a session that does not fit c.Fits with the tokens it
// has is not refreshed but ended; and one whose refreshed tokens turn out
// to need more cookies, or not to fit c.Fits, ends the session, so that no
// renewed session ever lives only in this replica's memory.
func (s *Sessions) Renew(ctx context.Context, l *Live, rid zap.Field, c Carry) (*Live, string, error) {
	sealed := ""
	// Follow the whole chain: a cookie the browser never replaced (a gateway
	// that passes no Set-Cookie on allow) may be several renewals old.
	for n := l.successor.Load(); n != nil; n = l.successor.Load() {
		l, sealed = n.live, n.sealed
	}
	sess := l.Session
	now := s.now().Unix()
	if s.revoked.Revoked(sess.ID, sess.SID, sess.Subject, sess.Created) {
		if e := l.ended.Swap(nil); e != nil {
			return nil, "", e
		}
		return nil, "", ErrRevoked
	}
	active := sess.Active
	if active == 0 {
		active = sess.Created
	}
	idle := int64(s.o.IdleTimeout / time.Second)
	if idle > 0 && now-active > idle {
		return nil, "", ErrIdle
	}
	if !s.due(l, now, active) {
		if s.idTokenExpired(sess, now) {
			return nil, "", ErrIDTokenExpired
		}
		// Strict validation failed recently and its retry is not due yet:
		// past the grace period the session stays refused until the
		// provider answers, not only on the requests that retry.
		if s.o.StrictValidation && sess.AccessToken != "" && l.validateAt.Load() > now &&
			now-l.validated.Load() > int64(s.o.StrictGrace/time.Second) {
			return nil, "", ErrValidationPending
		}
		return l, sealed, nil
	}
	return s.renewLocked(ctx, l, sealed, now, active, rid, c)
}

// renewLocked is Renew's slow path: provider calls and re-sealing, one at a
// time per session.
func (s *Sessions) renewLocked(ctx context.Context, l *Live, sealed string, now, active int64, rid zap.Field, c Carry) (*Live, string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.successor.Load(); n != nil { // another request did the work meanwhile
		return n.live, n.sealed, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.Budget)
	defer cancel()

	next := *l.Session
	changed, refreshed, validated := false, false, l.validated.Load()
	// After a renewal was sent elsewhere (notCarried), an answer that cannot
	// carry one does not send it again for refreshRetry seconds: one that
	// failed there comes back here on the tokens the session has.
	carry := c.Cookies
	due := s.refreshDue(l, now) && (carry == 0 || now >= l.carryHold.Load())
	if due {
		// Decided before refreshing (and before claiming the refresh): a
		// session that could not be stored, or whose answer would not fit
		// (c.Fits), with the tokens it has now would not be with their
		// successors either, and redeeming the refresh token would leave
		// the browser with a cookie whose refresh token the provider
		// rotated away. Nor is it refreshed for an answer that could not
		// carry it (carry).
		current, err := s.Seal(&next)
		if err != nil {
			return nil, "", s.tooLarge(ctx, l, &next, err, l.Session.RefreshToken, rid)
		}
		if carry > 0 && session.Count(current) > carry {
			return s.notCarried(l, sealed)
		}
		if c.Fits != nil {
			if err := c.Fits(&next, current); err != nil {
				return nil, "", s.tooLarge(ctx, l, &next, err, l.Session.RefreshToken, rid)
			}
		}
	}
	switch {
	case !due:
	case now < s.deadline(l.Session) && !s.claimRefresh(ctx, l.Session, now):
		// Another replica (or another cookie of the same session here) is
		// refreshing these very tokens: they are still valid, and the
		// browser gets the new cookie from that answer.
		l.retryAt.Store(now + refreshRetry)
	default:
		ok, err := s.refresh(ctx, l, &next, now, rid)
		if err != nil {
			return nil, "", err
		}
		if ok {
			changed, refreshed, validated = true, true, now
		}
	}
	if s.o.StrictValidation && next.AccessToken != "" && now-validated >= int64(s.o.StrictInterval/time.Second) && now >= l.validateAt.Load() {
		ok, err := s.validate(ctx, l, next.AccessToken, now, validated, rid)
		if err != nil {
			return nil, "", err
		}
		if ok {
			validated = now
		}
	}
	if idle := int64(s.o.IdleTimeout / time.Second); idle > 0 && now-active >= touchInterval(idle) {
		next.Active, changed = now, true
	}
	if s.idTokenExpired(&next, now) {
		return nil, "", ErrIDTokenExpired
	}
	if !changed {
		return l, sealed, nil
	}
	newSealed, err := s.Seal(&next)
	switch {
	case errors.Is(err, ErrTooLarge):
		// Never a successor only this replica could serve from memory:
		// the session ends here, cleanly, on every replica.
		return nil, "", s.tooLarge(ctx, l, &next, err, next.RefreshToken, rid)
	case err != nil:
		s.log.Error("cannot seal the renewed session; keeping the old one", zap.Error(err))
		return l, sealed, nil
	case carry > 0 && session.Count(newSealed) > carry && !refreshed:
		// Only the activity stamp changed: put off to an answer that
		// carries the cookie.
		return s.notCarried(l, sealed)
	case carry > 0 && session.Count(newSealed) > carry:
		// The refreshed tokens made the session outgrow what this answer
		// carries: the provider has rotated the browser's refresh token
		// away, so the session ends rather than live on here.
		return nil, "", s.tooLarge(ctx, l, &next, &TooLargeError{Part: PartSession, Bytes: len(newSealed),
			Limit: carry * session.CookieBytes, Carry: carry}, next.RefreshToken, rid)
	}
	if c.Fits != nil {
		if err := c.Fits(&next, newSealed); err != nil {
			// The answer that would carry the renewed session (its
			// identity, tokens and cookie) does not fit where it goes:
			// never sent, never kept; the session ends on every replica.
			return nil, "", s.tooLarge(ctx, l, &next, err, next.RefreshToken, rid)
		}
	}
	s.metrics.SessionBytes(len(newSealed))
	n := s.newLive(cache.KeyOf(newSealed), &next, validated)
	s.verified.Put(n.key, n)
	l.successor.Store(&successor{live: n, sealed: newSealed})
	return n, newSealed, nil
}

// notCarried answers for a session whose renewal the answer cannot carry:
// nothing is renewed here; the session as it is, which Usable says whether
// to allow on.
func (s *Sessions) notCarried(l *Live, sealed string) (*Live, string, error) {
	return l, sealed, ErrNotCarried
}

// Usable reports whether a session Renew did not renew (ErrNotCarried) may
// still be answered for: its tokens have not expired.
func (s *Sessions) Usable(l *Live) bool {
	now := s.now().Unix()
	d := s.deadline(l.Session)
	return (d == 0 || now < d) && !s.idTokenExpired(l.Session, now)
}

// ShowLater keeps why l's session just ended (err, from Renew) for the
// next Renew of it on this replica, which returns err once instead of
// ErrRevoked: for an answer that could not show why (nginx shows a page of
// its own for auth_request's 403) and sends the browser to one that can
// (the forward-auth start endpoint).
func (s *Sessions) ShowLater(l *Live, err error) {
	var tl *TooLargeError
	if errors.As(err, &tl) {
		l.Current().ended.Store(tl)
	}
}

// SentElsewhere records that an answer sent l's renewal to where every
// cookie can be carried (the forward-auth start endpoint): for
// refreshRetry seconds no answer that cannot carry it sends it there again,
// so a renewal that failed there comes back on the tokens the session has
// instead of bouncing between the two.
func (s *Sessions) SentElsewhere(l *Live) { l.carryHold.Store(s.now().Unix() + refreshRetry) }

// tooLarge ends a session that can no longer be carried, on every replica
// (the revocation list), revokes at the provider the refresh token nobody
// will hold any longer (refreshToken: the session's, or the one a refresh
// just returned), and returns the error the check answers with. tried is
// the session that did not fit, whose counts the one log line gives.
func (s *Sessions) tooLarge(ctx context.Context, l *Live, tried *session.Session, err error, refreshToken string, rid zap.Field) error {
	var tl *TooLargeError
	if !errors.As(err, &tl) {
		return err
	}
	sess := l.Session
	tl.Refresh = true
	s.metrics.IdentityLimit("refresh", tl.Part, "refused")
	s.log.Warn("session ended: its renewed form cannot be carried", rid, zap.String("user", sess.User),
		zap.String("part", tl.Part), zap.Int("bytes", tl.Bytes), zap.Int("limit", tl.Limit), zap.Int("carry", tl.Carry),
		zap.Int("groups", len(tried.Groups)), zap.Int("id_token_bytes", len(tried.IDToken)), zap.Int("access_token_bytes", len(tried.AccessToken)),
		zap.Bool("refreshed", tried.Renewed != sess.Renewed))
	s.revoked.Revoke(ctx, revocation.Session, sess.ID)
	s.dropToken(refreshToken, sess.User, rid)
	return tl
}

// dropToken revokes at the provider (RFC 7009, when it has a revocation
// endpoint) the refresh token of a session that ended because it could not
// be carried: no cookie holds it any longer, yet the provider would honour
// it until it expires. The call runs in the background, bounded by
// CHECK_PROVIDER_BUDGET, never holding up the answer; at most maxRevoking
// at once.
func (s *Sessions) dropToken(token, user string, rid zap.Field) {
	if token == "" {
		return
	}
	select {
	case s.revoking <- struct{}{}:
	default:
		s.log.Warn("the refresh token of an ended session is not revoked: too many revocations in flight", rid, zap.String("user", user))
		return
	}
	budget := s.o.Budget
	if budget <= 0 {
		budget = 3 * time.Second
	}
	go func() {
		defer func() { <-s.revoking }()
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		defer cancel()
		if err := s.provider.Revoke(ctx, token, "refresh_token"); err != nil {
			s.log.Warn("could not revoke the refresh token of a session that ended at renewal", rid, zap.String("user", user), zap.Error(err))
			return
		}
		s.log.Info("refresh token of a session that ended at renewal revoked at the provider", rid, zap.String("user", user))
	}()
}

func (s *Sessions) refreshDue(l *Live, now int64) bool {
	d := s.deadline(l.Session)
	return l.Session.RefreshToken != "" && d > 0 && now >= s.refreshAt(l.Session, d) && now >= l.retryAt.Load()
}

// refreshRetry is how long a session waits before its next refresh attempt
// after the provider failed, or while another replica refreshes it.
const refreshRetry = 10

// refreshAt is when a session whose tokens must be renewed by deadline d
// refreshes: REFRESH_BEFORE_EXPIRY before d, but no earlier than a third of
// the tokens' lifetime (from when they were obtained to d, rounded up to
// whole seconds) before d, and never within a second of obtaining them. A provider whose tokens live no
// longer than REFRESH_BEFORE_EXPIRY (ID tokens of 30 s) would otherwise be
// asked again on every request, and with SESSION_RENEW_REDIRECT the browser
// would be sent round in 307s.
func (s *Sessions) refreshAt(sess *session.Session, d int64) int64 {
	obtained := sess.Renewed
	if obtained == 0 {
		obtained = sess.Created
	}
	window := int64(s.o.RefreshBeforeExpiry / time.Second)
	if third := (d - obtained + 2) / 3; window > third { // a third, rounded up to whole seconds
		window = max(third, 0)
	}
	return max(d-window, obtained+1)
}

// claimRefresh reports whether this request may refresh the session's
// tokens: no other request did in the last refreshRetry seconds, here or,
// with Redis, on any replica (the replay memory's one-time values). A
// session thus refreshes once per lifetime of its tokens, however many
// requests carry its cookie to however many replicas.
func (s *Sessions) claimRefresh(ctx context.Context, sess *session.Session, now int64) bool {
	return s.revoked.FirstUse(ctx, "refresh:"+sess.ID+":"+strconv.FormatInt(max(sess.Renewed, sess.Created), 10),
		(refreshRetry-1)*time.Second)
}

// deadline is when the session's provider tokens must have been renewed:
// the access token's expiry or, when the ID token is handed upstream, the ID
// token's when that comes first. 0: nothing expires.
func (s *Sessions) deadline(sess *session.Session) int64 {
	d := sess.TokenExpiry
	if s.o.UpstreamIDToken && sess.IDToken != "" && sess.IDTokenExpiry > 0 && (d == 0 || sess.IDTokenExpiry < d) {
		d = sess.IDTokenExpiry
	}
	return d
}

// idTokenExpired reports whether the session would hand an expired ID token
// upstream: the gateway would refuse the request, so the session is over.
func (s *Sessions) idTokenExpired(sess *session.Session, now int64) bool {
	return s.o.UpstreamIDToken && sess.IDToken != "" && sess.IDTokenExpiry > 0 && now >= sess.IDTokenExpiry
}

// refresh redeems the refresh token into next. It reports whether the
// tokens changed; an error ends the session.
func (s *Sessions) refresh(ctx context.Context, l *Live, next *session.Session, now int64, rid zap.Field) (bool, error) {
	sess := l.Session
	tok, err := s.provider.Refresh(ctx, sess.RefreshToken, sess.Subject)
	switch {
	case err == nil:
		// Only the tokens the login kept (those a feature needs) or that
		// strict validation and the upstream ID token need now: a
		// refreshed session stays as small as the one it replaces.
		if sess.AccessToken != "" || s.o.StrictValidation {
			next.AccessToken = tok.AccessToken
		}
		if tok.RefreshToken != "" {
			next.RefreshToken = tok.RefreshToken
		}
		if raw, _ := tok.Extra("id_token").(string); raw != "" && (sess.IDToken != "" || s.o.UpstreamIDToken) {
			next.IDToken, next.IDTokenExpiry = raw, jwtExpiry(raw)
		} else {
			// The old ID token stays; its expiry no longer drives refreshes.
			next.IDTokenExpiry = 0
		}
		next.TokenExpiry = 0
		if !tok.Expiry.IsZero() {
			next.TokenExpiry = tok.Expiry.Unix()
		}
		next.Renewed = now
		s.metrics.Refresh(resultOK)
		s.log.Info("session refreshed", rid, zap.String("user", sess.User))
		return true, nil
	case errors.Is(err, provider.ErrRejected) && now >= s.deadline(sess):
		s.metrics.Refresh(resultRejected)
		s.log.Info("session ended: refresh refused by the provider", rid, zap.String("user", sess.User), zap.Error(err))
		s.revoked.Revoke(ctx, revocation.Session, sess.ID)
		return false, ErrRefreshRejected
	case errors.Is(err, provider.ErrRejected):
		// The access token is still valid: another replica may have
		// rotated the refresh token and the browser will bring the new
		// cookie. Keep the session until the token expires.
		l.retryAt.Store(now + refreshRetry)
		s.metrics.Refresh(resultRejected)
		s.log.Info("refresh refused while the access token is still valid; retrying later", rid, zap.String("user", sess.User), zap.Error(err))
	default:
		l.retryAt.Store(now + refreshRetry)
		s.metrics.Refresh(resultUnavailable)
		s.log.Warn("refresh failed: provider unavailable; session kept", rid, zap.String("user", sess.User), zap.Error(err))
	}
	return false, nil
}

// validate asks the provider whether the access token is still good. It
// reports whether it is; an error refuses the session.
func (s *Sessions) validate(ctx context.Context, l *Live, accessToken string, now, validated int64, rid zap.Field) (bool, error) {
	user := l.Session.User
	err := s.provider.Validate(ctx, accessToken)
	switch {
	case err == nil:
		l.validated.Store(now)
		s.metrics.Validation(resultOK)
		return true, nil
	case errors.Is(err, provider.ErrRejected):
		s.metrics.Validation(resultRejected)
		s.log.Info("session ended: access token refused by the provider (strict validation)", rid, zap.String("user", user), zap.Error(err))
		s.revoked.Revoke(ctx, revocation.Session, l.Session.ID)
		return false, ErrValidationRejected
	}
	l.validateAt.Store(now + 5)
	s.metrics.Validation(resultUnavailable)
	if now-validated > int64(s.o.StrictGrace/time.Second) {
		s.log.Warn("session refused for now: provider unreachable past the grace period", rid, zap.String("user", user), zap.Error(err))
		return false, ErrValidationPending
	}
	s.log.Warn("strict validation failed: provider unavailable; within grace period", rid, zap.String("user", user), zap.Error(err))
	return false, nil
}

// due reports cheaply whether the session needs any provider call or a new
// cookie, so the common request takes no lock.
func (s *Sessions) due(l *Live, now, active int64) bool {
	if s.refreshDue(l, now) {
		return true
	}
	if s.o.StrictValidation && l.Session.AccessToken != "" && now-l.validated.Load() >= int64(s.o.StrictInterval/time.Second) && now >= l.validateAt.Load() {
		return true
	}
	idle := int64(s.o.IdleTimeout / time.Second)
	return idle > 0 && now-active >= touchInterval(idle)
}

// touchInterval is how stale the activity stamp may get before the cookie
// is re-sealed: a tenth of the idle timeout, at least 30 s.
func touchInterval(idle int64) int64 { return max(idle/10, 30) }

// Results of provider-side session lifecycle calls, the "result" label.
const (
	resultOK          = "ok"
	resultRejected    = "rejected"
	resultUnavailable = "unavailable"
)

// jwtExpiry reads the exp claim of a JWT the provider package has already
// verified (a refreshed ID token); 0 when it has none.
func jwtExpiry(raw string) int64 {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return 0
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return 0
	}
	var c struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(b, &c) != nil {
		return 0
	}
	n, err := c.Exp.Float64()
	if err != nil {
		return 0
	}
	return int64(n)
}

// sessionClaims are the claims a session keeps, for the external
// authorizer: its issuer and subject, the provider's session id and the
// email when kept.
func sessionClaims(sess *session.Session) map[string]any {
	c := map[string]any{"sub": sess.Subject}
	for k, v := range map[string]string{"iss": sess.Issuer, "sid": sess.SID, "email": sess.Email} {
		if v != "" {
			c[k] = v
		}
	}
	return c
}
