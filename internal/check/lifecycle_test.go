package check

import (
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

func (f *fixture) seal(t testing.TB, s *session.Session) string {
	t.Helper()
	v, err := f.codec.SealSession("authservice_session", s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestIdleTimeout(t *testing.T) {
	f := newFixture(t, map[string]string{"SESSION_IDLE_TIMEOUT": "10m"})
	base := session.Session{ID: "i", Subject: "s", User: "u@x", Created: f.now.Add(-time.Hour).Unix(), Expires: f.now.Add(time.Hour).Unix()}

	idle := base
	idle.Active = f.now.Add(-11 * time.Minute).Unix()
	if w := f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + f.seal(t, &idle), "Accept": "application/json"}); w.Code != 401 {
		t.Fatalf("idle session: %d", w.Code)
	}

	// Active 2 minutes ago: allowed, and re-sealed with a fresh activity
	// stamp (a tenth of the timeout has passed).
	active := base
	active.Active = f.now.Add(-2 * time.Minute).Unix()
	w := f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + f.seal(t, &active)})
	if w.Code != 200 {
		t.Fatalf("active session: %d", w.Code)
	}
	var renewed string
	for _, c := range w.Result().Cookies() {
		if c.Name == "authservice_session" {
			renewed = c.Value
		}
	}
	s, err := f.codec.OpenSession("authservice_session", renewed)
	if err != nil || s.Active != f.now.Unix() || s.User != "u@x" {
		t.Fatalf("renewed cookie: %+v %v", s, err)
	}

	// Active a moment ago: no new cookie.
	fresh := base
	fresh.Active = f.now.Add(-5 * time.Second).Unix()
	if w := f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + f.seal(t, &fresh)}); w.Code != 200 || len(w.Result().Cookies()) != 0 {
		t.Fatalf("fresh session: %d, cookies %v", w.Code, w.Result().Cookies())
	}
}

// The fixture's provider has no userinfo endpoint, so strict validation
// can never succeed: it behaves as a provider outage.
func TestStrictValidationGraceDuringOutage(t *testing.T) {
	f := newFixture(t, map[string]string{"STRICT_SESSION_VALIDATION": "true", "STRICT_SESSION_VALIDATION_INTERVAL": "1m",
		"STRICT_SESSION_VALIDATION_GRACE": "5m"})
	mk := func(renewed time.Duration) string {
		return f.seal(t, &session.Session{ID: "g", Subject: "s", User: "u@x", Created: f.now.Add(-time.Hour).Unix(),
			Renewed: f.now.Add(-renewed).Unix(), Expires: f.now.Add(time.Hour).Unix(), AccessToken: "at"})
	}
	if w := f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + mk(2*time.Minute)}); w.Code != 200 {
		t.Fatalf("validated 2 min ago, provider down: %d (want 200 within the grace period)", w.Code)
	}
	w := f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + mk(10*time.Minute)})
	if w.Code != 401 {
		t.Fatalf("validated 10 min ago, provider down: %d (want 401 past the grace period)", w.Code)
	}
	for _, c := range w.Result().Cookies() {
		if c.Name == "authservice_session" {
			t.Fatal("the cookie was cleared: the session must resume when the provider answers")
		}
	}
}
