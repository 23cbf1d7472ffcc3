package check

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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
