package check

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

func verifyRequest(f *fixture, remote string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", "/authservice/verify", nil)
	r.RemoteAddr = remote
	r.Host = "auth.internal"
	for k, v := range hdr {
		r.Header.Add(k, v)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

func TestVerifyEndpoint(t *testing.T) {
	for _, kind := range []string{"nginx", "caddy"} {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, map[string]string{"SKIP_AUTH_URLS": "/public", "AUTHORIZATION_RULES_FILE": "", "FORWARD_AUTH_PROXY": kind})
			valid := f.cookie(t, "user@example.com", []string{"g"}, f.now.Add(time.Hour))
			// fwd describes the original request https://kf.example.com<uri>
			// in the headers this kind of proxy sets.
			fwd := func(uri string, extra map[string]string) map[string]string {
				h := map[string]string{"X-Original-Method": "GET", "X-Original-Url": "https://kf.example.com" + uri}
				if kind == "caddy" {
					h = map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "kf.example.com", "X-Forwarded-Uri": uri}
				}
				for k, v := range extra {
					h[k] = v
				}
				return h
			}
			// Authenticated: 200 with identity.
			w := verifyRequest(f, "127.0.0.1:5000", fwd("/notebook/x", map[string]string{"Cookie": "__Host-authservice_session=" + valid}))
			if w.Code != 200 || w.Header().Get("Kubeflow-Userid") != "user@example.com" {
				t.Fatalf("authenticated: %d %v", w.Code, w.Header())
			}
			// Unauthenticated navigation: 401 by default (nginx).
			if w := verifyRequest(f, "127.0.0.1:5000", fwd("/notebook/x", nil)); w.Code != 401 {
				t.Fatalf("unauthenticated: %d", w.Code)
			}
			// A skip path of the original request: 200 with empty identity
			// headers, which overwrite the client's in the proxy.
			w = verifyRequest(f, "127.0.0.1:5000", fwd("/public/x?a=1", nil))
			if v, ok := w.Header()["Kubeflow-Userid"]; w.Code != 200 || !ok || v[0] != "" {
				t.Fatalf("skip path: %d %v", w.Code, w.Header())
			}
			// From an untrusted address the forwarded headers are ignored: a
			// forged URI under the skip path does not skip authentication.
			if w := verifyRequest(f, "10.1.2.3:5000", fwd("/public/x", nil)); w.Code != 401 {
				t.Fatalf("forged skip from an untrusted address: %d", w.Code)
			}
			// Headers of the other kind are the client's: they change nothing.
			spoof := map[string]string{"X-Forwarded-Uri": "/public/", "X-Forwarded-Method": "OPTIONS", "X-Forwarded-Host": "other.example.com", "X-Forwarded-Proto": "http"}
			if kind == "caddy" {
				spoof = map[string]string{"X-Original-Url": "http://other.example.com/public/", "X-Original-Method": "OPTIONS", "X-Original-Uri": "/public/"}
			}
			if w := verifyRequest(f, "127.0.0.1:5000", fwd("/notebook/x", spoof)); w.Code != 401 {
				t.Fatalf("the other kind's headers changed the decision: %d", w.Code)
			}
			// A missing or repeated header of this kind: 400.
			missing := fwd("/notebook/x", nil)
			for k := range missing {
				if k != "X-Forwarded-Proto" {
					delete(missing, k)
					break
				}
			}
			if w := verifyRequest(f, "127.0.0.1:5000", missing); w.Code != 400 {
				t.Fatalf("a header missing: %d", w.Code)
			}
			r := httptest.NewRequest("GET", "/authservice/verify", nil)
			r.RemoteAddr = "127.0.0.1:1"
			for k, v := range fwd("/notebook/x", nil) {
				r.Header.Add(k, v)
			}
			if kind == "caddy" {
				r.Header.Add("X-Forwarded-Uri", "/public/")
			} else {
				r.Header.Add("X-Original-Url", "https://kf.example.com/public/")
			}
			w = httptest.NewRecorder()
			f.h.ServeHTTP(w, r)
			if w.Code != 400 {
				t.Fatalf("a repeated header: %d", w.Code)
			}
		})
	}
	t.Run("ingress-nginx: X-Original-URI (not always set by it) is never read", func(t *testing.T) {
		f := newFixture(t, map[string]string{"SKIP_AUTH_URLS": "/public", "FORWARD_AUTH_PROXY": "ingress-nginx"})
		w := verifyRequest(f, "127.0.0.1:5000", map[string]string{"X-Original-Method": "GET", "X-Original-Url": "https://kf.example.com/notebook/x", "X-Original-Uri": "/public/x"})
		if w.Code != 401 {
			t.Fatalf("a client-sent X-Original-URI: %d", w.Code)
		}
	})
}

