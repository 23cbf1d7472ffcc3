package check

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/cache"
	"github.com/oidc-authservice/oidc-authservice/internal/identity"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// looksLikeJWT tells a JWS compact token from a sealed session value (which
// never contains a dot).
func looksLikeJWT(v string) bool { return strings.Count(v, ".") == 2 }

// TokenAuthenticator maps a bearer token to an identity or refuses it with
// an error wrapping authn.ErrInvalidToken.
type TokenAuthenticator interface {
	Authenticate(ctx context.Context, raw string) (*authn.Identity, error)
}

// openToken authenticates a bearer JWT: by the configured issuers' keys
// first, then, for a token none of them issued, by TokenReview. A verified
// token's identity is cached under the token's SHA-256 until the identity's
// Expiry (the token's exp; sooner for TokenReview, which is asked again).
func (h *Handler) openToken(r *http.Request, raw string) (*principal, error) {
	if h.Tokens == nil && h.Reviews == nil {
		return nil, fmt.Errorf("%w: no bearer token issuers are configured", authn.ErrInvalidToken)
	}
	k := cache.KeyOf(raw)
	now := h.Now().Unix()
	pr, ok := h.verified.Get(k)
	h.Metrics.CacheLookup(metrics.TokenCache, ok)
	if ok {
		if now < pr.sess.Expires {
			return pr, nil
		}
		// Expired, or a TokenReview answer to renew: verify again.
		h.verified.Delete(k)
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.CheckProviderBudget)
	defer cancel()
	id, err := h.authenticateToken(ctx, raw)
	if err != nil {
		return nil, err
	}
	user, groups, dropped, err := identity.Clean(h.Mapper.Transform(id.Username), id.Groups)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", authn.ErrInvalidToken, err)
	}
	if len(dropped) > 0 {
		h.log.Warn("token groups left out: unsafe characters or too many", requestID(r), zap.String("user", user), zap.Strings("groups", dropped))
	}
	sub := id.UID
	if sub == "" {
		sub = id.Username
	}
	s := &session.Session{Subject: sub, Issuer: id.Issuer, User: user, Groups: groups, Created: now, Expires: id.Expiry.Unix()}
	pr = h.newPrincipal(raw, s, now)
	h.verified.Put(k, pr)
	return pr, nil
}

func (h *Handler) authenticateToken(ctx context.Context, raw string) (*authn.Identity, error) {
	if h.Tokens != nil {
		id, err := h.Tokens.Authenticate(ctx, raw)
		if h.Reviews == nil || !errors.Is(err, authn.ErrUnknownIssuer) {
			return id, err
		}
	}
	return h.Reviews.Authenticate(ctx, raw)
}

// upstreamAuthorization is the Authorization header the upstream gets, per
// UPSTREAM_TOKEN: the provider's ID token, or an issued token cached on the
// principal and re-signed when half its lifetime has passed, so the hot path
// signs once per session per half-lifetime, not per request.
func (h *Handler) upstreamAuthorization(pr *principal) []string {
	switch h.cfg.UpstreamToken {
	case "id_token":
		if pr.sess.IDToken == "" {
			return nil
		}
		return []string{"Bearer " + pr.sess.IDToken}
	case "issued":
		if h.Upstream == nil {
			return nil
		}
		now := h.Now().Unix()
		if t := pr.upstream.Load(); t != nil && now < t.renewAt {
			return t.header
		}
		raw, exp, err := h.Upstream.Sign(pr.user[0], pr.sess.Groups)
		if err != nil {
			h.log.Error("cannot sign the upstream token", zap.Error(err))
			return nil
		}
		t := &upstreamToken{header: []string{"Bearer " + raw}, renewAt: exp.Unix() - int64(h.Upstream.Lifetime().Seconds()/2)}
		pr.upstream.Store(t)
		return t.header
	}
	return nil
}
