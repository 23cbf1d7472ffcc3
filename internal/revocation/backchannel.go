package revocation

import (
	"context"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/logtext"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
)

// LogoutTokenVerifier checks back-channel logout tokens (provider.Provider).
type LogoutTokenVerifier interface {
	VerifyLogoutToken(ctx context.Context, raw string, maxAge time.Duration) (*provider.LogoutToken, error)
}

// Backchannel implements OpenID Connect Back-Channel Logout 1.0: the
// provider POSTs a logout_token; a valid one ends every session of its sid
// (or, without sid, every session of its sub created before now) on every
// replica that shares the list. Answers: 200 done, 400 with
// {"error": "invalid_request"} for anything invalid, replayed or
// unverifiable, 405 for another method.
//
// It is served on WEB_SERVER_PORT and, for forward-auth recipes that route
// <prefix>* to it, on SERVER_PORT, at <prefix>oidc/backchannel-logout.
type Backchannel struct {
	List     *List
	Verifier LogoutTokenVerifier
	MaxAge   time.Duration // BACKCHANNEL_LOGOUT_MAX_AGE: the oldest iat accepted
	Timeout  time.Duration // of the provider calls (its keys)
	Metrics  *metrics.Metrics
	Log      *zap.Logger

	quietOnce sync.Once
	quiet     *zap.Logger // refusals: anyone can post a logout token
}

var invalidRequest = []byte(`{"error":"invalid_request"}`)

func (b *Backchannel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		b.refuse(w, http.StatusMethodNotAllowed, "not a POST", nil)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		b.refuse(w, http.StatusBadRequest, "unreadable body", err)
		return
	}
	raw := r.PostForm.Get("logout_token")
	if raw == "" {
		b.refuse(w, http.StatusBadRequest, "no logout_token", nil)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), b.Timeout)
	defer cancel()
	lt, err := b.Verifier.VerifyLogoutToken(ctx, raw, b.MaxAge)
	if err != nil {
		b.refuse(w, http.StatusBadRequest, "invalid logout token", err)
		return
	}
	if !b.List.FirstUse(ctx, "jti:"+lt.JTI, b.MaxAge+2*time.Minute) {
		b.refuse(w, http.StatusBadRequest, "replayed jti", nil)
		return
	}
	if lt.SID != "" {
		b.List.Revoke(ctx, SID, lt.SID)
	} else {
		b.List.Revoke(ctx, Subject, lt.Subject)
	}
	b.Metrics.Revocation("backchannel")
	b.Log.Info("back-channel logout", zap.String("sub", lt.Subject), zap.Bool("by_sid", lt.SID != ""))
	w.WriteHeader(http.StatusOK)
}

func (b *Backchannel) refuse(w http.ResponseWriter, status int, why string, err error) {
	b.quietOnce.Do(func() { b.quiet = logtext.Limited(b.Log, 5, 10*time.Second) })
	b.quiet.Info("back-channel logout refused: "+why, zap.Error(err))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(invalidRequest)
}
