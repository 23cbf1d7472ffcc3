package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

// arriktoVariables is every environment variable arrikto oidc-authservice
// reads, gathered from github.com/arrikto/oidc-authservice: settings.go at
// e236439 (the image of Kubeflow 1.7 – 1.9.0), common/settings.go on master
// (0c4ea9a), the settings of its development branches, and the getEnv calls
// of main.go in the images of Kubeflow ≤ 1.6. TEMPLATE_CONTEXT_<KEY> is a
// prefix and read as such.
var arriktoVariables = []string{
	// e236439
	"OIDC_PROVIDER", "CLIENT_ID", "CLIENT_SECRET", "OIDC_AUTH_URL", "REDIRECT_URL", "OIDC_SCOPES",
	"STRICT_SESSION_VALIDATION", "OIDC_STATE_STORE_PATH", "AUTHSERVICE_URL_PREFIX", "SKIP_AUTH_URLS",
	"AUTH_HEADER", "AUDIENCES", "HOMEPAGE_URL", "AFTER_LOGIN_URL", "AFTER_LOGOUT_URL", "USERID_HEADER",
	"GROUPS_HEADER", "USERID_PREFIX", "USERID_TRANSFORMERS", "USERID_CLAIM", "USERID_TOKEN_HEADER",
	"GROUPS_CLAIM", "ID_TOKEN_HEADER", "SERVER_HOSTNAME", "SERVER_PORT", "WEB_SERVER_PORT",
	"READINESS_PROBE_PORT", "CA_BUNDLE", "SESSION_STORE_PATH", "SESSION_MAX_AGE", "SESSION_SAME_SITE",
	"CLIENT_NAME", "THEMES_URL", "THEME", "TEMPLATE_PATH", "GROUPS_ALLOWLIST",
	// master
	"AUTH_METHOD_HEADER", "VERIFY_AUTH_URL", "LOG_LEVEL", "SESSION_STORE_TYPE", "SESSION_STORE_REDIS_ADDR",
	"SESSION_STORE_REDIS_PWD", "SESSION_STORE_REDIS_DB", "CACHE_ENABLED", "CACHE_EXPIRATION_MINUTES",
	"IDTOKEN_AUTHN_ENABLED", "KUBERNETES_AUTHN_ENABLED", "ACCESS_TOKEN_AUTHN_ENABLED", "ACCESS_TOKEN_AUTHN",
	"EXTERNAL_AUTHZ_URL",
	// development branches
	"SESSION_DOMAIN", "SESSION_HTTP_ONLY", "SESSION_SECURE", "SCHEME_DEFAULT", "SCHEME_HEADER",
	"TOKEN_HEADER", "TOKEN_SCHEME", "AUTHZ_CONFIG_PATH", "ENABLED_AUTHENTICATORS", "JWT_AUTHN_ENABLED",
	"OIDC_STATE_STORE_TYPE", "OIDC_STATE_STORE_REDIS_ADDR",
	// Kubeflow ≤ 1.6 images (main.go)
	"SKIP_AUTH_URI", "STORE_PATH", "STATIC_DESTINATION_URL", "PORT",
}

// TestPredecessorVariablesAccountedFor: each of the predecessor's variables
// is a setting or has an entry saying what happens to it, never both.
func TestPredecessorVariablesAccountedFor(t *testing.T) {
	settings := map[string]bool{}
	for _, f := range Fields() {
		settings[f.Env] = true
	}
	listed := map[string]predecessorVariable{}
	for _, v := range predecessorVariables {
		if _, dup := listed[v.Name]; dup {
			t.Errorf("%s listed twice", v.Name)
		}
		listed[v.Name] = v
		if settings[v.Name] {
			t.Errorf("%s is now a setting: remove it from predecessorVariables (predecessor.go)", v.Name)
		}
		if v.Why == "" {
			t.Errorf("%s: say why it is not a setting", v.Name)
		}
		if v.Alias != "" && !settings[v.Alias] {
			t.Errorf("%s: alias %s is not a setting", v.Name, v.Alias)
		}
		if !slices.Contains(arriktoVariables, v.Name) {
			t.Errorf("%s is not a variable of the predecessor", v.Name)
		}
	}
	for _, name := range arriktoVariables {
		if !settings[name] && listed[name].Name == "" {
			t.Errorf("%s (read by the predecessor) is neither a setting nor in predecessorVariables: silently ignored", name)
		}
	}
}

func TestPredecessorVariablesNamed(t *testing.T) {
	env := setenv(t, map[string]string{
		"AUTH_HEADER": "X-Auth-Token", "CACHE_ENABLED": "true", "SESSION_STORE_REDIS_ADDR": "redis:6379",
		"ACCESS_TOKEN_AUTHN": "opaque", "AUTH_METHOD_HEADER": "Auth-Method",
		"USERID_TOKEN_HEADER": "kubeflow-userid-token", "ID_TOKEN_HEADER": "Authorization",
	})
	s, err := Load(FromMap(env))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range s.Ignored {
		got = append(got, v.Name)
		if v.Why == "" {
			t.Errorf("%s without a reason", v.Name)
		}
	}
	want := []string{"AUTH_HEADER", "AUTH_METHOD_HEADER", "CACHE_ENABLED", "ID_TOKEN_HEADER",
		"SESSION_STORE_REDIS_ADDR", "USERID_TOKEN_HEADER"}
	if !slices.Equal(got, want) {
		t.Errorf("ignored %v, want %v", got, want)
	}
}

