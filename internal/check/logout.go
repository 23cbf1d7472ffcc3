package check

import (
	"net/http"

	"go.uber.org/zap"
)

// logout ends the session. POST is the Kubeflow dashboard's contract before
// v1.10 (Authorization: Bearer <session cookie value>, answer 201 with
// JSON); GET is the contract since v1.10 (a navigation, answered 302).
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		pr, reason := h.authenticate(r)
		if pr == nil {
			h.log.Info("logout refused: no valid session", requestID(r), zap.String("reason", reasonText(reason)))
			h.unauthenticated(w)
			return
		}
		h.endSession(w, r, pr)
		writeJSON(w, http.StatusCreated, map[string]string{"afterLogoutURL": h.cfg.AfterLogoutURL})
	case http.MethodGet, http.MethodHead:
		if pr, _ := h.authenticate(r); pr != nil {
			h.endSession(w, r, pr)
		} else {
			h.clearSession(w, r)
		}
		hd := w.Header()
		hd["Cache-Control"] = noStore
		hd.Set("Location", h.cfg.AfterLogoutURL)
		w.WriteHeader(http.StatusFound)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
	}
}

func (h *Handler) endSession(w http.ResponseWriter, r *http.Request, pr *principal) {
	h.clearSession(w, r)
	if v, ok := bearer(r.Header); ok {
		h.verified.Delete(cacheKey(v))
	}
	h.log.Info("logout", requestID(r), zap.String("user", pr.sess.User), zap.String("sub", pr.sess.Subject))
}
