package check

import (
	"net/http"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// setCookie adds one Set-Cookie. maxAge < 0 deletes the cookie.
func (h *Handler) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int, sameSite http.SameSite, httpOnly bool) {
	c := &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		Domain:   h.cfg.SessionDomain,
		MaxAge:   maxAge,
		Secure:   h.secure(r),
		HttpOnly: httpOnly,
		SameSite: sameSite,
	}
	if maxAge < 0 {
		c.Value = ""
		c.Expires = time.Unix(0, 0)
	}
	w.Header().Add("Set-Cookie", c.String())
}

// writeSession sets the session cookie (in chunks when needed) and deletes
// chunks of an earlier, longer session that would otherwise linger.
func (h *Handler) writeSession(w http.ResponseWriter, r *http.Request, sealed string, maxAge int) bool {
	chunks := session.Split(sealed)
	if chunks == nil {
		return false
	}
	name := h.cfg.SessionCookieName
	for i, c := range chunks {
		h.setCookie(w, r, session.ChunkName(name, i), c, maxAge, h.cfg.SameSite, h.cfg.SessionHTTPOnly)
	}
	for i := len(chunks); i < 8; i++ {
		if _, ok := session.CookieValue(r.Header, session.ChunkName(name, i)); ok {
			h.setCookie(w, r, session.ChunkName(name, i), "", -1, h.cfg.SameSite, h.cfg.SessionHTTPOnly)
		}
	}
	return true
}

// clearSession deletes the session cookie and every chunk the request had,
// and forgets the value in the cache so a copy is checked afresh.
func (h *Handler) clearSession(w http.ResponseWriter, r *http.Request) {
	name := h.cfg.SessionCookieName
	if v := session.ReadSealed(r.Header, name); v != "" {
		h.verified.Delete(cacheKey(v))
	}
	h.setCookie(w, r, name, "", -1, h.cfg.SameSite, h.cfg.SessionHTTPOnly)
	for i := 1; i < 8; i++ {
		if _, ok := session.CookieValue(r.Header, session.ChunkName(name, i)); ok {
			h.setCookie(w, r, session.ChunkName(name, i), "", -1, h.cfg.SameSite, h.cfg.SessionHTTPOnly)
		}
	}
}