func TestPredecessorAuthorizationRefused(t *testing.T) {
	env := setenv(t, map[string]string{"AUTHZ_CONFIG_PATH": "/etc/authz.yaml"})
	_, err := Load(FromMap(env))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "AUTHZ_CONFIG_PATH") || !strings.Contains(err.Error(), "AUTHORIZATION_RULES_FILE") {
		t.Errorf("AUTHZ_CONFIG_PATH set: %v", err)
	}
}

// TestPredecessorAccessTokensAndAuthorizer: the predecessor's last
// features are settings, honoured with its spelling and defaults.
func TestPredecessorAccessTokensAndAuthorizer(t *testing.T) {
	s, err := Load(FromMap(setenv(t, map[string]string{"EXTERNAL_AUTHZ_URL": "http://authorizer/auth"})))
	if err != nil {
		t.Fatal(err)
	}
	if a := s.Authorizer; a.URL != "http://authorizer/auth" || a.Format != "arrikto" || a.Timeout != 2*time.Second {
		t.Errorf("authorizer %+v", a)
	}
	if b := s.Bearer; b.AccessTokens != "jwt" || !slices.Equal(b.AccessAudiences, []string{"istio-ingressgateway.istio-system.svc.cluster.local"}) {
		t.Errorf("the predecessor's defaults: access tokens %q for %v", b.AccessTokens, b.AccessAudiences)
	}
	for _, c := range []struct {
		env  map[string]string
		mode string
		aud  []string
	}{
		{map[string]string{"ACCESS_TOKEN_AUTHN_ENABLED": "false"}, "", []string{"istio-ingressgateway.istio-system.svc.cluster.local"}},
		{map[string]string{"ACCESS_TOKEN_AUTHN": "opaque"}, "opaque", []string{"istio-ingressgateway.istio-system.svc.cluster.local"}},
		{map[string]string{"ACCESS_TOKEN_AUTHN": "JWT", "AUDIENCES": "a,b"}, "jwt", []string{"a", "b"}},
		{map[string]string{"AUDIENCES": "a", "ACCESS_TOKEN_AUDIENCES": "api://kubeflow"}, "jwt", []string{"api://kubeflow"}},
		{map[string]string{"AUDIENCES": ""}, "jwt", nil},
	} {
		env := setenv(t, nil)
		for k, v := range c.env {
			env[k] = v // AUDIENCES= (set, empty) included
		}
		s, err := Load(FromMap(env))
		if err != nil {
			t.Fatalf("%v: %v", c.env, err)
		}
		if s.Bearer.AccessTokens != c.mode || !slices.Equal(s.Bearer.AccessAudiences, c.aud) {
			t.Errorf("%v: %q %v, want %q %v", c.env, s.Bearer.AccessTokens, s.Bearer.AccessAudiences, c.mode, c.aud)
		}
	}
}

func TestAccessTokenAndAuthorizerValidation(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		name string
	}{
		{map[string]string{"ACCESS_TOKEN_AUTHN": "introspection"}, "ACCESS_TOKEN_AUTHN"},
		{map[string]string{"ACCESS_TOKEN_CACHE_TTL": "0s"}, "ACCESS_TOKEN_CACHE_TTL"},
		{map[string]string{"ACCESS_TOKEN_CACHE_TTL": "1h"}, "ACCESS_TOKEN_CACHE_TTL"},
		{map[string]string{"ACCESS_TOKEN_LOOKUPS_PER_SECOND": "0"}, "ACCESS_TOKEN_LOOKUPS_PER_SECOND"},
		{map[string]string{"ACCESS_TOKEN_LOOKUP_CONCURRENCY": "0"}, "ACCESS_TOKEN_LOOKUP_CONCURRENCY"},
		{map[string]string{"EXTERNAL_AUTHZ_URL": "authorizer/auth"}, "EXTERNAL_AUTHZ_URL"},
		{map[string]string{"EXTERNAL_AUTHZ_URL": "http://u:p@authorizer/auth"}, "EXTERNAL_AUTHZ_URL"},
		{map[string]string{"EXTERNAL_AUTHZ_URL": "http://opa:8181/", "EXTERNAL_AUTHZ_FORMAT": "opa"}, "EXTERNAL_AUTHZ_URL"},
		{map[string]string{"EXTERNAL_AUTHZ_FORMAT": "xacml"}, "EXTERNAL_AUTHZ_FORMAT"},
		{map[string]string{"EXTERNAL_AUTHZ_TIMEOUT": "0s"}, "EXTERNAL_AUTHZ_TIMEOUT"},
		{map[string]string{"EXTERNAL_AUTHZ_TIMEOUT": "5m"}, "EXTERNAL_AUTHZ_TIMEOUT"},
		{map[string]string{"EXTERNAL_AUTHZ_MAX_CONCURRENT": "0"}, "EXTERNAL_AUTHZ_MAX_CONCURRENT"},
		{map[string]string{"EXTERNAL_AUTHZ_CACHE_TTL": "1h"}, "EXTERNAL_AUTHZ_CACHE_TTL"},
		{map[string]string{"EXTERNAL_AUTHZ_CACHE_SIZE": "1"}, "EXTERNAL_AUTHZ_CACHE_SIZE"},
		{map[string]string{"EXTERNAL_AUTHZ_CA_BUNDLE": "/nonexistent.pem"}, "EXTERNAL_AUTHZ_CA_BUNDLE"},
	} {
		_, err := Load(FromMap(setenv(t, c.env)))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("%v: %v", c.env, err)
		}
	}
	s, err := Load(FromMap(setenv(t, map[string]string{"EXTERNAL_AUTHZ_URL": "http://opa:8181/v1/data/kubeflow/authz", "EXTERNAL_AUTHZ_FORMAT": "OPA",
		"EXTERNAL_AUTHZ_CACHE_TTL": "0s"})))
	if err != nil || s.Authorizer.Format != "opa" || s.Authorizer.CacheTTL != 0 {
		t.Errorf("an OPA authorizer without a cache: %v %+v", err, s)
	}
}

