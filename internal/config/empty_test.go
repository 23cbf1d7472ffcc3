package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A params.env line "NAME=" sets a variable to the empty string: a text
// variable is then empty, any other kind keeps its default (an empty
// SESSION_HTTP_ONLY= must not turn HttpOnly off, nor SERVER_PORT= pick a
// random port).
func TestEmptyValues(t *testing.T) {
	env := setenv(t, nil)
	for _, name := range []string{"SERVER_PORT", "SESSION_HTTP_ONLY", "SESSION_COOKIE_HOST_PREFIX", "REVOKE_TOKENS_ON_LOGOUT",
		"SESSION_MAX_AGE", "REFRESH_BEFORE_EXPIRY", "ACCESS_LOG_SAMPLE_RATE", "USERID_PREFIX", "AUDIENCES"} {
		env[name] = ""
	}
	s, err := Load(FromMap(env))
	if err != nil {
		t.Fatal(err)
	}
	def, err := Load(FromMap(setenv(t, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if s.Servers.CheckPort != 8080 || !s.Sessions.HTTPOnly || !s.Sessions.HostPrefix || s.Logout.RevokeTokens != def.Logout.RevokeTokens ||
		s.Sessions.MaxAge != 24*time.Hour || s.Sessions.RefreshBeforeExpiry != time.Minute || s.Servers.AccessLogRate != def.Servers.AccessLogRate {
		t.Errorf("empty non-text variables did not keep their defaults: port %d, HttpOnly %v, __Host- %v, revoke %v, max age %v, refresh %v, sample %v",
			s.Servers.CheckPort, s.Sessions.HTTPOnly, s.Sessions.HostPrefix, s.Logout.RevokeTokens, s.Sessions.MaxAge,
			s.Sessions.RefreshBeforeExpiry, s.Servers.AccessLogRate)
	}
	if s.Identity.UserPrefix != "" || len(s.Bearer.ReviewAudiences) != 0 {
		t.Errorf("empty text variables: USERID_PREFIX %q, AUDIENCES %q, want both empty", s.Identity.UserPrefix, s.Bearer.ReviewAudiences)
	}
}

// Values that would silently disable something are refused, naming the
// variable.
func TestValuesThatWouldDisableSomething(t *testing.T) {
	for _, bad := range []map[string]string{
		{"SERVER_PORT": "0"}, {"WEB_SERVER_PORT": "65536"},
		{"VERIFY_AUTH_URL": "verify"}, {"VERIFY_AUTH_URL": "/verify?x=1"},
		{"REFRESH_BEFORE_EXPIRY": "-10m"},
		{"BACKCHANNEL_LOGOUT_MAX_AGE": "0s"},
		{"UPSTREAM_TOKEN": "issued", "UPSTREAM_TOKEN_ISSUER": "not a url", "UPSTREAM_TOKEN_KEYS_FILE": "/dev/null"},
	} {
		_, err := Load(FromMap(setenv(t, bad)))
		name := ""
		for k := range bad {
			if k != "UPSTREAM_TOKEN" && k != "UPSTREAM_TOKEN_KEYS_FILE" {
				name = k
			}
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: err = %v, want one naming %s", bad, err, name)
		}
	}
}
