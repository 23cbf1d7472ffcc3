package config

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Config is the whole configuration of the service, read from the
// environment. Field tags carry the variable name, its default and a
// description; the same tags produce --help and docs/configuration.md.
//
// Secret fields are tagged secret:"true" and never printed: use Redacted
// for logs.
type Config struct {
	// Provider and client.
	Provider         string        `envconfig:"OIDC_PROVIDER" desc:"Issuer URL of the OpenID Connect provider; discovery is read from <issuer>/.well-known/openid-configuration. Required."`
	AuthURL          string        `envconfig:"OIDC_AUTH_URL" desc:"Overrides the provider's authorization endpoint as the browser sees it. May be relative (Kubeflow: /dex/auth), then it is resolved by the browser against the request's host."`
	ClientID         string        `envconfig:"CLIENT_ID" desc:"OAuth client id registered at the provider. Required."`
	ClientSecret     string        `envconfig:"CLIENT_SECRET" secret:"true" desc:"OAuth client secret. Required unless CLIENT_SECRET_FILE is set."`
	ClientSecretFile string        `envconfig:"CLIENT_SECRET_FILE" desc:"File holding the client secret (a mounted Kubernetes Secret); trailing newline is ignored."`
	RedirectURL      string        `envconfig:"REDIRECT_URL" desc:"Callback URL sent to the provider, exactly as configured (may be relative, as Kubeflow's Dex client expects). Default <AUTHSERVICE_URL_PREFIX>oidc/callback."`
	Scopes           string        `envconfig:"OIDC_SCOPES" default:"openid,email" desc:"Scopes to request, comma- or space-separated; openid is always added."`
	CABundle         string        `envconfig:"CA_BUNDLE" desc:"PEM file of CA certificates trusted for calls to the provider, added to the system pool."`
	ProviderTimeout  time.Duration `envconfig:"PROVIDER_TIMEOUT" default:"10s" desc:"Timeout of every outbound call to the provider (discovery, token, keys, userinfo, revocation). A callback's calls together get at most twice this."`

	// URLs.
	URLPrefix                   string `envconfig:"AUTHSERVICE_URL_PREFIX" default:"/authservice/" desc:"Path prefix of the service's own endpoints (callback, logout, pages)."`
	SkipAuthURLs                string `envconfig:"SKIP_AUTH_URLS" desc:"Comma-separated path prefixes let through without authentication (identity headers are stripped). Kubeflow: /dex. A prefix without a trailing slash matches that path and its sub-paths only."`
	SkipAuthURI                 string `envconfig:"SKIP_AUTH_URI" desc:"Deprecated space-separated form of SKIP_AUTH_URLS (Kubeflow ≤1.6); both are merged."`
	APIPathPrefixes             string `envconfig:"API_PATH_PREFIXES" default:"/api/,/apis/,/ml_metadata" desc:"Comma-separated path prefixes treated as API routes: without a session they get 401 instead of a login redirect."`
	AfterLoginURL               string `envconfig:"AFTER_LOGIN_URL" desc:"If set, after login the browser goes here with ?next=<original URL> instead of straight to the original URL."`
	AfterLogoutURL              string `envconfig:"AFTER_LOGOUT_URL" desc:"Where the browser goes after logout. Default <AUTHSERVICE_URL_PREFIX>site/after_logout (the service's own page on WEB_SERVER_PORT)."`
	HomepageURL                 string `envconfig:"HOMEPAGE_URL" desc:"Link target of the pages' home button. Default <AUTHSERVICE_URL_PREFIX>site/homepage."`
	AllowedRedirectHosts        string `envconfig:"ALLOWED_REDIRECT_HOSTS" desc:"Comma-separated hosts (a leading *. matches sub-domains) a login may return to besides the callback request's own host."`
	AllowUnauthenticatedOptions bool   `envconfig:"ALLOW_UNAUTHENTICATED_OPTIONS" default:"false" desc:"Let OPTIONS requests (CORS pre-flights) through without a session, identity headers stripped."`

	// Identity.
	UserIDHeader       string `envconfig:"USERID_HEADER" default:"kubeflow-userid" desc:"Header that carries the user id upstream."`
	UserIDPrefix       string `envconfig:"USERID_PREFIX" desc:"Prefix put before the user id in USERID_HEADER."`
	UserIDClaim        string `envconfig:"USERID_CLAIM" default:"email" desc:"Claim (ID token merged with userinfo) that holds the user id."`
	UserIDTransformers string `envconfig:"USERID_TRANSFORMERS" desc:"JSON list [{\"matches\": regex, \"replaces\": replacement}] applied to the user id; the first matching rule applies."`
	GroupsHeader       string `envconfig:"GROUPS_HEADER" default:"kubeflow-groups" desc:"Header that carries the comma-joined groups upstream (always set, possibly empty)."`
	GroupsClaim        string `envconfig:"GROUPS_CLAIM" default:"groups" desc:"Claim that holds the user's groups (a list of strings)."`
	GroupsAllowlist    string `envconfig:"GROUPS_ALLOWLIST" default:"*" desc:"Comma-separated groups allowed in; * allows every authenticated user."`

	// Servers.
	Hostname      string  `envconfig:"SERVER_HOSTNAME" desc:"Address the servers listen on (empty: all interfaces)."`
	Port          int     `envconfig:"SERVER_PORT" default:"8080" desc:"Port of the ext_authz check server."`
	ReadinessPort int     `envconfig:"READINESS_PROBE_PORT" default:"8081" desc:"Port of /healthz (alive), /readyz (ready once provider discovery succeeded; every other path answers as /readyz) and /metrics (Prometheus)."`
	WebServerPort int     `envconfig:"WEB_SERVER_PORT" default:"8082" desc:"Port of the web pages (after-logout, homepage, themes)."`
	LogLevel      string  `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error. At debug every decision is logged."`
	AccessLog     bool    `envconfig:"ACCESS_LOG" default:"false" desc:"Write an audit line at info for checks: decision, reason, user, method, host and path (never the query string or credentials)."`
	AccessLogRate float64 `envconfig:"ACCESS_LOG_SAMPLE_RATE" default:"1" desc:"Fraction (0 to 1) of allowed checks that get an access-log line. Denials, redirects and refusals are always logged when ACCESS_LOG is on."`

	// Sessions.
	SessionKeys        string        `envconfig:"SESSION_KEYS" secret:"true" desc:"Comma-separated secrets (each ≥ 32 bytes, raw or base64). The first seals new cookies, all open existing ones. Unset: random keys, sessions lost on restart and not shared by replicas."`
	SessionKeysFile    string        `envconfig:"SESSION_KEYS_FILE" desc:"File holding SESSION_KEYS (comma- or newline-separated)."`
	SessionMaxAge      int           `envconfig:"SESSION_MAX_AGE" default:"86400" desc:"Absolute session lifetime in seconds."`
	SessionSameSite    string        `envconfig:"SESSION_SAME_SITE" default:"Lax" desc:"SameSite attribute of the session cookie: Lax, Strict or None."`
	SessionCookieName  string        `envconfig:"SESSION_COOKIE_NAME" default:"authservice_session" desc:"Name of the session cookie."`
	SessionHTTPOnly    bool          `envconfig:"SESSION_HTTP_ONLY" default:"true" desc:"HttpOnly on the session cookie. Set false only for Kubeflow dashboards before v1.10, whose JavaScript reads the cookie to log out."`
	SessionSecure      string        `envconfig:"SESSION_COOKIE_SECURE" default:"auto" desc:"Secure attribute: auto (when X-Forwarded-Proto is https or REDIRECT_URL is https), true or false."`
	SessionHostPrefix  bool          `envconfig:"SESSION_COOKIE_HOST_PREFIX" default:"true" desc:"Name cookies __Host-<name> when they are Secure and SESSION_DOMAIN is empty, so that no sibling subdomain or network attacker can plant or overwrite them. The session cookie keeps its plain name when SESSION_HTTP_ONLY=false (the older dashboard reads it by name). Both names are always read."`
	SessionDomain      string        `envconfig:"SESSION_DOMAIN" desc:"Domain attribute of the cookies (empty: host-only)."`
	LoginStateTTL      time.Duration `envconfig:"LOGIN_STATE_TTL" default:"10m" desc:"How long a started login may take (≤ 15m)."`
	MaxPendingLogins   int           `envconfig:"MAX_PENDING_LOGINS" default:"5" desc:"Pending-login cookies kept per browser; the oldest is dropped beyond this."`
	SessionIdleTimeout time.Duration `envconfig:"SESSION_IDLE_TIMEOUT" default:"0s" desc:"End a session unused for this long (0: no idle limit). Needs set-cookie passed to the browser on allow."`

	// Session lifetime at the provider.
	RefreshBeforeExpiry time.Duration `envconfig:"REFRESH_BEFORE_EXPIRY" default:"60s" desc:"Refresh the provider's access token this long before it expires, when the session has a refresh token. The new cookie is returned with Set-Cookie on the allow answer."`
	StrictValidation    bool          `envconfig:"STRICT_SESSION_VALIDATION" default:"false" desc:"Check each session's access token at the provider's userinfo endpoint (at most once per interval per replica); a token the provider refuses ends the session."`
	StrictInterval      time.Duration `envconfig:"STRICT_SESSION_VALIDATION_INTERVAL" default:"60s" desc:"How often strict validation asks the provider about one session."`
	StrictGrace         time.Duration `envconfig:"STRICT_SESSION_VALIDATION_GRACE" default:"5m" desc:"While the provider cannot be reached, sessions last validated less than this long ago keep working; older ones are refused until it answers again."`
	CheckProviderBudget time.Duration `envconfig:"CHECK_PROVIDER_BUDGET" default:"3s" desc:"Longest a check waits for the provider (refresh, strict validation); after it, the session is kept or refused as if the provider were down."`

	// Logout.
	RevokeOnLogout        bool          `envconfig:"REVOKE_TOKENS_ON_LOGOUT" default:"true" desc:"On logout, revoke the refresh and access tokens at the provider's revocation_endpoint (RFC 7009), when it has one."`
	ProviderLogout        bool          `envconfig:"PROVIDER_LOGOUT" default:"true" desc:"On logout, send the browser to the provider's end_session_endpoint (RP-initiated logout), when it has one."`
	PostLogoutRedirectURL string        `envconfig:"POST_LOGOUT_REDIRECT_URL" desc:"post_logout_redirect_uri sent to the provider's end_session_endpoint (must be registered there). Default: AFTER_LOGOUT_URL made absolute with the request's host."`
	ProviderSignOutURL    string        `envconfig:"PROVIDER_SIGN_OUT_URL" desc:"For providers without end_session_endpoint (GitLab: https://gitlab.example.com/users/sign_out): the after-logout page offers to sign out there too."`
	ProviderSignOutMode   string        `envconfig:"PROVIDER_SIGN_OUT_MODE" default:"button" desc:"button (the after-logout page shows a button that POSTs to PROVIDER_SIGN_OUT_URL) or auto (the page submits it at once)."`
	BackchannelMaxAge     time.Duration `envconfig:"BACKCHANNEL_LOGOUT_MAX_AGE" default:"5m" desc:"Oldest iat accepted in a back-channel logout token."`
	RedisURL              string        `envconfig:"REDIS_URL" secret:"true" desc:"redis://[:password@]host:port/db of a Redis shared by the replicas for logout and back-channel logout; unset: each replica knows only its own."`
	RedisKeyPrefix        string        `envconfig:"REDIS_KEY_PREFIX" default:"oidc-authservice" desc:"Prefix of the Redis keys and channel."`

	// Machine identities and authorization.
	AuthenticationConfigFile string `envconfig:"AUTHENTICATION_CONFIG_FILE" desc:"Kubernetes AuthenticationConfiguration (apiserver.config.k8s.io/v1beta1 or v1) whose jwt issuers are accepted as Authorization: Bearer tokens (GitLab users and CI jobs, Kubernetes service accounts, ...). See docs/machine-identities.md."`
	AcceptProviderIDTokens   bool   `envconfig:"ACCEPT_PROVIDER_ID_TOKENS" default:"true" desc:"Accept the login provider's own ID tokens (audience CLIENT_ID) as bearer tokens, mapped with USERID_CLAIM and GROUPS_CLAIM, as the predecessor did."`
	AuthorizationRulesFile   string `envconfig:"AUTHORIZATION_RULES_FILE" desc:"YAML rules: host, path prefix and methods → allowed users, groups, email domains or any authenticated; first match wins. See docs/authorization.md."`

	// Kubernetes service-account tokens by TokenReview (arrikto's path).
	KubernetesAuthn      bool   `envconfig:"KUBERNETES_AUTHN_ENABLED" default:"false" desc:"Authenticate Authorization: Bearer tokens of the cluster's service-account issuer by TokenReview at the API server (arrikto's default was on; here off, so the service runs outside a cluster; Kubeflow overlays set it). Needs the RBAC of deploy/components/tokenreview. Issuers of AUTHENTICATION_CONFIG_FILE are tried first. See docs/machine-identities.md."`
	Audiences            string `envconfig:"AUDIENCES" default:"istio-ingressgateway.istio-system.svc.cluster.local" desc:"Comma-separated audiences a service-account token must be meant for (TokenReview spec.audiences; KUBERNETES_AUTHN_ENABLED). Empty: the API server's own audiences."`
	KubernetesServiceDir string `envconfig:"KUBERNETES_SERVICE_ACCOUNT_DIR" default:"/var/run/secrets/kubernetes.io/serviceaccount" desc:"Where the service's own token (token, re-read as it rotates) and the cluster's CA (ca.crt) are read for TokenReview; the API server is https://KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT. Change only to run outside a pod."`

	// Forward auth (nginx auth_request, Caddy forward_auth, Traefik forwardAuth).
	VerifyAuthURL             string `envconfig:"VERIFY_AUTH_URL" desc:"Path of the forward-auth verify endpoint on SERVER_PORT. Default <AUTHSERVICE_URL_PREFIX>verify. The login-start endpoint for nginx is <AUTHSERVICE_URL_PREFIX>start?rd=<url>."`
	ForwardAuthTrustedProxies string `envconfig:"FORWARD_AUTH_TRUSTED_PROXIES" default:"127.0.0.1/32,::1/128" desc:"Comma-separated addresses or CIDRs whose X-Forwarded-Method/-Proto/-Host/-Uri and X-Original-URL headers the verify endpoint believes; from anyone else they are ignored."`
	ForwardAuthRedirect       bool   `envconfig:"FORWARD_AUTH_REDIRECT" default:"false" desc:"The verify endpoint answers an unauthenticated browser navigation with a 302 to the provider (Caddy, Traefik pass it on) instead of 401 (nginx: use error_page 401 with the start endpoint)."`

	// Identity token for the upstream.
	UpstreamToken         string        `envconfig:"UPSTREAM_TOKEN" default:"none" desc:"none, id_token (forward the provider's ID token as Authorization: Bearer) or issued (a short-lived JWT signed by the service, for Istio RequestAuthentication)."`
	UpstreamTokenIssuer   string        `envconfig:"UPSTREAM_TOKEN_ISSUER" default:"http://authservice.istio-system.svc.cluster.local:8082" desc:"iss of issued tokens; its /.well-known/openid-configuration and jwks.json are served on WEB_SERVER_PORT."`
	UpstreamTokenAudience string        `envconfig:"UPSTREAM_TOKEN_AUDIENCE" default:"kubeflow" desc:"aud of issued tokens."`
	UpstreamTokenLifetime time.Duration `envconfig:"UPSTREAM_TOKEN_LIFETIME" default:"5m" desc:"Lifetime of issued tokens."`
	UpstreamTokenKeysFile string        `envconfig:"UPSTREAM_TOKEN_KEYS_FILE" desc:"PEM file (a Kubernetes Secret) of the signing keys, RSA or EC P-256, newest first: the first signs, all are published. Unset with UPSTREAM_TOKEN=issued: a random key, valid for this process only."`

	// Pages.
	ClientName   string `envconfig:"CLIENT_NAME" default:"Kubeflow" desc:"Name shown on the pages."`
	Theme        string `envconfig:"THEME" default:"kubeflow" desc:"Theme of the pages: kubeflow (embedded) or the name of a folder under THEMES_URL."`
	ThemesURL    string `envconfig:"THEMES_URL" desc:"Base URL of external themes: pages load <THEMES_URL>/<THEME>/styles.css."`
	TemplatePath string `envconfig:"TEMPLATE_PATH" desc:"Folder with templates overriding the embedded ones (layout.html, error.html, after_logout.html, homepage.html). TEMPLATE_CONTEXT_<KEY>=value variables appear in them as .Context.<KEY>."`
}

