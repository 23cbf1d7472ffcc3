package credential

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/cache"
	"github.com/oidc-authservice/oidc-authservice/internal/identity"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
)

// UserInfoer asks the provider's userinfo endpoint about an access token
// (provider.Provider).
type UserInfoer interface {
	UserInfo(ctx context.Context, accessToken string) (map[string]any, error)
}

// OpaqueOptions configure Opaque.
type OpaqueOptions struct {
	UserPrefix  string        // USERID_PREFIX
	TTL         time.Duration // ACCESS_TOKEN_CACHE_TTL: how long an answer is reused
	Rate        int           // ACCESS_TOKEN_LOOKUPS_PER_SECOND: new tokens asked about per second (the bucket's size too)
	Concurrency int           // ACCESS_TOKEN_LOOKUP_CONCURRENCY: lookups in flight
	Budget      time.Duration // CHECK_PROVIDER_BUDGET: longest a lookup may take
	CacheSize   int           // answers kept (accepted and refused alike, each); default 20,000
	KeepClaims  bool          // keep userinfo's claims for the external authorizer
}

// Errors of Opaque.Verify besides the provider's refusal; all wrap
// authn.ErrInvalidToken.
var (
	// ErrLookupLimited: too many new opaque tokens at once (rate or
	// concurrency bound); the token was not looked at. Try again.
	ErrLookupLimited = fmt.Errorf("%w: too many new access tokens to look up at once", authn.ErrInvalidToken)
	// ErrNotOpaqueToken: the value cannot be an access token (characters
	// outside RFC 6750's b64token, over 4 KiB): never sent to the provider.
	ErrNotOpaqueToken = fmt.Errorf("%w: not an access token", authn.ErrInvalidToken)
)

// MaxOpaqueToken bounds what is sent to the provider at all.
const MaxOpaqueToken = 4096

// unavailableTTL bounds how long "the provider could not say" is reused.
const unavailableTTL = 5 * time.Second

// Opaque verifies the provider's opaque access tokens (ACCESS_TOKEN_AUTHN=
// opaque; GitLab's OAuth tokens) by asking its userinfo endpoint, once per
// token: the answer, accepted or refused, is cached under the token's
// SHA-256 for TTL (a refusal because the provider could not say, for at
// most 5 s), so a token revoked at the provider stops working within TTL.
// A token the service obtained for a session that logged out is refused at
// once, whatever the provider says (the revocation list, checked on every
// use).
// Lookups of tokens not seen before are bounded for all tokens together:
// at most Rate per second and Concurrency at once; a token beyond either is
// refused at once (ErrLookupLimited, not cached), so invented tokens never
// become an unbounded stream of calls to the provider. Concurrent requests
// with the same new token share one lookup.
type Opaque struct {
	o       OpaqueOptions
	ui      UserInfoer
	mapper  *identity.Mapper
	revoked *revocation.List // nil: nothing is ever revoked (tests)
	metrics *metrics.Metrics
	stats   *metrics.AccessTokenStats
	lookups *metrics.CacheCounter
	log     *zap.Logger
	now     func() time.Time

	good *cache.Cache[*opaqueAnswer] // accepted tokens
	bad  *cache.Cache[*opaqueAnswer] // refused ones: a flood of them never evicts an accepted token
	rate *bucket
	slot chan struct{}

	mu       sync.Mutex
	inflight map[cache.Key]*opaqueLookup
}

// opaqueAnswer is a cached answer about one token.
type opaqueAnswer struct {
	tok      *Token // nil: refused
	err      error
	until    int64 // unix seconds: reused until then
	verified int64 // unix seconds: when the provider answered
}

type opaqueLookup struct {
	done chan struct{}
	a    *opaqueAnswer
}

// NewOpaque builds Opaque; revoked may be nil.
func NewOpaque(o OpaqueOptions, ui UserInfoer, mapper *identity.Mapper, revoked *revocation.List, m *metrics.Metrics, log *zap.Logger, now func() time.Time) *Opaque {
	if o.CacheSize <= 0 {
		o.CacheSize = 20000
	}
	o.Rate, o.Concurrency = max(o.Rate, 1), max(o.Concurrency, 1)
	return &Opaque{o: o, ui: ui, mapper: mapper, revoked: revoked, metrics: m, stats: m.AccessTokenStats("opaque"),
		lookups: m.CacheCounter("access_token"), log: log.Named("access_token"), now: now,
		good: cache.New[*opaqueAnswer](o.CacheSize), bad: cache.New[*opaqueAnswer](o.CacheSize),
		rate: newBucket(o.Rate, now()), slot: make(chan struct{}, o.Concurrency), inflight: map[cache.Key]*opaqueLookup{}}
}

