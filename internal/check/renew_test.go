package check

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// setCookies are the Set-Cookie lines of an answer.
func setCookies(w *httptest.ResponseRecorder) []*http.Cookie { return w.Result().Cookies() }

// dueSession is a session whose refresh is due (its access token expires in
// ten seconds, or expired ten seconds ago when expired); idToken (kept only
// for logout) makes it as large as wanted.
func (f *fixture) dueSession(t *testing.T, id, idToken string, expired bool) string {
	t.Helper()
	exp := f.now.Add(10 * time.Second)
	if expired {
		exp = f.now.Add(-10 * time.Second)
	}
	return f.seal(t, &session.Session{ID: id, Subject: "s", User: "u@example.com", Created: f.now.Add(-time.Hour).Unix(),
		Expires: f.now.Add(time.Hour).Unix(), Renewed: f.now.Add(-time.Hour).Unix(), RefreshToken: "RT", TokenExpiry: exp.Unix(), IDToken: idToken})
}

// cookieHeader is the Cookie header a browser sends for a sealed session
// (its chunks), plus extra cookies.
func cookieHeader(sealed string, extra ...string) string {
	var parts []string
	for i, c := range session.Split(sealed) {
		parts = append(parts, session.ChunkName("authservice_session", i)+"="+c)
	}
	return strings.Join(append(parts, extra...), "; ")
}

// sessionFrom reassembles the session cookies an answer sets.
func sessionFrom(cs []*http.Cookie) string {
	chunks := map[string]string{}
	for _, c := range cs {
		if strings.HasPrefix(c.Name, "authservice_session") && c.MaxAge >= 0 {
			chunks[c.Name] = c.Value
		}
	}
	return session.Join(chunks["authservice_session"], func(i int) (string, bool) {
		v, ok := chunks[session.ChunkName("authservice_session", i)]
		return v, ok
	})
}

// A forward-auth proxy passes at most one Set-Cookie of an allow to the
// browser (nginx's $upstream_http_set_cookie: the first before 1.23, all of
// them joined by ", " since; Caddy's placeholder joins them with ","). A
// session renewed at a verify answer therefore goes out in exactly one
// Set-Cookie, and a chunk of an earlier, longer session is left alone
// rather than expired with a second line (the one cookie says it has no
// chunks). Before, the answer expired the stale chunk in a second
// Set-Cookie, which nginx 1.23+ and Caddy merged into one broken cookie.
func TestForwardAuthRenewalInOneSetCookie(t *testing.T) {
	for _, proxy := range []string{"nginx", "ingress-nginx", "caddy", "traefik"} {
		t.Run(proxy, func(t *testing.T) {
			f := newFixture(t, map[string]string{"FORWARD_AUTH_PROXY": proxy})
			fwd := described(proxy, "/notebook/x", map[string]string{"Accept": "application/json",
				"Cookie": cookieHeader(f.dueSession(t, "one", "", false), "authservice_session_1=stale-chunk", "theme=dark")})
			w := verifyRequest(f, "127.0.0.1:5000", fwd)
			if w.Code != 200 || w.Header().Get("Kubeflow-Userid") != "u@example.com" {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			lines := w.Header().Values("Set-Cookie")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "authservice_session=") {
				t.Fatalf("Set-Cookie %q, want the renewed session in exactly one line", lines)
			}
			if f.token.calls.Load() != 1 {
				t.Fatalf("%d refreshes", f.token.calls.Load())
			}
			renewed := sessionFrom(setCookies(w))
			s, err := f.codec.OpenSession("authservice_session", renewed)
			if err != nil || s.RefreshToken != "RT-refreshed" {
				t.Fatalf("the cookie holds %+v (%v), want the refreshed tokens", s, err)
			}
			// The browser's next request: the new cookie next to the stale
			// chunk is the renewed session, and nothing is due.
			w = verifyRequest(f, "127.0.0.1:5000", described(proxy, "/notebook/x", map[string]string{"Accept": "application/json",
				"Cookie": cookieHeader(renewed, "authservice_session_1=stale-chunk")}))
			if w.Code != 200 || w.Header().Get("Kubeflow-Userid") != "u@example.com" || len(w.Header().Values("Set-Cookie")) != 0 {
				t.Fatalf("with the renewed cookie: %d %q", w.Code, w.Header().Values("Set-Cookie"))
			}
			// The upstream's Cookie header has the application's cookies
			// only, the stale chunk as little as the session.
			if got := w.Header().Get("Cookie"); got != "" {
				t.Fatalf("upstream Cookie %q", got)
			}
		})
	}
}