// obsolete lists variables of the predecessor that no longer mean anything:
// sessions live in cookies, so there is no store to configure.
var obsolete = []string{
	"SESSION_STORE_PATH", "STORE_PATH", "OIDC_STATE_STORE_PATH", "SESSION_STORE_TYPE",
	"OIDC_STATE_STORE_TYPE", "SESSION_STORE_REDIS_ADDR", "OIDC_STATE_STORE_REDIS_ADDR",
}

// Settings is the validated, parsed form of Config that the rest of the
// service uses.
type Settings struct {
	Config

	ProviderURL     *url.URL
	Scopes          []string
	RedirectPath    string // path of REDIRECT_URL, where the callback arrives
	LogoutPath      string
	BackchannelPath string // <prefix>oidc/backchannel-logout, served on WEB_SERVER_PORT
	VerifyPath      string // forward-auth verify endpoint
	StartPath       string // forward-auth login start
	TrustedProxies  []netip.Prefix
	SitePrefix      string // <prefix>site/, the web pages
	SkipPrefixes    []string
	APIPrefixes     []string
	AllowedHosts    []string
	GroupsAllowAll  bool
	GroupsAllowlist []string
	Transformers    []Transformer
	SameSite        http.SameSite
	Keys            []Key
	GeneratedKeys   bool     // SESSION_KEYS unset: random keys
	Obsolete        []string // obsolete variables that were set
	TemplateContext map[string]string
	LogLevel        string
}

