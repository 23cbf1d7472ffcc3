package integration

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
	"github.com/oidc-authservice/oidc-authservice/test/extauthz"
	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// checkFailed is the gateway's status_on_error in these tests. Kubeflow
// uses 403, which would hide a 5xx, a reset or a timeout of the check behind
// an ordinary deny; a status of its own makes any of them visible.
const checkFailed = 555

// sentinelGateway is our EnvoyFilter's layout with checkFailed as
// status_on_error.
var sentinelGateway = peer.EnvoyFilterLayout.With(extauthz.StatusOnError(checkFailed))

const (
	callbackPath = "/authservice/oidc/callback"
	legitUser    = "user@example.com"
	legitGroups  = "team-a,team-b"
)

// answer is what came back for one hostile request.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a *answer) String() string {
	return fmt.Sprintf("HTTP %d Location=%q body=%.200q", a.status, a.header.Get("Location"), a.body)
}

// upstreamEcho is the demo upstream's JSON answer when the request got
// through, else nil.
func (a *answer) upstreamEcho() *echo {
	if a.status != 200 {
		return nil
	}
	var e echo
	if json.Unmarshal(a.body, &e) != nil || e.Headers == nil {
		return nil
	}
	return &e
}

// sessionIssued reports whether the answer sets a non-empty session cookie.
func (a *answer) sessionIssued() bool {
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if strings.HasPrefix(c.Name, "authservice_session") && c.Value != "" && c.MaxAge >= 0 {
			return true
		}
	}
	return false
}

// cookieCleared reports whether the answer deletes the named cookie.
func (a *answer) cookieCleared(name string) bool {
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if c.Name == name && c.Value == "" && c.MaxAge < 0 {
			return true
		}
	}
	return false
}

