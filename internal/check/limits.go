package check

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/credential"
	"github.com/oidc-authservice/oidc-authservice/internal/identity"
	"github.com/oidc-authservice/oidc-authservice/internal/pages"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// Nothing is cut silently: an identity, a session or a token beyond what the
// service can carry (to the upstream in a header line, to the browser in
// cookies) is refused with an answer that says what happened and what an
// administrator can set, unless the operator accepts truncation of groups
// (GROUPS_OVERFLOW=truncate). Each such answer is also counted
// (oidc_authservice_identity_limits_total) and logged once, with counts.

// overLimit is the 403 for an identity, session or token that cannot be
// carried: a page for browsers, JSON for the rest, both with the figures
// and the settings that matter. retry is the page's "try again" link ("":
// none). It returns false when err is no such error.
func overLimit(err error, retry string) (verdict, bool) {
	if err == nil {
		// The hot path (a verified credential): nothing allocated.
		return verdict{}, false
	}
	var (
		oe    *identity.OverflowError
		tl    *credential.TooLargeError
		title string
		msg   string
		body  = map[string]any{"error": "identity_too_large"}
		todo  []string
	)
	switch {
	case errors.As(err, &oe):
		title = "Too many groups"
		msg = fmt.Sprintf("Your account is in %s groups (%s bytes of group names) that this installation would forward, of %s your identity provider lists; "+
			"it forwards at most %s groups and %s bytes, so you cannot be signed in as you are. Nothing was cut. Please tell your administrator.",
			count(oe.Groups), count(oe.Bytes), count(oe.Received), count(oe.MaxGroups), count(oe.MaxBytes))
		todo = []string{
			"GROUPS_FILTER (a regular expression) or GROUPS_FILTER_PREFIXES: forward only the groups that matter here (Kubeflow profiles, authorization rules).",
			fmt.Sprintf("GROUPS_MAX (now %d) and UPSTREAM_HEADER_MAX_BYTES: raise the limits, when every application accepts header lines that long (gunicorn: 8,190 bytes).", oe.MaxGroups),
			"GROUPS_OVERFLOW=truncate: keep the first groups that fit instead of refusing.",
		}
		body["limit"], body["groups"], body["groups_bytes"], body["received"] = "groups", oe.Groups, oe.Bytes, oe.Received
		body["max_groups"], body["max_bytes"] = oe.MaxGroups, oe.MaxBytes
		body["settings"] = []string{"GROUPS_FILTER", "GROUPS_FILTER_PREFIXES", "GROUPS_MAX", "UPSTREAM_HEADER_MAX_BYTES", "GROUPS_OVERFLOW"}
	case errors.As(err, &tl) && tl.Part == credential.PartIDToken:
		title = "ID token too large"
		msg = fmt.Sprintf("Applications here receive your identity provider's ID token in an Authorization header (UPSTREAM_TOKEN=id_token). "+
			"Yours makes that header line %s bytes long, and applications accept at most %s (UPSTREAM_HEADER_MAX_BYTES), "+
			"so you cannot be signed in as you are. Please tell your administrator.", count(tl.Bytes), count(tl.Limit))
		todo = []string{
			"UPSTREAM_TOKEN=issued: hand applications a token the service signs, with only the groups GROUPS_FILTER keeps.",
			"At the identity provider: leave the groups out of the ID token (Dex: do not request the groups scope; GitLab has them in userinfo).",
			"UPSTREAM_HEADER_MAX_BYTES: raise it, when every application accepts header lines that long.",
		}
		body["limit"], body["bytes"], body["max_bytes"] = "id_token", tl.Bytes, tl.Limit
		body["settings"] = []string{"UPSTREAM_TOKEN", "UPSTREAM_HEADER_MAX_BYTES"}
	case errors.As(err, &tl) && tl.Part == PartForwardAnswer:
		title = "Identity too large for this gateway"
		msg = fmt.Sprintf("This site is behind a proxy (nginx forward auth) that reads at most %s bytes of headers from the sign-in service "+
			"(FORWARD_AUTH_ANSWER_MAX_BYTES: nginx's proxy_buffer_size). Your identity and session would take %s, "+
			"so you cannot be signed in as you are. Nothing was cut. Please tell your administrator.", count(tl.Limit), count(tl.Bytes))
		todo = []string{
			"GROUPS_FILTER or GROUPS_FILTER_PREFIXES: forward only the groups that matter here.",
			"nginx: proxy_buffer_size 16k in the locations of the verify subrequest and of /authservice/ (ingress-nginx: the proxy-buffer-size annotation), then FORWARD_AUTH_ANSWER_MAX_BYTES=16384.",
		}
		settings := []string{"GROUPS_FILTER", "GROUPS_FILTER_PREFIXES", "FORWARD_AUTH_ANSWER_MAX_BYTES"}
		if tl.Refresh {
			msg = fmt.Sprintf("Your session could not be renewed: with your identity provider's current tokens the sign-in service's answers to the proxy in front of this site "+
				"(nginx forward auth) would take %s bytes of headers, and it reads at most %s (FORWARD_AUTH_ANSWER_MAX_BYTES: nginx's proxy_buffer_size). "+
				"Your session has ended; nothing was cut. Signing in again may work; please tell your administrator.", count(tl.Bytes), count(tl.Limit))
			todo = append(todo, "UPSTREAM_TOKEN=issued instead of id_token, STRICT_SESSION_VALIDATION=false: fewer of the provider's tokens in the session and the answers.")
			settings = append(settings, "UPSTREAM_TOKEN", "STRICT_SESSION_VALIDATION")
		}
		body["limit"], body["bytes"], body["max_bytes"], body["settings"] = "forward_auth_answer", tl.Bytes, tl.Limit, settings
	case errors.As(err, &tl) && tl.Carry > 0:
		title = "Session too large for this gateway"
		msg = fmt.Sprintf("Your session was renewed at your identity provider, but with the new tokens it takes %s bytes of cookies, "+
			"and the proxy in front of this site (forward auth) passes %s to your browser with a renewed session (one cookie). "+
			"It has ended; signing in again will work. Please tell your administrator if this repeats.", count(tl.Bytes), count(tl.Limit))
		todo = []string{
			"GROUPS_FILTER or GROUPS_FILTER_PREFIXES: keep the session in one cookie.",
			"Keep fewer provider tokens in the session: UPSTREAM_TOKEN=issued instead of id_token; STRICT_SESSION_VALIDATION=false.",
		}
		body["limit"], body["bytes"], body["max_bytes"], body["carry"] = "session", tl.Bytes, tl.Limit, tl.Carry
		body["settings"] = []string{"GROUPS_FILTER", "GROUPS_FILTER_PREFIXES", "UPSTREAM_TOKEN", "STRICT_SESSION_VALIDATION"}
	case errors.As(err, &tl):
		title = "Session too large"
		msg = fmt.Sprintf("Your session would take %s bytes of cookies, and this installation keeps at most %s (SESSION_MAX_COOKIES=%d), "+
			"so you cannot be signed in as you are. Please tell your administrator.", count(tl.Bytes), count(tl.Limit), tl.Limit/session.CookieBytes)
		if tl.Refresh {
			msg = fmt.Sprintf("Your session could not be renewed: with your identity provider's current tokens it would take %s bytes of cookies, "+
				"and this installation keeps at most %s (SESSION_MAX_COOKIES=%d). It has ended; signing in again may work, else please tell your administrator.",
				count(tl.Bytes), count(tl.Limit), tl.Limit/session.CookieBytes)
		}
		todo = []string{
			"GROUPS_FILTER or GROUPS_FILTER_PREFIXES: keep fewer groups in the session.",
			"SESSION_MAX_COOKIES: allow more cookies, when the front ends accept a longer Cookie header (nginx: 8k per header line; gunicorn: 8,190 bytes, when the Cookie header reaches it).",
			"Keep fewer provider tokens in the session: UPSTREAM_TOKEN=issued instead of id_token; STRICT_SESSION_VALIDATION=false.",
		}
		body["limit"], body["bytes"], body["max_bytes"] = "session", tl.Bytes, tl.Limit
		body["settings"] = []string{"GROUPS_FILTER", "SESSION_MAX_COOKIES", "UPSTREAM_TOKEN", "STRICT_SESSION_VALIDATION"}
	default:
		return verdict{}, false
	}
	body["message"] = msg
	p := &pages.Data{Title: title, Message: msg, Reason: "What an administrator can set:", Details: todo}
	if retry != "" {
		p.Link, p.LinkText = retry, "Try again"
	}
	return verdict{decision: forbidden, reason: tooLarge, status: http.StatusForbidden, page: p, body: body}, true
}