func TestVerifyRedirectMode(t *testing.T) {
	f := newFixture(t, map[string]string{"FORWARD_AUTH_REDIRECT": "true", "FORWARD_AUTH_PROXY": "traefik"})
	r := httptest.NewRequest("GET", "/authservice/verify", nil)
	r.RemoteAddr = "127.0.0.1:1"
	r.Header.Set("X-Forwarded-Method", "GET")
	r.Header.Set("X-Forwarded-Proto", "https")
	r.Header.Set("X-Forwarded-Host", "kf.example.com")
	r.Header.Set("X-Forwarded-Uri", "/deep?x=1")
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	if w.Code != 302 || !strings.HasPrefix(w.Header().Get("Location"), "/dex/auth?") {
		t.Fatalf("%d %s", w.Code, w.Header().Get("Location"))
	}
	c := w.Result().Cookies()
	if len(c) != 1 || !c[0].Secure {
		t.Fatalf("state cookie %+v (must be Secure: the original request was https)", c)
	}
}

// A target on an allowed host whose host does not survive being written
// back into a URL (%25 decodes to %) is refused, not a panic.
func TestStartEndpointAllowedHosts(t *testing.T) {
	f := newFixture(t, map[string]string{"ALLOWED_REDIRECT_HOSTS": "*.example.com"})
	for target, want := range map[string]int{
		"/authservice/start?rd=http://a%25b.example.com/":         400,
		"/authservice/start?rd=http%3A%2F%2Fa%2525b.example.com/": 400,
		"/authservice/start?rd=http://nb.example.com/lab":         302,
	} {
		if w := f.do("GET", target, nil); w.Code != want {
			t.Errorf("%s: %d, want %d", target, w.Code, want)
		}
	}
}

func TestStartEndpoint(t *testing.T) {
	f := newFixture(t, nil)
	cases := map[string]int{
		"/authservice/start?rd=http://kubeflow.example.com/notebook/x?a=1&b=2": 302,
		"/authservice/start?rd=%2Fpipeline%2F":                                 302,
		"/authservice/start?rd=/pipeline/":                                     302,
		"/authservice/start":                                                   302,
		"/authservice/start?rd=https://evil.example/":                          400,
		"/authservice/start?rd=//evil.example/":                                400,
		"/authservice/start?rd=javascript:alert(1)":                            400,
	}
	for target, want := range cases {
		w := f.do("GET", target, nil)
		if w.Code != want {
			t.Errorf("%s: %d, want %d", target, w.Code, want)
		}
	}
	w := f.do("GET", "/authservice/start?rd=http://kubeflow.example.com/notebook/x?a=1&b=2", nil)
	var found bool
	for _, c := range w.Result().Cookies() {
		if strings.HasPrefix(c.Name, "authservice_state_") {
			found = true
		}
	}
	if !found {
		t.Fatal("no login state cookie")
	}
}

