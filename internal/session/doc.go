// Package session owns what the service keeps in the browser: the session
// cookie and the per-login state cookies.
//
// Both are sealed with gorilla/securecookie (AES-256-CTR encryption and an
// HMAC-SHA256 that also binds the cookie's name), with keys derived from
// SESSION_KEYS. The first key seals, every key opens, so keys rotate without
// logging anybody out. Nothing is stored on the server: any replica with the
// same keys serves any user.
//
// A session's absolute expiry is inside the sealed value; the cookie's
// Max-Age is only a hint to the browser. A sealed value longer than one
// cookie can hold is split into numbered chunks (name, name_1, name_2, ...);
// the first chunk then starts with "<count>." — a character that base64
// never produces — so a stale chunk cannot be glued onto a shorter session.
package session