func toAnswer(resp *http.Response) *answer {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return &answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// expectation is the definite answer a row wants.
type expectation struct {
	desc string
	ok   func(a *answer) bool
}

func status(code int) expectation {
	return expectation{fmt.Sprintf("HTTP %d", code), func(a *answer) bool { return a.status == code }}
}

var (
	deny401     = status(401)
	badRequest  = status(400)
	clientError = expectation{"4xx", func(a *answer) bool { return a.status >= 400 && a.status < 500 }}
	toLogin     = expectation{"302 to the login at /dex/auth", func(a *answer) bool {
		return a.status == 302 && strings.HasPrefix(a.header.Get("Location"), "/dex/auth?")
	}}
	// Through the gateway: the upstream saw exactly the logged-in user.
	allowedAsUser = expectation{"200, upstream sees only " + legitUser, func(a *answer) bool {
		e := a.upstreamEcho()
		return e != nil && len(e.Headers["kubeflow-userid"]) == 1 && e.Headers["kubeflow-userid"][0] == legitUser &&
			len(e.Headers["kubeflow-groups"]) == 1 && e.Headers["kubeflow-groups"][0] == legitGroups
	}}
	// Straight from the check server: allow with the user's identity.
	serviceAllows = expectation{"200 with kubeflow-userid " + legitUser, func(a *answer) bool {
		return a.status == 200 && a.header.Get("Kubeflow-Userid") == legitUser
	}}
	// Where nothing but the HTTP parser can answer (Envoy's codec refuses
	// these too): a 400, or a decision of the service that is not 5xx.
	parserOrDecision = expectation{"400 from the parser or a 3xx/4xx decision", func(a *answer) bool {
		return a.status >= 300 && a.status < 500
	}}
	allowedOrDenied = expectation{"200 as " + legitUser + " or 401", func(a *answer) bool {
		return a.status == 401 || allowedAsUser.ok(a)
	}}
)

type hostileRow struct {
	name  string
	bug   string // set: a known product bug; the row is skipped with it
	send  func(t *testing.T) *answer
	want  expectation
	check func(t *testing.T, a *answer) // extra assertions, optional
}

// hostileEnv is Kubeflow in miniature with one logged-in user.
type hostileEnv struct {
	s            *setup
	gw           string
	gwURL        *url.URL
	gwAddr       string
	svcAddr      string
	legit        *browser
	legitSession string
	client       *http.Client // no cookies, no redirects followed
}

func (h *hostileEnv) do(t *testing.T, c *http.Client, req *http.Request) *answer {
	t.Helper()
	if c == nil {
		c = h.client
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("no answer (connection dropped, timeout or panic?): %v", err)
	}
	return toAnswer(resp)
}

func (h *hostileEnv) get(t *testing.T, path string, headers ...string) *answer {
	t.Helper()
	req, err := http.NewRequest("GET", h.gw+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return h.do(t, nil, req)
}

// raw writes a request byte for byte, for what Go's client refuses to
// send, and reads one answer.
func raw(t *testing.T, addr, request string) *answer {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer (connection dropped, timeout or panic?): %v", err)
	}
	return toAnswer(resp)
}

// rawGet is a GET request line with the given target and Host.
func rawGet(target, host string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", target, host)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	return b.String()
}

// pending is a login completed at Dex but not yet at the callback: the
// browser holds the state cookie, cb is where Dex sent it.
type pending struct {
	b           *browser
	cb          *url.URL
	state, code string
	stateCookie string // its sealed value
}

func (h *hostileEnv) pendingLogin(t *testing.T, deepLink string) *pending {
	t.Helper()
	b := newBrowser()
	var cb *url.URL
	b.Client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if r.URL.Path == callbackPath {
			cb = r.URL
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := peer.DexLogin(b.Client, h.gw+deepLink, legitUser, "12341234")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cb == nil {
		t.Fatalf("Dex did not send the browser to the callback (ended at %s, HTTP %d)", resp.Request.URL, resp.StatusCode)
	}
	p := &pending{b: b, cb: cb, state: cb.Query().Get("state"), code: cb.Query().Get("code")}
	for _, c := range b.Jar.Cookies(h.gwURL) {
		if c.Name == "authservice_state_"+p.state {
			p.stateCookie = c.Value
		}
	}
	if p.state == "" || p.code == "" || p.stateCookie == "" {
		t.Fatalf("pending login incomplete: %+v", p)
	}
	return p
}

func noFollowWith(jar http.CookieJar) *http.Client {
	return &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (h *hostileEnv) callback(t *testing.T, jar http.CookieJar, query string, headers ...string) *answer {
	t.Helper()
	req, _ := http.NewRequest("GET", h.gw+callbackPath+"?"+query, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return h.do(t, noFollowWith(jar), req)
}

// finishLogin completes at Dex a login that start (an answer of the
// gateway) began, in a fresh browser holding start's cookies, and returns
// the callback's answer: where the browser is sent after the login.
func (h *hostileEnv) finishLogin(t *testing.T, start *answer) *answer {
	t.Helper()
	if !toLogin.ok(start) {
		t.Fatalf("login did not start: %s", start)
	}
	jar, _ := cookiejar.New(nil)
	jar.SetCookies(h.gwURL, (&http.Response{Header: start.header}).Cookies())
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: func(r *http.Request, via []*http.Request) error {
		if via[len(via)-1].URL.Path == callbackPath {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	resp, err := peer.DexLogin(c, h.gw+start.header.Get("Location"), legitUser, "12341234")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Request.URL.Path != callbackPath {
		a := toAnswer(resp)
		t.Fatalf("login did not end at the callback but at %s: %s", resp.Request.URL, a)
	}
	return toAnswer(resp)
}

// staysOnHost asserts the after-login redirect cannot leave the gateway's
// host, however a browser reads it.
func (h *hostileEnv) staysOnHost(t *testing.T, a *answer) {
	t.Helper()
	if !a.sessionIssued() {
		t.Errorf("the login itself failed: %s", a)
	}
	loc := a.header.Get("Location")
	if loc == "" || strings.ContainsAny(loc, "\\\r\n\t\x00 ") {
		t.Fatalf("after-login Location %q is empty or has characters browsers reinterpret", loc)
	}
	if strings.HasPrefix(loc, "//") || !strings.HasPrefix(loc, "/") {
		t.Fatalf("after-login Location %q is not a same-origin path", loc)
	}
	base, _ := url.Parse(h.gw + callbackPath)
	u, err := base.Parse(loc)
	if err != nil {
		t.Fatalf("after-login Location %q does not parse: %v", loc, err)
	}
	if u.Scheme != "http" || u.Host != h.gwURL.Host || strings.Contains(strings.ToLower(u.Host), "evil") {
		t.Fatalf("after-login Location %q leads to %s://%s, not the gateway %s", loc, u.Scheme, u.Host, h.gwURL.Host)
	}
}

// browserJar keeps cookies as a browser does: one whose name and value
// together exceed 4096 bytes is dropped (RFC 6265bis §5.6; Chromium and
// Firefox enforce it), where Go's cookiejar would keep it.
type browserJar struct{ http.CookieJar }

func (j browserJar) SetCookies(u *url.URL, cs []*http.Cookie) {
	var keep []*http.Cookie
	for _, c := range cs {
		if len(c.Name)+len(c.Value) <= 4096 {
			keep = append(keep, c)
		}
	}
	j.CookieJar.SetCookies(u, keep)
}

// jwtPart encodes one part of a compact JWS.
func jwtPart(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// logTap records what the standard logger prints (net/http reports
// recovered handler panics there) while still showing it.
type logTap struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logTap) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	l.mu.Unlock()
	return os.Stderr.Write(p)
}

func (l *logTap) panics() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		if strings.Contains(line, "panic") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestHostileInputs sends a table of hostile requests through the
// Envoy-faithful gateway (and, for what a gateway's parser would refuse,
// straight to the check server) of a Kubeflow-like setup with a real Dex.
// Every row must get its definite answer, never a 5xx or a dropped
// connection, no handler may panic, and the logged-in user must still be
// served after every row.
func TestHostileInputs(t *testing.T) {
	tap := &logTap{}
	log.SetOutput(tap)
	t.Cleanup(func() { log.SetOutput(os.Stderr) })

	rules := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(rules, []byte("rules:\n- name: admins\n  pathPrefix: /pipeline/admin/\n  allow: {groups: [admins]}\n"), 0o600)
	k := peer.StartKubeflow(t, sentinelGateway, map[string]string{"SKIP_AUTH_URLS": "/dex,/public", "AUTHORIZATION_RULES_FILE": rules})
	gwURL, _ := url.Parse(k.Gateway)
	h := &hostileEnv{
		s: &setup{dex: k.Dex, svc: k.Svc, gateway: k.Gateway}, gw: k.Gateway, gwURL: gwURL,
		gwAddr: gwURL.Host, svcAddr: strings.TrimPrefix(k.Svc.CheckURL, "http://"),
		client: noFollowWith(nil),
	}
	h.legit = newBrowser()
	h.s.login(t, h.legit, "/start?format=json")
	for _, c := range h.legit.Jar.Cookies(gwURL) {
		if c.Name == "authservice_session" {
			h.legitSession = c.Value
		}
	}
	if h.legitSession == "" {
		t.Fatal("no session cookie after login")
	}
	legit := h.legitSession
	legitCookie := "authservice_session=" + legit

	// Sessions sealed by hand: with a key the service does not have, and
	// with its own key (as if the key had leaked) but expired or empty.
	seal := func(secret string, name string, v any) string { return sealAs(t, secret, name, v) }
	otherKey := peer.RandomKey()
	placeholderKey, devKey := "REPLACE-ME-with-the-output-of-openssl-rand-base64-32", "local-development-key-do-not-use-in-production"
	cookieSecretKey := "7d16fee92f8d11b8940b081b3f8b8acb"
	now := time.Now()
	admin := &session.Session{ID: "forged", Subject: "0", User: "admin@example.com", Groups: []string{"admins"},
		Created: now.Unix(), Expires: now.Add(time.Hour).Unix()}
	foreignSealed := seal(otherKey, "authservice_session", admin)
	expired := *admin
	expired.User, expired.Created, expired.Expires = legitUser, now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
	expiredSealed := seal(peer.SessionKey, "authservice_session", &expired)
	incomplete := *admin
	incomplete.User = ""
	incompleteSealed := seal(peer.SessionKey, "authservice_session", &incomplete)
	// The legitimate session sealed under another cookie name: the name is
	// part of what the MAC covers.
	renamedSealed := seal(peer.SessionKey, "other_session", peer.OpenSession(t, legit))

	// Bearer tokens: a genuine Dex ID token and forgeries of it.
	idToken := dexIDToken(t, k.Dex)
	parts := strings.Split(idToken, ".")
	var hdr map[string]any
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	json.Unmarshal(hb, &hdr)
	kid, _ := hdr["kid"].(string)
	claims := map[string]any{}
	pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	json.Unmarshal(pb, &claims)
	edited := map[string]any{}
	for k, v := range claims {
		edited[k] = v
	}
	edited["email"] = "admin@example.com"
	edited["groups"] = []string{"admins"}
	editedToken := parts[0] + "." + jwtPart(edited) + "." + parts[2]
	noneToken := jwtPart(map[string]any{"alg": "none", "typ": "JWT"}) + "." + jwtPart(edited) + "."
	hsInput := jwtPart(map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}) + "." + jwtPart(edited)
	mac := hmac.New(sha256.New, []byte(k.Dex.Opts.ClientSecret))
	mac.Write([]byte(hsInput))
	hsToken := hsInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	foreignToken := peer.SignWith(t, peer.ForeignKey(), kid, edited)
	unsignedToken := parts[0] + "." + parts[1] + "."

	identity := []string{"Kubeflow-Userid", "admin@example.com", "Kubeflow-Groups", "admins"}
	accept := "Accept"
	jsonType := "application/json"
	manyCookies := func(first string, n int, value func(i int) string) string {
		var cs []string
		if first != "" {
			cs = append(cs, "authservice_session="+first)
		}
		for i := len(cs); i < n; i++ {
			cs = append(cs, "authservice_session="+value(i))
		}
		return strings.Join(cs, "; ")
	}
	garbage := func(i int) string { return fmt.Sprintf("garbage-%d-%s", i, strings.Repeat("A", 40)) }
	noUpstream := func(t *testing.T, a *answer) {
		if a.upstreamEcho() != nil {
			t.Errorf("the request reached the upstream: %s", a.body)
		}
	}
	noIdentityUpstream := func(t *testing.T, a *answer) {
		e := a.upstreamEcho()
		if e == nil {
			t.Fatalf("not the upstream's answer: %s", a)
		}
		for name, v := range e.Headers {
			if n := strings.ReplaceAll(name, "_", "-"); n == "kubeflow-userid" || n == "kubeflow-groups" {
				if name == n {
					t.Errorf("client-sent %s reached the upstream: %q", name, v)
				} else {
					// Not an identity header by name, but WSGI servers
					// map it onto the same variable: it must not pass.
					t.Errorf("client-sent %s (underscore spelling) reached the upstream: %q", name, v)
				}
			}
		}
	}
	hugeHeaders := func(n int) []string {
		var hs []string
		for i := 0; i < n; i++ {
			hs = append(hs, fmt.Sprintf("X-Hostile-%03d", i), strings.Repeat("v", 20))
		}
		return hs
	}
	withHeaders := func(path string, hs []string) func(t *testing.T) *answer {
		return func(t *testing.T) *answer { return h.get(t, path, hs...) }
	}
	post := func(path string, headers ...string) func(t *testing.T) *answer {
		return func(t *testing.T) *answer {
			req, _ := http.NewRequest("POST", h.gw+path, nil)
			for i := 0; i+1 < len(headers); i += 2 {
				req.Header.Add(headers[i], headers[i+1])
			}
			return h.do(t, nil, req)
		}
	}
	method := func(m, path string, headers ...string) func(t *testing.T) *answer {
		return func(t *testing.T) *answer {
			req, _ := http.NewRequest(m, h.gw+path, nil)
			for i := 0; i+1 < len(headers); i += 2 {
				req.Header.Add(headers[i], headers[i+1])
			}
			return h.do(t, nil, req)
		}
	}
	openRedirect := func(target, host string) func(t *testing.T) *answer {
		return func(t *testing.T) *answer {
			if host == "" {
				host = h.gwAddr
			}
			start := raw(t, h.gwAddr, rawGet(target, strings.ReplaceAll(host, "GW", h.gwAddr)))
			return h.finishLogin(t, start)
		}
	}
	// Request targets Envoy's codec would not pass on, straight to the
	// check server (its own answer, then the login completed through the
	// gateway as usual).
	openRedirectDirect := func(target string) func(t *testing.T) *answer {
		return func(t *testing.T) *answer {
			return h.finishLogin(t, raw(t, h.svcAddr, rawGet(target, h.gwAddr)))
		}
	}
	rawTo := func(addr, target string) func(t *testing.T) *answer {
		return func(t *testing.T) *answer { return raw(t, addr, rawGet(target, h.gwAddr)) }
	}
	sessionRedirect := expectation{"302 with a session cookie", func(a *answer) bool { return a.status == 302 && a.sessionIssued() }}
	noSession := func(t *testing.T, a *answer) {
		if a.sessionIssued() {
			t.Errorf("a session was issued: %v", a.header.Values("Set-Cookie"))
		}
	}
	notReflected := func(t *testing.T, a *answer) {
		noSession(t, a)
		if bytes.Contains(a.body, []byte("<script>")) {
			t.Errorf("the answer reflects markup: %s", a.body)
		}
	}
	sealedState := func(secret, state string, created time.Time) string {
		return seal(secret, "authservice_state_"+state, &session.LoginState{State: state, Verifier: strings.Repeat("v", 43),
			Nonce: "n", URL: h.gw + "/x", Created: created.Unix()})
	}
	const otherState = "AAAAAAAAAAAAAAAAAAAAAA"

	rows := []hostileRow{
		// Session cookies.
		{name: "garbage session cookie", send: withHeaders("/x", []string{"Cookie", "authservice_session=x", accept, jsonType}), want: deny401},
		{name: "forged securecookie structure", send: withHeaders("/x", []string{"Cookie", "authservice_session=" +
			base64.URLEncoding.EncodeToString([]byte("1700000000|"+base64.URLEncoding.EncodeToString([]byte(`{"u":"admin@example.com","x":9999999999}`))+"|"+strings.Repeat("m", 43))), accept, jsonType}), want: deny401},
		{name: "legitimate cookie with one byte flipped", send: withHeaders("/x", []string{"Cookie", "authservice_session=" + legit[:20] + string(legit[20]^1) + legit[21:], accept, jsonType}), want: deny401},
		{name: "truncated legitimate cookie", send: withHeaders("/x", []string{"Cookie", "authservice_session=" + legit[:len(legit)/2], accept, jsonType}), want: deny401},
		{name: "oversized cookie (32 KiB)", send: withHeaders("/x", []string{"Cookie", "authservice_session=" + strings.Repeat("A", 32<<10), accept, jsonType}), want: deny401},
		{name: "oversized cookie (64 KiB)", send: withHeaders("/x", []string{"Cookie", "authservice_session=" + strings.Repeat("A", 64<<10), accept, jsonType}), want: clientError, check: noUpstream},
		{name: "50 garbage cookies with the session name", send: withHeaders("/x", []string{"Cookie", manyCookies("", 50, garbage), accept, jsonType}), want: deny401},
		{name: "50 separate Cookie headers with the session name", send: func(t *testing.T) *answer {
			var hs []string
			for i := 0; i < 50; i++ {
				hs = append(hs, "Cookie", "authservice_session="+garbage(i))
			}
			return h.get(t, "/x", append(hs, accept, jsonType)...)
		}, want: deny401},
		{name: "50 session cookies, the legitimate one first", send: withHeaders("/x?format=json", []string{"Cookie", manyCookies(legit, 50, garbage)}), want: allowedAsUser},
		{name: "50 session cookies, the legitimate one last", send: withHeaders("/x?format=json", []string{"Cookie", manyCookies("", 49, garbage) + "; " + legitCookie, accept, jsonType}), want: allowedOrDenied},
		{name: "session sealed with another deployment's key", send: withHeaders("/x?format=json", []string{"Cookie", "authservice_session=" + foreignSealed, accept, jsonType}), want: deny401},
		// Published keys (issue 21): the service refuses to run with them,
		// so what they seal is nobody's session.
		{name: "session sealed with the old deploy/base placeholder", send: withHeaders("/x?format=json", []string{"Cookie", "authservice_session=" + seal(placeholderKey, "authservice_session", admin), accept, jsonType}), want: deny401},
		{name: "session sealed with the old make run key", send: withHeaders("/x?format=json", []string{"Cookie", "authservice_session=" + seal(devKey, "authservice_session", admin), accept, jsonType}), want: deny401},
		{name: "session sealed with Kubeflow's oauth2-proxy cookie secret", send: withHeaders("/x?format=json", []string{"Cookie", "authservice_session=" + seal(cookieSecretKey, "authservice_session", admin), accept, jsonType}), want: deny401},
		{name: "session sealed with the right key but expired", send: withHeaders("/x?format=json", []string{"Cookie", "authservice_session=" + expiredSealed, accept, jsonType}), want: deny401},
		{name: "session sealed with the right key but no user", send: withHeaders("/x?format=json", []string{"Cookie", "authservice_session=" + incompleteSealed, accept, jsonType}), want: deny401},
		{name: "legitimate session sealed under another cookie name", send: withHeaders("/x?format=json", []string{"Cookie", "authservice_session=" + renamedSealed, accept, jsonType}), want: deny401},
		{name: "forged chunked session", send: withHeaders("/x", []string{"Cookie", "authservice_session=3." + strings.Repeat("A", 3800) + "; authservice_session_1=" + strings.Repeat("B", 3800) + "; authservice_session_2=CCCC", accept, jsonType}), want: deny401},
		{name: "chunk count overflow", send: withHeaders("/x", []string{"Cookie", "authservice_session=99999999999999999999999." + legit, accept, jsonType}), want: deny401},
		{name: "legitimate value posing as a chunk", send: withHeaders("/x", []string{"Cookie", "authservice_session=2." + legit + "; authservice_session_1=" + legit, accept, jsonType}), want: deny401},
		{name: "forged cookie on a navigation: login, cookie cleared", send: withHeaders("/x", []string{"Cookie", "authservice_session=forged"}), want: toLogin, check: func(t *testing.T, a *answer) {
			if !a.cookieCleared("authservice_session") {
				t.Errorf("forged cookie not cleared: %v", a.header.Values("Set-Cookie"))
			}
		}},
		{name: "100 bogus pending-login cookies", send: func(t *testing.T) *answer {
			var cs []string
			for i := 0; i < 100; i++ {
				cs = append(cs, fmt.Sprintf("authservice_state_%022d=junk", i))
			}
			return h.get(t, "/x", "Cookie", strings.Join(cs, "; "))
		}, want: toLogin, check: func(t *testing.T, a *answer) {
			if n := len(a.header.Values("Set-Cookie")); n > 70 {
				t.Errorf("%d Set-Cookie headers for 100 bogus login cookies", n)
			}
		}},

		// The callback.
		{name: "replayed callback (same code and state twice)", send: func(t *testing.T) *answer {
			p := h.pendingLogin(t, "/replay?format=json")
			c := noFollowWith(p.b.Jar)
			first := h.do(t, c, mustReq("GET", p.cb.String()))
			if !sessionRedirect.ok(first) {
				t.Fatalf("first use of the callback: %s", first)
			}
			return h.do(t, c, mustReq("GET", p.cb.String()))
		}, want: badRequest, check: func(t *testing.T, a *answer) {
			noSession(t, a)
			if !bytes.Contains(a.body, []byte("expired or has already been used")) {
				t.Errorf("no explanation: %s", a.body)
			}
		}},
		{name: "replayed callback with a copy of the state cookie", send: func(t *testing.T) *answer {
			p := h.pendingLogin(t, "/replay2?format=json")
			if first := h.do(t, noFollowWith(p.b.Jar), mustReq("GET", p.cb.String())); !sessionRedirect.ok(first) {
				t.Fatalf("first use of the callback: %s", first)
			}
			req := mustReq("GET", p.cb.String())
			req.Header.Set("Cookie", "authservice_state_"+p.state+"="+p.stateCookie)
			return h.do(t, nil, req)
		}, want: badRequest, check: noSession},
		{name: "callback URL used in another browser", send: func(t *testing.T) *answer {
			p := h.pendingLogin(t, "/stolen?format=json")
			return h.do(t, nil, mustReq("GET", p.cb.String()))
		}, want: badRequest, check: noSession},
		{name: "callback without state", send: func(t *testing.T) *answer { return h.callback(t, nil, "code=abc") }, want: badRequest, check: noSession},
		{name: "callback with garbage state", send: func(t *testing.T) *answer {
			return h.callback(t, nil, "code=abc&state="+url.QueryEscape("<script>alert(1)</script>"))
		}, want: badRequest, check: notReflected},
		{name: "callback with a well-formed unknown state", send: func(t *testing.T) *answer {
			return h.callback(t, nil, "code=abc&state="+otherState)
		}, want: badRequest, check: noSession},
		{name: "callback with the state of another browser's login (login CSRF)", send: func(t *testing.T) *answer {
			victim := h.pendingLogin(t, "/victim?format=json")
			attacker := h.pendingLogin(t, "/attacker?format=json")
			return h.do(t, noFollowWith(victim.b.Jar), mustReq("GET", attacker.cb.String()))
		}, want: badRequest, check: noSession},
		{name: "callback with own state and another login's code", send: func(t *testing.T) *answer {
			victim := h.pendingLogin(t, "/victim?format=json")
			attacker := h.pendingLogin(t, "/attacker?format=json")
			return h.callback(t, victim.b.Jar, "code="+url.QueryEscape(attacker.code)+"&state="+victim.state)
		}, want: deny401, check: noSession},
		{name: "callback with a provider error for a pending login", send: func(t *testing.T) *answer {
			p := h.pendingLogin(t, "/err?format=json")
			a := h.callback(t, p.b.Jar, "error=access_denied&error_description="+url.QueryEscape("<script>alert(1)</script>")+"&state="+p.state)
			if !a.cookieCleared("authservice_state_" + p.state) {
				t.Errorf("state cookie not cleared after the provider error: %v", a.header.Values("Set-Cookie"))
			}
			// The login is over: its code no longer completes it.
			if late := h.do(t, noFollowWith(p.b.Jar), mustReq("GET", p.cb.String())); late.status != 400 || late.sessionIssued() {
				t.Errorf("code of a login ended by a provider error: %s", late)
			}
			return a
		}, want: deny401, check: notReflected},
		{name: "callback with a provider error and no state", send: func(t *testing.T) *answer {
			return h.callback(t, nil, "error=server_error")
		}, want: deny401, check: noSession},
		{name: "callback by POST", send: func(t *testing.T) *answer {
			p := h.pendingLogin(t, "/post?format=json")
			req := mustReq("POST", p.cb.String())
			return h.do(t, noFollowWith(p.b.Jar), req)
		}, want: status(405), check: noSession},
		{name: "callback with an oversized code", send: func(t *testing.T) *answer {
			p := h.pendingLogin(t, "/big?format=json")
			return h.callback(t, p.b.Jar, "code="+strings.Repeat("c", 5000)+"&state="+p.state)
		}, want: badRequest, check: noSession},
		{name: "callback with a state cookie moved to another state's name", send: func(t *testing.T) *answer {
			p := h.pendingLogin(t, "/moved?format=json")
			return h.callback(t, nil, "code="+url.QueryEscape(p.code)+"&state="+otherState, "Cookie", "authservice_state_"+otherState+"="+p.stateCookie)
		}, want: badRequest, check: noSession},
		{name: "callback with a state cookie sealed with another key", send: func(t *testing.T) *answer {
			return h.callback(t, nil, "code=abc&state="+otherState, "Cookie", "authservice_state_"+otherState+"="+sealedState(otherKey, otherState, time.Now()))
		}, want: badRequest, check: noSession},
		{name: "callback with an expired state sealed with the right key", send: func(t *testing.T) *answer {
			return h.callback(t, nil, "code=abc&state="+otherState, "Cookie", "authservice_state_"+otherState+"="+sealedState(peer.SessionKey, otherState, time.Now().Add(-time.Hour)))
		}, want: badRequest, check: noSession},
		{name: "callback with a 64 KiB state", send: func(t *testing.T) *answer {
			return h.callback(t, nil, "code=abc&state="+strings.Repeat("s", 64<<10))
		}, want: clientError, check: noSession},

		// Open redirects through the login target.
		{name: "login target //evil.example/", send: openRedirect("//evil.example/", ""), want: sessionRedirect, check: h.staysOnHost},
		{name: "login target //evil.example/%2e%2e", send: openRedirect("//evil.example/%2e%2e", ""), want: sessionRedirect, check: h.staysOnHost},
		{name: `login target /\evil.example/`, send: openRedirect(`/\evil.example/`, ""), want: sessionRedirect, check: h.staysOnHost},
		{name: "login target /%5Cevil.example/", send: openRedirect("/%5Cevil.example/", ""), want: sessionRedirect, check: h.staysOnHost},
		{name: "login target /%2F%2Fevil.example/", send: openRedirect("/%2F%2Fevil.example/", ""), want: sessionRedirect, check: h.staysOnHost},
		{name: "login target /%2f/evil.example/", send: openRedirect("/%2f/evil.example/", ""), want: sessionRedirect, check: h.staysOnHost},
		{name: "login target /.//evil.example/", send: openRedirect("/.//evil.example/", ""), want: sessionRedirect, check: h.staysOnHost},
		// A control character once decoded: no request should carry one,
		// and an upstream might cut the path there (400, no login).
		{name: "login target /%09/evil.example", send: rawTo(h.gwAddr, "/%09/evil.example"), want: badRequest, check: noSession},
		{name: "login target with encoded CRLF", send: rawTo(h.gwAddr, "/x%0d%0aLocation:%20https://evil.example/"), want: badRequest, check: noSession},
		{name: "login target /javascript:alert(1)", send: openRedirect("/javascript:alert(1)", ""), want: sessionRedirect, check: h.staysOnHost},
		{name: "login target with javascript: and //evil in the query", send: openRedirect("/x?next=javascript:alert(1)&u=//evil.example", ""), want: sessionRedirect, check: h.staysOnHost},
		{name: "login target in absolute form http://evil.example/x", send: openRedirect("http://evil.example/x", ""), want: sessionRedirect, check: h.staysOnHost},
		{name: "login target in absolute form https://evil.example/x", send: openRedirect("https://evil.example/x", ""), want: sessionRedirect, check: h.staysOnHost},
		{name: "login target javascript:alert(1) as the request target (check server)", send: rawTo(h.svcAddr, "javascript:alert(1)"), want: badRequest, check: noSession},
		{name: "login target http://evil.example/x as the request target (check server)", send: openRedirectDirect("http://evil.example/x"), want: sessionRedirect, check: h.staysOnHost},
		{name: "login started with Host: evil.example", send: openRedirect("/x", "evil.example"), want: sessionRedirect, check: h.staysOnHost},
		{name: "login started with Host: javascript:alert(1)", send: openRedirect("/x", "javascript:alert(1)"), want: sessionRedirect, check: h.staysOnHost},

		// Identity headers sent by the client.
		{name: "client identity headers, anonymous, skipped path", send: withHeaders("/public/page?format=json", identity), want: status(200), check: noIdentityUpstream},
		{name: "client identity headers in every spelling, anonymous, skipped path", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/public/page?format=json", h.gwAddr, "KUBEFLOW-USERID: a@example.com", "kubeflow-userid: b@example.com",
				"Kubeflow-Groups: admins", "kubeflow-groups: admins", "Kubeflow_Userid: c@example.com", "kubeflow_groups: admins"))
		}, want: status(200), check: noIdentityUpstream},
		{name: "client identity headers, anonymous, traversal out of a skipped path", send: withHeaders("/public/../x?format=json", append([]string{accept, jsonType}, identity...)), want: deny401, check: noUpstream},
		{name: "client identity headers, anonymous, encoded traversal out of a skipped path", send: withHeaders("/public%2f..%2fx?format=json", append([]string{accept, jsonType}, identity...)), want: deny401, check: noUpstream},
		{name: "client identity headers, anonymous navigation", send: withHeaders("/x?format=json", identity), want: toLogin, check: noUpstream},
		{name: "client identity headers, logged in", send: withHeaders("/y?format=json", append([]string{"Cookie", legitCookie}, identity...)), want: allowedAsUser},
		{name: "client identity headers in every spelling, logged in", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/y?format=json", h.gwAddr, "Cookie: "+legitCookie, "KUBEFLOW-USERID: a@example.com", "kubeflow-userid: b@example.com",
				"Kubeflow-Groups: admins", "kubeflow-groups: admins", "Kubeflow_Userid: c@example.com"))
		}, want: allowedAsUser, check: func(t *testing.T, a *answer) {
			if e := a.upstreamEcho(); e != nil {
				for name, v := range e.Headers {
					if strings.Contains(name, "_") {
						t.Errorf("client-sent %s (underscore spelling) reached the upstream: %q", name, v)
					}
				}
			}
		}},

		// Bearer tokens.
		{name: "control: genuine Dex ID token as bearer", send: withHeaders("/api/x?format=json", []string{"Authorization", "Bearer " + idToken}), want: allowedAsUser},
		{name: "huge Authorization bearer (64 KiB, not a JWT)", send: withHeaders("/api/x", []string{"Authorization", "Bearer " + strings.Repeat("A", 64<<10)}), want: clientError, check: noUpstream},
		{name: "huge Authorization bearer (40 KiB JWT shape)", send: withHeaders("/api/x", []string{"Authorization", "Bearer " + strings.Repeat("A", 20<<10) + "." + strings.Repeat("B", 20<<10) + ".C"}), want: deny401},
		{name: "malformed JWT bearer", send: withHeaders("/x", []string{"Authorization", "Bearer a.b.c"}), want: deny401, check: func(t *testing.T, a *answer) {
			if a.header.Get("WWW-Authenticate") == "" {
				t.Error("no WWW-Authenticate")
			}
		}},
		{name: "JWT bearer with non-JSON payload", send: withHeaders("/x", []string{"Authorization", "Bearer " + parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("{{{")) + "." + parts[2]}), want: deny401},
		{name: "bearer with alg none", send: withHeaders("/x", []string{"Authorization", "Bearer " + noneToken}), want: deny401},
		{name: "bearer HS256-signed with the client secret", send: withHeaders("/x", []string{"Authorization", "Bearer " + hsToken}), want: deny401},
		{name: "Dex ID token with an edited payload", send: withHeaders("/x", []string{"Authorization", "Bearer " + editedToken}), want: deny401},
		{name: "Dex ID token without its signature", send: withHeaders("/x", []string{"Authorization", "Bearer " + unsignedToken}), want: deny401},
		{name: "token signed with a foreign key under Dex's kid", send: withHeaders("/x", []string{"Authorization", "Bearer " + foreignToken}), want: deny401},
		{name: "empty bearer", send: withHeaders("/api/x", []string{"Authorization", "Bearer    "}), want: deny401},
		{name: "forged session value as bearer", send: withHeaders("/api/x", []string{"Authorization", "Bearer " + foreignSealed}), want: deny401},

		// Logout.
		{name: "POST logout with a forged bearer", send: post("/authservice/logout", "Authorization", "Bearer "+foreignSealed), want: deny401},
		{name: "POST logout with a garbage bearer", send: post("/authservice/logout", "Authorization", "Bearer x"), want: deny401},
		{name: "POST logout with a forged JWT bearer", send: post("/authservice/logout", "Authorization", "Bearer "+editedToken), want: deny401},
		{name: "GET logout with a forged cookie", send: withHeaders("/authservice/logout", []string{"Cookie", "authservice_session=" + foreignSealed}), want: status(302), check: func(t *testing.T, a *answer) {
			if a.header.Get("Location") != "/" || !a.cookieCleared("authservice_session") {
				t.Errorf("logout: Location %q, Set-Cookie %v", a.header.Get("Location"), a.header.Values("Set-Cookie"))
			}
		}},
		{name: "PUT logout", send: method("PUT", "/authservice/logout", "Cookie", legitCookie), want: status(405)},

		// Methods, paths and headers.
		{name: "OPTIONS without session", send: method("OPTIONS", "/api/x", "Origin", "http://evil.example", "Access-Control-Request-Method", "DELETE"), want: deny401, check: noUpstream},
		{name: "unknown method without session", send: method("PROPFIND", "/x"), want: deny401, check: noUpstream},
		{name: "very long path (16 KiB) navigation", send: withHeaders("/"+strings.Repeat("a", 16<<10), nil), want: toLogin},
		{name: "long deep link (2.5 KiB): the login completes in a browser", send: func(t *testing.T) *answer {
			jar, _ := cookiejar.New(nil)
			b := &http.Client{Jar: browserJar{jar}, Timeout: 20 * time.Second}
			resp, err := peer.DexLogin(b, h.gw+"/pipeline/runs?format=json&filter="+strings.Repeat("f", 2500), legitUser, "12341234")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			// Too long to keep whole through the login: the user lands on
			// the path without its query string, logged in.
			if resp.StatusCode != 200 || resp.Request.URL.Path != "/pipeline/runs" {
				t.Fatalf("landed on %d %s", resp.StatusCode, resp.Request.URL)
			}
			resp, err = b.Get(h.gw + "/pipeline/runs?format=json")
			if err != nil {
				t.Fatal(err)
			}
			return toAnswer(resp)
		}, want: expectation{"200 at the upstream as " + legitUser, func(a *answer) bool {
			e := a.upstreamEcho()
			return e != nil && len(e.Headers["kubeflow-userid"]) == 1 && e.Headers["kubeflow-userid"][0] == legitUser
		}}},
		{name: "very long path (16 KiB) API call", send: withHeaders("/api/"+strings.Repeat("a", 16<<10), nil), want: deny401},
		{name: "very long path (60 KiB) with session", send: withHeaders("/"+strings.Repeat("a", 60<<10)+"?format=json", []string{"Cookie", legitCookie}), want: allowedAsUser},
		{name: "encoded NUL in the path", send: withHeaders("/x%00y", []string{accept, jsonType}), want: badRequest, check: noUpstream},
		{name: "encoded traversal out of /dex", send: withHeaders("/dex/%2e%2e/api/x", []string{accept, jsonType}), want: deny401, check: noUpstream},
		{name: "200 headers with session", send: withHeaders("/x?format=json", append([]string{"Cookie", legitCookie}, hugeHeaders(200)...)), want: allowedAsUser},
		{name: "200 headers without session", send: withHeaders("/x", hugeHeaders(200)), want: toLogin},
		{name: "200 headers straight to the check server, with session", send: func(t *testing.T) *answer {
			req := mustReq("GET", k.Svc.CheckURL+"/x")
			req.Header.Set("Cookie", legitCookie)
			hs := hugeHeaders(200)
			for i := 0; i+1 < len(hs); i += 2 {
				req.Header.Add(hs[i], hs[i+1])
			}
			return h.do(t, nil, req)
		}, want: serviceAllows},

		// Paths: every reading of a path is judged (rules on /pipeline/admin/
		// allow only the admins group; the user is in team-a and team-b).
		{name: "rule on /pipeline/admin/ as /pipeline/admin/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/admin/x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline//admin/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline//admin/x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as //pipeline/admin/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("//pipeline/admin/x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline/./admin/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/./admin/x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline/a/../admin/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/a/../admin/x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline/foo/..%2Fadmin/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/foo/..%2Fadmin/x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline/foo%2F..%2Fadmin/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/foo%2F..%2Fadmin/x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline/foo%2f%2e%2e%2fadmin/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/foo%2f%2e%2e%2fadmin/x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline/foo/%2e%2e/admin/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/foo/%2e%2e/admin/x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline/foo/.%2e/admin/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/foo/.%2e/admin/x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline/%61dmin/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/%61dmin/x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline/admin;x=1/y", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/admin;x=1/y", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline/foo;/../admin/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/foo;/../admin/x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline/foo%5C..%5Cadmin/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/foo%5C..%5Cadmin/x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline/foo\\\\..\\\\admin/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/foo\\..\\admin/x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline/admin", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/admin", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline/admin%2Fx", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline/admin%2Fx", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "rule on /pipeline/admin/ as /pipeline///admin///x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/pipeline///admin///x", h.gwAddr, "Cookie: "+legitCookie, "Accept: application/json"))
		}, want: status(403), check: noUpstream},
		{name: "skip path escaped as /public/..%2Fx", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/public/..%2Fx", h.gwAddr, "Accept: application/json"))
		}, want: deny401, check: noUpstream},
		{name: "skip path escaped as /public/%2e%2e/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/public/%2e%2e/x", h.gwAddr, "Accept: application/json"))
		}, want: deny401, check: noUpstream},
		{name: "skip path escaped as /public%2F..%2Fx", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/public%2F..%2Fx", h.gwAddr, "Accept: application/json"))
		}, want: deny401, check: noUpstream},
		{name: "skip path escaped as /public/..%5Cx", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/public/..%5Cx", h.gwAddr, "Accept: application/json"))
		}, want: deny401, check: noUpstream},
		{name: "skip path escaped as /public/.%2e/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/public/.%2e/x", h.gwAddr, "Accept: application/json"))
		}, want: deny401, check: noUpstream},
		{name: "skip path escaped as /public;x/../x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/public;x/../x", h.gwAddr, "Accept: application/json"))
		}, want: deny401, check: noUpstream},
		{name: "skip path escaped as /public/..;/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/public/..;/x", h.gwAddr, "Accept: application/json"))
		}, want: deny401, check: noUpstream},
		// Envoy normalizes this one to /public//x before any filter, a
		// public path (TestEnvoyPathNormalization): asked as a gateway
		// without normalize_path would ask, the service refuses it.
		{name: "skip path escaped as /public//..//x, straight to the check", send: func(t *testing.T) *answer {
			return raw(t, h.svcAddr, rawGet("/public//..//x", h.gwAddr, "Accept: application/json"))
		}, want: deny401, check: noUpstream},
		{name: "skip path escaped as /dex/..%2F..%2Fx", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/dex/..%2F..%2Fx", h.gwAddr, "Accept: application/json"))
		}, want: deny401, check: noUpstream},
		{name: "skip path escaped as /dex%2F..%2Fapi/x", send: func(t *testing.T) *answer {
			return raw(t, h.gwAddr, rawGet("/dex%2F..%2Fapi/x", h.gwAddr, "Accept: application/json"))
		}, want: deny401, check: noUpstream},

		// Forwarding headers mean nothing to an ext_authz check: only the
		// request itself is judged.
		{name: "forged X-Forwarded-Uri / X-Original-URL to a skip path", send: withHeaders("/x", []string{"X-Forwarded-Uri", "/public/", "X-Original-Url", h.gw + "/public/",
			"X-Forwarded-Host", "public.example", "X-Forwarded-Method", "OPTIONS", "X-Original-Method", "OPTIONS", accept, jsonType}), want: deny401, check: noUpstream},
		{name: "forged X-Forwarded-Uri escaping a rule", send: withHeaders("/pipeline/admin/x", []string{"Cookie", legitCookie, "X-Forwarded-Uri", "/", "X-Original-Url", h.gw + "/",
			"X-Forwarded-Method", "GET", accept, jsonType}), want: status(403), check: noUpstream},

		// Cookies an attacker can write: where the __Host- form is in use
		// (https), a plain-named login state or session is never read. The
		// gateway here is plain HTTP and sets X-Forwarded-Proto from its
		// connection (use_remote_address), so these are asked as a gateway
		// terminating TLS asks: X-Forwarded-Proto: https in the check.
		{name: "attacker's plain-named login state planted for the victim (https)", send: func(t *testing.T) *answer {
			p := h.pendingLogin(t, "/planted?format=json")
			req, _ := http.NewRequest("GET", "http://"+h.svcAddr+callbackPath+"?state="+p.state+"&code="+p.code, nil)
			req.Host = h.gwAddr
			req.Header.Set("Cookie", "authservice_state_"+p.state+"="+p.stateCookie)
			req.Header.Set("X-Forwarded-Proto", "https")
			return h.do(t, noFollowWith(nil), req)
		}, want: badRequest, check: noSession},
		{name: "plain-named session where __Host- is in use (https)", send: func(t *testing.T) *answer {
			req, _ := http.NewRequest("GET", "http://"+h.svcAddr+"/x", nil)
			req.Host = h.gwAddr
			req.Header.Set("Cookie", legitCookie)
			req.Header.Set("X-Forwarded-Proto", "https")
			req.Header.Set(accept, jsonType)
			return h.do(t, noFollowWith(nil), req)
		}, want: deny401, check: noUpstream},

		// A bearer token is not a session.
		{name: "bearer token gets no cookie", send: withHeaders("/api/x?format=json", []string{"Authorization", "Bearer " + idToken}), want: allowedAsUser, check: noSession},
		{name: "POST logout with a genuine bearer JWT", send: post("/authservice/logout", "Authorization", "Bearer "+idToken), want: deny401},

		// Logout started by another site.
		{name: "cross-site GET logout", send: withHeaders("/authservice/logout", []string{"Cookie", legitCookie, "Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate"}), want: status(403), check: func(t *testing.T, a *answer) {
			if len(a.header.Values("Set-Cookie")) != 0 {
				t.Errorf("cookies changed: %v", a.header.Values("Set-Cookie"))
			}
		}},
		{name: "cross-site POST logout", send: post("/authservice/logout", "Cookie", legitCookie, "Sec-Fetch-Site", "cross-site"), want: status(403)},
		{name: "the session survived the cross-site logouts", send: withHeaders("/x?format=json", []string{"Cookie", legitCookie}), want: allowedAsUser},

		// The upstream never holds the service's cookies.
		{name: "session cookie stripped from the upstream's Cookie header", send: withHeaders("/x?format=json", []string{"Cookie", "_xsrf=2|a|b; " + legitCookie + "; authservice_state_" + otherState + "=x; z=\"q\""}), want: allowedAsUser, check: func(t *testing.T, a *answer) {
			if c := strings.Join(a.upstreamEcho().Headers["cookie"], "; "); c != "_xsrf=2|a|b; z=\"q\"" {
				t.Errorf("upstream Cookie %q", c)
			}
		}},
		{name: "only the service's cookies: no Cookie header upstream", send: withHeaders("/x?format=json", []string{"Cookie", legitCookie}), want: allowedAsUser, check: func(t *testing.T, a *answer) {
			if c := a.upstreamEcho().Headers["cookie"]; len(c) != 0 {
				t.Errorf("upstream Cookie %q", c)
			}
		}},

		// Back-channel logout delivered to the check port is read.
		{name: "back-channel logout with a forged token on the check port", send: func(t *testing.T) *answer {
			resp, err := http.PostForm(k.Svc.CheckURL+"/authservice/oidc/backchannel-logout", url.Values{"logout_token": {editedToken}})
			if err != nil {
				t.Fatal(err)
			}
			return toAnswer(resp)
		}, want: badRequest},
		{name: "back-channel logout without a token on the check port", send: func(t *testing.T) *answer {
			resp, err := http.PostForm(k.Svc.CheckURL+"/authservice/oidc/backchannel-logout", url.Values{"x": {"1"}})
			if err != nil {
				t.Fatal(err)
			}
			return toAnswer(resp)
		}, want: badRequest},

		// Tokens of the provider's issuer with invented kids: refused.
		{name: "provider-issued claims, invented kid", send: withHeaders("/x", []string{"Authorization", "Bearer " + peer.SignWith(t, peer.ForeignKey(), "invented-kid", edited), accept, jsonType}), want: deny401},
		{name: "provider-issued claims, empty kid", send: withHeaders("/x", []string{"Authorization", "Bearer " + peer.SignWith(t, peer.ForeignKey(), "", edited), accept, jsonType}), want: deny401},
	}

	// Issue 21. Logout the browser does not mark as the site's own: a
	// sibling subdomain (same-site), unknown or repeated values.
	for _, c := range []struct {
		name   string
		method string
		values []string
	}{
		{"same-site GET logout (a sibling subdomain)", "GET", []string{"same-site"}},
		{"same-site POST logout", "POST", []string{"same-site"}},
		{"GET logout with Sec-Fetch-Site SAME-ORIGIN", "GET", []string{"SAME-ORIGIN"}},
		{"GET logout with Sec-Fetch-Site garbage", "GET", []string{"evil.example.com"}},
		{"GET logout with an empty Sec-Fetch-Site", "GET", []string{""}},
		{"GET logout with Sec-Fetch-Site same-origin, same-site", "GET", []string{"same-origin, same-site"}},
		{"GET logout with Sec-Fetch-Site sent twice", "GET", []string{"same-origin", "cross-site"}},
		{"POST logout with Sec-Fetch-Site sent twice, both same-origin", "POST", []string{"same-origin", "same-origin"}},
	} {
		hdr := []string{"Cookie", legitCookie, "Sec-Fetch-Mode", "navigate"}
		for _, v := range c.values {
			hdr = append(hdr, "Sec-Fetch-Site", v)
		}
		rows = append(rows, hostileRow{name: c.name, send: method(c.method, "/authservice/logout", hdr...), want: status(403),
			check: func(t *testing.T, a *answer) {
				if len(a.header.Values("Set-Cookie")) != 0 {
					t.Errorf("cookies changed: %v", a.header.Values("Set-Cookie"))
				}
			}})
	}
	rows = append(rows, hostileRow{name: "the session survived every foreign logout", send: withHeaders("/x?format=json", []string{"Cookie", legitCookie}), want: allowedAsUser})

	// Issue 21. Forward auth: an X-Original-URL no proxy would have sent as
	// it is (nginx passes a raw "#" and raw bytes above 0x7E; it refuses
	// spaces and control characters) is refused, never judged as its part
	// before the "#".
	verifyWith := func(original string) func(t *testing.T) *answer {
		return func(t *testing.T) *answer {
			req := mustReq("GET", k.Svc.CheckURL+"/authservice/verify")
			req.Header.Set("X-Original-Method", "GET")
			req.Header.Set("X-Original-Url", original)
			req.Header.Set("Cookie", legitCookie)
			return h.do(t, nil, req)
		}
	}
	verifyRaw := func(original string) func(t *testing.T) *answer {
		return func(t *testing.T) *answer {
			return raw(t, h.svcAddr, "GET /authservice/verify HTTP/1.1\r\nHost: "+h.gwAddr+"\r\nX-Original-Method: GET\r\nX-Original-Url: "+
				original+"\r\nCookie: "+legitCookie+"\r\nConnection: close\r\n\r\n")
		}
	}
	noIdentity := func(t *testing.T, a *answer) {
		if v := a.header.Get("Kubeflow-Userid"); v != "" {
			t.Errorf("answered with an identity: %q", v)
		}
	}
	for _, c := range []struct{ name, url string }{
		{"raw # before a traversal out of a skip path", h.gw + "/public#/../pipeline/admin/x"},
		{"raw # right after a skip path", h.gw + "/public/#"},
		{"raw # in the query", h.gw + "/x?a=1#/../admin"},
		{"raw # alone", h.gw + "/x#"},
		{"space in the path", h.gw + "/public/ /../x"},
		{"space in the query", h.gw + "/x?a=1 2"},
		{"tab in the path", h.gw + "/x\ty"},
		{"raw UTF-8 in the path", h.gw + "/\xc3\xa9t\xc3\xa9"},
		{"raw byte 0x80 in the path", h.gw + "/a\x80b"},
		{"raw byte 0xff in the query", h.gw + "/a?x=\xff"},
	} {
		rows = append(rows, hostileRow{name: "forward auth: " + c.name, send: verifyWith(c.url), want: badRequest, check: noIdentity})
	}
	for _, c := range []struct{ name, url string }{
		{"control character 0x01", h.gw + "/x\x01y"},
		{"DEL", h.gw + "/x\x7fy"},
		{"escape character", h.gw + "/x\x1b[31my"},
	} {
		rows = append(rows, hostileRow{name: "forward auth: " + c.name + " (raw)", send: verifyRaw(c.url), want: clientError, check: noIdentity})
	}
	rows = append(rows, hostileRow{name: "forward auth: an encoded # is judged (allowed)", send: verifyWith(h.gw + "/x%23y"), want: serviceAllows})

	// Forward auth: a credential of this gateway in Authorization — a
	// session value sent as a bearer, a Dex ID token the service accepts,
	// alone or next to the session cookie — is never handed on. The verify
	// answer carries an empty Authorization, which every recipe copies as
	// "no header" (docs/forward-auth.md; through real nginx and Caddy in
	// test/e2e); what the upstream may keep is left as it is.
	verifyAs := func(headers ...string) func(t *testing.T) *answer {
		return func(t *testing.T) *answer {
			req := mustReq("GET", k.Svc.CheckURL+"/authservice/verify")
			req.Header.Set("X-Original-Method", "GET")
			req.Header.Set("X-Original-Url", h.gw+"/notebook/x")
			for i := 0; i+1 < len(headers); i += 2 {
				req.Header.Add(headers[i], headers[i+1])
			}
			return h.do(t, nil, req)
		}
	}
	upstreamAuthorization := func(want string) func(t *testing.T, a *answer) {
		return func(t *testing.T, a *answer) {
			if v := a.header.Values("Authorization"); len(v) != 1 || v[0] != want {
				t.Errorf("the answer's Authorization (what the upstream gets) %q, want %q", v, want)
			}
		}
	}
	for _, c := range []struct {
		name    string
		headers []string
	}{
		{"a session value as a bearer", []string{"Authorization", "Bearer " + legit}},
		{"a session value as a lower-case bearer", []string{"Authorization", "bearer " + legit}},
		{"a session value as a bearer, padded with spaces", []string{"Authorization", "Bearer   " + legit + "  "}},
		{"a session value as a bearer next to the session cookie", []string{"Cookie", legitCookie, "Authorization", "Bearer " + legit}},
		{"a Dex ID token", []string{"Authorization", "Bearer " + idToken}},
		{"a Dex ID token next to the session cookie", []string{"Cookie", legitCookie, "Authorization", "Bearer " + idToken}},
		{"a Dex ID token next to the session cookie and a forged identity", []string{"Cookie", legitCookie, "Authorization", "Bearer " + idToken,
			"Kubeflow-Userid", "admin@example.com", "Kubeflow-Groups", "admins"}},
	} {
		rows = append(rows, hostileRow{name: "forward auth: " + c.name + " is not handed upstream", send: verifyAs(c.headers...), want: serviceAllows,
			check: upstreamAuthorization("")})
	}
	// Two credentials in Authorization: only one could be judged, and the
	// other (a credential of this gateway) would reach the upstream. Never
	// one picked: 400, at the verify endpoint and through the gateway.
	for _, c := range []struct {
		name string
		auth []string
	}{
		{"a session value as a bearer, then a second Authorization", []string{"Bearer " + legit, "Basic dTpw"}},
		{"the application's Basic, then a session value as a bearer", []string{"Basic dTpw", "Bearer " + legit}},
		{"the application's Basic, then a Dex ID token", []string{"Basic dTpw", "Bearer " + idToken}},
		{"two bearer tokens", []string{"Bearer " + idToken, "Bearer " + legit}},
		{"one line with Basic and a session value, merged with a comma", []string{"Basic dTpw,Bearer " + legit}},
		{"one line with a Dex ID token and Basic, merged with a comma", []string{"Bearer " + idToken + ", Basic dTpw"}},
		{"a bearer value with a comma", []string{"Bearer " + legit + ",x"}},
	} {
		var hdr []string
		for _, a := range c.auth {
			hdr = append(hdr, "Authorization", a)
		}
		rows = append(rows,
			hostileRow{name: "forward auth: " + c.name + " next to the session cookie is refused", send: verifyAs(append([]string{"Cookie", legitCookie}, hdr...)...), want: badRequest},
			hostileRow{name: "forward auth: " + c.name + " alone is refused", send: verifyAs(hdr...), want: badRequest},
			hostileRow{name: "gateway: " + c.name + " next to the session cookie is refused", send: func(t *testing.T) *answer {
				return h.get(t, "/notebook/x", append([]string{"Cookie", legitCookie, "Accept", "application/json"}, hdr...)...)
			}, want: badRequest})
	}
	rows = append(rows, hostileRow{name: "forward auth: one credential whose auth-params have commas (AWS SigV4) stays",
		send: verifyAs("Cookie", legitCookie, "Authorization", "AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=fe5f80f7"),
		want: serviceAllows, check: upstreamAuthorization("AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=fe5f80f7")})
	rows = append(rows, hostileRow{name: "forward auth: the application's own Authorization next to the session cookie stays",
		send: verifyAs("Cookie", legitCookie, "Authorization", "Basic dTpw"), want: serviceAllows, check: upstreamAuthorization("Basic dTpw")})
	rows = append(rows, hostileRow{name: "forward auth: a JWT the service does not accept next to the session cookie stays",
		send: verifyAs("Cookie", legitCookie, "Authorization", "Bearer "+editedToken), want: serviceAllows, check: upstreamAuthorization("Bearer " + editedToken)})

	// Issue 21. Anonymous login states: starting logins and bringing their
	// states back (without a code, with made-up codes, again and again)
	// records nothing; a real callback replayed with its state cookie is
	// still refused.
	replay := func() float64 { return scrape(t, k.Svc)["oidc_authservice_replay_memory_entries"] }
	// Each state comes back twice: recorded by the first callback, it would
	// be refused as replayed by the second.
	anonymousPairs := func(n int, code func(i int) string) func(t *testing.T) *answer {
		return func(t *testing.T) *answer {
			before := replay()
			st := 0
			for i := range n {
				state, cookie, err := anonymousStart(h.client, h.gw)
				if err != nil {
					t.Fatal(err)
				}
				first, err := anonymousCallback(h.client, h.gw, state, cookie, code(i))
				if err != nil {
					t.Fatal(err)
				}
				if st, err = anonymousCallback(h.client, h.gw, state, cookie, code(i)); err != nil {
					t.Fatal(err)
				}
				if st != first {
					t.Fatalf("the same callback again: %d, then %d (the state was recorded as used)", first, st)
				}
				if st != 400 && st != 401 {
					break
				}
			}
			if after := replay(); after != before {
				t.Errorf("the replay memory went from %v to %v values", before, after)
			}
			return &answer{status: st}
		}
	}
	for _, c := range []struct {
		name string
		n    int
		code func(int) string
	}{
		{"20 anonymous callbacks with their own states, no code", 20, func(int) string { return "" }},
		{"20 anonymous callbacks with made-up codes", 20, func(i int) string { return fmt.Sprintf("made-up-%d", i) }},
		{"20 anonymous callbacks with an empty code", 20, func(int) string { return "&code=" }},
		{"20 anonymous callbacks with a 5 KiB code", 20, func(int) string { return strings.Repeat("c", 5<<10) }},
		{"20 anonymous callbacks with a provider error", 20, func(int) string { return "x&error=access_denied" }},
	} {
		rows = append(rows, hostileRow{name: c.name, send: anonymousPairs(c.n, c.code), want: clientError})
	}
	rows = append(rows, hostileRow{name: "one anonymous state brought back 30 times", send: func(t *testing.T) *answer {
		before := replay()
		req, _ := http.NewRequest("GET", h.gw+"/notebook/", nil)
		req.Header.Set("Accept", "text/html")
		start := h.do(t, nil, req)
		loc, _ := url.Parse(start.header.Get("Location"))
		state := loc.Query().Get("state")
		var cookie string
		for _, c := range (&http.Response{Header: start.header}).Cookies() {
			if c.Name == "authservice_state_"+state {
				cookie = c.Name + "=" + c.Value
			}
		}
		var a *answer
		for i := range 30 {
			a = h.callback(t, nil, fmt.Sprintf("state=%s&code=made-up-%d", state, i), "Cookie", cookie)
			if a.status != 401 {
				break
			}
		}
		if after := replay(); after != before {
			t.Errorf("the replay memory went from %v to %v values", before, after)
		}
		return a
	}, want: deny401})
	rows = append(rows, hostileRow{name: "a real callback replayed with its own state cookie", send: func(t *testing.T) *answer {
		p := h.pendingLogin(t, "/replay?format=json")
		q := "state=" + p.state + "&code=" + p.code
		if a := h.callback(t, nil, q, "Cookie", "authservice_state_"+p.state+"="+p.stateCookie); a.status != 302 || !a.sessionIssued() {
			t.Fatalf("the real callback: %s", a)
		}
		return h.callback(t, nil, q, "Cookie", "authservice_state_"+p.state+"="+p.stateCookie)
	}, want: badRequest, check: noSession})

	// Issue 21. A token the service obtained for a session (the Dex ID
	// token it hands upstream with UPSTREAM_TOKEN=id_token) replayed on the
	// bearer path after that session was logged out.
	table := t
	var upstreamKF struct {
		once sync.Once
		gw   string
		svc  *peer.Service
	}
	bearerAt := func(t *testing.T, gw, path, tok string, headers ...string) *answer {
		req := mustReq("GET", gw+path)
		req.Header.Set("Authorization", "Bearer "+tok)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		return h.do(t, nil, req)
	}
	idTokenSession := func(t *testing.T) (string, *browser) {
		upstreamKF.once.Do(func() { // for the whole table, not this row
			env := kubeflowEnv(k.Dex)
			env["UPSTREAM_TOKEN"] = "id_token"
			upstreamKF.svc = peer.StartService(table, env)
			upstreamKF.svc.WaitReady(table, 30*time.Second)
			upstreamKF.gw = gatewayFor(table, sentinelGateway, upstreamKF.svc, k.Dex)
		})
		b := newBrowser()
		e := (&setup{dex: k.Dex, svc: upstreamKF.svc, gateway: upstreamKF.gw}).login(t, b, "/upstream?format=json")
		tok := strings.TrimPrefix(strings.Join(e.Headers["authorization"], ""), "Bearer ")
		if strings.Count(tok, ".") != 2 {
			t.Fatalf("the upstream got no ID token: %q", e.Headers["authorization"])
		}
		if a := bearerAt(t, upstreamKF.gw, "/api/x?format=json", tok); !allowedAsUser.ok(a) {
			t.Fatalf("the ID token as bearer before logout: %s", a)
		}
		return tok, b
	}
	logoutGET := func(t *testing.T, b *browser) {
		resp, err := noFollowWith(b.Jar).Get(upstreamKF.gw + "/authservice/logout")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	for _, c := range []struct {
		name string
		send func(t *testing.T, tok string) *answer
	}{
		{"as bearer on an API path", func(t *testing.T, tok string) *answer {
			return bearerAt(t, upstreamKF.gw, "/api/x?format=json", tok)
		}},
		{"as bearer on a navigation", func(t *testing.T, tok string) *answer {
			return bearerAt(t, upstreamKF.gw, "/x?format=json", tok, "Accept", "text/html")
		}},
		{"with a lower-case bearer scheme", func(t *testing.T, tok string) *answer {
			req := mustReq("GET", upstreamKF.gw+"/api/x?format=json")
			req.Header.Set("Authorization", "bearer "+tok)
			return h.do(t, nil, req)
		}},
		{"straight to the check server", func(t *testing.T, tok string) *answer {
			req := mustReq("GET", upstreamKF.svc.CheckURL+"/api/x")
			req.Header.Set("Authorization", "Bearer "+tok)
			return h.do(t, nil, req)
		}},
		{"to the forward-auth endpoint", func(t *testing.T, tok string) *answer {
			req := mustReq("GET", upstreamKF.svc.CheckURL+"/authservice/verify")
			req.Header.Set("X-Original-Method", "GET")
			req.Header.Set("X-Original-Url", upstreamKF.gw+"/api/x")
			req.Header.Set("Authorization", "Bearer "+tok)
			return h.do(t, nil, req)
		}},
	} {
		rows = append(rows, hostileRow{name: "the upstream's ID token after its session's logout, " + c.name, send: func(t *testing.T) *answer {
			tok, b := idTokenSession(t)
			logoutGET(t, b)
			return c.send(t, tok)
		}, want: deny401, check: noUpstream})
	}
	rows = append(rows, hostileRow{name: "the upstream's ID token after its session's POST logout (dashboard < 1.10)", send: func(t *testing.T) *answer {
		tok, b := idTokenSession(t)
		var cookie string
		for _, c := range b.Jar.Cookies(mustReq("GET", upstreamKF.gw).URL) {
			if c.Name == "authservice_session" {
				cookie = c.Value
			}
		}
		req := mustReq("POST", upstreamKF.gw+"/authservice/logout")
		req.Header.Set("Authorization", "Bearer "+cookie)
		if a := h.do(t, nil, req); a.status != 201 {
			t.Fatalf("POST logout: %s", a)
		}
		return bearerAt(t, upstreamKF.gw, "/api/x?format=json", tok)
	}, want: deny401, check: noUpstream})
	rows = append(rows, hostileRow{name: "another login's ID token is not ended by this logout", send: func(t *testing.T) *answer {
		other := dexIDToken(t, k.Dex)
		_, b := idTokenSession(t)
		logoutGET(t, b)
		return bearerAt(t, upstreamKF.gw, "/api/x?format=json", other)
	}, want: allowedAsUser})

	// What Go's client will not send: raw requests, to the gateway and
	// straight to the check server (a gateway may be less strict).
	for _, r := range []struct{ name, request string }{
		{"CR in the path", "GET /x\ry HTTP/1.1\r\nHost: H\r\nConnection: close\r\n\r\n"},
		{"LF in the path", "GET /x\ny HTTP/1.1\r\nHost: H\r\nConnection: close\r\n\r\n"},
		{"NUL in the path", "GET /x\x00y HTTP/1.1\r\nHost: H\r\nConnection: close\r\n\r\n"},
		{"NUL in the session cookie", "GET /x HTTP/1.1\r\nHost: H\r\nCookie: authservice_session=ab\x00cd\r\nConnection: close\r\n\r\n"},
		{"bare CR in a header value", "GET /x HTTP/1.1\r\nHost: H\r\nX-A: a\rKubeflow-Userid: admin@example.com\r\nConnection: close\r\n\r\n"},
		{"CRLF smuggling an identity header into the cookie", "GET /x HTTP/1.1\r\nHost: H\r\nCookie: a=b\r\n Kubeflow-Userid: admin@example.com\r\nConnection: close\r\n\r\n"},
		{"NUL in the Authorization header", "GET /x HTTP/1.1\r\nHost: H\r\nAuthorization: Bearer a\x00.b.c\r\nConnection: close\r\n\r\n"},
		{"LF-only line endings", "GET /x HTTP/1.1\nHost: H\nConnection: close\n\n"},
		{"Content-Length and Transfer-Encoding together", "GET /x HTTP/1.1\r\nHost: H\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"},
		{"invalid Host", "GET /x HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n"},
		{"user info in the Host", "GET /x HTTP/1.1\r\nHost: H@evil.example\r\nConnection: close\r\n\r\n"},
		{"CR in the Host", "GET /x HTTP/1.1\r\nHost: evil.example\rx\r\nConnection: close\r\n\r\n"},
	} {
		for _, to := range []struct{ where, addr string }{{"gateway", h.gwAddr}, {"check server", h.svcAddr}} {
			request := strings.ReplaceAll(r.request, "Host: H", "Host: "+to.addr)
			addr := to.addr
			rows = append(rows, hostileRow{name: r.name + " (" + to.where + ")", send: func(t *testing.T) *answer { return raw(t, addr, request) },
				want: parserOrDecision, check: func(t *testing.T, a *answer) {
					if a.status == 200 {
						t.Errorf("let through: %s", a)
					}
				}})
		}
	}

	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			if row.bug != "" && os.Getenv("RUN_BUG_ROWS") == "" {
				t.Skip("BUG: " + row.bug)
			}
			a := row.send(t)
			t.Logf("answer: %s", a)
			if a.status == checkFailed {
				t.Fatalf("the check failed (5xx, reset or timeout of the service): %s", a)
			}
			if a.status >= 500 {
				t.Fatalf("5xx: %s", a)
			}
			if !row.want.ok(a) {
				t.Errorf("want %s, got %s", row.want.desc, a)
			}
			if row.check != nil {
				row.check(t, a)
			}
			// The logged-in user is still served.
			resp, err := h.legit.Get(h.gw + "/still-served?format=json")
			if err != nil {
				t.Fatalf("legitimate user after this row: %v", err)
			}
			if e := readEcho(t, resp); e.Headers["kubeflow-userid"][0] != legitUser {
				t.Fatalf("legitimate user after this row: upstream saw %v", e.Headers)
			}
		})
	}
	if p := tap.panics(); p != "" {
		t.Fatalf("a handler panicked:\n%s", p)
	}
}

