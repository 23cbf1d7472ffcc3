package config

import (
	"encoding/base64"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// setenv sets a minimal valid environment plus overrides; "" unsets.
func setenv(t *testing.T, over map[string]string) {
	t.Helper()
	base := map[string]string{
		"OIDC_PROVIDER": "http://dex.auth.svc.cluster.local:5556/dex",
		"CLIENT_ID":     "kubeflow-oidc-authservice",
		"CLIENT_SECRET": "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok",
	}
	for k, v := range over {
		base[k] = v
	}
	for _, f := range Fields() {
		os.Unsetenv(f.Env)
	}
	for k, v := range base {
		if v == "" {
			os.Unsetenv(k)
			continue
		}
		t.Setenv(k, v)
	}
}

func TestDefaultsMatchPredecessor(t *testing.T) {
	setenv(t, nil)
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"REDIRECT_URL", s.RedirectURL, "/authservice/oidc/callback"},
		{"redirect path", s.RedirectPath, "/authservice/oidc/callback"},
		{"logout path", s.LogoutPath, "/authservice/logout"},
		{"USERID_HEADER", s.UserIDHeader, "kubeflow-userid"},
		{"GROUPS_HEADER", s.GroupsHeader, "kubeflow-groups"},
		{"USERID_CLAIM", s.UserIDClaim, "email"},
		{"GROUPS_CLAIM", s.GroupsClaim, "groups"},
		{"USERID_PREFIX", s.UserIDPrefix, ""},
		{"scopes", strings.Join(s.Scopes, " "), "openid email"},
		{"cookie", s.SessionCookieName, "authservice_session"},
		{"AFTER_LOGOUT_URL", s.AfterLogoutURL, "/authservice/site/after_logout"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if s.Port != 8080 || s.ReadinessPort != 8081 || s.WebServerPort != 8082 {
		t.Errorf("ports %d %d %d", s.Port, s.ReadinessPort, s.WebServerPort)
	}
	if s.SessionMaxAge != 86400 || s.SameSite != http.SameSiteLaxMode || !s.SessionHTTPOnly {
		t.Errorf("session defaults: %d %v %v", s.SessionMaxAge, s.SameSite, s.SessionHTTPOnly)
	}
	if !s.GroupsAllowAll || !s.GeneratedKeys {
		t.Errorf("allow all %v, generated keys %v", s.GroupsAllowAll, s.GeneratedKeys)
	}
}

func TestKubeflowParamsEnv(t *testing.T) {
	// The values of Kubeflow's common/oidc-client/oidc-authservice params.env.
	setenv(t, map[string]string{
		"OIDC_AUTH_URL":          "/dex/auth",
		"REDIRECT_URL":           "/authservice/oidc/callback",
		"OIDC_SCOPES":            "profile email groups",
		"AUTHSERVICE_URL_PREFIX": "/authservice/",
		"SKIP_AUTH_URLS":         "/dex",
		"AFTER_LOGOUT_URL":       "/",
		"USERID_HEADER":          "kubeflow-userid",
		"USERID_PREFIX":          "",
		"USERID_CLAIM":           "email",
		"PORT":                   "8080",
		"STORE_PATH":             "/var/lib/authservice/data.db",
	})
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Scopes, ","); got != "openid,profile,email,groups" {
		t.Errorf("scopes %q", got)
	}
	if len(s.SkipPrefixes) != 1 || s.SkipPrefixes[0] != "/dex" {
		t.Errorf("skip %q", s.SkipPrefixes)
	}
	if len(s.Ignored) != 2 || s.Ignored[0].Name != "PORT" || s.Ignored[1].Name != "STORE_PATH" {
		t.Errorf("ignored %v", s.Ignored)
	}
}

func TestScopesAndSkipForms(t *testing.T) {
	setenv(t, map[string]string{"OIDC_SCOPES": "email,profile", "SKIP_AUTH_URLS": "/dex,/healthz", "SKIP_AUTH_URI": "/old /older"})
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Scopes, " "); got != "openid email profile" {
		t.Errorf("scopes %q", got)
	}
	if got := strings.Join(s.SkipPrefixes, " "); got != "/dex /healthz /old /older" {
		t.Errorf("skip %q", got)
	}
}

