package config

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// setenv is a minimal valid environment plus overrides; "" leaves a
// variable out. Nothing reads the process environment.
func setenv(t *testing.T, over map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{
		"OIDC_PROVIDER": "http://dex.auth.svc.cluster.local:5556/dex",
		"CLIENT_ID":     "kubeflow-oidc-authservice",
		"CLIENT_SECRET": "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok",
	}
	for k, v := range over {
		if v == "" {
			delete(env, k)
			continue
		}
		env[k] = v
	}
	return env
}

func TestDefaultsMatchPredecessor(t *testing.T) {
	env := setenv(t, nil)
	s, err := Load(FromMap(env))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"REDIRECT_URL", s.Provider.RedirectURL, "/authservice/oidc/callback"},
		{"redirect path", s.Paths.Callback, "/authservice/oidc/callback"},
		{"logout path", s.Paths.Logout, "/authservice/logout"},
		{"USERID_HEADER", s.Identity.UserHeader, "kubeflow-userid"},
		{"GROUPS_HEADER", s.Identity.GroupsHeader, "kubeflow-groups"},
		{"USERID_CLAIM", s.Identity.UserClaim, "email"},
		{"GROUPS_CLAIM", s.Identity.GroupsClaim, "groups"},
		{"USERID_PREFIX", s.Identity.UserPrefix, ""},
		{"scopes", strings.Join(s.Provider.Scopes, " "), "openid email"},
		{"cookie", s.Sessions.CookieName, "authservice_session"},
		{"AFTER_LOGOUT_URL", s.Paths.AfterLogout, "/authservice/site/after_logout"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if s.Servers.CheckPort != 8080 || s.Servers.ProbePort != 8081 || s.Servers.WebPort != 8082 {
		t.Errorf("ports %d %d %d", s.Servers.CheckPort, s.Servers.ProbePort, s.Servers.WebPort)
	}
	if s.Sessions.MaxAge != 86400*time.Second || s.Sessions.SameSite != http.SameSiteLaxMode || !s.Sessions.HTTPOnly {
		t.Errorf("session defaults: %v %v %v", s.Sessions.MaxAge, s.Sessions.SameSite, s.Sessions.HTTPOnly)
	}
	if !s.Identity.AllowAllGroups || !s.Sessions.Generated {
		t.Errorf("allow all %v, generated keys %v", s.Identity.AllowAllGroups, s.Sessions.Generated)
	}
}

func TestKubeflowParamsEnv(t *testing.T) {
	// The values of Kubeflow's common/oidc-client/oidc-authservice params.env.
	env := setenv(t, map[string]string{
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
	s, err := Load(FromMap(env))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Provider.Scopes, ","); got != "openid,profile,email,groups" {
		t.Errorf("scopes %q", got)
	}
	if len(s.Paths.Skip) != 1 || s.Paths.Skip[0] != "/dex" {
		t.Errorf("skip %q", s.Paths.Skip)
	}
	if len(s.Ignored) != 2 || s.Ignored[0].Name != "PORT" || s.Ignored[1].Name != "STORE_PATH" {
		t.Errorf("ignored %v", s.Ignored)
	}
}

func TestScopesAndSkipForms(t *testing.T) {
	env := setenv(t, map[string]string{"OIDC_SCOPES": "email,profile", "SKIP_AUTH_URLS": "/dex,/healthz", "SKIP_AUTH_URI": "/old /older"})
	s, err := Load(FromMap(env))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Provider.Scopes, " "); got != "openid email profile" {
		t.Errorf("scopes %q", got)
	}
	if got := strings.Join(s.Paths.Skip, " "); got != "/dex /healthz /old /older" {
		t.Errorf("skip %q", got)
	}
}

func TestEveryProblemReportedAtOnce(t *testing.T) {
	env := setenv(t, map[string]string{
		"OIDC_PROVIDER":       "",
		"CLIENT_SECRET":       "",
		"SESSION_SAME_SITE":   "sometimes",
		"LOG_LEVEL":           "loud",
		"SESSION_KEYS":        "short",
		"USERID_TRANSFORMERS": `[{"matches": "(", "replaces": ""}]`,
	})
	_, err := Load(FromMap(env))
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
			env := setenv(t, map[string]string{"SESSION_KEYS": c.keys})
			s, err := Load(FromMap(env))
			if (err == nil) != c.ok {
				t.Fatalf("err = %v", err)
			}
			if c.ok && (len(s.Sessions.Secrets) != c.n || s.Sessions.Generated) {
				t.Fatalf("keys %d generated %v", len(s.Sessions.Secrets), s.Sessions.Generated)
			}
		})
	}
}

func TestSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	sec := filepath.Join(dir, "secret")
	keys := filepath.Join(dir, "keys")
	os.WriteFile(sec, []byte("from-file\n"), 0o600)
	os.WriteFile(keys, []byte(strings.Repeat("a", 32)+"\n"+strings.Repeat("b", 32)+"\n"), 0o600)
	env := setenv(t, map[string]string{"CLIENT_SECRET": "", "CLIENT_SECRET_FILE": sec, "SESSION_KEYS_FILE": keys})
	s, err := Load(FromMap(env))
	if err != nil {
		t.Fatal(err)
	}
	if s.Provider.ClientSecret != "from-file" || len(s.Sessions.Secrets) != 2 {
		t.Fatalf("secret %q keys %d", s.Provider.ClientSecret, len(s.Sessions.Secrets))
	}
}