// A forwarded URL that no proxy would have sent as it is — a raw "#" (nginx
// passes it; parsed as a URL everything after it would be cut off as a
// fragment while the upstream gets it in its path), a space, a control
// character, a raw byte above 0x7E — is refused with 400, never judged as
// the part before it. What proxies do pass as it is keeps working.
func TestVerifyRefusesURLsNoProxySendsAsTheyAre(t *testing.T) {
	for _, kind := range []string{"nginx", "caddy"} {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, map[string]string{"SKIP_AUTH_URLS": "/public", "FORWARD_AUTH_PROXY": kind})
			valid := f.cookie(t, "user@example.com", []string{"g"}, f.now.Add(time.Hour))
			fwd := func(uri string) map[string]string {
				h := map[string]string{"X-Original-Method": "GET", "X-Original-Url": "https://kf.example.com" + uri, "Cookie": "__Host-authservice_session=" + valid}
				if kind == "caddy" {
					h = map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "kf.example.com", "X-Forwarded-Uri": uri,
						"Cookie": "__Host-authservice_session=" + valid}
				}
				return h
			}
			for _, uri := range []string{
				"/public#/../admin/x", "/public/#", "/x#", "/a?x=1#frag", "/public?a=1#/../../admin",
				"/a b", "/a?x=1 2", "/a\tb", "/a\x00b", "/a\x01b", "/a\x1fb", "/a\x7fb", "/a\rb",
				"/a\x80b", "/\xc3\xa9t\xc3\xa9", "/a?x=\xc3\xa9", "/\xff",
			} {
				w := verifyRequest(f, "127.0.0.1:5000", fwd(uri))
				if w.Code != 400 || w.Header().Get("Kubeflow-Userid") != "" {
					t.Errorf("%q: %d %v, want 400 without identity", uri, w.Code, w.Header().Get("Kubeflow-Userid"))
				}
				if !strings.Contains(w.Body.String(), "bad_request") {
					t.Errorf("%q: body %s", uri, w.Body)
				}
			}
			// Sent as they are by nginx (and encoded by Caddy): judged.
			for _, uri := range []string{"/a%23b", "/a|b^c", "/a[b]", "/a{b}", "/a`b", "/a\"b", "/a<b>", "/a?x=%zz", "/a?q=a+b%20c", "/a%2Fb", "/a~b!$&'()*+,;=:@"} {
				if w := verifyRequest(f, "127.0.0.1:5000", fwd(uri)); w.Code != 200 || w.Header().Get("Kubeflow-Userid") != "user@example.com" {
					t.Errorf("%q: %d, want 200 as the user", uri, w.Code)
				}
			}
		})
	}
}

