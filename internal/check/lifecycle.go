package check

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/cache"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// Reasons a session that opened is nevertheless no longer accepted.
var (
	errRevoked            = errors.New("session ended by logout or back-channel logout")
	errIdle               = errors.New("session idle for longer than SESSION_IDLE_TIMEOUT")
	errRefreshRejected    = errors.New("provider refused the refresh token; session ended")
	errValidationRejected = errors.New("provider refused the access token (strict session validation); session ended")
	// errValidationPending does not end the session: the provider cannot be
	// asked and the last successful validation is older than the grace
	// period. The cookie is kept so the session resumes when it answers.
	errValidationPending = errors.New("provider unreachable for longer than STRICT_SESSION_VALIDATION_GRACE")
	// errIDTokenExpired: the ID token handed upstream (UPSTREAM_TOKEN=id_token)
	// expired and could not be refreshed; the gateway's JWT check would refuse it.
	errIDTokenExpired = errors.New("the ID token handed upstream expired and was not refreshed")
)

// principal is a verified session, its precomputed answer, and what this
// replica knows about its life at the provider.
type principal struct {
	key    cache.Key
	sess   *session.Session
	user   []string // USERID_HEADER value
	groups []string // GROUPS_HEADER value

	mu         sync.Mutex                    // serializes refresh and validation: concurrent requests collapse into one provider call
	validated  atomic.Int64                  // last successful strict validation, unix seconds
	retryAt    atomic.Int64                  // no provider call before this, after the provider failed
	successor  atomic.Pointer[successor]     // the refreshed or re-sealed session that replaces this one
	validateAt atomic.Int64                  // no validation retry before this, after the provider failed
	upstream   atomic.Pointer[upstreamToken] // the issued token for upstreams, re-signed at half its lifetime
	redirects  atomic.Int32                  // renewal redirects answered for this (renewed) session, SESSION_RENEW_REDIRECT
}

// upstreamToken is an issued identity token with its header value.
type upstreamToken struct {
	header  []string // "Bearer <jwt>"
	renewAt int64
}

// successor is what replaces a session: requests still carrying the old
// cookie (sent before the browser got the new one) are answered as the new
// session, with the new cookie again, instead of refreshing again.
type successor struct {
	pr     *principal
	sealed string
}

func (h *Handler) newPrincipal(sealed string, s *session.Session, validated int64) *principal {
	pr := &principal{
		key:    cache.KeyOf(sealed),
		sess:   s,
		user:   []string{h.cfg.UserIDPrefix + s.User},
		groups: []string{joinGroups(s.Groups)},
	}
	pr.validated.Store(validated)
	return pr
}