// sealAs seals v under the cookie name with a SESSION_KEYS secret, as the
// service does.
func sealAs(t *testing.T, secret, name string, v any) string {
	t.Helper()
	key, err := config.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.NewCodec([][]byte{key}, 24*time.Hour, time.Now).Seal(name, v)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustReq(method, u string) *http.Request {
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		panic(err)
	}
	return req
}

// hostileAuthorizer is an external authorizer that misbehaves as the
// current mode says: slow, failing, redirecting, oversized, garbage. It
// speaks either protocol: what it answers is what the row chose.
type hostileAuthorizer struct {
	URL     string
	mode    atomic.Value // string
	allowed atomic.Int32 // calls of allowAll (where redirects lead)
	allAll  string
}

func startHostileAuthorizer(t *testing.T) *hostileAuthorizer {
	h := &hostileAuthorizer{}
	h.mode.Store("ok")
	allowAll := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.allowed.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"result": true}`)
	}))
	t.Cleanup(allowAll.Close)
	h.allAll = allowAll.URL
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		opaOK := `{"result": true}`
		switch h.mode.Load().(string) {
		case "ok":
			io.WriteString(w, opaOK)
		case "slow":
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
			io.WriteString(w, opaOK)
		case "500":
			w.WriteHeader(500)
			io.WriteString(w, "internal error")
		case "502 html":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			io.WriteString(w, "<html><body><h1>502 Bad Gateway</h1></body></html>")
		case "302 to allow-all":
			http.Redirect(w, r, h.allAll+"/allow", http.StatusFound)
		case "307 to allow-all":
			http.Redirect(w, r, h.allAll+"/allow", http.StatusTemporaryRedirect)
		case "huge 200":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"result": true, "padding": "`)
			chunk := strings.Repeat("x", 64<<10)
			for i := 0; i < 160; i++ { // 10 MiB
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
			io.WriteString(w, `"}`)
		case "huge 403 reason":
			w.WriteHeader(403)
			io.WriteString(w, strings.Repeat("no ", 300<<10))
		case "long 403 reason":
			w.WriteHeader(403)
			io.WriteString(w, strings.Repeat("no ", 10<<10))
		case "403 reason with markup and CRLF":
			w.WriteHeader(403)
			io.WriteString(w, "<script>alert(1)</script>\r\nKubeflow-Userid: admin@example.com")
		case "reset":
			if hj, ok := w.(http.Hijacker); ok {
				c, _, _ := hj.Hijack()
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
				c.Close()
			}
		case "not JSON":
			io.WriteString(w, "allow")
		case "result a string":
			io.WriteString(w, `{"result": "true"}`)
		case "allow a string":
			io.WriteString(w, `{"result": {"allow": "yes"}}`)
		case "result null":
			io.WriteString(w, `{"result": null}`)
		case "no result":
			io.WriteString(w, `{"warning": {"code": "api_usage_warning"}}`)
		case "a list":
			io.WriteString(w, `[true]`)
		case "truncated":
			w.Header().Set("Content-Length", "1000")
			io.WriteString(w, `{"result": tr`)
		}
	}))
	t.Cleanup(srv.Close)
	h.URL = srv.URL
	return h
}

