package check

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

func limitCount(f *fixture, source, limit, action string) float64 {
	m, _ := f.m.Registry().Gather()
	for _, mf := range m {
		if mf.GetName() != "oidc_authservice_identity_limits_total" {
			continue
		}
		for _, x := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range x.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["source"] == source && labels["limit"] == limit && labels["action"] == action {
				return x.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// A session sealed before the upgrade with a large ID token (securecookie's
// format took up to 8 cookies) whose refresh is due: the service decides
// before refreshing that the renewed session could not be stored in
// SESSION_MAX_COOKIES cookies, so it does not redeem the refresh token
// (which the provider would rotate away from the browser's cookie), ends
// the session on every replica and says why. Before, it refreshed, kept
// the renewed session in this replica's memory only and served it from
// there while the browser kept the old cookie.
func TestRefreshNotRedeemedWhenItsResultCannotBeStored(t *testing.T) {
	f := newFixture(t, map[string]string{"UPSTREAM_TOKEN": "id_token"})
	old := &session.Session{ID: "big", Subject: "s", User: "u@example.com", Created: f.now.Add(-time.Hour).Unix(),
		Expires: f.now.Add(time.Hour).Unix(), Renewed: f.now.Add(-time.Hour).Unix(), RefreshToken: "RT",
		TokenExpiry: f.now.Add(10 * time.Second).Unix(), IDToken: "eyJ." + strings.Repeat("g", 7000) + ".sig"}
	v1, err := f.codec.Seal("authservice_session", old) // securecookie's format, as earlier releases sealed it
	if err != nil || session.Count(v1) < 3 {
		t.Fatalf("the old session takes %d cookies (%v)", session.Count(v1), err)
	}
	h := map[string]string{"Cookie": "authservice_session=" + v1}
	w := f.do("GET", "/notebook/", h)
	if w.Code != 403 || !strings.Contains(w.Body.String(), "could not be renewed") || !strings.Contains(w.Body.String(), "SESSION_MAX_COOKIES") {
		t.Fatalf("answer %d: %.600s", w.Code, w.Body)
	}
	if n := f.token.calls.Load(); n != 0 {
		t.Fatalf("the refresh token was redeemed %d times", n)
	}
	if !strings.Contains(strings.Join(w.Header()["Set-Cookie"], "\n"), "authservice_session=;") {
		t.Fatalf("the cookie is not cleared: %v", w.Header()["Set-Cookie"])
	}
	// Ended on every replica: the same cookie again is no session.
	h["Accept"] = "application/json"
	if w := f.do("GET", "/notebook/", h); w.Code != 401 {
		t.Fatalf("the ended session again: %d %s", w.Code, w.Body)
	}
	if n := limitCount(f, "refresh", "session", "refused"); n != 1 {
		t.Fatalf("identity_limits_total{refresh,session,refused} = %v", n)
	}
	// The session's refresh token, which no cookie holds any longer, is
	// revoked at the provider.
	if got := f.revocation(t); got != "refresh_token:RT" {
		t.Fatalf("revoked %q, want the session's refresh token", got)
	}
}

// revocation is what the fake provider's revocation endpoint was sent
// next ("<hint>:<token>"): the service revokes in the background, so it
// waits for it (up to 10 s, then fails).
func (f *fixture) revocation(t *testing.T) string {
	t.Helper()
	select {
	case r := <-f.token.revoked:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("nothing was revoked at the provider")
		return ""
	}
}

// A refresh whose tokens come back larger than the cookies can hold ends
// the session cleanly: no successor lives on in this replica's memory
// while the browser holds a cookie the provider no longer honours.
func TestRefreshedSessionTooLargeEndsTheSession(t *testing.T) {
	f := newFixture(t, map[string]string{"STRICT_SESSION_VALIDATION": "true"})
	answer := fmt.Sprintf(`{"access_token":%q,"token_type":"Bearer","expires_in":3600,"refresh_token":"RT-2"}`, strings.Repeat("a", 9000))
	f.token.answer.Store(&answer)
	s := &session.Session{ID: "grow", Subject: "s", User: "u@example.com", Created: f.now.Add(-time.Hour).Unix(),
		Expires: f.now.Add(time.Hour).Unix(), Renewed: f.now.Add(-time.Hour).Unix(), RefreshToken: "RT-1", AccessToken: "AT-1",
		TokenExpiry: f.now.Add(10 * time.Second).Unix()}
	h := map[string]string{"Cookie": "authservice_session=" + f.seal(t, s), "Accept": "application/json"}
	w := f.do("GET", "/api/x", h)
	if w.Code != 403 {
		t.Fatalf("answer %d: %s", w.Code, w.Body)
	}
	var body map[string]any
	json.Unmarshal(w.Body.Bytes(), &body)
	if body["error"] != "identity_too_large" || body["limit"] != "session" || !strings.Contains(fmt.Sprint(body["message"]), "could not be renewed") {
		t.Fatalf("body %v", body)
	}
	if f.token.calls.Load() != 1 {
		t.Fatalf("token endpoint called %d times", f.token.calls.Load())
	}
	// The refresh token the refresh returned is stored nowhere: it is
	// revoked at the provider (RFC 7009), not left valid there.
	if got := f.revocation(t); got != "refresh_token:RT-2" {
		t.Fatalf("revoked %q, want the new refresh token", got)
	}
	// The old cookie again, on this very replica: no session served from
	// memory.
	if w := f.do("GET", "/api/x", h); w.Code != 401 {
		t.Fatalf("the old cookie after the failed renewal: %d %s (a successor served from memory?)", w.Code, w.Body)
	}
	if f.token.calls.Load() != 1 {
		t.Fatalf("token endpoint called %d times", f.token.calls.Load())
	}
}

// GROUPS_FILTER takes effect on sessions sealed before it was set, without
// a new login; beyond the limits such a session ends with the page.
func TestSessionsSealedUnderAnotherPolicyAreFiltered(t *testing.T) {
	f := newFixture(t, map[string]string{"GROUPS_FILTER": "^kubeflow-", "GROUPS_MAX": "2"})
	mk := func(groups ...string) string {
		return f.seal(t, &session.Session{ID: "i", Subject: "s", User: "u@example.com", Groups: groups, Created: f.now.Unix(), Expires: f.now.Add(time.Hour).Unix()})
	}
	w := f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + mk("acme/other", "kubeflow-a", "acme/x", "kubeflow-b")})
	if w.Code != 200 || w.Header().Get("Kubeflow-Groups") != "kubeflow-a,kubeflow-b" {
		t.Fatalf("%d groups %q", w.Code, w.Header().Get("Kubeflow-Groups"))
	}
	w = f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + mk("kubeflow-a", "kubeflow-b", "kubeflow-c")})
	if w.Code != 403 || !strings.Contains(w.Body.String(), "Too many groups") || !strings.Contains(w.Body.String(), "GROUPS_FILTER") {
		t.Fatalf("beyond GROUPS_MAX: %d %.300s", w.Code, w.Body)
	}
	if !strings.Contains(strings.Join(w.Header()["Set-Cookie"], "\n"), "authservice_session=;") {
		t.Fatal("the refused session's cookie is not cleared")
	}
}