// The forward-auth allow answer carries the Authorization header the
// upstream gets, which every recipe copies (docs/forward-auth.md), decided
// as for Envoy: empty (the upstream gets none) where it held a credential of
// this gateway — a bearer token the service accepts, a session value sent
// as a bearer, either also next to the session cookie —, the token of
// UPSTREAM_TOKEN in its place, the client's own with UPSTREAM_BEARER=keep,
// on a skip path, or when a cookie authenticated. Caddy and nginx copy an
// empty value (Caddy 2.6 would copy a missing header as its placeholder's
// text); Traefik copies an empty value as an empty header and removes the
// request's header when the answer has none, so for Traefik empty headers
// are left out.
func TestVerifyUpstreamAuthorization(t *testing.T) {
	tok := strings.Repeat("a", 40) + "." + strings.Repeat("b", 40) + "." + strings.Repeat("c", 40)
	for _, kind := range []string{"nginx", "ingress-nginx", "caddy", "traefik"} {
		t.Run(kind, func(t *testing.T) {
			newF := func(env map[string]string) *fixture {
				e := map[string]string{"SKIP_AUTH_URLS": "/public", "FORWARD_AUTH_PROXY": kind}
				for k, v := range env {
					e[k] = v
				}
				return newFixtureWith(t, e, fixedToken{raw: tok, exp: time.Now().Add(time.Hour)})
			}
			fwd := func(uri string, extra map[string]string) map[string]string {
				h := map[string]string{"X-Original-Method": "GET", "X-Original-Url": "https://kf.example.com" + uri}
				if kind == "caddy" || kind == "traefik" {
					h = map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "kf.example.com", "X-Forwarded-Uri": uri}
				}
				for k, v := range extra {
					h[k] = v
				}
				return h
			}
			// upstream is the header the proxy gives the upstream from
			// the answer: "" for none.
			upstream := func(t *testing.T, f *fixture, uri string, hdr map[string]string, name string) string {
				t.Helper()
				w := verifyRequest(f, "127.0.0.1:5000", fwd(uri, hdr))
				if w.Code != 200 {
					t.Fatalf("%s: %d %s", uri, w.Code, w.Body)
				}
				v, ok := w.Header()[name]
				switch {
				case kind == "traefik" && ok && len(v) == 1 && v[0] == "":
					t.Fatalf("%s: an empty %s for Traefik, which copies it as an empty header", uri, name)
				case kind != "traefik" && !ok:
					t.Fatalf("%s: no %s in the answer: the proxy would keep the client's (Caddy 2.6: its placeholder)", uri, name)
				case len(v) > 1:
					t.Fatalf("%s: %s %q", uri, name, v)
				case ok:
					return v[0]
				}
				return ""
			}
			f := newF(nil)
			sess := f.cookie(t, "user@example.com", []string{"g"}, f.now.Add(time.Hour))
			cookie := "__Host-authservice_session=" + sess
			for _, c := range []struct {
				name string
				hdr  map[string]string
				want string
			}{
				{"a bearer token the service accepted", map[string]string{"Authorization": "Bearer " + tok}, ""},
				{"a session value as a bearer", map[string]string{"Authorization": "Bearer " + sess}, ""},
				{"a session value as a bearer next to the cookie", map[string]string{"Cookie": cookie, "Authorization": "Bearer " + sess}, ""},
				{"a session cookie, the application's own Authorization", map[string]string{"Cookie": cookie, "Authorization": "Basic dTpw"}, "Basic dTpw"},
				{"a session cookie, a bearer value that is no session", map[string]string{"Cookie": cookie, "Authorization": "Bearer app-key"}, "Bearer app-key"},
				{"a bearer token the service accepts next to the cookie", map[string]string{"Cookie": cookie, "Authorization": "Bearer " + tok}, ""},
				{"a session cookie, a JWT the service does not accept", map[string]string{"Cookie": cookie, "Authorization": "Bearer x.y.z"}, "Bearer x.y.z"},
				{"a session cookie, no Authorization", map[string]string{"Cookie": cookie}, ""},
			} {
				if got := upstream(t, f, "/notebook/x", c.hdr, "Authorization"); got != c.want {
					t.Errorf("%s: upstream Authorization %q, want %q", c.name, got, c.want)
				}
			}
			// A skip path passes the client's Authorization, as with Envoy
			// (Dex's token endpoint reads client credentials from it).
			if got := upstream(t, f, "/public/x", map[string]string{"Authorization": "Basic Y2xpZW50OnNlY3JldA=="}, "Authorization"); got != "Basic Y2xpZW50OnNlY3JldA==" {
				t.Errorf("skip path: upstream Authorization %q", got)
			}
			if got := upstream(t, f, "/public/x", map[string]string{"Kubeflow-Userid": "admin"}, "Kubeflow-Userid"); got != "" {
				t.Errorf("skip path: upstream Kubeflow-Userid %q", got)
			}
			// Only the service's cookies: the upstream gets no Cookie.
			if got := upstream(t, f, "/notebook/x", map[string]string{"Cookie": cookie}, "Cookie"); got != "" {
				t.Errorf("only the service's cookies: upstream Cookie %q", got)
			}

			keep := newF(map[string]string{"UPSTREAM_BEARER": "keep"})
			if got := upstream(t, keep, "/notebook/x", map[string]string{"Authorization": "Bearer " + tok}, "Authorization"); got != "Bearer "+tok {
				t.Errorf("UPSTREAM_BEARER=keep: upstream Authorization %q", got)
			}
			if got := upstream(t, keep, "/notebook/x", map[string]string{"Cookie": cookie, "Authorization": "Bearer " + tok}, "Authorization"); got != "Bearer "+tok {
				t.Errorf("UPSTREAM_BEARER=keep, next to the cookie: upstream Authorization %q", got)
			}
			if got := upstream(t, keep, "/notebook/x", map[string]string{"Authorization": "Bearer " + sess}, "Authorization"); got != "" {
				t.Errorf("UPSTREAM_BEARER=keep, a session value as a bearer: upstream Authorization %q", got)
			}

			issued := newF(map[string]string{"UPSTREAM_TOKEN": "issued"})
			issued.h.d.Upstream = fakeSigner{}
			for name, hdr := range map[string]map[string]string{
				"bearer token":   {"Authorization": "Bearer " + tok},
				"session cookie": {"Cookie": cookie, "Authorization": "Basic dTpw"},
			} {
				want := "Bearer issued-for-user@example.com"
				if name == "bearer token" {
					want = "Bearer issued-for-system:serviceaccount:ns:sa"
				}
				if got := upstream(t, issued, "/notebook/x", hdr, "Authorization"); got != want {
					t.Errorf("UPSTREAM_TOKEN=issued, %s: upstream Authorization %q, want %q", name, got, want)
				}
			}

			idt := newF(map[string]string{"UPSTREAM_TOKEN": "id_token"})
			id := fakeJWT(idt.now.Add(time.Hour).Unix())
			withID := "__Host-authservice_session=" + idt.seal(t, &session.Session{ID: "i", Subject: "s", User: "user@example.com",
				Created: idt.now.Unix(), Expires: idt.now.Add(time.Hour).Unix(), IDToken: id, IDTokenExpiry: idt.now.Add(time.Hour).Unix()})
			for _, a := range []string{"", "Bearer " + tok, "Basic dTpw"} {
				if got := upstream(t, idt, "/notebook/x", map[string]string{"Cookie": withID, "Authorization": a}, "Authorization"); got != "Bearer "+id {
					t.Errorf("UPSTREAM_TOKEN=id_token, client Authorization %q: upstream Authorization %q", a, got)
				}
			}
		})
	}
}