// described describes the original request http://kf.example.com<uri>
// as proxy does, with extra headers of the browser.
func described(proxy, uri string, extra map[string]string) map[string]string {
	h := map[string]string{"X-Original-Method": "GET", "X-Original-Url": "http://kf.example.com" + uri}
	if proxy == "caddy" || proxy == "traefik" {
		h = map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "kf.example.com", "X-Forwarded-Uri": uri}
	}
	for k, v := range extra {
		h[k] = v
	}
	return h
}

// A session of several cookies cannot be renewed in one Set-Cookie, so a
// verify answer that could only allow never redeems its refresh token
// (which would leave the renewed session in this replica's memory only):
// behind nginx an API call goes on with the still-valid tokens, a
// navigation gets a 401 that the recipe's error_page sends through the
// start endpoint, which renews the session with every cookie; past the
// tokens' expiry an API call gets the 401 too (never a cleared cookie).
// Behind Caddy and Traefik a navigation gets a 307 to the same URL with
// every cookie, which they pass as it is.
func TestForwardAuthRenewalOfSeveralCookies(t *testing.T) {
	big := "eyJ." + strings.Repeat("g", 5000) + ".sig"
	t.Run("nginx", func(t *testing.T) {
		// Two cookies' Set-Cookie lines (7.6 KB) need nginx's buffer
		// raised from its 4 KB, and the service told so.
		f := newFixture(t, map[string]string{"FORWARD_AUTH_PROXY": "nginx", "FORWARD_AUTH_ANSWER_MAX_BYTES": "16384"})
		sealed := f.dueSession(t, "big", big, false)
		if session.Count(sealed) != 2 {
			t.Fatalf("the session takes %d cookies", session.Count(sealed))
		}
		api := verifyRequest(f, "127.0.0.1:5000", described("nginx", "/api/x", map[string]string{"Accept": "application/json", "Cookie": cookieHeader(sealed)}))
		if api.Code != 200 || api.Header().Get("Kubeflow-Userid") != "u@example.com" || len(api.Header().Values("Set-Cookie")) != 0 {
			t.Fatalf("API call: %d %q %s", api.Code, api.Header().Values("Set-Cookie"), api.Body)
		}
		nav := verifyRequest(f, "127.0.0.1:5000", described("nginx", "/notebook/x?a=1", map[string]string{"Accept": "text/html", "Cookie": cookieHeader(sealed)}))
		if nav.Code != 401 || len(nav.Header().Values("Set-Cookie")) != 0 {
			t.Fatalf("navigation: %d %q, want 401 without clearing the cookie", nav.Code, nav.Header().Values("Set-Cookie"))
		}
		if n := f.token.calls.Load(); n != 0 {
			t.Fatalf("the refresh token was redeemed %d times at verify answers", n)
		}
		// The recipe's error_page: the start endpoint, through the
		// location that passes every Set-Cookie.
		w := f.do("GET", "/authservice/start?rd=/notebook/x?a=1", map[string]string{"Cookie": cookieHeader(sealed)})
		if w.Code != 302 || w.Header().Get("Location") != "/notebook/x?a=1" {
			t.Fatalf("start: %d to %q", w.Code, w.Header().Get("Location"))
		}
		renewed := sessionFrom(setCookies(w))
		if s, err := f.codec.OpenSession("authservice_session", renewed); err != nil || s.RefreshToken != "RT-refreshed" || session.Count(renewed) != 2 {
			t.Fatalf("start set %d cookies of %+v (%v)", session.Count(renewed), s, err)
		}
		if n := f.token.calls.Load(); n != 1 {
			t.Fatalf("%d refreshes", n)
		}
		w = verifyRequest(f, "127.0.0.1:5000", described("nginx", "/notebook/x?a=1", map[string]string{"Accept": "text/html", "Cookie": cookieHeader(renewed)}))
		if w.Code != 200 {
			t.Fatalf("the renewed session: %d", w.Code)
		}
		// Past its tokens' expiry, an API call too gets the 401.
		expired := f.dueSession(t, "gone", big, true)
		w = verifyRequest(f, "127.0.0.1:5000", described("nginx", "/api/x", map[string]string{"Accept": "application/json", "Cookie": cookieHeader(expired)}))
		if w.Code != 401 || len(w.Header().Values("Set-Cookie")) != 0 {
			t.Fatalf("API call past the expiry: %d %q", w.Code, w.Header().Values("Set-Cookie"))
		}
		if n := checkCount(f, "deny", "renewal"); n != 2 {
			t.Fatalf("checks_total{deny,renewal} = %v", n)
		}
	})
	for _, proxy := range []string{"caddy", "traefik"} {
		t.Run(proxy, func(t *testing.T) {
			f := newFixture(t, map[string]string{"FORWARD_AUTH_PROXY": proxy, "FORWARD_AUTH_REDIRECT": "true"})
			sealed := f.dueSession(t, "big", big, false)
			w := verifyRequest(f, "127.0.0.1:5000", described(proxy, "/notebook/x?a=1", map[string]string{"Accept": "text/html", "Cookie": cookieHeader(sealed)}))
			if w.Code != 307 || w.Header().Get("Location") != "/notebook/x?a=1" {
				t.Fatalf("navigation: %d to %q, want 307 to the same URL", w.Code, w.Header().Get("Location"))
			}
			renewed := sessionFrom(setCookies(w))
			if s, err := f.codec.OpenSession("authservice_session", renewed); err != nil || s.RefreshToken != "RT-refreshed" {
				t.Fatalf("the 307 carries %+v (%v)", s, err)
			}
			w = verifyRequest(f, "127.0.0.1:5000", described(proxy, "/notebook/x?a=1", map[string]string{"Accept": "text/html", "Cookie": cookieHeader(renewed)}))
			if w.Code != 200 || len(w.Header().Values("Set-Cookie")) != 0 {
				t.Fatalf("the renewed session: %d %q", w.Code, w.Header().Values("Set-Cookie"))
			}
			// An API call is not redirected: it goes on with the tokens.
			other := f.dueSession(t, "big2", big, false)
			w = verifyRequest(f, "127.0.0.1:5000", described(proxy, "/api/x", map[string]string{"Accept": "application/json", "Cookie": cookieHeader(other)}))
			if w.Code != 200 || len(w.Header().Values("Set-Cookie")) != 0 {
				t.Fatalf("API call: %d %q", w.Code, w.Header().Values("Set-Cookie"))
			}
			if n := f.token.calls.Load(); n != 1 {
				t.Fatalf("%d refreshes", n)
			}
		})
	}
}