func TestEveryProblemReportedAtOnce(t *testing.T) {
	setenv(t, map[string]string{
		"OIDC_PROVIDER":       "",
		"CLIENT_SECRET":       "",
		"SESSION_SAME_SITE":   "sometimes",
		"LOG_LEVEL":           "loud",
		"SESSION_KEYS":        "short",
		"USERID_TRANSFORMERS": `[{"matches": "(", "replaces": ""}]`,
	})
	_, err := Load()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	for _, v := range []string{"OIDC_PROVIDER", "CLIENT_SECRET", "SESSION_SAME_SITE", "LOG_LEVEL", "SESSION_KEYS", "USERID_TRANSFORMERS"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error does not name %s:\n%v", v, err)
		}
	}
}

func TestSessionKeys(t *testing.T) {
	raw := strings.Repeat("k", 32)
	b64 := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", 32)))
	cases := []struct {
		name, keys string
		n          int
		ok         bool
	}{
		{"raw", raw, 1, true},
		{"base64", b64, 1, true},
		{"rotation", b64 + "," + raw, 2, true},
		{"too short", "0123456789", 0, false},
		{"base64 of too little, raw too short", base64.StdEncoding.EncodeToString([]byte("tiny")), 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			setenv(t, map[string]string{"SESSION_KEYS": c.keys})
			s, err := Load()
			if (err == nil) != c.ok {
				t.Fatalf("err = %v", err)
			}
			if c.ok && (len(s.Keys) != c.n || s.GeneratedKeys) {
				t.Fatalf("keys %d generated %v", len(s.Keys), s.GeneratedKeys)
			}
		})
	}
	// Keys differ per secret, and hash and block keys differ.
	a, b := DeriveKey([]byte(raw)), DeriveKey([]byte(raw+"!"))
	if string(a.Hash) == string(b.Hash) || string(a.Hash) == string(a.Block) {
		t.Fatal("derived keys are not independent")
	}
}

func TestSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	sec := filepath.Join(dir, "secret")
	keys := filepath.Join(dir, "keys")
	os.WriteFile(sec, []byte("from-file\n"), 0o600)
	os.WriteFile(keys, []byte(strings.Repeat("a", 32)+"\n"+strings.Repeat("b", 32)+"\n"), 0o600)
	setenv(t, map[string]string{"CLIENT_SECRET": "", "CLIENT_SECRET_FILE": sec, "SESSION_KEYS_FILE": keys})
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if s.ClientSecret != "from-file" || len(s.Keys) != 2 {
		t.Fatalf("secret %q keys %d", s.ClientSecret, len(s.Keys))
	}
}

func TestRedactedNeverShowsSecrets(t *testing.T) {
	key := strings.Repeat("s3cr3t-key-", 4)
	setenv(t, map[string]string{"SESSION_KEYS": key, "CLIENT_SECRET": "very-secret-value"})
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{s.String(), Markdown(), Usage()} {
		if strings.Contains(out, "very-secret-value") || strings.Contains(out, key) {
			t.Fatalf("secret leaked:\n%s", out)
		}
	}
	if r := s.Redacted(); r["CLIENT_SECRET"] != "[redacted]" || r["SESSION_KEYS"] != "[redacted]" || r["CLIENT_ID"] != "kubeflow-oidc-authservice" {
		t.Fatalf("redacted = %v", r)
	}
}

func TestUserIDTransformers(t *testing.T) {
	setenv(t, map[string]string{"USERID_TRANSFORMERS": `[{"matches": "@example\\.com$", "replaces": ""}, {"matches": "^(.*)$", "replaces": "x-$1"}]`})
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Transformers) != 2 || s.Transformers[0].Matches.ReplaceAllString("a@example.com", s.Transformers[0].Replaces) != "a" {
		t.Fatalf("transformers %+v", s.Transformers)
	}
}

func TestConfigurationDocIsCurrent(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != Document() {
		t.Fatal("docs/configuration.md is out of date: run `make docs`")
	}
}