// Envoy: a session value or a bearer token the service accepts, sent next
// to the session cookie that authenticated the request (a client that
// sends both), is removed like one sent alone; other values stay.
func TestCredentialNextToTheCookieIsNotForwarded(t *testing.T) {
	tok := strings.Repeat("a", 40) + "." + strings.Repeat("b", 40) + "." + strings.Repeat("c", 40)
	f := newFixtureWith(t, nil, fixedToken{raw: tok, exp: time.Now().Add(time.Hour)})
	v := f.cookie(t, "u@example.com", nil, f.now.Add(time.Hour))
	for a, removed := range map[string]bool{"Bearer " + v: true, "Bearer " + tok: true, "Bearer x.y.z": false, "Bearer app-key": false, "Basic dTpw": false} {
		w := f.do("GET", "/pipeline/apis/v2beta1/runs", map[string]string{"Cookie": "authservice_session=" + v + "; theme=dark", "Authorization": a})
		if rm := w.Header().Get("X-Envoy-Auth-Headers-To-Remove"); w.Code != 200 || w.Header().Get("Kubeflow-Userid") != "u@example.com" ||
			strings.HasSuffix(rm, ",authorization") != removed {
			t.Errorf("Authorization %.20q: %d, headers-to-remove %q, want authorization removed: %v", a, w.Code, rm, removed)
		}
	}
}

