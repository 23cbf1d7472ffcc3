package session

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HostPrefix marks cookies that browsers accept only when Secure, with
// Path=/ and no Domain, from a secure origin: a sibling subdomain or a
// network attacker cannot plant or overwrite them (RFC 6265bis §4.1.3.2).
const HostPrefix = "__Host-"

// StatePrefix starts the logical name of every login-state cookie:
// authservice_state_<state>.
const StatePrefix = "authservice_state_"

// CookieOptions configure the service's cookies, once, from the settings.
type CookieOptions struct {
	Name       string        // SESSION_COOKIE_NAME: the session cookie's logical name
	Domain     string        // SESSION_DOMAIN; empty: host-only
	SameSite   http.SameSite // of the session cookie; login states are always Lax
	HTTPOnly   bool          // of the session cookie; login states are always HttpOnly
	HostPrefix bool          // SESSION_COOKIE_HOST_PREFIX
	// Secure is SESSION_COOKIE_SECURE: "true", "false", or "auto" (Secure
	// when SecureRedirect, or when the gateway says X-Forwarded-Proto:
	// https).
	Secure         string
	SecureRedirect bool // REDIRECT_URL is an absolute https URL
	// AcceptPlain (SESSION_COOKIE_ACCEPT_PLAIN) reads a session cookie under
	// its plain name even where the __Host- form is in use: a migration
	// window for sessions issued before the prefix, at the price of letting
	// a sibling subdomain or a plain-http attacker log a browser in as
	// someone else. Never for login states.
	AcceptPlain bool
	// MaxCookies (SESSION_MAX_COOKIES) is the most cookies a session may
	// take; 0 or more than MaxCookies: MaxCookies.
	MaxCookies int
}

// Cookies reads, writes and clears the session cookie (in chunks when it
// is long) and the login-state cookies. Names given to it are logical
// names, which the sealed values are bound to; on the wire a cookie is
// called __Host-<name> when the request is secure, SESSION_COOKIE_HOST_PREFIX
// is on and SESSION_DOMAIN is empty (and, for the session cookie, it is
// HttpOnly: the older Kubeflow dashboard reads authservice_session by name).
//
// The __Host- form is always read first: nobody but this host over HTTPS
// can have set it. The plain form is read only where the __Host- form
// cannot be in use (plain http, SESSION_DOMAIN, the prefix off), so a
// planted plain cookie is never taken for the browser's own.
type Cookies struct {
	o              CookieOptions
	hostName       string // __Host-<Name>
	hostStates     string // __Host-authservice_state_
	ownChunkPrefix string // <Name>_
}

// NewCookies configures the cookies.
func NewCookies(o CookieOptions) *Cookies {
	if o.MaxCookies <= 0 || o.MaxCookies > MaxCookies {
		o.MaxCookies = MaxCookies
	}
	return &Cookies{o: o, hostName: HostPrefix + o.Name, hostStates: HostPrefix + StatePrefix, ownChunkPrefix: o.Name + "_"}
}

// Name is the session cookie's logical name, which sealed sessions are
// bound to.
func (c *Cookies) Name() string { return c.o.Name }

// Secure reports whether cookies set in answer to r get the Secure flag:
// the service's one reading of whether a request is https.
func (c *Cookies) Secure(r *http.Request) bool {
	switch c.o.Secure {
	case "true":
		return true
	case "false":
		return false
	}
	if c.o.SecureRedirect {
		return true
	}
	// The server canonicalizes header names: a map read, not Header.Get.
	v := r.Header["X-Forwarded-Proto"]
	return len(v) > 0 && strings.EqualFold(v[0], "https")
}

// sessionPrefixed reports whether the session cookie goes out as
// __Host-<name> in answer to a request that is secure or not.
func (c *Cookies) sessionPrefixed(secure bool) bool {
	return c.o.HTTPOnly && c.statePrefixed(secure)
}

// statePrefixed is sessionPrefixed for login states, which are always
// HttpOnly.
func (c *Cookies) statePrefixed(secure bool) bool {
	return c.o.HostPrefix && c.o.Domain == "" && secure
}

