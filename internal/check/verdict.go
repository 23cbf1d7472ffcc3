package check

import (
	"encoding/json"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/pages"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// decision is what a check answered: the "decision" label of
// oidc_authservice_checks_total.
type decision uint8

const (
	allow     decision = iota // 200: identity headers (or anonymous for skip paths)
	redirect                  // 302 to the provider's login page
	deny                      // 401 (or 400): no usable credential
	forbidden                 // 403: authenticated, refused by GROUPS_ALLOWLIST, the rules or the external authorizer
	fail                      // an error page: the login could not start
	nDecisions
)

var decisionNames = [nDecisions]string{"allow", "redirect", "deny", "forbidden", "error"}

func (d decision) String() string { return decisionNames[d] }

// reason is why: the "reason" label of oidc_authservice_checks_total.
type reason uint8

const (
	sessionOK             reason = iota // a valid session cookie (or its value as bearer)
	tokenOK                             // a verified bearer JWT
	skipPath                            // SKIP_AUTH_URLS or the service's own pages
	options                             // ALLOW_UNAUTHENTICATED_OPTIONS
	noCredentials                       // nothing presented
	invalidSession                      // a session that is expired, forged, malformed, revoked, idle or refused at refresh
	invalidToken                        // a bearer JWT that failed verification
	policyRefused                       // the authorization policy refused
	providerUnavailable                 // the provider could not be reached when it had to be
	malformed                           // a request no check should carry: malformed path, conflicting forwarded headers
	tooLarge                            // an identity, session or token beyond what the service carries (limits.go)
	renewal                             // a valid session whose renewal the forward-auth answer cannot carry: renewed at the start endpoint (renew.go)
	authorizerRefused                   // the external authorizer refused
	authorizerUnavailable               // the external authorizer could not decide (error, timeout, saturated): refused
	nReasons
)

var reasonNames = [nReasons]string{"session", "token", "skip_path", "options", "no_credentials",
	"invalid_session", "invalid_token", "policy", "provider_unavailable", "bad_request", "identity_too_large", "renewal",
	"authorizer", "authorizer_unavailable"}

func (r reason) String() string { return reasonNames[r] }

// User-facing texts are generic on purpose; the detail goes to the log.
const (
	msgLoginRequired  = "login required"
	msgNotAuthorized  = "You are signed in, but not allowed to use this service."
	msgLoginFailed    = "The login could not be completed."
	msgStateInvalid   = "This login link has expired or has already been used."
	msgProviderDown   = "The identity provider cannot be reached right now. Please try again in a moment."
	msgProviderError  = "The identity provider refused the login."
	msgClaimsUnusable = "Your account's identity cannot be used here."
	msgConfirmLogout  = "Another site asked to sign you out. Sign out only if you meant to."
	msgAuthorizerDown = "Your access cannot be checked right now: the authorization service is not available. Please try again in a moment."
)

// verdict is the answer to one request, as a value: decide and the login
// and logout flows return one; answer is the one place that writes it.
type verdict struct {
	decision decision
	reason   reason
	status   int
	who      authed      // allow and forbidden: the principal (who.ok())
	location string      // redirects
	page     *pages.Data // shown to browser navigations
	body     any         // JSON for everything else
	cookies  []cookieOp
	allowed  string // the Allow header of a 405
	retry    string // Retry-After
	final    bool   // decided before OPTIONS and login are considered
	// challenge adds WWW-Authenticate: a 401 for want of a credential.
	challenge bool
}

// cookieOp is one cookie the answer sets or deletes.
type cookieOp struct {
	kind   cookieKind
	value  string // sealed value to set
	state  string // login state of state cookies
	maxAge int
}

type cookieKind uint8

const (
	setSession     cookieKind = iota
	setSessionOnly            // a session of one cookie in exactly one Set-Cookie: a forward-auth allow (renew.go)
	clearSession
	setState
	clearState
)

// answer writes v: the one writer of every answer of this package.
func (h *Handler) answer(w http.ResponseWriter, q *request, v *verdict) {
	if h.d.Tracer != nil {
		traceStatus(q, v)
	}
	hd := w.Header()
	for _, c := range v.cookies {
		h.applyCookie(hd, q, c)
	}
	switch {
	case v.status == http.StatusOK && v.who.ok():
		h.allowAs(hd, q, &v.who)
	case v.status == http.StatusOK:
		h.allowAnonymous(hd, q)
	case v.location != "":
		hd["Cache-Control"] = noStore
		hd["Location"] = []string{v.location}
	}
	if v.allowed != "" {
		hd.Set("Allow", v.allowed)
	}
	if v.retry != "" {
		hd.Set("Retry-After", v.retry)
	}
	switch {
	case v.page != nil && h.nav(q):
		v.page.RequestID = q.id()
		h.d.Pages.Render(w, v.status, "error", *v.page)
	case v.body != nil:
		if v.challenge {
			hd["Www-Authenticate"] = wwwAuthenticate
		}
		writeJSON(w, v.status, v.body)
	default:
		w.WriteHeader(v.status)
	}
	if q.front != frontHTTP {
		w.(*Answer).decided(v)
	}
}

func (h *Handler) applyCookie(out http.Header, q *request, c cookieOp) {
	switch c.kind {
	case setSession:
		if !h.d.Cookies.WriteSession(out, q.Header, q.secure, c.value, c.maxAge) {
			h.log.Error("renewed session too large for the cookies: the browser keeps its previous one", q.rid(), zap.Int("bytes", len(c.value)))
		}
	case setSessionOnly:
		h.d.Cookies.WriteSessionCookie(out, q.secure, c.value, c.maxAge)
	case clearSession:
		h.credential(q)
		if q.sealed != "" {
			h.d.Sessions.Forget(q.sealed)
		}
		h.d.Cookies.ClearSession(out, q.Header, q.secure)
	case setState:
		h.d.Cookies.WriteState(out, q.secure, c.state, c.value, h.o.LoginStateTTL)
	case clearState:
		h.d.Cookies.ClearState(out, q.Header, q.secure, c.state)
	}
}

var (
	wwwAuthenticate = []string{`Bearer realm="oidc-authservice"`}
	noStore         = []string{"no-store"}
	jsonType        = []string{"application/json"}
	nosniff         = []string{"nosniff"}
)

// unauthenticatedBody is the 401's body, marshalled once.
var unauthenticatedBody, _ = json.Marshal(map[string]string{"error": "unauthenticated", "message": msgLoginRequired})

// writeJSON writes v, which json.Marshal escapes (<, > and & included); a
// []byte is written as it is.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, ok := v.([]byte)
	if !ok {
		b, _ = json.Marshal(v)
	}
	hd := w.Header()
	hd["Content-Type"] = jsonType
	hd["Cache-Control"] = noStore
	hd["X-Content-Type-Options"] = nosniff
	hd["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	w.Write(b)
}

// unauthenticated is the 401 for a request without a usable credential,
// keeping v's reason and cookies.
func (v verdict) unauthenticated() verdict {
	v.decision, v.status, v.challenge = deny, http.StatusUnauthorized, true
	v.page, v.location = nil, ""
	v.body = unauthenticatedBody
	return v
}

// failure is a page for navigations (title, message and a retry link) and
// JSON {"error": <status text>, "message": msg} for the rest.
func failure(status int, title, msg, retry string) verdict {
	p := &pages.Data{Title: title, Message: msg}
	if retry != "" {
		p.Link, p.LinkText = retry, "Try again"
	}
	return verdict{decision: fail, status: status, page: p,
		body: map[string]string{"error": http.StatusText(status), "message": msg}}
}

// badRequest is a 400 JSON answer naming what is wrong.
func badRequest(msg string) verdict {
	return verdict{decision: deny, reason: malformed, status: http.StatusBadRequest,
		body: map[string]string{"error": "bad_request", "message": msg}}
}

// methodNotAllowed is a 405 naming the methods that are.
func methodNotAllowed(allowed string) verdict {
	return verdict{decision: deny, reason: malformed, status: http.StatusMethodNotAllowed, allowed: allowed,
		body: map[string]string{"error": "method not allowed"}}
}

// redirectTo is a 302 to target.
func redirectTo(target string, cookies ...cookieOp) verdict {
	return verdict{decision: redirect, status: http.StatusFound, location: target, cookies: cookies}
}

func setSessionCookie(sealed string, maxAge int) cookieOp {
	return cookieOp{kind: setSession, value: sealed, maxAge: maxAge}
}

var clearSessionCookie = cookieOp{kind: clearSession}

func stateCookie(state, sealed string) cookieOp {
	return cookieOp{kind: setState, state: state, value: sealed}
}
func clearStateCookie(state string) cookieOp { return cookieOp{kind: clearState, state: state} }

// statePrefixed is the logical name a login state is sealed under.
func statePrefixed(state string) string { return session.StatePrefix + state }
