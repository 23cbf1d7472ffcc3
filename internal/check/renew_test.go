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
		f := newFixture(t, map[string]string{"FORWARD_AUTH_PROXY": "nginx"})
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

func checkCount(f *fixture, decision, reason string) float64 {
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
				return x.GetCounter().GetValue()
			}
		}
	}
	return 0
}
