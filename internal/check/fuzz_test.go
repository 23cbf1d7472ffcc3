package check

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzSafeTarget: a return target is "/" or a path on this origin, or an
// absolute URL on an allowed host — never anything a browser could read as
// another origin.
func FuzzSafeTarget(f *testing.F) {
	fx := newFixture(f, map[string]string{"ALLOWED_REDIRECT_HOSTS": "*.apps.example.com"})
	for _, s := range []string{"http://kubeflow.example.com/a?b=c", "//evil.example", "/\\evil.example", "https:evil.example",
		"http://kubeflow.example.com/%2F%2Fevil.example", "https://user@evil.example/", "http://kubeflow.example.com/\r\nx",
		"HTTPS://evil.example/", "http://nb.apps.example.com.evil.org/", "http://xn--80ak6aa92e.com/", "http://a%25b.apps.example.com/"} {
		f.Add(s)
	}
	r := httptest.NewRequest("GET", "/authservice/oidc/callback", nil)
	r.Host = "kubeflow.example.com"
	f.Fuzz(func(t *testing.T, target string) {
		got := fx.h.safeTarget(r.Host, target)
		if got == "/" {
			return
		}
		if strings.HasPrefix(got, "/") {
			if strings.HasPrefix(got, "//") || strings.ContainsAny(got, "\\\r\n\t") || strings.HasPrefix(strings.ToLower(got), "/%2f") {
				t.Fatalf("%q → unsafe path %q", target, got)
			}
			return
		}
		u, err := url.Parse(got)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || !strings.HasSuffix(strings.ToLower(u.Hostname()), ".apps.example.com") {
			t.Fatalf("%q → %q is not an allowed absolute target", target, got)
		}
	})
}

// FuzzCallbackQuery: whatever the callback's query and cookies, the answer
// is a 4xx (there is no valid login state), never a 2xx, 3xx or 5xx.
func FuzzCallbackQuery(f *testing.F) {
	fx := newFixture(f, nil)
	f.Add("code=abc&state=AAAAAAAAAAAAAAAAAAAAAA", "authservice_state_AAAAAAAAAAAAAAAAAAAAAA=xyz")
	f.Add("error=access_denied&error_description=%3Cscript%3E", "")
	f.Add("state=../../x&code=", "authservice_state_../../x=1")
	f.Fuzz(func(t *testing.T, query, cookie string) {
		r := httptest.NewRequest("GET", "/authservice/oidc/callback", nil)
		r.URL.RawQuery = query
		r.Header.Set("Cookie", cookie)
		w := httptest.NewRecorder()
		fx.h.ServeHTTP(w, r)
		if w.Code < 400 || w.Code >= 500 {
			t.Fatalf("query %q cookie %q → %d", query, cookie, w.Code)
		}
		if strings.Contains(w.Body.String(), "<script>") {
			t.Fatal("unescaped input in the page")
		}
	})
}

// FuzzForwardedHeaders: the verify endpoint never answers 200 with an
// identity for a request without a session, whatever the forwarding headers.
func FuzzForwardedHeaders(f *testing.F) {
	fx := newFixture(f, nil)
	f.Add("GET", "kf.example.com", "/x?y=1", "https://kf.example.com/z", "https")
	f.Add("get", "evil\r\nx", "//evil", "javascript:x", "")
	f.Fuzz(func(t *testing.T, method, host, uri, original, proto string) {
		r := httptest.NewRequest("GET", "/authservice/verify", nil)
		r.RemoteAddr = "127.0.0.1:1"
		for k, v := range map[string]string{"X-Forwarded-Method": method, "X-Forwarded-Host": host, "X-Forwarded-Uri": uri,
			"X-Original-Url": original, "X-Forwarded-Proto": proto, "X-Original-Method": method} {
			if !strings.ContainsAny(v, "\r\n\x00") {
				r.Header.Set(k, v)
			}
		}
		w := httptest.NewRecorder()
		fx.h.ServeHTTP(w, r)
		if w.Code >= 500 || (w.Code == http.StatusOK && w.Header().Get("Kubeflow-Userid") != "") {
			t.Fatalf("→ %d %v", w.Code, w.Header())
		}
	})
}

// FuzzForwardedURL: a forwarded URL with a byte no proxy sends as it is (a
// raw "#", a space or control character, a raw byte above 0x7E) is always
// refused with 400, from nginx's X-Original-URL and Caddy's X-Forwarded-Uri
// alike; nothing is ever answered 5xx or 200 with an identity without a
// session.
func FuzzForwardedURL(f *testing.F) {
	nginx := newFixture(f, map[string]string{"SKIP_AUTH_URLS": "/public"})
	caddy := newFixture(f, map[string]string{"SKIP_AUTH_URLS": "/public", "FORWARD_AUTH_PROXY": "caddy"})
	f.Add("/public#/../admin")
	f.Add("/a?x=1#f")
	f.Add("/a b")
	f.Add("/\xc3\xa9")
	f.Add("/a|b^c?x=%zz")
	f.Fuzz(func(t *testing.T, uri string) {
		if strings.ContainsAny(uri, "\r\n") {
			return // not a header value at all
		}
		bad := strings.ContainsFunc(uri, func(r rune) bool { return r == '#' || r <= ' ' || r >= 0x7f })
		for _, c := range []struct {
			fx  *fixture
			hdr map[string]string
		}{
			{nginx, map[string]string{"X-Original-Method": "GET", "X-Original-Url": "https://kf.example.com" + uri}},
			{caddy, map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "kf.example.com", "X-Forwarded-Uri": uri}},
		} {
			w := verifyRequest(c.fx, "127.0.0.1:1", c.hdr)
			if w.Code >= 500 || (w.Code == http.StatusOK && w.Header().Get("Kubeflow-Userid") != "") || (bad && w.Code != http.StatusBadRequest) {
				t.Fatalf("%q → %d %v", uri, w.Code, w.Header())
			}
		}
	})
}

// FuzzBackchannelLogoutToken: no logout token this provider did not sign is
// accepted.
func FuzzBackchannelLogoutToken(f *testing.F) {
	fx := newFixture(f, nil)
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, token string) {
		r := httptest.NewRequest("POST", "/authservice/oidc/backchannel-logout", strings.NewReader(url.Values{"logout_token": {token}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		fx.h.d.Backchannel.ServeHTTP(w, r)
		if w.Code != http.StatusBadRequest {
			t.Fatalf("token %q → %d", token, w.Code)
		}
	})
}
