package check

import (
	"net/http"
	"strings"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// hostPrefix marks cookies that browsers accept only when Secure, with
// Path=/ and no Domain, from a secure origin: a sibling subdomain or a
// network attacker cannot plant or overwrite them (RFC 6265bis §4.1.3.2).
//
// Cookie names in this file are logical names (SESSION_COOKIE_NAME,
// authservice_state_<state>); the sealed values are bound to the logical
// name, and the name on the wire gets the prefix when hostPrefixed says so.
// Both forms are read, prefixed first, so sessions survive a change of
// SESSION_COOKIE_SECURE, SESSION_DOMAIN or of the scheme.
const hostPrefix = "__Host-"

// hostPrefixed reports whether the cookie called name, set in answer to r,
// goes out as __Host-<name>: when it is Secure and SESSION_DOMAIN is empty,
// unless SESSION_COOKIE_HOST_PREFIX is off. The session cookie keeps its
// plain name when it is readable by scripts (SESSION_HTTP_ONLY=false): the
// older Kubeflow dashboard reads authservice_session by that name.
func (h *Handler) hostPrefixed(r *http.Request, name string) bool {
	if !h.cfg.SessionHostPrefix || h.cfg.SessionDomain != "" || !h.secure(r) {
		return false
	}
	return h.cfg.SessionHTTPOnly || strings.HasPrefix(name, h.statePrefix)
}

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
	if h.hostPrefixed(r, name) {
		c.Name, c.Domain, c.Secure = hostPrefix+name, "", true
	}
	if maxAge < 0 {
		c.Value = ""
		c.Expires = time.Unix(0, 0)
	}
	w.Header().Add("Set-Cookie", c.String())
}

// expireCookie deletes the cookie called name in the form setCookie uses
// now and, when the request carries it, in the other form too.
func (h *Handler) expireCookie(w http.ResponseWriter, r *http.Request, name string, sameSite http.SameSite, httpOnly bool) {
	h.setCookie(w, r, name, "", -1, sameSite, httpOnly)
	c := &http.Cookie{Name: hostPrefix + name, Path: "/", MaxAge: -1, Expires: time.Unix(0, 0),
		Secure: true, HttpOnly: httpOnly, SameSite: sameSite}
	if h.hostPrefixed(r, name) {
		c.Name, c.Domain, c.Secure = name, h.cfg.SessionDomain, h.secure(r)
	}
	if _, ok := session.CookieValue(r.Header, c.Name); ok {
		w.Header().Add("Set-Cookie", c.String())
	}
}

// cookieValue reads the cookie called name, prefixed form first.
func cookieValue(hd http.Header, name string) (string, bool) {
	if v, ok := session.CookieValue(hd, hostPrefix+name); ok {
		return v, true
	}
	return session.CookieValue(hd, name)
}

// readSession reads the sealed session value (its chunks joined), the
// prefixed form when it was sent, else the plain one; present reports
// whether a session cookie was sent at all.
func (h *Handler) readSession(hd http.Header) (value string, present bool) {
	if hd["Cookie"] == nil {
		return "", false
	}
	if v, ok := session.ReadSealed(hd, h.hostSessionName); ok {
		return v, true
	}
	return session.ReadSealed(hd, h.cfg.SessionCookieName)
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
		if _, ok := cookieValue(r.Header, session.ChunkName(name, i)); ok {
			h.expireCookie(w, r, session.ChunkName(name, i), h.cfg.SameSite, h.cfg.SessionHTTPOnly)
		}
	}
	return true
}

// clearSession deletes the session cookie and every chunk the request had,
// and forgets the value in the cache so a copy is checked afresh.
func (h *Handler) clearSession(w http.ResponseWriter, r *http.Request) {
	name := h.cfg.SessionCookieName
	if v, _ := h.readSession(r.Header); v != "" {
		h.verified.Delete(cacheKey(v))
	}
	h.expireCookie(w, r, name, h.cfg.SameSite, h.cfg.SessionHTTPOnly)
	for i := 1; i < 8; i++ {
		if _, ok := cookieValue(r.Header, session.ChunkName(name, i)); ok {
			h.expireCookie(w, r, session.ChunkName(name, i), h.cfg.SameSite, h.cfg.SessionHTTPOnly)
		}
	}
}
