package check

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestVerifyEndpoint(t *testing.T) {
	f := newFixture(t, map[string]string{"SKIP_AUTH_URLS": "/public", "AUTHORIZATION_RULES_FILE": ""})
	valid := f.cookie(t, "user@example.com", []string{"g"}, f.now.Add(time.Hour))
	verify := func(remote string, hdr map[string]string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/authservice/verify", nil)
		r.RemoteAddr = remote
		r.Host = "auth.internal"
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		return w
	}
	fwd := func(uri string, extra map[string]string) map[string]string {
		h := map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "kf.example.com", "X-Forwarded-Uri": uri}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	// Authenticated: 200 with identity.
	w := verify("127.0.0.1:5000", fwd("/notebook/x", map[string]string{"Cookie": "authservice_session=" + valid}))
	if w.Code != 200 || w.Header().Get("Kubeflow-Userid") != "user@example.com" {
		t.Fatalf("authenticated: %d %v", w.Code, w.Header())
	}
	// Unauthenticated navigation: 401 by default (nginx).
	if w := verify("127.0.0.1:5000", fwd("/notebook/x", nil)); w.Code != 401 {
		t.Fatalf("unauthenticated: %d", w.Code)
	}
	// A skip path of the original request: 200 with empty identity headers,
	// which overwrite the client's in the proxy.
	w = verify("127.0.0.1:5000", fwd("/public/x", nil))
	if v, ok := w.Header()["Kubeflow-Userid"]; w.Code != 200 || !ok || v[0] != "" {
		t.Fatalf("skip path: %d %v", w.Code, w.Header())
	}
	// From an untrusted address the forwarded headers are ignored: a forged
	// X-Forwarded-Uri under the skip path does not skip authentication.
	if w := verify("10.1.2.3:5000", fwd("/public/x", nil)); w.Code != 401 {
		t.Fatalf("forged skip from an untrusted address: %d", w.Code)
	}
	// X-Original-URL (nginx) works as well.
	w = verify("127.0.0.1:5000", map[string]string{"X-Original-Url": "https://kf.example.com/public/x?a=1"})
	if w.Code != 200 {
		t.Fatalf("X-Original-URL skip: %d", w.Code)
	}
}

func TestVerifyRedirectMode(t *testing.T) {
	f := newFixture(t, map[string]string{"FORWARD_AUTH_REDIRECT": "true"})
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