func TestPredecessorAliases(t *testing.T) {
	env := setenv(t, map[string]string{"IDTOKEN_AUTHN_ENABLED": "false", "STATIC_DESTINATION_URL": "/bye", "SESSION_SECURE": "true"})
	s, err := Load(FromMap(env))
	if err != nil {
		t.Fatal(err)
	}
	if s.Bearer.AcceptProviderIDTokens || s.Paths.AfterLogout != "/bye" || s.Sessions.Secure != "true" {
		t.Errorf("aliases not honoured: %v %q %q", s.Bearer.AcceptProviderIDTokens, s.Paths.AfterLogout, s.Sessions.Secure)
	}
	// The setting of this service wins.
	env = setenv(t, map[string]string{"IDTOKEN_AUTHN_ENABLED": "false", "ACCEPT_PROVIDER_ID_TOKENS": "true"})
	if s, err = Load(FromMap(env)); err != nil || !s.Bearer.AcceptProviderIDTokens {
		t.Errorf("ACCEPT_PROVIDER_ID_TOKENS must win: %v %v", err, s)
	}
	env = setenv(t, map[string]string{"IDTOKEN_AUTHN_ENABLED": "maybe"})
	if _, err := Load(FromMap(env)); err == nil || !strings.Contains(err.Error(), "IDTOKEN_AUTHN_ENABLED") {
		t.Errorf("a malformed alias: %v", err)
	}
}

func TestLogLevelSpellings(t *testing.T) {
	for in, want := range map[string]zapcore.Level{
		"DEBUG": zapcore.DebugLevel, "INFO": zapcore.InfoLevel, "WARN": zapcore.WarnLevel, "ERROR": zapcore.ErrorLevel,
		"FATAL": zapcore.FatalLevel, "warning": zapcore.WarnLevel, "Trace": zapcore.DebugLevel, "info": zapcore.InfoLevel,
		"panic": zapcore.PanicLevel,
	} {
		env := setenv(t, map[string]string{"LOG_LEVEL": in})
		s, err := Load(FromMap(env))
		if err != nil {
			t.Errorf("LOG_LEVEL=%s: %v", in, err)
			continue
		}
		lvl, err := zapcore.ParseLevel(s.Servers.LogLevel)
		if err != nil || lvl != want {
			t.Errorf("LOG_LEVEL=%s -> %q (%v), want %v", in, s.Servers.LogLevel, err, want)
		}
	}
	env := setenv(t, map[string]string{"LOG_LEVEL": "verbose"})
	if _, err := Load(FromMap(env)); err == nil || !strings.Contains(err.Error(), "LOG_LEVEL") {
		t.Errorf("LOG_LEVEL=verbose: %v", err)
	}
}

func TestLogoutPath(t *testing.T) {
	env := setenv(t, map[string]string{"AUTHSERVICE_URL_PREFIX": "/oauth2/", "LOGOUT_PATH": "/oauth2/sign_out", "REDIRECT_URL": "/oauth2/callback"})
	s, err := Load(FromMap(env))
	if err != nil {
		t.Fatal(err)
	}
	if s.Paths.Logout != "/oauth2/sign_out" || s.Paths.Start != "/oauth2/start" || s.Paths.Callback != "/oauth2/callback" {
		t.Errorf("paths: logout %q start %q callback %q", s.Paths.Logout, s.Paths.Start, s.Paths.Callback)
	}
	for _, bad := range []string{"oauth2/sign_out", "/sign_out?x=1", "/oauth2/callback"} {
		env := setenv(t, map[string]string{"LOGOUT_PATH": bad, "REDIRECT_URL": "/oauth2/callback"})
		if _, err := Load(FromMap(env)); err == nil || !strings.Contains(err.Error(), "LOGOUT_PATH") {
			t.Errorf("LOGOUT_PATH=%q: %v", bad, err)
		}
	}
}
