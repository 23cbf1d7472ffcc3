package check

import (
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
)

// BackchannelLogout implements OpenID Connect Back-Channel Logout 1.0: the
// provider POSTs a logout_token; a valid one ends every session of its sid
// (or, without sid, every session of its sub created before now) on every
// replica that shares the revocation list. Answers: 200 done, 400 with
// {"error": ...} for anything invalid, replayed or unverifiable.
//
// It is served on WEB_SERVER_PORT at <prefix>oidc/backchannel-logout: Envoy
// does not send request bodies to ext_authz, so the check lets this path
// through and the gateway routes it here.
func (h *Handler) BackchannelLogout(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "invalid_request"})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		h.log.Info("back-channel logout refused: unreadable body", zap.Error(err))
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	raw := r.PostForm.Get("logout_token")
	if raw == "" {
		h.log.Info("back-channel logout refused: no logout_token")
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	ctx, cancel := h.providerContext(r)
	defer cancel()
	lt, err := h.Provider.VerifyLogoutToken(ctx, raw, h.cfg.BackchannelMaxAge)
	if err != nil {
		h.log.Info("back-channel logout refused", zap.Error(err))
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	ttl := h.cfg.BackchannelMaxAge + 2*time.Minute
	if !h.Revocations.FirstUse(ctx, "jti:"+lt.JTI, ttl) {
		h.log.Warn("back-channel logout refused: replayed jti")
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	if lt.SID != "" {
		h.Revocations.Revoke(ctx, revocation.SID, lt.SID)
	} else {
		h.Revocations.Revoke(ctx, revocation.Subject, lt.Subject)
	}
	h.Metrics.Revocation("backchannel")
	h.log.Info("back-channel logout", zap.String("sub", lt.Subject), zap.Bool("by_sid", lt.SID != ""))
	w.WriteHeader(http.StatusOK)
}