// TestHostileAccessTokensAndAuthorizer: floods of invented bearer tokens
// against the provider's opaque access tokens (the provider's userinfo
// calls counted at the provider: bounded), and an external authorizer that
// is slow or failing, of both protocols. Every row gets a definite answer,
// never a 5xx (the gateway answers 555 when the check fails) and never an
// allow the authorizer did not give; the logged-in user is still served
// after every row.
func TestHostileAccessTokensAndAuthorizer(t *testing.T) {
	tap := &logTap{}
	log.SetOutput(tap)
	t.Cleanup(func() { log.SetOutput(os.Stderr) })

	az := startHostileAuthorizer(t)
	common := map[string]string{"ACCESS_TOKEN_AUTHN": "opaque", "ACCESS_TOKEN_LOOKUPS_PER_SECOND": "5", "ACCESS_TOKEN_LOOKUP_CONCURRENCY": "2",
		"EXTERNAL_AUTHZ_TIMEOUT": "300ms", "EXTERNAL_AUTHZ_CACHE_TTL": "0s", "EXTERNAL_AUTHZ_MAX_CONCURRENT": "4"}
	arrikto := map[string]string{"EXTERNAL_AUTHZ_URL": az.URL + "/authorize"}
	for k, v := range common {
		arrikto[k] = v
	}
	s := startGitLabService(t, peer.GitLabOptions{}, arrikto)
	// The same service speaking OPA's protocol to the same authorizer.
	opaEnv := map[string]string{"OIDC_PROVIDER": s.gl.Issuer, "CLIENT_ID": s.gl.Opts.ClientID, "CLIENT_SECRET": s.gl.Opts.ClientSecret,
		"SESSION_KEYS": peer.SessionKey, "GROUPS_CLAIM": "groups", "EXTERNAL_AUTHZ_FORMAT": "opa", "EXTERNAL_AUTHZ_URL": az.URL + "/v1/data/kubeflow/authz"}
	for k, v := range common {
		opaEnv[k] = v
	}
	opaSvc := peer.StartService(t, opaEnv)
	opaSvc.WaitReady(t, 30*time.Second)
	opaGateway := peer.KubeflowGateway(t, sentinelGateway, opaSvc.CheckURL, opaSvc.WebURL, 0)

	// A logged-in user, and a GitLab OAuth token verified before the floods.
	b := newBrowser()
	resp, err := peer.GitLabLogin(b.Client, s.gateway+"/start?format=json", "alice")
	if err != nil {
		t.Fatal(err)
	}
	readEcho(t, resp)
	gw, _ := url.Parse(s.gateway)
	var legitCookie string
	for _, c := range b.Jar.Cookies(gw) {
		if c.Name == "authservice_session" {
			legitCookie = "authservice_session=" + c.Value
		}
	}
	known := s.gl.Tokens(t, "bob").AccessToken
	upstreamAs(t, bearerGet(t, s.gateway, "/api/x?format=json", known), "bob@example.com", "")

	client := noFollowWith(nil)
	send := func(t *testing.T, gateway, path string, headers ...string) *answer {
		t.Helper()
		req, _ := http.NewRequest("GET", gateway+path, nil)
		req.Header.Set("Accept", "application/json")
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		return toAnswer(resp)
	}
	invented := func(i int) string { return fmt.Sprintf("gloas-%08d%s", i, strings.Repeat("f", 56)) }

	// flood sends n invented bearer tokens (distinct unless same), with c
	// at once, and checks every answer is a 401 and that the provider got
	// at most the calls the bucket allows for the time it took.
	flood := func(n, c int, same bool) func(t *testing.T) *answer {
		return func(t *testing.T) *answer {
			before := s.gl.Userinfo(t)
			start := time.Now()
			answers := make(chan *answer, n)
			sem := make(chan struct{}, c)
			var wg sync.WaitGroup
			for i := 0; i < n; i++ {
				tok := invented(i + int(start.UnixNano()%1e6)*1000)
				if same {
					tok = invented(int(start.UnixNano() % 1e6))
				}
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					req, _ := http.NewRequest("GET", s.gateway+"/api/flood", nil)
					req.Header.Set("Authorization", "Bearer "+tok)
					resp, err := client.Do(req)
					if err != nil {
						answers <- &answer{status: 0, body: []byte(err.Error())}
						return
					}
					answers <- toAnswer(resp)
				}()
			}
			wg.Wait()
			close(answers)
			took := time.Since(start)
			limited := 0
			for a := range answers {
				if a.status != 401 {
					t.Fatalf("an invented token got %s", a)
				}
				if a.header.Get("Retry-After") != "" {
					limited++
				}
			}
			calls := s.gl.Userinfo(t) - before
			// The bucket: 5 at once, 5 more per second of the flood.
			bound := 5 + int(5*took.Seconds()) + 1
			if same {
				bound = 1
			}
			t.Logf("%d invented tokens (%d at once) in %v: %d userinfo calls at the provider (bound %d), %d refused at once", n, c, took.Round(time.Millisecond), calls, bound, limited)
			if calls > bound {
				t.Fatalf("%d userinfo calls for %d invented tokens in %v: more than the bound %d", calls, n, took, bound)
			}
			return &answer{status: 401}
		}
	}
	// authorizer sets the hostile authorizer's mode for one request
	// through gateway with the legitimate session.
	authorizer := func(mode, gateway string, headers ...string) func(t *testing.T) *answer {
		return func(t *testing.T) *answer {
			az.mode.Store(mode)
			defer az.mode.Store("ok")
			return send(t, gateway, "/notebook/x/"+strings.ReplaceAll(mode, " ", "-"), append([]string{"Cookie", legitCookie}, headers...)...)
		}
	}
	refused := expectation{"403, the authorizer could not decide", func(a *answer) bool {
		return a.status == 403 && strings.Contains(string(a.body), "authorization service unavailable") && a.header.Get("Retry-After") != ""
	}}
	deniedBy := func(fragment string) expectation {
		return expectation{"403 with a reason containing " + fragment, func(a *answer) bool {
			var b struct{ Reason string }
			json.Unmarshal(a.body, &b)
			return a.status == 403 && strings.Contains(b.Reason, fragment) && len(b.Reason) <= 300 && !strings.ContainsAny(b.Reason, "\r\n")
		}}
	}
	zeroCalls := func(f func(t *testing.T) *answer) func(t *testing.T) *answer {
		return func(t *testing.T) *answer {
			before := s.gl.Userinfo(t)
			a := f(t)
			if n := s.gl.Userinfo(t) - before; n != 0 {
				t.Errorf("%d userinfo calls for a value that is no access token", n)
			}
			return a
		}
	}
	foreignSession := sealAs(t, peer.RandomKey(), "authservice_session", &session.Session{User: "admin@example.com", Expires: time.Now().Add(time.Hour).Unix()})

	rows := []hostileRow{
		// Floods of invented bearer tokens: the provider is asked at most
		// at the configured rate, whatever the flood.
		{name: "300 invented opaque tokens, one after another", send: flood(300, 1, false), want: deny401},
		{name: "300 invented opaque tokens, 50 at once", send: flood(300, 50, false), want: deny401},
		{name: "one invented token sent 200 times, 50 at once", send: flood(200, 50, true), want: deny401},
		{name: "the token verified before the floods still works", send: func(t *testing.T) *answer {
			return bearerGet(t, s.gateway, "/api/after-flood?format=json", known)
		}, want: expectation{"200 as bob", func(a *answer) bool {
			e := a.upstreamEcho()
			return e != nil && len(e.Headers["kubeflow-userid"]) == 1 && e.Headers["kubeflow-userid"][0] == "bob@example.com"
		}}},
		{name: "a bearer value with spaces", send: zeroCalls(func(t *testing.T) *answer {
			return send(t, s.gateway, "/api/x", "Authorization", "Bearer not a token at all")
		}), want: deny401},
		{name: "a 5 KiB bearer value", send: zeroCalls(func(t *testing.T) *answer {
			return send(t, s.gateway, "/api/x", "Authorization", "Bearer "+strings.Repeat("A", 5<<10))
		}), want: deny401},
		{name: "a session sealed with another key as bearer", send: zeroCalls(func(t *testing.T) *answer {
			return send(t, s.gateway, "/api/x", "Authorization", "Bearer "+foreignSession)
		}), want: deny401},
		{name: "a JWT with invented claims as bearer", send: zeroCalls(func(t *testing.T) *answer {
			return send(t, s.gateway, "/api/x", "Authorization", "Bearer "+jwtPart(map[string]any{"alg": "RS256"})+"."+jwtPart(map[string]any{"iss": s.gl.Issuer, "sub": "1"})+".sig")
		}), want: deny401},

		// A slow or failing authorizer of the predecessor's protocol.
		{name: "authorizer: slower than EXTERNAL_AUTHZ_TIMEOUT", send: authorizer("slow", s.gateway), want: refused},
		{name: "authorizer: 500", send: authorizer("500", s.gateway), want: refused},
		{name: "authorizer: 502 with an HTML page", send: authorizer("502 html", s.gateway), want: refused},
		{name: "authorizer: 302 to an allow-everything service", send: authorizer("302 to allow-all", s.gateway), want: refused},
		{name: "authorizer: 307 to an allow-everything service", send: authorizer("307 to allow-all", s.gateway), want: refused},
		{name: "authorizer: 200 with a 10 MiB body", send: authorizer("huge 200", s.gateway), want: refused},
		// Over 64 KiB is an answer outside the protocol, whatever its status.
		{name: "authorizer: 403 with a 900 KiB reason", send: authorizer("huge 403 reason", s.gateway), want: refused},
		{name: "authorizer: 403 with a 30 KiB reason: cut to 256 bytes", send: authorizer("long 403 reason", s.gateway), want: deniedBy("no no no")},
		{name: "authorizer: 403 with markup and CRLF in the reason", send: authorizer("403 reason with markup and CRLF", s.gateway), want: deniedBy("Kubeflow-Userid: admin@example.com"),
			check: func(t *testing.T, a *answer) {
				if a.header.Get("Kubeflow-Userid") != "" {
					t.Errorf("an identity header on a refusal")
				}
			}},
		{name: "authorizer: 403 with markup, as a page", send: authorizer("403 reason with markup and CRLF", s.gateway, "Accept", "text/html"), want: status(403),
			check: func(t *testing.T, a *answer) {
				if strings.Contains(string(a.body), "<script>alert(1)") {
					t.Errorf("the authorizer's markup is on the page unescaped")
				}
			}},
		{name: "authorizer: connection reset", send: authorizer("reset", s.gateway), want: refused},
		{name: "authorizer: truncated answer", send: authorizer("truncated", s.gateway), want: refused},
		{name: "authorizer: slow, 12 requests at once beyond EXTERNAL_AUTHZ_MAX_CONCURRENT", send: func(t *testing.T) *answer {
			az.mode.Store("slow")
			defer az.mode.Store("ok")
			var wg sync.WaitGroup
			answers := make([]*answer, 12)
			for i := range answers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					answers[i] = send(t, s.gateway, fmt.Sprintf("/notebook/x/saturated-%d", i), "Cookie", legitCookie)
				}()
			}
			wg.Wait()
			for _, a := range answers {
				if !refused.ok(a) {
					return a
				}
			}
			return answers[0]
		}, want: refused},

		// OPA's protocol: anything but a boolean result refuses.
		{name: "OPA: slower than the timeout", send: authorizer("slow", opaGateway), want: refused},
		{name: "OPA: not JSON", send: authorizer("not JSON", opaGateway), want: refused},
		{name: "OPA: result a string", send: authorizer("result a string", opaGateway), want: refused},
		{name: "OPA: allow a string", send: authorizer("allow a string", opaGateway), want: refused},
		{name: "OPA: result null", send: authorizer("result null", opaGateway), want: refused},
		{name: "OPA: no result (undefined)", send: authorizer("no result", opaGateway), want: deniedBy("no result")},
		{name: "OPA: a JSON list", send: authorizer("a list", opaGateway), want: refused},
		{name: "OPA: 10 MiB", send: authorizer("huge 200", opaGateway), want: refused},
		{name: "OPA: 302 to an allow-everything service", send: authorizer("302 to allow-all", opaGateway), want: refused},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			a := row.send(t)
			t.Logf("answer: %s", a)
			if a.status == checkFailed {
				t.Fatalf("the check failed (5xx, reset or timeout of the service): %s", a)
			}
			if a.status >= 500 || a.status == 0 {
				t.Fatalf("5xx or no answer: %s", a)
			}
			if !row.want.ok(a) {
				t.Errorf("want %s, got %s", row.want.desc, a)
			}
			if row.check != nil {
				row.check(t, a)
			}
			resp, err := b.Get(s.gateway + "/still-served?format=json")
			if err != nil {
				t.Fatalf("legitimate user after this row: %v", err)
			}
			if e := readEcho(t, resp); e.Headers["kubeflow-userid"][0] != "alice@example.com" {
				t.Fatalf("legitimate user after this row: upstream saw %v", e.Headers)
			}
		})
	}
	if n := az.allowed.Load(); n != 0 {
		t.Errorf("a redirect of the authorizer was followed %d times", n)
	}
	if p := tap.panics(); p != "" {
		t.Fatalf("a handler panicked:\n%s", p)
	}
}
