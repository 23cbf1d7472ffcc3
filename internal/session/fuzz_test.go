package session

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// FuzzOpenSession: no input opens as a session unless it was sealed with the
// key, and nothing panics — including chunk reassembly from a Cookie header.
func FuzzOpenSession(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	c := NewCodec([][]byte{keyA}, time.Hour, func() time.Time { return now })
	sealed, _ := c.SealSession("authservice_session", &Session{User: "u", Expires: now.Add(time.Hour).Unix()})
	f.Add("authservice_session=" + sealed)
	v1, _ := c.Seal("authservice_session", &Session{User: "u", Expires: now.Add(time.Hour).Unix()}) // sealed by an earlier release
	f.Add("authservice_session=" + v1)
	f.Add("authservice_session=~" + sealed[1:30])
	f.Add("authservice_session=2." + sealed + "; authservice_session_1=" + sealed)
	f.Add("authservice_session=\"" + sealed[:20] + "\"")
	f.Add("a=b; authservice_session=; authservice_session_1=x")
	f.Fuzz(func(t *testing.T, cookie string) {
		h := http.Header{"Cookie": {cookie}}
		v, _ := NewCookies(CookieOptions{Name: "authservice_session"}).ReadSession(h, false)
		s, err := c.OpenSession("authservice_session", v)
		// Fuzz workers seal their own copy (random IV), so the property is
		// about content: nothing but what was sealed ever opens.
		if err == nil && (s.User != "u" || s.Expires != now.Add(time.Hour).Unix() || len(s.Groups) != 0) {
			t.Fatalf("forged content opened: %q → %+v", v, s)
		}
		CookiesWithPrefix(h, "authservice_state_", 64)
	})
}

// FuzzLoginState: a login-state cookie never opens unless sealed.
func FuzzLoginState(f *testing.F) {
	c := NewCodec([][]byte{keyA}, time.Hour, time.Now)
	ls := &LoginState{State: "AAAAAAAAAAAAAAAAAAAAAA", Verifier: "v", Nonce: "n", URL: "http://h/p", Created: 1}
	good, _ := c.Seal("authservice_state_"+ls.State, ls)
	f.Add(ls.State, good)
	f.Add("BBBBBBBBBBBBBBBBBBBBBB", good)
	f.Add("../../etc", "x")
	f.Fuzz(func(t *testing.T, state, value string) {
		var got LoginState
		err := c.Open("authservice_state_"+state, value, &got)
		if err == nil && (state != ls.State || got != *ls) {
			t.Fatalf("forged login state opened: %q %q → %+v", state, value, got)
		}
		// A state that passes is what a cookie name and a query carry
		// unchanged, of the length a login makes (16 random bytes).
		if ValidState(state) && (url.QueryEscape(state) != state || len(state) != len(ls.State)) {
			t.Fatalf("ValidState(%q) accepts what a login never makes", state)
		}
	})
}
