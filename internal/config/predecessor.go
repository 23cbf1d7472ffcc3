package config

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// predecessorVariable is an environment variable read by some version of
// arrikto oidc-authservice (Kubeflow ≤ 1.9.0) that is not a setting of this
// service, and what happens when it is set.
type predecessorVariable struct {
	Name string
	// Why it is not a setting here, and what to use instead; shown in the
	// start-up warning, by check-config and in docs/configuration.md.
	Why string
	// Refuse: setting it (non-empty) is a configuration error, because
	// ignoring it would let through requests the predecessor refused.
	Refuse bool
	// Alias: the setting it is honoured as, when that setting is unset.
	Alias string
}

// predecessorVariables is every variable arrikto oidc-authservice reads that
// is not a setting of this service: its last image (settings.go at e236439,
// Kubeflow 1.7 – 1.9.0), its master branch, the branches of its last
// development, and the images of Kubeflow ≤ 1.6 (main.go's getEnv calls).
// The variables it shares with this service (OIDC_PROVIDER, CLIENT_ID, ...,
// SESSION_DOMAIN, SESSION_HTTP_ONLY, TEMPLATE_CONTEXT_<KEY>) are settings
// (Fields), and TestPredecessorVariablesAccountedFor keeps the two apart.
var predecessorVariables = []predecessorVariable{
	// Stores: sessions and login states are sealed cookies here.
	{Name: "STORE_PATH", Why: "sessions are sealed cookies: there is no session store (Kubeflow ≤ 1.9.0's params.env set it; remove it)"},
	{Name: "SESSION_STORE_PATH", Why: "sessions are sealed cookies: there is no session store"},
	{Name: "OIDC_STATE_STORE_PATH", Why: "login states are sealed cookies: there is no state store"},
	{Name: "SESSION_STORE_TYPE", Why: "sessions are sealed cookies: there is no session store (REDIS_URL shares logouts between replicas)"},
	{Name: "OIDC_STATE_STORE_TYPE", Why: "login states are sealed cookies: there is no state store"},
	{Name: "SESSION_STORE_REDIS_ADDR", Why: "sessions are sealed cookies, not kept in Redis; REDIS_URL shares logouts and back-channel logouts between replicas"},
	{Name: "SESSION_STORE_REDIS_PWD", Why: "sessions are not kept in Redis; the password of REDIS_URL goes into that URL (redis://:password@host:port/db)"},
	{Name: "SESSION_STORE_REDIS_DB", Why: "sessions are not kept in Redis; the database of REDIS_URL goes into that URL (redis://host:port/db)"},
	{Name: "OIDC_STATE_STORE_REDIS_ADDR", Why: "login states are sealed cookies, not kept in Redis"},
	{Name: "PORT", Why: "never read by the predecessor either; the check port is SERVER_PORT (Kubeflow ≤ 1.9.0's params.env set it; remove it)"},

	// Where credentials come from and where identity goes.
	{Name: "AUTH_HEADER", Why: "credentials are read from the session cookie and from Authorization: Bearer only; clients sending them in another header must switch to Authorization"},
	{Name: "AUTH_METHOD_HEADER", Why: "upstreams are not told how a request authenticated"},
	{Name: "ID_TOKEN_HEADER", Why: "the provider's ID tokens are accepted in Authorization: Bearer (ACCEPT_PROVIDER_ID_TOKENS), not in another header"},
	{Name: "USERID_TOKEN_HEADER", Why: "no token is put in a header of this name; UPSTREAM_TOKEN=id_token or issued hands a token to the upstream as Authorization: Bearer"},
	{Name: "TOKEN_HEADER", Why: "credentials are read from Authorization: Bearer only"},
	{Name: "TOKEN_SCHEME", Why: "the scheme of Authorization is Bearer"},
	{Name: "SCHEME_DEFAULT", Why: "the scheme a browser uses comes from X-Forwarded-Proto; SESSION_COOKIE_SECURE sets the cookies' Secure flag"},
	{Name: "SCHEME_HEADER", Why: "the scheme a browser uses comes from X-Forwarded-Proto; SESSION_COOKIE_SECURE sets the cookies' Secure flag"},

	// Authenticators.
	{Name: "IDTOKEN_AUTHN_ENABLED", Alias: "ACCEPT_PROVIDER_ID_TOKENS", Why: "honoured as ACCEPT_PROVIDER_ID_TOKENS (which wins when both are set)"},
	{Name: "JWT_AUTHN_ENABLED", Why: "bearer JWTs are accepted from the issuers of AUTHENTICATION_CONFIG_FILE"},
	{Name: "ENABLED_AUTHENTICATORS", Why: "the session cookie is always accepted; bearer tokens per ACCEPT_PROVIDER_ID_TOKENS, ACCESS_TOKEN_AUTHN_ENABLED, AUTHENTICATION_CONFIG_FILE and KUBERNETES_AUTHN_ENABLED"},
	{Name: "CACHE_ENABLED", Why: "verified sessions and bearer tokens are always cached (bounded, per replica) until they expire"},
	{Name: "CACHE_EXPIRATION_MINUTES", Why: "verified bearer tokens are cached until they expire, sessions until they change"},

	// Authorization: ignoring it would allow what the predecessor refused
	// (its EXTERNAL_AUTHZ_URL is a setting).
	{Name: "AUTHZ_CONFIG_PATH", Refuse: true, Why: "the predecessor's authorization file is not read, and ignoring it would let through requests it refuses: express its rules in AUTHORIZATION_RULES_FILE (docs/authorization.md) and unset it"},

	// Renamed.
	{Name: "STATIC_DESTINATION_URL", Alias: "AFTER_LOGOUT_URL", Why: "honoured as AFTER_LOGOUT_URL, its later name (which wins when both are set)"},
	{Name: "SESSION_SECURE", Alias: "SESSION_COOKIE_SECURE", Why: "honoured as SESSION_COOKIE_SECURE (which wins when both are set)"},
}

