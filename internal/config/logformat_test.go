package config

import (
	"strings"
	"testing"
)

func TestLogFormat(t *testing.T) {
	for _, c := range []struct{ value, want string }{{"", "json"}, {"json", "json"}, {"console", "console"}, {"Console", "console"}} {
		over := map[string]string{}
		if c.value != "" {
			over["LOG_FORMAT"] = c.value
		}
		s, err := Load(FromMap(setenv(t, over)))
		if err != nil || s.Servers.LogFormat != c.want {
			t.Errorf("LOG_FORMAT=%q: %v, %v; want %s", c.value, s, err, c.want)
		}
	}
	if _, err := Load(FromMap(setenv(t, map[string]string{"LOG_FORMAT": "text"}))); err == nil || !strings.Contains(err.Error(), "LOG_FORMAT") {
		t.Errorf("LOG_FORMAT=text: %v, want a problem naming LOG_FORMAT", err)
	}
}

// The console format's start-up lines list only what differs from the
// defaults, secrets redacted.
func TestChangedSettings(t *testing.T) {
	s, err := Load(FromMap(setenv(t, map[string]string{"LOG_LEVEL": "info", "LOGIN_STATE_TTL": "10m", "SESSION_MAX_AGE": "3600"})))
	if err != nil {
		t.Fatal(err)
	}
	got := s.Changed()
	want := map[string]string{"OIDC_PROVIDER": "http://dex.auth.svc.cluster.local:5556/dex", "CLIENT_ID": "kubeflow-oidc-authservice",
		"CLIENT_SECRET": "[redacted]", "SESSION_MAX_AGE": "3600"}
	if len(got) != len(want) {
		t.Errorf("changed = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("changed[%s] = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
}