func TestRedactedNeverShowsSecrets(t *testing.T) {
	key := strings.Repeat("s3cr3t-key-", 4)
	env := setenv(t, map[string]string{"SESSION_KEYS": key, "CLIENT_SECRET": "very-secret-value",
		"REDIS_URL": "redis://default:redis-password@redis:6379/0"})
	s, err := Load(FromMap(env))
	if err != nil {
		t.Fatal(err)
	}
	// What start-up logs (zap.Any("config", s.Redacted())) and the string form.
	logged, _ := json.Marshal(s.Redacted())
	for _, out := range []string{s.String(), string(logged)} {
		for _, secret := range []string{"very-secret-value", key, "redis-password"} {
			if strings.Contains(out, secret) {
				t.Fatalf("secret %q leaked:\n%s", secret, out)
			}
		}
	}
	if r := s.Redacted(); r["CLIENT_SECRET"] != "[redacted]" || r["SESSION_KEYS"] != "[redacted]" || r["CLIENT_ID"] != "kubeflow-oidc-authservice" {
		t.Fatalf("redacted = %v", r)
	}
}

func TestUserIDTransformers(t *testing.T) {
	env := setenv(t, map[string]string{"USERID_TRANSFORMERS": `[{"matches": "@example\\.com$", "replaces": ""}, {"matches": "^(.*)$", "replaces": "x-$1"}]`})
	s, err := Load(FromMap(env))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Identity.Transformers) != 2 || s.Identity.Transformers[0].Matches.ReplaceAllString("a@example.com", s.Identity.Transformers[0].Replaces) != "a" {
		t.Fatalf("transformers %+v", s.Identity.Transformers)
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

// Load reads only the environment it is given, so other tests need not
// touch the process's (this one sets it, to show it is not read).
func TestLoadReadsOnlyItsEnvironment(t *testing.T) {
	t.Setenv("CLIENT_ID", "from-the-process")
	t.Setenv("TEMPLATE_CONTEXT_X", "from-the-process")
	s, err := Load(FromMap(setenv(t, map[string]string{"TEMPLATE_CONTEXT_Y": "given"})))
	if err != nil {
		t.Fatal(err)
	}
	if s.Provider.ClientID != "kubeflow-oidc-authservice" || s.Pages.Context["X"] != "" || s.Pages.Context["Y"] != "given" {
		t.Fatalf("client id %q, template context %v", s.Provider.ClientID, s.Pages.Context)
	}
}

func TestMalformedValuesNamed(t *testing.T) {
	_, err := Load(FromMap(setenv(t, map[string]string{"SERVER_PORT": "eighty", "PROVIDER_TIMEOUT": "10", "ACCESS_LOG": "maybe"})))
	for _, v := range []string{"SERVER_PORT", "PROVIDER_TIMEOUT", "ACCESS_LOG"} {
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("error does not name %s: %v", v, err)
		}
	}
}

func TestGroupsSettings(t *testing.T) {
	s, err := Load(FromMap(setenv(t, nil)))
	if err != nil {
		t.Fatal(err)
	}
	id := s.Identity
	if id.GroupsFilter != nil || id.GroupsMax != 256 || id.GroupsTruncate || id.UpstreamHeaderMaxBytes != 8190 || s.Sessions.MaxCookies != 2 ||
		s.ForwardAuth.AnswerMax != 4096 {
		t.Fatalf("defaults: %+v, SESSION_MAX_COOKIES %d, FORWARD_AUTH_ANSWER_MAX_BYTES %d", id, s.Sessions.MaxCookies, s.ForwardAuth.AnswerMax)
	}
	// gunicorn's 8,190-byte header line: "kubeflow-groups: " + value + CRLF.
	if n := id.GroupsHeaderMaxBytes(); n != 8190-len("kubeflow-groups: \r\n") {
		t.Fatalf("groups header value at most %d bytes", n)
	}
	id.AuthRequestHeaders = true
	if n := id.GroupsHeaderMaxBytes(); n != 8190-len("X-Auth-Request-Groups: \r\n") {
		t.Fatalf("with X-Auth-Request-Groups: %d bytes", n)
	}
	s, err = Load(FromMap(setenv(t, map[string]string{"GROUPS_FILTER": `^acme/ml(/|$)`, "GROUPS_FILTER_PREFIXES": "kubeflow-, acme/data/",
		"GROUPS_OVERFLOW": "truncate", "GROUPS_MAX": "1000", "SESSION_MAX_COOKIES": "1", "FORWARD_AUTH_ANSWER_MAX_BYTES": "0"})))
	if err != nil {
		t.Fatal(err)
	}
	id = s.Identity
	if !id.GroupsFilter.MatchString("acme/ml/x") || strings.Join(id.GroupsFilterPrefixes, "|") != "kubeflow-|acme/data/" || !id.GroupsTruncate ||
		id.GroupsMax != 1000 || s.Sessions.MaxCookies != 1 || s.ForwardAuth.AnswerMax != 0 {
		t.Fatalf("parsed %+v", id)
	}
	_, err = Load(FromMap(setenv(t, map[string]string{"GROUPS_FILTER": "(", "GROUPS_MAX": "0", "GROUPS_OVERFLOW": "cut",
		"UPSTREAM_HEADER_MAX_BYTES": "100", "SESSION_MAX_COOKIES": "9", "FORWARD_AUTH_ANSWER_MAX_BYTES": "10"})))
	for _, name := range []string{"GROUPS_FILTER", "GROUPS_MAX", "GROUPS_OVERFLOW", "UPSTREAM_HEADER_MAX_BYTES", "SESSION_MAX_COOKIES", "FORWARD_AUTH_ANSWER_MAX_BYTES"} {
		if err == nil || !strings.Contains(err.Error(), name+":") {
			t.Errorf("%s not reported: %v", name, err)
		}
	}
}