// count writes n with thousands separators: 5,000.
func count(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// groupsFields are the fields of the one line about groups the policy
// changed or refused: counts, never names (thousands of them would make
// one line of hundreds of kilobytes).
func groupsFields(r identity.GroupsReport) []zap.Field {
	f := []zap.Field{zap.Int("groups_received", r.Received), zap.Int("groups_filtered", r.Filtered),
		zap.Int("groups_unsafe", r.Unsafe), zap.Int("groups_truncated", r.Truncated), zap.Int("groups_kept", r.Kept), zap.Int("groups_bytes", r.Bytes)}
	if r.Example != "" {
		f = append(f, zap.String("unsafe_example", r.Example))
	}
	return f
}

// PartForwardAnswer: the answers of a session whose login started at the
// forward-auth start endpoint, or that renew a session behind nginx, would
// not fit the proxy's buffer (FORWARD_AUTH_ANSWER_MAX_BYTES).
const PartForwardAnswer = "forward_auth_answer"

// fitsForward says whether session s, sealed as sealed, leaves the answers
// of forwardAnswerBytes within FORWARD_AUTH_ANSWER_MAX_BYTES: nil, or a
// *credential.TooLargeError with the figures.
func (h *Handler) fitsForward(s *session.Session, sealed, target string) error {
	if n := h.forwardAnswerBytes(s, sealed, target); n > h.o.ForwardAnswerMax {
		return &credential.TooLargeError{Part: PartForwardAnswer, Bytes: n, Limit: h.o.ForwardAnswerMax}
	}
	return nil
}

// answerFits is the bound on the answers that would carry q's renewed
// session (credential.Carry.Fits), the same as at the login: behind nginx
// and ingress-nginx the verify answer and the start endpoint's are read
// into the proxy's buffer (FORWARD_AUTH_ANSWER_MAX_BYTES), and a renewal
// whose new tokens or identity outgrow it would meet nginx's bare 500 on
// every request. nil for every other answer.
func (h *Handler) answerFits(q *request) func(*session.Session, string) error {
	switch {
	case h.o.ForwardAnswerMax <= 0:
		return nil
	case q.mode == forwardAuth && nginxFlavour(h.o.ForwardAuthProxy):
		return h.fitsVerify
	case q.start != "":
		target := q.start
		return func(s *session.Session, sealed string) error { return h.fitsForward(s, sealed, target) }
	}
	return nil
}

// forwardAnswerBytes is the most header bytes a forward-auth proxy would
// read from the service for session s (sealed as sealed) whose login
// returns to target: a verify answer that renews the session (status line,
// identity headers, the upstream token, the session's Set-Cookie lines, the
// application's own cookies repeated in Cookie), or the callback's answer
// (the session's Set-Cookie lines, the login state cleared, Location).
func (h *Handler) forwardAnswerBytes(s *session.Session, sealed, target string) int {
	// Status line, Date, Content-Length, the headers to remove, and room
	// for the application's cookies, which the answer repeats.
	const fixed = 768
	line := func(name string, n int) int { return len(name) + 2 + n + 2 }
	user, groups := len(h.o.UserPrefix)+len(s.User), len(strings.Join(s.Groups, ","))
	verify := fixed + line(h.o.UserHeader, user) + line(h.o.GroupsHeader, groups)
	if h.o.AuthRequestHeaders {
		verify += line("X-Auth-Request-User", user) + line("X-Auth-Request-Email", len(s.Email)) + line("X-Auth-Request-Groups", groups)
	}
	switch {
	case h.o.UpstreamToken == "id_token" && s.IDToken != "":
		verify += line("Authorization", len("Bearer ")+len(s.IDToken))
	case h.o.UpstreamToken == "issued" && h.d.Upstream != nil:
		if tok, _, err := h.d.Upstream.Sign(h.o.UserPrefix+s.User, s.Groups); err == nil {
			verify += line("Authorization", len("Bearer ")+len(tok))
		}
	}
	setCookies := 0
	for i, c := range session.Split(sealed) {
		// __Host-<name>=<value> and the attributes (Path, Max-Age,
		// HttpOnly, Secure, SameSite, Domain).
		setCookies += line("Set-Cookie", len(session.HostPrefix)+len(session.ChunkName(h.d.Cookies.Name(), i))+1+len(c)+96)
	}
	callback := fixed + setCookies + line("Set-Cookie", 160) + line("Location", len(target))
	return max(verify+setCookies, callback)
}