// A forward-auth upstream handed a token this service accepts (the ID
// token of UPSTREAM_TOKEN=id_token with ACCEPT_PROVIDER_ID_TOKENS, a
// client's token with UPSTREAM_BEARER=keep) is named in one warning per
// process: nothing behind the proxy removes it after the check.
func TestVerifyWarnsOfReplayableUpstreamTokens(t *testing.T) {
	tok := strings.Repeat("a", 40) + "." + strings.Repeat("b", 40) + "." + strings.Repeat("c", 40)
	fwd := func(extra map[string]string) map[string]string {
		h := map[string]string{"X-Original-Method": "GET", "X-Original-Url": "https://kf.example.com/notebook/x"}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	for _, c := range []struct {
		env  map[string]string
		hdr  func(f *fixture) map[string]string
		want string
	}{
		{map[string]string{"UPSTREAM_TOKEN": "id_token"}, func(f *fixture) map[string]string {
			return map[string]string{"Cookie": "__Host-authservice_session=" + f.seal(t, &session.Session{ID: "i", Subject: "s", User: "u@example.com",
				Created: f.now.Unix(), Expires: f.now.Add(time.Hour).Unix(), IDToken: fakeJWT(f.now.Add(time.Hour).Unix()), IDTokenExpiry: f.now.Add(time.Hour).Unix()})}
		}, "ACCEPT_PROVIDER_ID_TOKENS=false"},
		{map[string]string{"UPSTREAM_BEARER": "keep"}, func(*fixture) map[string]string {
			return map[string]string{"Authorization": "Bearer " + tok}
		}, "UPSTREAM_BEARER=remove"},
	} {
		for _, safe := range []bool{false, true} {
			env := map[string]string{}
			for k, v := range c.env {
				env[k] = v
			}
			if safe && c.env["UPSTREAM_TOKEN"] == "id_token" {
				env["ACCEPT_PROVIDER_ID_TOKENS"] = "false"
			} else if safe {
				env["UPSTREAM_BEARER"] = "remove"
			}
			f := newFixtureWith(t, env, fixedToken{raw: tok, exp: time.Now().Add(time.Hour)})
			core, logs := observer.New(zap.WarnLevel)
			f.h.log = zap.New(core)
			for range 3 {
				if w := verifyRequest(f, "127.0.0.1:5000", fwd(c.hdr(f))); w.Code != 200 {
					t.Fatalf("%v: %d", env, w.Code)
				}
			}
			n := 0
			for _, e := range logs.All() {
				if strings.Contains(e.Message, c.want) {
					n++
				}
			}
			if want := map[bool]int{false: 1, true: 0}[safe]; n != want {
				t.Errorf("%v: %d warnings naming %s, want %d", env, n, c.want, want)
			}
			// Envoy's layouts remove the token after the check: no warning.
			f.do("GET", "/notebook/x", c.hdr(f))
			if n2 := len(logs.All()); n2 != n {
				t.Errorf("%v: an ext_authz check warned", env)
			}
		}
	}
}

// A request whose Authorization holds more than one credential — sent twice,
// or in one line as Envoy merges a repeated header ("Basic x,Bearer y") —
// is refused with 400, for Envoy and forward auth alike: only one could be
// judged, and a credential of this gateway in another (a session value, a
// token the service accepts) would reach the upstream, which could present
// it here as the user. Before, the first was judged and the rest passed on.
func TestSeveralCredentialsInAuthorization(t *testing.T) {
	for _, proxy := range []string{"", "nginx", "caddy"} {
		t.Run("front="+proxy, func(t *testing.T) {
			env := map[string]string{}
			if proxy != "" {
				env["FORWARD_AUTH_PROXY"] = proxy
			}
			f := newFixture(t, env)
			sess := f.cookie(t, "u@example.com", []string{"g"}, f.now.Add(time.Hour))
			send := func(auth ...string) *httptest.ResponseRecorder {
				target, hdr := "/notebook/x", map[string]string{}
				if proxy != "" {
					target, hdr = "/authservice/verify", described(proxy, "/notebook/x", nil)
				}
				r := httptest.NewRequest("GET", target, nil)
				r.RemoteAddr, r.Host = "127.0.0.1:5000", "kubeflow.example.com"
				for k, v := range hdr {
					r.Header.Set(k, v)
				}
				r.Header.Set("Accept", "application/json")
				r.Header.Set("Cookie", "authservice_session="+sess)
				for _, a := range auth {
					r.Header.Add("Authorization", a)
				}
				w := httptest.NewRecorder()
				f.h.ServeHTTP(w, r)
				return w
			}
			for name, auth := range map[string][]string{
				"the application's Basic, then a session value as a bearer": {"Basic dTpw", "Bearer " + sess},
				"a session value as a bearer, then the application's Basic": {"Bearer " + sess, "Basic dTpw"},
				"two Basic credentials":                            {"Basic dTpw", "Basic eA=="},
				"Envoy's merged line: Basic, then a session value": {"Basic dTpw,Bearer " + sess},
				"Envoy's merged line: a session value, then Basic": {"Bearer " + sess + ",Basic dTpw"},
			} {
				w := send(auth...)
				if w.Code != 400 || w.Header().Get("Kubeflow-Userid") != "" || strings.Contains(strings.Join(w.Header().Values("Authorization"), ","), sess) {
					t.Errorf("%s: %d %v, want 400 and nothing handed on", name, w.Code, w.Header())
				}
			}
			// One credential whose auth-params have commas passes on as it is.
			sig := "AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=fe5f80f7"
			w := send(sig)
			if w.Code != 200 || w.Header().Get("Kubeflow-Userid") != "u@example.com" {
				t.Fatalf("SigV4 Authorization next to the session: %d %s", w.Code, w.Body)
			}
			if proxy != "" && w.Header().Get("Authorization") != sig {
				t.Fatalf("SigV4 Authorization: the upstream gets %q", w.Header().Get("Authorization"))
			}
			if proxy == "" && strings.Contains(w.Header().Get("X-Envoy-Auth-Headers-To-Remove"), "authorization") {
				t.Fatalf("SigV4 Authorization removed: %q", w.Header().Get("X-Envoy-Auth-Headers-To-Remove"))
			}
		})
	}
}