// ReadSession returns the sealed session value (its chunks joined); present
// reports whether a session cookie was sent at all in a form that is read.
func (c *Cookies) ReadSession(in http.Header, secure bool) (value string, present bool) {
	if in["Cookie"] == nil {
		return "", false
	}
	host, hostSent, plain, plainSent := cookieValues(in, c.hostName, c.o.Name)
	switch {
	case hostSent:
		return joinChunks(in, c.hostName, host), true
	case !plainSent || c.sessionPrefixed(secure) && !c.o.AcceptPlain:
		return "", false
	}
	return joinChunks(in, c.o.Name, plain), true
}

// MaxCookies is the most cookies a session may take (SESSION_MAX_COOKIES).
func (c *Cookies) MaxCookies() int { return c.o.MaxCookies }

// Fits reports whether a sealed session fits in the cookies a session may
// take.
func (c *Cookies) Fits(sealed string) bool {
	n := Count(sealed)
	return n > 0 && n <= c.o.MaxCookies
}

// WriteSession sets the session cookie (in chunks when needed) and deletes
// chunks of an earlier, longer session that would otherwise linger. It
// reports false, and writes nothing, when the value does not fit (Fits):
// callers check before they make a session they could not store.
func (c *Cookies) WriteSession(out, in http.Header, secure bool, sealed string, maxAge int) bool {
	if !c.Fits(sealed) {
		return false
	}
	chunks := Split(sealed)
	for i, v := range chunks {
		c.set(out, ChunkName(c.o.Name, i), v, maxAge, secure, c.sessionPrefixed(secure), c.o.SameSite, c.o.HTTPOnly)
	}
	c.expireChunks(out, in, len(chunks), secure, c.sessionPrefixed(secure))
	return true
}

// WriteSessionCookie sets a session that takes one cookie with exactly one
// Set-Cookie, leaving any chunk of an earlier, longer session in place (a
// single cookie says it has no chunks: they are ignored): what a
// forward-auth proxy can carry. It reports false, and writes nothing, for a
// value that needs more than one cookie.
func (c *Cookies) WriteSessionCookie(out http.Header, secure bool, sealed string, maxAge int) bool {
	if Count(sealed) != 1 {
		return false
	}
	c.set(out, c.o.Name, sealed, maxAge, secure, c.sessionPrefixed(secure), c.o.SameSite, c.o.HTTPOnly)
	return true
}

// ClearSession deletes the session cookie and every chunk the request had,
// in both forms.
func (c *Cookies) ClearSession(out, in http.Header, secure bool) {
	prefixed := c.sessionPrefixed(secure)
	c.expire(out, in, c.o.Name, secure, prefixed, c.o.SameSite, c.o.HTTPOnly)
	c.expireChunks(out, in, 1, secure, prefixed)
}

// ReadState returns the sealed login state of state, from the __Host- form,
// or from the plain form only where the __Host- form cannot be in use.
func (c *Cookies) ReadState(in http.Header, secure bool, state string) (string, bool) {
	name := StatePrefix + state
	if v, ok := CookieValue(in, HostPrefix+name); ok {
		return v, true
	}
	if c.statePrefixed(secure) {
		return "", false
	}
	return CookieValue(in, name)
}

// WriteState sets the login-state cookie of state. It is Lax whatever
// SESSION_SAME_SITE says: the callback is a top-level navigation from the
// provider's site, which Strict would not send.
func (c *Cookies) WriteState(out http.Header, secure bool, state, sealed string, ttl time.Duration) {
	c.set(out, StatePrefix+state, sealed, int(ttl/time.Second), secure, c.statePrefixed(secure), http.SameSiteLaxMode, true)
}

// ClearState deletes the login-state cookie of state, in both forms.
func (c *Cookies) ClearState(out, in http.Header, secure bool, state string) {
	c.expire(out, in, StatePrefix+state, secure, c.statePrefixed(secure), http.SameSiteLaxMode, true)
}