// lifecycle applies revocation, idle timeout, refresh and strict validation
// to an authenticated session. It returns the principal to answer for, a
// sealed value to send back as the new cookie (or ""), or why the session is
// not accepted.
func (h *Handler) lifecycle(r *http.Request, pr *principal) (*principal, string, error) {
	sealed := ""
	// Follow the whole chain: a cookie the browser never replaced (no
	// Set-Cookie on allow) may be several renewals old.
	for n := pr.successor.Load(); n != nil; n = pr.successor.Load() {
		pr, sealed = n.pr, n.sealed
	}
	s := pr.sess
	now := h.Now().Unix()
	if h.Revocations.Revoked(s.ID, s.SID, s.Subject, s.Created) {
		return nil, "", errRevoked
	}
	active := s.Active
	if active == 0 {
		active = s.Created
	}
	idle := int64(h.cfg.SessionIdleTimeout / time.Second)
	if idle > 0 && now-active > idle {
		return nil, "", errIdle
	}
	if !h.due(pr, now, active) {
		if h.idTokenExpired(s, now) {
			return nil, "", errIDTokenExpired
		}
		// Strict validation failed recently and its retry is not due yet:
		// past the grace period the session stays refused until the
		// provider answers, not only on the requests that retry.
		if h.cfg.StrictValidation && s.AccessToken != "" && pr.validateAt.Load() > now &&
			now-pr.validated.Load() > int64(h.cfg.StrictGrace/time.Second) {
			return nil, "", errValidationPending
		}
		return pr, sealed, nil
	}

	pr.mu.Lock()
	defer pr.mu.Unlock()
	if n := pr.successor.Load(); n != nil { // another request did the work meanwhile
		return n.pr, n.sealed, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.CheckProviderBudget)
	defer cancel()

	next := *s
	changed, validated := false, pr.validated.Load()
	deadline := h.tokenDeadline(s)
	if s.RefreshToken != "" && deadline > 0 && now >= deadline-int64(h.cfg.RefreshBeforeExpiry/time.Second) && now >= pr.retryAt.Load() {
		tok, err := h.Provider.Refresh(ctx, s.RefreshToken, s.Subject)
		switch {
		case err == nil:
			next.AccessToken = tok.AccessToken
			if tok.RefreshToken != "" {
				next.RefreshToken = tok.RefreshToken
			}
			if raw, _ := tok.Extra("id_token").(string); raw != "" {
				next.IDToken, next.IDTokenExpiry = raw, jwtExpiry(raw)
			} else {
				// The old ID token stays, its expiry no longer drives refreshes.
				next.IDTokenExpiry = 0
			}
			next.TokenExpiry = 0
			if !tok.Expiry.IsZero() {
				next.TokenExpiry = tok.Expiry.Unix()
			}
			changed, validated = true, now
			h.Metrics.Refresh(metrics.ResultOK)
			h.log.Info("session refreshed", requestID(r), zap.String("user", s.User))
		case errors.Is(err, provider.ErrRejected) && now >= deadline:
			h.Metrics.Refresh(metrics.ResultRejected)
			h.log.Info("session ended: refresh refused by the provider", requestID(r), zap.String("user", s.User), zap.Error(err))
			h.Revocations.Revoke(ctx, revocation.Session, s.ID)
			return nil, "", errRefreshRejected
		case errors.Is(err, provider.ErrRejected):
			// The access token is still valid: another replica may have
			// rotated the refresh token and the browser will bring the new
			// cookie. Keep the session until the token expires.
			pr.retryAt.Store(now + 10)
			h.Metrics.Refresh(metrics.ResultRejected)
			h.log.Info("refresh refused while the access token is still valid; retrying later", requestID(r), zap.String("user", s.User), zap.Error(err))
		default:
			pr.retryAt.Store(now + 10)
			h.Metrics.Refresh(metrics.ResultUnavailable)
			h.log.Warn("refresh failed: provider unavailable; session kept", requestID(r), zap.String("user", s.User), zap.Error(err))
		}
	}

	if h.cfg.StrictValidation && next.AccessToken != "" && now-validated >= int64(h.cfg.StrictInterval/time.Second) && now >= pr.validateAt.Load() {
		err := h.Provider.Validate(ctx, next.AccessToken)
		switch {
		case err == nil:
			validated = now
			pr.validated.Store(now)
			h.Metrics.Validation(metrics.ResultOK)
		case errors.Is(err, provider.ErrRejected):
			h.Metrics.Validation(metrics.ResultRejected)
			h.log.Info("session ended: access token refused by the provider (strict validation)", requestID(r), zap.String("user", s.User), zap.Error(err))
			h.Revocations.Revoke(ctx, revocation.Session, s.ID)
			return nil, "", errValidationRejected
		default:
			pr.validateAt.Store(now + 5)
			h.Metrics.Validation(metrics.ResultUnavailable)
			if now-validated > int64(h.cfg.StrictGrace/time.Second) {
				h.log.Warn("session refused for now: provider unreachable past the grace period", requestID(r), zap.String("user", s.User), zap.Error(err))
				return nil, "", errValidationPending
			}
			h.log.Warn("strict validation failed: provider unavailable; within grace period", requestID(r), zap.String("user", s.User), zap.Error(err))
		}
	}

	if idle > 0 && now-active >= touchInterval(idle) {
		next.Active, changed = now, true
	}
	if h.idTokenExpired(&next, now) {
		return nil, "", errIDTokenExpired
	}
	if !changed {
		return pr, sealed, nil
	}
	newSealed, err := h.Codec.SealSession(h.cfg.SessionCookieName, &next)
	if err != nil {
		h.log.Error("cannot seal the renewed session; keeping the old one", zap.Error(err))
		return pr, sealed, nil
	}
	npr := h.newPrincipal(newSealed, &next, validated)
	h.verified.Put(npr.key, npr)
	pr.successor.Store(&successor{pr: npr, sealed: newSealed})
	return npr, newSealed, nil
}

// due reports cheaply whether the session needs any provider call or a new
// cookie, so the common request takes no lock.
func (h *Handler) due(pr *principal, now, active int64) bool {
	s := pr.sess
	if d := h.tokenDeadline(s); s.RefreshToken != "" && d > 0 && now >= d-int64(h.cfg.RefreshBeforeExpiry/time.Second) && now >= pr.retryAt.Load() {
		return true
	}
	if h.cfg.StrictValidation && s.AccessToken != "" && now-pr.validated.Load() >= int64(h.cfg.StrictInterval/time.Second) && now >= pr.validateAt.Load() {
		return true
	}
	if idle := int64(h.cfg.SessionIdleTimeout / time.Second); idle > 0 && now-active >= touchInterval(idle) {
		return true
	}
	return false
}

// touchInterval is how stale the activity stamp may get before the cookie
// is re-sealed: a tenth of the idle timeout, at least 30 s.
func touchInterval(idle int64) int64 { return max(idle/10, 30) }