// A session of one cookie whose refreshed tokens make it take two cannot
// be carried by a forward-auth allow: it ends (never served from this
// replica's memory), with the page naming the limit, and the refresh token
// the refresh returned is revoked at the provider.
func TestForwardAuthRenewalThatOutgrowsOneCookie(t *testing.T) {
	f := newFixture(t, map[string]string{"FORWARD_AUTH_PROXY": "nginx", "STRICT_SESSION_VALIDATION": "true"})
	answer := fmt.Sprintf(`{"access_token":%q,"token_type":"Bearer","expires_in":3600,"refresh_token":"RT-2"}`, strings.Repeat("a", 4000))
	f.token.answer.Store(&answer)
	sealed := f.seal(t, &session.Session{ID: "grow", Subject: "s", User: "u@example.com", Created: f.now.Add(-time.Hour).Unix(),
		Expires: f.now.Add(time.Hour).Unix(), Renewed: f.now.Add(-time.Hour).Unix(), RefreshToken: "RT-1", AccessToken: "AT-1",
		TokenExpiry: f.now.Add(10 * time.Second).Unix()})
	hdr := described("nginx", "/api/x", map[string]string{"Accept": "application/json", "Cookie": cookieHeader(sealed)})
	w := verifyRequest(f, "127.0.0.1:5000", hdr)
	var body map[string]any
	json.Unmarshal(w.Body.Bytes(), &body)
	if w.Code != 403 || body["error"] != "identity_too_large" || !strings.Contains(fmt.Sprint(body["message"]), "one cookie") {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if got := f.revocation(t); got != "refresh_token:RT-2" {
		t.Fatalf("revoked %q, want the refresh token the refresh returned", got)
	}
	if w := verifyRequest(f, "127.0.0.1:5000", hdr); w.Code != 401 {
		t.Fatalf("the old cookie again: %d (a successor served from memory?)", w.Code)
	}
}

// checkCount is checks_total{decision, reason}, summed over the protocols.
func checkCount(f *fixture, decision, reason string) float64 {
	var n float64
	m, _ := f.m.Registry().Gather()
	for _, mf := range m {
		if mf.GetName() != "oidc_authservice_checks_total" {
			continue
		}
		for _, x := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range x.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["decision"] == decision && labels["reason"] == reason {
				n += x.GetCounter().GetValue()
			}
		}
	}
	return n
}