// groupsAuth is an issuer whose tokens carry n groups.
type groupsAuth struct{ n int }

func (a groupsAuth) Authenticate(_ context.Context, raw string) (*authn.Identity, error) {
	var g []string
	for i := range a.n {
		g = append(g, fmt.Sprintf("gitlab:acme/team-%04d", i))
	}
	return &authn.Identity{Username: "ci@example.com", Groups: g, Issuer: "https://ci.example.com", Expiry: time.Now().Add(time.Hour)}, nil
}

// A bearer token whose groups exceed the limits gets 403 JSON with the
// figures (not a 401 that invites another try); before, its groups past
// the 256th were cut silently.
func TestBearerTokenBeyondTheLimits(t *testing.T) {
	for _, c := range []struct {
		n, status int
		env       map[string]string
	}{
		{10, 200, nil},
		{300, 403, nil},
		{300, 200, map[string]string{"GROUPS_FILTER_PREFIXES": "gitlab:acme/team-00"}},
		{300, 200, map[string]string{"GROUPS_OVERFLOW": "truncate"}},
	} {
		f := newFixtureWith(t, c.env, groupsAuth{c.n})
		w := f.do("GET", "/api/x", map[string]string{"Authorization": "Bearer a.b.c", "Accept": "application/json"})
		if w.Code != c.status {
			t.Fatalf("%d groups %v: %d %s", c.n, c.env, w.Code, w.Body)
		}
		if c.status == 403 {
			var body map[string]any
			json.Unmarshal(w.Body.Bytes(), &body)
			if body["error"] != "identity_too_large" || body["groups"] != float64(300) || body["max_groups"] != float64(256) {
				t.Fatalf("body %v", body)
			}
			if limitCount(f, "bearer", "groups", "refused") != 1 {
				t.Fatal("not counted")
			}
			continue
		}
		g := strings.Split(w.Header().Get("Kubeflow-Groups"), ",")
		switch {
		case c.env["GROUPS_OVERFLOW"] == "truncate" && len(g) != 256:
			t.Fatalf("truncated to %d groups", len(g))
		case c.env["GROUPS_FILTER_PREFIXES"] != "" && len(g) != 100:
			t.Fatalf("filtered to %d groups", len(g))
		}
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 212345: "212,345", 1234567: "1,234,567"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q", n, got)
		}
	}
}