// Verify authenticates an opaque access token. Every error wraps
// authn.ErrInvalidToken.
func (o *Opaque) Verify(ctx context.Context, raw string, rid zap.Field) (*Token, error) {
	if !b64token(raw) {
		return nil, ErrNotOpaqueToken
	}
	k := cache.KeyOf(raw)
	now := o.now().Unix()
	if a, ok := o.good.Get(k); ok {
		switch {
		case now >= a.until:
			o.good.Delete(k)
		case o.endedHere(&k):
			o.good.Delete(k)
			o.lookups.Lookup(true)
			return nil, ErrTokenRevoked
		case o.revoked != nil && o.revoked.Revoked("", "", a.tok.Subject, a.verified):
			// A back-channel logout named the user after the provider
			// vouched for the token: ask it again.
			o.good.Delete(k)
		default:
			o.lookups.Lookup(true)
			return a.tok, nil
		}
	}
	if a, ok := o.bad.Get(k); ok {
		if now < a.until {
			o.lookups.Lookup(true)
			return nil, a.err
		}
		o.bad.Delete(k)
	}
	o.lookups.Lookup(false)
	o.mu.Lock()
	if l, ok := o.inflight[k]; ok {
		o.mu.Unlock()
		select {
		case <-l.done:
			return l.a.tok, l.a.err
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrLookupLimited, ctx.Err())
		}
	}
	if !o.rate.take(o.now()) {
		o.mu.Unlock()
		o.stats.Result("limited")
		return nil, ErrLookupLimited
	}
	select {
	case o.slot <- struct{}{}:
	default:
		o.mu.Unlock()
		o.stats.Result("limited")
		return nil, ErrLookupLimited
	}
	l := &opaqueLookup{done: make(chan struct{})}
	o.inflight[k] = l
	o.mu.Unlock()

	l.a = o.lookup(ctx, raw, rid)
	<-o.slot
	if l.a.tok != nil && o.endedHere(&k) {
		// The provider still vouches for it, but the session it was
		// obtained for has logged out (its revocation at the provider
		// failed, or the provider has none).
		l.a.tok, l.a.err = nil, ErrTokenRevoked
	}
	if l.a.tok != nil {
		o.good.Put(k, l.a)
	} else {
		o.bad.Put(k, l.a)
	}
	o.mu.Lock()
	delete(o.inflight, k)
	o.mu.Unlock()
	close(l.done)
	return l.a.tok, l.a.err
}

// endedHere reports whether the token (by digest k) is one the service
// obtained for a session that has since logged out: the revocation list's
// entry (Sessions.End), on every replica that shares the list.
func (o *Opaque) endedHere(k *cache.Key) bool {
	return o.revoked != nil && o.revoked.TokenRevoked((*[32]byte)(k), "", "", "", 0)
}

// lookup asks the provider once, within the budget; the call is not
// cancelled with the request that started it, since others may wait for it.
func (o *Opaque) lookup(parent context.Context, raw string, rid zap.Field) *opaqueAnswer {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), o.o.Budget)
	defer cancel()
	claims, err := o.ui.UserInfo(ctx, raw)
	now := o.now().Unix()
	ttl := int64(o.o.TTL / time.Second)
	a := &opaqueAnswer{until: now + ttl, verified: now}
	switch {
	case errors.Is(err, provider.ErrRejected):
		o.stats.Result("rejected")
		a.err = fmt.Errorf("%w: the provider does not know the access token (revoked, expired or invented)", authn.ErrInvalidToken)
		return a
	case errors.Is(err, provider.ErrNoUserinfo):
		o.stats.Result("unavailable")
		a.err = fmt.Errorf("%w: opaque access tokens cannot be verified: the provider has no userinfo endpoint", authn.ErrInvalidToken)
		return a
	case err != nil:
		o.stats.Result("unavailable")
		o.log.Warn("access token lookup at userinfo failed", rid, zap.Error(err))
		a.until = now + min(ttl, int64(unavailableTTL/time.Second))
		a.err = fmt.Errorf("%w: the provider could not be asked: %v", authn.ErrInvalidToken, err)
		return a
	}
	id, report, err := o.mapper.FromClaims(claims)
	switch {
	case errors.Is(err, identity.ErrTooManyGroups):
		// As for every bearer token: counts only, never the names.
		o.metrics.IdentityLimit("bearer", "groups", "refused")
		o.log.Info("access token refused: its groups exceed the limits", rid, zap.String("user", id.User),
			zap.Int("groups_received", report.Received), zap.Int("groups_filtered", report.Filtered), zap.Int("groups_unsafe", report.Unsafe), zap.Error(err))
		fallthrough
	case err != nil:
		o.stats.Result("rejected")
		a.err = fmt.Errorf("%w: userinfo's answer: %w", authn.ErrInvalidToken, err)
		return a
	case report.Changed():
		if report.Truncated > 0 {
			o.metrics.IdentityLimit("bearer", "groups", "truncated")
		}
		o.log.Warn("access token groups left out: unsafe names or beyond the limits (GROUPS_OVERFLOW=truncate)", rid, zap.String("user", id.User),
			zap.Int("groups_received", report.Received), zap.Int("groups_unsafe", report.Unsafe), zap.Int("groups_truncated", report.Truncated),
			zap.Int("groups_kept", report.Kept), zap.String("unsafe_example", report.Example))
	}
	sub, _ := claims["sub"].(string)
	o.stats.Result("ok")
	a.tok = &Token{Principal: newPrincipal(o.o.UserPrefix, sub, id.User, id.Groups, a.until)}
	if o.o.KeepClaims {
		a.tok.Claims = claims
	}
	return a
}

// b64token reports whether v can be a bearer token of RFC 6750 (b64token:
// letters, digits, "-._~+/", then "=" padding) of a sane size.
func b64token(v string) bool {
	if len(v) < 8 || len(v) > MaxOpaqueToken {
		return false
	}
	i := 0
	for ; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			break
		}
	}
	for ; i < len(v) && v[i] == '='; i++ {
	}
	return i == len(v)
}

// bucket is a token bucket: n per second, at most n at once.
type bucket struct {
	mu     sync.Mutex
	n      float64
	tokens float64
	last   time.Time
}

func newBucket(n int, now time.Time) *bucket {
	return &bucket{n: float64(n), tokens: float64(n), last: now}
}

func (b *bucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.n, b.tokens+d.Seconds()*b.n)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