// Behind nginx the verify answer that renews a session — the identity
// headers, the upstream token, the renewed session's Set-Cookie, the
// application's cookies — is read into proxy_buffer_size
// (FORWARD_AUTH_ANSWER_MAX_BYTES), and so is the start endpoint's. The
// bound the login is judged by now judges every renewal too: a provider
// whose refreshed ID token is much larger than the login's (more groups),
// handed upstream (UPSTREAM_TOKEN=id_token), makes the answer outgrow the
// buffer while the session still takes one cookie. The session ends with
// the page or JSON naming the limit and the settings, counted and logged,
// and the refresh token the refresh returned is revoked at the provider.
// Before, the 200 went out with the renewed session, and nginx answered
// its bare 500 ("upstream sent too big header") on every request.
func TestForwardAuthRenewalBeyondTheProxyBuffer(t *testing.T) {
	env := func(proxy string, more ...string) map[string]string {
		e := map[string]string{"FORWARD_AUTH_PROXY": proxy, "UPSTREAM_TOKEN": "id_token", "ACCEPT_PROVIDER_ID_TOKENS": "false"}
		for i := 0; i+1 < len(more); i += 2 {
			e[more[i]] = more[i+1]
		}
		return e
	}
	// grow makes the provider answer a refresh with an ID token of 35
	// groups (about 2 KB) and a new refresh token, and returns a session
	// whose refresh is due, with the login's ID token of one group.
	grow := func(t *testing.T, f *fixture, id string) string {
		t.Helper()
		var groups []string
		for i := range 35 {
			groups = append(groups, fmt.Sprintf("team-with-a-rather-long-name-%02d", i))
		}
		b, _ := json.Marshal(map[string]any{"access_token": "AT-2", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "RT-2",
			"id_token": f.token.idToken(t, map[string]any{"groups": groups})})
		answer := string(b)
		f.token.answer.Store(&answer)
		return f.seal(t, &session.Session{ID: id, Subject: "s", User: "u@example.com", Groups: []string{"team-a"},
			Created: f.now.Add(-time.Hour).Unix(), Expires: f.now.Add(time.Hour).Unix(), Renewed: f.now.Add(-time.Hour).Unix(),
			RefreshToken: "RT-1", TokenExpiry: f.now.Add(10 * time.Second).Unix(),
			IDToken: f.token.idToken(t, map[string]any{"groups": []string{"team-a"}}), IDTokenExpiry: f.now.Add(10 * time.Second).Unix()})
	}
	tooLarge := func(t *testing.T, w *httptest.ResponseRecorder) map[string]any {
		t.Helper()
		var body map[string]any
		json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != 403 || body["error"] != "identity_too_large" || body["limit"] != "forward_auth_answer" ||
			body["max_bytes"] != 4096.0 || body["bytes"].(float64) <= 4096 || !strings.Contains(fmt.Sprint(body["settings"]), "FORWARD_AUTH_ANSWER_MAX_BYTES") {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		if !strings.Contains(strings.Join(w.Header()["Set-Cookie"], "\n"), "authservice_session=;") || sessionFrom(setCookies(w)) != "" {
			t.Fatalf("Set-Cookie %q, want the session cleared and none set", w.Header()["Set-Cookie"])
		}
		t.Logf("the answer would take %v bytes, %v fit", body["bytes"], body["max_bytes"])
		return body
	}

	for _, proxy := range []string{"nginx", "ingress-nginx"} {
		t.Run(proxy+" API call", func(t *testing.T) {
			f := newFixture(t, env(proxy))
			hdr := described(proxy, "/api/x", map[string]string{"Accept": "application/json", "Cookie": cookieHeader(grow(t, f, "api"), "theme=dark")})
			body := tooLarge(t, verifyRequest(f, "127.0.0.1:5000", hdr))
			if !strings.Contains(fmt.Sprint(body["message"]), "could not be renewed") {
				t.Fatalf("message %q", body["message"])
			}
			if n := f.token.calls.Load(); n != 1 {
				t.Fatalf("%d refreshes", n)
			}
			if got := f.revocation(t); got != "refresh_token:RT-2" {
				t.Fatalf("revoked %q, want the refresh token the refresh returned", got)
			}
			if n := limitCount(f, "refresh", "forward_auth_answer", "refused"); n != 1 {
				t.Fatalf("identity_limits_total{refresh,forward_auth_answer,refused} = %v", n)
			}
			// Ended on every replica: the old cookie again is no session,
			// and nothing is redeemed again.
			if w := verifyRequest(f, "127.0.0.1:5000", hdr); w.Code != 401 || f.token.calls.Load() != 1 {
				t.Fatalf("the old cookie again: %d after %d refreshes", w.Code, f.token.calls.Load())
			}
		})
	}

	t.Run("nginx navigation", func(t *testing.T) {
		// nginx shows a page of its own for auth_request's 403: a
		// navigation gets the 401 that the recipe's error_page sends to the
		// start endpoint, whose answer reaches the browser as it is: the
		// page, the cookie cleared.
		f := newFixture(t, env("nginx"))
		cookie := cookieHeader(grow(t, f, "nav"))
		w := verifyRequest(f, "127.0.0.1:5000", described("nginx", "/notebook/x?a=1", map[string]string{"Accept": "text/html", "Cookie": cookie}))
		if w.Code != 401 || len(w.Header().Values("Set-Cookie")) != 0 {
			t.Fatalf("navigation: %d with %d Set-Cookie, want the 401 of the recipe's error_page", w.Code, len(w.Header().Values("Set-Cookie")))
		}
		if got := f.revocation(t); got != "refresh_token:RT-2" {
			t.Fatalf("revoked %q", got)
		}
		w = f.do("GET", "/authservice/start?rd=/notebook/x?a=1", map[string]string{"Accept": "text/html", "Cookie": cookie})
		if w.Code != 403 || !strings.Contains(w.Body.String(), "Identity too large for this gateway") ||
			!strings.Contains(w.Body.String(), "FORWARD_AUTH_ANSWER_MAX_BYTES") || !strings.Contains(w.Body.String(), "could not be renewed") {
			t.Fatalf("start: %d %.800s", w.Code, w.Body)
		}
		if !strings.Contains(strings.Join(w.Header()["Set-Cookie"], "\n"), "authservice_session=;") {
			t.Fatalf("start: the cookie is not cleared: %q", w.Header()["Set-Cookie"])
		}
		// Said once: the ended session is no session, and the start
		// endpoint starts a login, which the same bound judges.
		w = f.do("GET", "/authservice/start?rd=/notebook/x?a=1", map[string]string{"Accept": "text/html", "Cookie": cookie})
		if w.Code != 302 || !strings.HasPrefix(w.Header().Get("Location"), "/dex/auth?") {
			t.Fatalf("start again: %d to %q", w.Code, w.Header().Get("Location"))
		}
		if n := f.token.calls.Load(); n != 1 {
			t.Fatalf("%d refreshes", n)
		}
		if n := limitCount(f, "refresh", "forward_auth_answer", "refused"); n != 1 {
			t.Fatalf("identity_limits_total{refresh,forward_auth_answer,refused} = %v", n)
		}
	})

	t.Run("start endpoint", func(t *testing.T) {
		// A session due when the browser comes through the start endpoint
		// (a renewal sent there): its answer is bounded as the callback's.
		f := newFixture(t, env("nginx"))
		w := f.do("GET", "/authservice/start?rd=/notebook/x", map[string]string{"Accept": "application/json", "Cookie": cookieHeader(grow(t, f, "start"))})
		tooLarge(t, w)
		if got := f.revocation(t); got != "refresh_token:RT-2" {
			t.Fatalf("revoked %q", got)
		}
	})

	t.Run("decided before refreshing", func(t *testing.T) {
		// With a buffer the session's answer does not fit even with the
		// tokens it has, the refresh token is not redeemed (the provider
		// would rotate it away from the browser's cookie): the session
		// ends, and its own refresh token is revoked.
		f := newFixture(t, env("nginx", "FORWARD_AUTH_ANSWER_MAX_BYTES", "1024"))
		w := verifyRequest(f, "127.0.0.1:5000", described("nginx", "/api/x", map[string]string{"Accept": "application/json", "Cookie": cookieHeader(grow(t, f, "before"))}))
		var body map[string]any
		json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != 403 || body["limit"] != "forward_auth_answer" || body["max_bytes"] != 1024.0 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		if n := f.token.calls.Load(); n != 0 {
			t.Fatalf("the refresh token was redeemed %d times", n)
		}
		if got := f.revocation(t); got != "refresh_token:RT-1" {
			t.Fatalf("revoked %q, want the session's refresh token", got)
		}
	})

	t.Run("within the buffer", func(t *testing.T) {
		// The same refresh with nginx's buffer raised (and said so) is
		// renewed in one Set-Cookie; Caddy reads answers of any size.
		for _, e := range []map[string]string{env("nginx", "FORWARD_AUTH_ANSWER_MAX_BYTES", "16384"), env("caddy")} {
			f := newFixture(t, e)
			w := verifyRequest(f, "127.0.0.1:5000", described(e["FORWARD_AUTH_PROXY"], "/api/x", map[string]string{"Accept": "application/json", "Cookie": cookieHeader(grow(t, f, "fits"))}))
			if w.Code != 200 || len(w.Header().Values("Set-Cookie")) != 1 || len(w.Header().Get("Authorization")) < 2000 {
				t.Fatalf("%s: %d %q", e["FORWARD_AUTH_PROXY"], w.Code, w.Header().Values("Set-Cookie"))
			}
		}
	})
}