// PendingStates lists the login states the request carries in a form that
// is read (at most limit), by state value.
func (c *Cookies) PendingStates(in http.Header, secure bool, limit int) []NamedValue {
	out := CookiesWithPrefix(in, c.hostStates, limit)
	if !c.statePrefixed(secure) {
		out = append(out, CookiesWithPrefix(in, StatePrefix, limit-len(out))...)
	}
	for i := range out {
		out[i].Name = strings.TrimPrefix(strings.TrimPrefix(out[i].Name, HostPrefix), StatePrefix)
	}
	return out
}

// set adds one Set-Cookie for the logical name. maxAge < 0 deletes it.
func (c *Cookies) set(out http.Header, name, value string, maxAge int, secure, prefixed bool, sameSite http.SameSite, httpOnly bool) {
	ck := &http.Cookie{Name: name, Value: value, Path: "/", Domain: c.o.Domain, MaxAge: maxAge,
		Secure: secure, HttpOnly: httpOnly, SameSite: sameSite}
	if prefixed {
		ck.Name, ck.Domain, ck.Secure = HostPrefix+name, "", true
	}
	if maxAge < 0 {
		ck.Value, ck.Expires = "", time.Unix(0, 0)
	}
	out["Set-Cookie"] = append(out["Set-Cookie"], cookieString(ck))
}

// cookieString is ck.String(), written directly for the cookies the
// service sets on the hot path (a login state on every unauthenticated
// navigation): a name and a sealed value (base64url) that need no
// sanitizing, Path=/, no Domain, no Expires. Anything else goes to
// http.Cookie, whose output this matches byte for byte (cookies_test.go).
func cookieString(ck *http.Cookie) string {
	if ck.Domain != "" || ck.Path != "/" || !ck.Expires.IsZero() || ck.MaxAge <= 0 || ck.Partitioned || ck.Quoted ||
		!plainToken(ck.Name) || !plainToken(ck.Value) {
		return ck.String()
	}
	var b strings.Builder
	b.Grow(len(ck.Name) + len(ck.Value) + 64)
	b.WriteString(ck.Name)
	b.WriteByte('=')
	b.WriteString(ck.Value)
	b.WriteString("; Path=/; Max-Age=")
	var buf [20]byte
	b.Write(strconv.AppendInt(buf[:0], int64(ck.MaxAge), 10))
	if ck.HttpOnly {
		b.WriteString("; HttpOnly")
	}
	if ck.Secure {
		b.WriteString("; Secure")
	}
	switch ck.SameSite {
	case http.SameSiteNoneMode:
		b.WriteString("; SameSite=None")
	case http.SameSiteLaxMode:
		b.WriteString("; SameSite=Lax")
	case http.SameSiteStrictMode:
		b.WriteString("; SameSite=Strict")
	}
	return b.String()
}

// plainToken reports whether s is not empty and only of letters, digits
// and -_=.~ (cookie names, base64url values, compact sessions' marker):
// what http.Cookie writes as it is.
func plainToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !plainByte[s[i]] {
			return false
		}
	}
	return true
}

// plainByte is the set of plainToken, as a table: a sealed value is
// hundreds of random characters, on which a chain of comparisons costs
// several nanoseconds each.
var plainByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '=' || c == '.' || c == '~'
	}
	return t
}()

// expire deletes the logical name in the form in use now and, when the
// request carries it, in the other form too.
func (c *Cookies) expire(out, in http.Header, name string, secure, prefixed bool, sameSite http.SameSite, httpOnly bool) {
	c.set(out, name, "", -1, secure, prefixed, sameSite, httpOnly)
	other := HostPrefix + name
	if prefixed {
		other = name
	}
	if _, ok := CookieValue(in, other); ok {
		c.set(out, name, "", -1, secure || !prefixed, !prefixed, sameSite, httpOnly)
	}
}