// Ignored is a variable of the predecessor that is set in the environment
// and not a setting of this service (or honoured under another name).
type Ignored struct {
	Name string
	Why  string
}

// predecessor looks for the predecessor's variables in env: aliases are
// copied into their settings (when those are unset), the others are listed
// for the start-up warning and check-config, and the ones that would
// weaken authorization are errors.
func predecessor(env map[string]string) ([]Ignored, error) {
	var errs []error
	var ignored []Ignored
	for _, v := range predecessorVariables {
		val, set := env[v.Name]
		if !set {
			continue
		}
		ignored = append(ignored, Ignored{Name: v.Name, Why: v.Why})
		if v.Refuse && strings.TrimSpace(val) != "" {
			errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalid, v.Name, v.Why))
		}
		if _, own := env[v.Alias]; v.Alias == "" || own {
			continue
		}
		switch v.Alias {
		case "ACCEPT_PROVIDER_ID_TOKENS", "SESSION_COOKIE_SECURE":
			b, err := strconv.ParseBool(strings.TrimSpace(val))
			if err != nil {
				errs = append(errs, fmt.Errorf("%w: %s: %q is not a boolean", ErrInvalid, v.Name, val))
				continue
			}
			env[v.Alias] = strconv.FormatBool(b)
		default:
			env[v.Alias] = val
		}
	}
	sort.Slice(ignored, func(i, j int) bool { return ignored[i].Name < ignored[j].Name })
	return ignored, errors.Join(errs...)
}

// logLevels maps every spelling of LOG_LEVEL the predecessor accepted
// (FATAL, ERROR, WARN, INFO, DEBUG, any case; logrus's warning, trace and
// panic) to a level zap parses.
var logLevels = map[string]string{
	"trace": "debug", "debug": "debug", "info": "info", "warn": "warn", "warning": "warn",
	"error": "error", "fatal": "fatal", "panic": "panic",
}

// parseLogLevel returns the zap level for a LOG_LEVEL value.
func parseLogLevel(v string) (string, bool) {
	l, ok := logLevels[strings.ToLower(strings.TrimSpace(v))]
	return l, ok
}

// PredecessorMarkdown documents the predecessor's variables that are not
// settings, for docs/configuration.md.
func PredecessorMarkdown() string {
	var b strings.Builder
	b.WriteString("| Variable | What happens when it is set |\n|---|---|\n")
	for _, v := range predecessorVariables {
		what := "ignored, with a warning at start and in check-config: " + v.Why
		switch {
		case v.Refuse:
			what = "**refused** (the service does not start, check-config reports a problem): " + v.Why
		case v.Alias != "":
			what = v.Why + "; also named in the start-up warning"
		}
		fmt.Fprintf(&b, "| `%s` | %s |\n", v.Name, strings.ReplaceAll(what, "|", "\\|"))
	}
	return b.String()
}
