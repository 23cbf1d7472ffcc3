package credential

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/cache"
	"github.com/oidc-authservice/oidc-authservice/internal/identity"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// Authenticator verifies a bearer token and maps it to an identity
// (authn.Authenticator; several can be chained by the caller).
type Authenticator interface {
	Authenticate(ctx context.Context, raw string) (*authn.Identity, error)
}

// Chain tries primary, and fallback only for a token whose issuer primary
// does not know (authn.ErrUnknownIssuer): the JWKS issuers first, then
// Kubernetes TokenReview for the cluster's service-account tokens.
func Chain(primary, fallback Authenticator) Authenticator {
	switch {
	case fallback == nil:
		return primary
	case primary == nil:
		return fallback
	}
	return chain{primary, fallback}
}

type chain struct{ primary, fallback Authenticator }

func (c chain) Authenticate(ctx context.Context, raw string) (*authn.Identity, error) {
	id, err := c.primary.Authenticate(ctx, raw)
	if !errors.Is(err, authn.ErrUnknownIssuer) {
		return id, err
	}
	return c.fallback.Authenticate(ctx, raw)
}

// LooksLikeJWT tells a JWS compact token from a sealed session value
// (which never contains a dot).
func LooksLikeJWT(v string) bool { return strings.Count(v, ".") == 2 }

// TokenOptions configure Tokens.
type TokenOptions struct {
	UserPrefix string        // USERID_PREFIX
	Budget     time.Duration // CHECK_PROVIDER_BUDGET: longest a first sight waits for the issuer
	CacheSize  int           // verified tokens kept; default 20,000
	// ProviderIssuer is the login provider's issuer: its tokens may have
	// been obtained for a session, and are refused once it ended.
	ProviderIssuer string
	// KeepClaims keeps a token's claims and extra attributes with its
	// identity, for the external authorizer.
	KeepClaims bool
}

// Errors of Verify besides the issuers' own (all wrap authn.ErrInvalidToken).
var (
	// ErrTokenRevoked: the session the token was obtained for has ended
	// (logout, back-channel logout), or the token itself was revoked.
	ErrTokenRevoked = fmt.Errorf("%w: ended by a logout or back-channel logout", authn.ErrInvalidToken)
	// ErrTokenTooOld: a provider token issued longer ago than the
	// revocation list keeps its entries, which could no longer tell
	// whether a logout ended it.
	ErrTokenTooOld = fmt.Errorf("%w: issued longer ago than logouts are remembered", authn.ErrInvalidToken)
)

// Tokens verifies bearer tokens and keeps the verified ones until they
// expire.
type Tokens struct {
	o        TokenOptions
	auth     Authenticator // nil: no issuer is configured
	mapper   *identity.Mapper
	revoked  *revocation.List // nil: nothing is ever revoked (tests)
	metrics  *metrics.Metrics
	lookups  *metrics.CacheCounter
	log      *zap.Logger
	now      func() time.Time
	verified *cache.Cache[*Token]
}

// NewTokens builds Tokens; auth and revoked may be nil.
func NewTokens(o TokenOptions, auth Authenticator, mapper *identity.Mapper, revoked *revocation.List, m *metrics.Metrics, log *zap.Logger, now func() time.Time) *Tokens {
	if o.CacheSize <= 0 {
		o.CacheSize = 20000
	}
	return &Tokens{o: o, auth: auth, mapper: mapper, revoked: revoked, metrics: m, lookups: m.CacheCounter("token"), log: log.Named("token"), now: now,
		verified: cache.New[*Token](o.CacheSize)}
}

// Verify authenticates a bearer JWT. A verified token's identity is cached
// under the token's SHA-256 until the identity's expiry (the token's exp;
// sooner for a TokenReview answer, which is then asked again). A token of
// the login provider is refused once the session it was obtained for has
// ended (its nonce names the session), or a back-channel logout names its
// sid or its subject, checked on every use, cached or not, so a logout
// reaches it on every replica as soon as the revocation list does. Every
// error wraps authn.ErrInvalidToken.
func (t *Tokens) Verify(ctx context.Context, raw string, rid zap.Field) (*Token, error) {
	if t.auth == nil {
		return nil, fmt.Errorf("%w: no bearer token issuers are configured", authn.ErrInvalidToken)
	}
	k := cache.KeyOf(raw)
	now := t.now().Unix()
	tok, ok := t.verified.Get(k)
	t.lookups.Lookup(ok)
	if ok {
		if now < tok.Expires {
			if tok.link != nil && t.revoked.TokenRevoked((*[32]byte)(&k), tok.link.session, tok.link.sid, tok.link.sub, tok.link.iat) {
				t.verified.Delete(k)
				return nil, ErrTokenRevoked
			}
			return tok, nil
		}
		t.verified.Delete(k) // expired, or an answer to renew: verified again
	}
	ctx, cancel := context.WithTimeout(ctx, t.o.Budget)
	defer cancel()
	id, err := t.auth.Authenticate(ctx, raw)
	if err != nil {
		return nil, err
	}
	mapped, report, err := t.mapper.Clean(id.Username, id.Groups)
	switch {
	case errors.Is(err, identity.ErrTooManyGroups):
		// Counts only: the names of thousands of groups are no log line.
		t.metrics.IdentityLimit("bearer", "groups", "refused")
		t.log.Info("bearer token refused: its groups exceed the limits", rid, zap.String("user", mapped.User), zap.String("issuer", id.Issuer),
			zap.Int("groups_received", report.Received), zap.Int("groups_filtered", report.Filtered), zap.Int("groups_unsafe", report.Unsafe), zap.Error(err))
		return nil, fmt.Errorf("%w: %w", authn.ErrInvalidToken, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", authn.ErrInvalidToken, err)
	case report.Changed():
		if report.Truncated > 0 {
			t.metrics.IdentityLimit("bearer", "groups", "truncated")
		}
		t.log.Warn("token groups left out: unsafe names or beyond the limits (GROUPS_OVERFLOW=truncate)", rid, zap.String("user", mapped.User),
			zap.Int("groups_received", report.Received), zap.Int("groups_unsafe", report.Unsafe), zap.Int("groups_truncated", report.Truncated),
			zap.Int("groups_kept", report.Kept), zap.String("unsafe_example", report.Example))
	}
	user, groups := mapped.User, mapped.Groups
	sub := id.UID
	if sub == "" {
		sub = id.Username
	}
	tok = &Token{Principal: newPrincipal(t.o.UserPrefix, sub, user, groups, id.Expiry.Unix())}
	if t.o.KeepClaims {
		tok.Claims, tok.Extra = id.Claims, id.Extra
	}
	if t.revoked != nil && id.Issuer == t.o.ProviderIssuer && t.o.ProviderIssuer != "" {
		tok.link = &tokenLink{sub: id.Subject, sid: id.SID, iat: id.IssuedAt.Unix()}
		if id.IssuedAt.IsZero() {
			tok.link.iat = 0
		}
		if id.Nonce != "" {
			tok.link.session = session.IDFromNonce(id.Nonce)
		}
		// No longer than the revocation list remembers a logout.
		if until := tok.link.iat + int64(t.revoked.TTL()/time.Second); tok.link.iat > 0 && until < tok.Expires {
			if now >= until {
				return nil, ErrTokenTooOld
			}
			tok.Expires = until
		}
		if t.revoked.TokenRevoked((*[32]byte)(&k), tok.link.session, tok.link.sid, tok.link.sub, tok.link.iat) {
			return nil, ErrTokenRevoked
		}
	}
	t.verified.Put(k, tok)
	return tok, nil
}