// expireChunks deletes the session's chunks from index from on that the
// request carries, in each form it carries them (the one in use now, and
// the other when sent). The Cookie header is read once, however many
// cookies it holds.
func (c *Cookies) expireChunks(out, in http.Header, from int, secure, prefixed bool) {
	var plain, host [maxChunks]bool
	for _, line := range in["Cookie"] {
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			n, _, ok := strings.Cut(trimLeftOWS(part), "=")
			if !ok {
				continue
			}
			n = trimRightOWS(n)
			sent := &plain
			if rest, ok := strings.CutPrefix(n, HostPrefix); ok {
				n, sent = rest, &host
			}
			if i := c.chunkIndex(n); i >= from {
				sent[i] = true
			}
		}
	}
	for i := from; i < maxChunks; i++ {
		if !plain[i] && !host[i] {
			continue
		}
		name := ChunkName(c.o.Name, i)
		c.set(out, name, "", -1, secure, prefixed, c.o.SameSite, c.o.HTTPOnly)
		if (prefixed && plain[i]) || (!prefixed && host[i]) {
			c.set(out, name, "", -1, secure || !prefixed, !prefixed, c.o.SameSite, c.o.HTTPOnly)
		}
	}
}

// chunkIndex is the chunk index of a (plain) cookie name: 0 for the session
// cookie itself, 1 to maxChunks-1 for a chunk, -1 for any other name.
func (c *Cookies) chunkIndex(name string) int {
	if name == c.o.Name {
		return 0
	}
	if rest, ok := strings.CutPrefix(name, c.ownChunkPrefix); ok {
		if n, err := strconv.Atoi(rest); err == nil && n >= 1 && n < maxChunks && strconv.Itoa(n) == rest {
			return n
		}
	}
	return -1
}

// Own reports whether a cookie name is one of the service's: the session
// cookie or one of its chunks, or a login state, in either form.
func (c *Cookies) Own(name string) bool {
	name = strings.TrimPrefix(name, HostPrefix)
	return strings.HasPrefix(name, StatePrefix) || c.chunkIndex(name) >= 0
}

// WithoutOwn returns the request's Cookie header without the service's
// cookies, every other cookie kept byte for byte in its order ("" when none
// remains), and whether anything was removed. It reads the header once and
// allocates only when the other cookies must be joined anew: not when the
// request has none of the service's cookies, none but them, or the others
// in one run already written "a=1; b=2" (the service's cookie first or
// last, as browsers usually send it), which is returned as it stands.
func (c *Cookies) WithoutOwn(in http.Header) (string, bool) {
	lines := in["Cookie"]
	own := false
	kept, keptLen := 0, 0
	keptLine, start, end := 0, 0, 0 // the run of other cookies: lines[keptLine][start:end]
	oneRun, ownAfter := true, false
	for li, line := range lines {
		for off := 0; off < len(line); {
			partEnd, next := len(line), len(line)
			if i := strings.IndexByte(line[off:], ';'); i >= 0 {
				partEnd, next = off+i, off+i+1
			}
			raw := line[off:partEnd]
			off = next
			part := trimLeftOWS(raw)
			partStart := partEnd - len(part)
			part = trimRightOWS(part)
			if part == "" {
				continue
			}
			name, _, _ := strings.Cut(part, "=")
			if c.Own(trimRightOWS(name)) {
				own, ownAfter = true, kept > 0
				continue
			}
			switch {
			case kept == 0:
				keptLine, start = li, partStart
			case ownAfter || li != keptLine || line[end:partStart] != "; ":
				oneRun = false
			}
			end = partStart + len(part)
			kept++
			keptLen += len(part)
		}
	}
	switch {
	case !own:
		return "", false
	case kept == 0:
		return "", true
	case oneRun:
		return lines[keptLine][start:end], true
	}
	var b strings.Builder
	b.Grow(keptLen + 2*(kept-1)) // exactly: one allocation
	for _, line := range lines {
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = trimRightOWS(trimLeftOWS(part))
			if part == "" {
				continue
			}
			name, _, _ := strings.Cut(part, "=")
			if c.Own(trimRightOWS(name)) {
				continue
			}
			if b.Len() > 0 {
				b.WriteString("; ")
			}
			b.WriteString(part)
		}
	}
	return b.String(), true
}