// Transformer rewrites a user id, as USERID_TRANSFORMERS describes.
type Transformer struct {
	Matches  *regexp.Regexp
	Replaces string
}

// Key is one session secret expanded into the two keys securecookie needs.
type Key struct {
	Hash  []byte // HMAC-SHA256 key
	Block []byte // AES-256 key
}

// ErrInvalid wraps every validation problem.
var ErrInvalid = errors.New("invalid configuration")

// Load reads the configuration from the environment and validates it. The
// error lists every problem found, each naming its variable.
func Load() (*Settings, error) {
	var c Config
	if err := envconfig.Process("", &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	s := &Settings{Config: c}
	for _, name := range obsolete {
		if _, ok := os.LookupEnv(name); ok {
			s.Obsolete = append(s.Obsolete, name)
		}
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Settings) validate() error {
	var errs []error
	bad := func(env, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalid, env, fmt.Sprintf(format, a...)))
	}

	if s.Provider == "" {
		bad("OIDC_PROVIDER", "required")
	} else if u, err := url.Parse(s.Provider); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("OIDC_PROVIDER", "must be an absolute http(s) URL")
	} else {
		s.ProviderURL = u
	}
	if s.ClientID == "" {
		bad("CLIENT_ID", "required")
	}
	if s.ClientSecretFile != "" {
		b, err := os.ReadFile(s.ClientSecretFile)
		if err != nil {
			bad("CLIENT_SECRET_FILE", "cannot read: %v", err)
		} else {
			s.ClientSecret = strings.TrimRight(string(b), "\r\n")
		}
	}
	if s.ClientSecret == "" {
		bad("CLIENT_SECRET", "required (or CLIENT_SECRET_FILE)")
	}

	if !strings.HasPrefix(s.URLPrefix, "/") {
		bad("AUTHSERVICE_URL_PREFIX", "must start with /")
	}
	if !strings.HasSuffix(s.URLPrefix, "/") {
		s.URLPrefix += "/"
	}
	if s.RedirectURL == "" {
		s.RedirectURL = s.URLPrefix + "oidc/callback"
	}
	if u, err := url.Parse(s.RedirectURL); err != nil || u.Path == "" || !strings.HasPrefix(u.Path, "/") || (u.IsAbs() && u.Host == "") {
		bad("REDIRECT_URL", "must be an absolute URL or an absolute path")
	} else {
		s.RedirectPath = u.Path
	}
	if s.AuthURL != "" {
		if u, err := url.Parse(s.AuthURL); err != nil || (!u.IsAbs() && !strings.HasPrefix(u.Path, "/")) {
			bad("OIDC_AUTH_URL", "must be an absolute URL or an absolute path")
		}
	}
	s.LogoutPath = s.URLPrefix + "logout"
	s.SitePrefix = s.URLPrefix + "site/"
	s.BackchannelPath = s.URLPrefix + "oidc/backchannel-logout"
	s.VerifyPath = s.VerifyAuthURL
	if s.VerifyPath == "" {
		s.VerifyPath = s.URLPrefix + "verify"
	}
	s.StartPath = s.URLPrefix + "start"
	for _, p := range splitList(s.ForwardAuthTrustedProxies, ",") {
		if !strings.Contains(p, "/") {
			if strings.Contains(p, ":") {
				p += "/128"
			} else {
				p += "/32"
			}
		}
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			bad("FORWARD_AUTH_TRUSTED_PROXIES", "%q is not an address or CIDR", p)
			continue
		}
		s.TrustedProxies = append(s.TrustedProxies, pfx)
	}
	switch s.UpstreamToken {
	case "none", "id_token", "issued":
	default:
		bad("UPSTREAM_TOKEN", "%q: want none, id_token or issued", s.UpstreamToken)
	}
	if s.UpstreamTokenLifetime < 10*time.Second || s.UpstreamTokenLifetime > 24*time.Hour {
		bad("UPSTREAM_TOKEN_LIFETIME", "must be between 10s and 24h")
	}
	if s.AfterLogoutURL == "" {
		s.AfterLogoutURL = s.SitePrefix + "after_logout"
	}
	if s.HomepageURL == "" {
		s.HomepageURL = s.SitePrefix + "homepage"
	}

	s.Scopes = splitList(s.Config.Scopes, ", ")
	if !contains(s.Scopes, "openid") {
		s.Scopes = append([]string{"openid"}, s.Scopes...)
	}
	s.SkipPrefixes = append(splitList(s.SkipAuthURLs, ","), splitList(s.SkipAuthURI, " ,")...)
	for _, p := range s.SkipPrefixes {
		if !strings.HasPrefix(p, "/") {
			bad("SKIP_AUTH_URLS", "%q must start with /", p)
		}
	}
	s.APIPrefixes = splitList(s.APIPathPrefixes, ",")
	for _, p := range s.APIPrefixes {
		if !strings.HasPrefix(p, "/") {
			bad("API_PATH_PREFIXES", "%q must start with /", p)
		}
	}
	for _, h := range splitList(s.AllowedRedirectHosts, ",") {
		s.AllowedHosts = append(s.AllowedHosts, strings.ToLower(h))
	}

	for _, g := range splitList(s.Config.GroupsAllowlist, ",") {
		if g == "*" {
			s.GroupsAllowAll = true
		}
		s.GroupsAllowlist = append(s.GroupsAllowlist, g)
	}
	if len(s.GroupsAllowlist) == 0 {
		bad("GROUPS_ALLOWLIST", "empty: nobody could log in (use * to allow everybody)")
	}

	if s.UserIDTransformers != "" {
		var raw []struct {
			Matches  string `json:"matches"`
			Replaces string `json:"replaces"`
		}
		if err := json.Unmarshal([]byte(s.UserIDTransformers), &raw); err != nil {
			bad("USERID_TRANSFORMERS", "not a JSON list of {matches, replaces}: %v", err)
		}
		for i, r := range raw {
			re, err := regexp.Compile(r.Matches)
			if err != nil {
				bad("USERID_TRANSFORMERS", "rule %d: %v", i, err)
				continue
			}
			s.Transformers = append(s.Transformers, Transformer{Matches: re, Replaces: r.Replaces})
		}
	}
	if s.UserIDHeader == "" {
		bad("USERID_HEADER", "must not be empty")
	}
	if s.GroupsHeader == "" {
		bad("GROUPS_HEADER", "must not be empty")
	}
	if s.UserIDClaim == "" {
		bad("USERID_CLAIM", "must not be empty")
	}

	for env, p := range map[string]int{"SERVER_PORT": s.Port, "READINESS_PROBE_PORT": s.ReadinessPort, "WEB_SERVER_PORT": s.WebServerPort} {
		if p < 0 || p > 65535 {
			bad(env, "%d is not a port", p)
		}
	}
	if s.AccessLogRate < 0 || s.AccessLogRate > 1 || s.AccessLogRate != s.AccessLogRate {
		bad("ACCESS_LOG_SAMPLE_RATE", "%v: want a fraction between 0 and 1", s.AccessLogRate)
	}
	switch strings.ToLower(s.Config.LogLevel) {
	case "debug", "info", "warn", "warning", "error":
		s.LogLevel = strings.ToLower(s.Config.LogLevel)
	default:
		bad("LOG_LEVEL", "%q: want debug, info, warn or error", s.Config.LogLevel)
	}

	if s.SessionMaxAge <= 0 {
		bad("SESSION_MAX_AGE", "must be a positive number of seconds")
	}
	switch strings.ToLower(s.SessionSameSite) {
	case "lax", "":
		s.SameSite = http.SameSiteLaxMode
	case "strict":
		s.SameSite = http.SameSiteStrictMode
	case "none":
		s.SameSite = http.SameSiteNoneMode
	default:
		bad("SESSION_SAME_SITE", "%q: want Lax, Strict or None", s.SessionSameSite)
	}
	switch s.SessionSecure {
	case "auto", "true", "false":
	default:
		bad("SESSION_COOKIE_SECURE", "%q: want auto, true or false", s.SessionSecure)
	}
	if s.SameSite == http.SameSiteNoneMode && s.SessionSecure == "false" {
		bad("SESSION_SAME_SITE", "None requires Secure cookies (SESSION_COOKIE_SECURE must not be false)")
	}
	if !validCookieName(s.SessionCookieName) {
		bad("SESSION_COOKIE_NAME", "%q is not a valid cookie name", s.SessionCookieName)
	}
	if s.LoginStateTTL <= 0 || s.LoginStateTTL > 15*time.Minute {
		bad("LOGIN_STATE_TTL", "must be between 1s and 15m")
	}
	if s.MaxPendingLogins < 1 || s.MaxPendingLogins > 20 {
		bad("MAX_PENDING_LOGINS", "must be between 1 and 20")
	}
	if s.ProviderTimeout <= 0 {
		bad("PROVIDER_TIMEOUT", "must be positive")
	}
	if s.CABundle != "" {
		if _, err := os.Stat(s.CABundle); err != nil {
			bad("CA_BUNDLE", "cannot read: %v", err)
		}
	}

	if s.SessionIdleTimeout < 0 {
		bad("SESSION_IDLE_TIMEOUT", "must not be negative")
	}
	if s.StrictInterval <= 0 {
		bad("STRICT_SESSION_VALIDATION_INTERVAL", "must be positive")
	}
	if s.StrictGrace < 0 {
		bad("STRICT_SESSION_VALIDATION_GRACE", "must not be negative")
	}
	if s.CheckProviderBudget <= 0 {
		bad("CHECK_PROVIDER_BUDGET", "must be positive")
	}
	switch s.ProviderSignOutMode {
	case "button", "auto":
	default:
		bad("PROVIDER_SIGN_OUT_MODE", "%q: want button or auto", s.ProviderSignOutMode)
	}
	if s.ProviderSignOutURL != "" {
		if u, err := url.Parse(s.ProviderSignOutURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("PROVIDER_SIGN_OUT_URL", "must be an absolute http(s) URL")
		}
	}
	if s.ThemesURL != "" {
		if u, err := url.Parse(s.ThemesURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("THEMES_URL", "must be an absolute http(s) URL")
		}
	}
	if s.TemplatePath != "" {
		if fi, err := os.Stat(s.TemplatePath); err != nil || !fi.IsDir() {
			bad("TEMPLATE_PATH", "not a readable folder")
		}
	}
	s.TemplateContext = map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "TEMPLATE_CONTEXT_") {
			s.TemplateContext[strings.TrimPrefix(k, "TEMPLATE_CONTEXT_")] = v
		}
	}

	keys := s.SessionKeys
	if s.SessionKeysFile != "" {
		b, err := os.ReadFile(s.SessionKeysFile)
		if err != nil {
			bad("SESSION_KEYS_FILE", "cannot read: %v", err)
		} else {
			keys = strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", ",")
		}
	}
	if keys == "" {
		s.GeneratedKeys = true
	} else {
		for i, k := range splitList(keys, ",") {
			secret, err := ParseSecret(k)
			if err != nil {
				bad("SESSION_KEYS", "key %d: %v", i+1, err)
				continue
			}
			s.Keys = append(s.Keys, DeriveKey(secret))
		}
	}
	return errors.Join(errs...)
}

// ParseSecret accepts a secret as base64 (standard or URL alphabet, padded
// or not) when it decodes to at least 32 bytes, else as raw bytes.
func ParseSecret(k string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(k); err == nil && len(b) >= 32 {
			return b, nil
		}
	}
	if len(k) >= 32 {
		return []byte(k), nil
	}
	return nil, fmt.Errorf("too short: need at least 32 bytes (raw) or base64 of at least 32 bytes")
}

// DeriveKey expands one secret into independent HMAC and AES keys with
// HKDF-SHA256, so one secret per rotation step is all an operator manages.
func DeriveKey(secret []byte) Key {
	h, err := hkdf.Key(sha256.New, secret, nil, "oidc-authservice session hmac", 32)
	if err != nil {
		panic(err) // only for lengths > 255*32
	}
	b, err := hkdf.Key(sha256.New, secret, nil, "oidc-authservice session aes", 32)
	if err != nil {
		panic(err)
	}
	return Key{Hash: h, Block: b}
}

func splitList(s, seps string) []string {
	f := strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(seps, r) })
	out := f[:0]
	for _, v := range f {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func validCookieName(n string) bool {
	if n == "" {
		return false
	}
	for _, r := range n {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r) {
			return false
		}
	}
	return true
}
