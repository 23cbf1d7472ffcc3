package config

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// validate parses and checks every section of c into s, reporting every
// problem at once.
func (s *Settings) validate(c *Config) error {
	var p problems
	s.Paths = c.paths(&p)
	s.Provider = c.provider(&p, &s.Warnings, s.Paths.Prefix)
	if u, err := url.Parse(s.Provider.RedirectURL); err != nil || u.Path == "" || !strings.HasPrefix(u.Path, "/") || (u.IsAbs() && u.Host == "") {
		p.add("REDIRECT_URL", "must be an absolute URL or an absolute path")
	} else {
		s.Paths.Callback = u.Path
	}
	if s.Paths.Logout == s.Paths.Callback {
		p.add("LOGOUT_PATH", "%q is the callback's path (REDIRECT_URL)", s.Paths.Logout)
	}
	s.Identity = c.identity(&p)
	s.Servers = c.servers(&p)
	s.Sessions = c.sessions(&p)
	s.Logout = c.logout(&p)
	s.Bearer = Bearer{AuthenticationConfigFile: c.AuthenticationConfigFile, AcceptProviderIDTokens: c.AcceptProviderIDTokens,
		ProviderTokenAudiences: splitList(c.ProviderIDTokenAudiences, ", "), RulesFile: c.AuthorizationRulesFile,
		TokenReview: c.KubernetesAuthn, ReviewAudiences: splitList(c.Audiences, ","), ServiceAccountDir: c.KubernetesServiceDir,
		CacheSize: c.TokenCacheSize}
	for _, v := range []struct {
		name string
		n    int
	}{{"SESSION_CACHE_SIZE", c.SessionCacheSize}, {"TOKEN_CACHE_SIZE", c.TokenCacheSize}} {
		if v.n < 1000 || v.n > 10_000_000 {
			p.add(v.name, "%d: must be between 1000 and 10000000", v.n)
		}
	}
	if len(s.Bearer.ProviderTokenAudiences) == 0 {
		s.Bearer.ProviderTokenAudiences = []string{c.ClientID}
	}
	c.accessTokens(&p, &s.Bearer)
	s.Authorizer = c.authorizer(&p)
	s.ForwardAuth = c.forwardAuth(&p)
	s.Upstream = c.upstreamToken(&p)
	c.pages(&p, &s.Pages)
	s.Tracing = c.tracing(&p)
	return errors.Join(p...)
}

func (c *Config) provider(p *problems, warnings *[]string, prefix string) Provider {
	v := Provider{Issuer: c.Provider, AuthURL: c.AuthURL, ClientID: c.ClientID, ClientSecret: c.ClientSecret,
		RedirectURL: c.RedirectURL, CABundle: c.CABundle, Timeout: c.ProviderTimeout}
	if c.Provider == "" {
		p.add("OIDC_PROVIDER", "required")
	} else if !httpURL(c.Provider) {
		p.add("OIDC_PROVIDER", "must be an absolute http(s) URL")
	}
	if c.ClientID == "" {
		p.add("CLIENT_ID", "required")
	}
	if c.ClientSecretFile != "" {
		b, err := os.ReadFile(c.ClientSecretFile)
		if err != nil {
			p.add("CLIENT_SECRET_FILE", "cannot read: %v", err)
		} else {
			v.ClientSecret = strings.TrimRight(string(b), "\r\n")
		}
	}
	if v.ClientSecret == "" {
		p.add("CLIENT_SECRET", "required (or CLIENT_SECRET_FILE)")
	}
	if why := PublishedClientSecret(v.ClientSecret); why != "" {
		*warnings = append(*warnings, "CLIENT_SECRET is published: "+why+". It proves nothing about this installation: "+
			"anyone holding it can act as this client at the provider (redeem codes and refresh tokens issued to it). "+
			"Generate a new one (openssl rand -hex 24), set it in the provider's client registration (Kubeflow: Dex's "+
			"OIDC_CLIENT_SECRET, Secret dex-oidc-client in namespace auth) and here, then restart both")
	}
	if v.RedirectURL == "" {
		v.RedirectURL = prefix + "oidc/callback"
	}
	if c.AuthURL != "" {
		if u, err := url.Parse(c.AuthURL); err != nil || (!u.IsAbs() && !strings.HasPrefix(u.Path, "/")) {
			p.add("OIDC_AUTH_URL", "must be an absolute URL or an absolute path")
		}
	}
	v.Scopes = splitList(c.Scopes, ", ")
	if !slices.Contains(v.Scopes, "openid") {
		v.Scopes = append([]string{"openid"}, v.Scopes...)
	}
	if c.ProviderTimeout <= 0 {
		p.add("PROVIDER_TIMEOUT", "must be positive")
	}
	if c.CABundle != "" {
		if _, err := os.Stat(c.CABundle); err != nil {
			p.add("CA_BUNDLE", "cannot read: %v", err)
		}
	}
	return v
}

func (c *Config) paths(p *problems) Paths {
	prefix := c.URLPrefix
	if !strings.HasPrefix(prefix, "/") {
		p.add("AUTHSERVICE_URL_PREFIX", "must start with /")
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	v := Paths{Prefix: prefix, Logout: c.LogoutPath, Site: prefix + "site/", Backchannel: prefix + "oidc/backchannel-logout",
		Verify: c.VerifyAuthURL, Start: prefix + "start", AfterLogin: c.AfterLoginURL, AfterLogout: c.AfterLogoutURL,
		Homepage: c.HomepageURL, AllowOptions: c.AllowUnauthenticatedOptions}
	if v.Verify == "" {
		v.Verify = prefix + "verify"
	} else if !strings.HasPrefix(v.Verify, "/") || strings.ContainsAny(v.Verify, "?#") {
		p.add("VERIFY_AUTH_URL", "%q must be a path (starting with /, no query)", v.Verify)
	}
	if v.Logout == "" {
		v.Logout = prefix + "logout"
	} else if !strings.HasPrefix(v.Logout, "/") || strings.ContainsAny(v.Logout, "?#") {
		p.add("LOGOUT_PATH", "%q must be a path (starting with /, no query)", v.Logout)
	}
	if v.AfterLogout == "" {
		v.AfterLogout = v.Site + "after_logout"
	}
	if v.Homepage == "" {
		// Straight to the provider's login: the home page in between ("Sign
		// in to continue") would be one more click to the same place.
		v.Homepage = v.Start
	}
	v.Skip = append(splitList(c.SkipAuthURLs, ","), splitList(c.SkipAuthURI, " ,")...)
	for _, s := range v.Skip {
		if !strings.HasPrefix(s, "/") {
			p.add("SKIP_AUTH_URLS", "%q must start with /", s)
		}
	}
	v.API = splitList(c.APIPathPrefixes, ",")
	for _, s := range v.API {
		if !strings.HasPrefix(s, "/") {
			p.add("API_PATH_PREFIXES", "%q must start with /", s)
		}
	}
	for _, h := range splitList(c.AllowedRedirectHosts, ",") {
		v.AllowedRedirectHosts = append(v.AllowedRedirectHosts, strings.ToLower(h))
	}
	return v
}

func (c *Config) identity(p *problems) Identity {
	v := Identity{UserHeader: c.UserIDHeader, UserPrefix: c.UserIDPrefix, UserClaim: c.UserIDClaim,
		GroupsHeader: c.GroupsHeader, GroupsClaim: c.GroupsClaim, AllowUnverifiedEmail: c.AllowUnverifiedEmail,
		AuthRequestHeaders: c.AuthRequestHeaders, GroupsMax: c.GroupsMax, GroupsFilterPrefixes: splitList(c.GroupsFilterPrefixes, ","),
		UpstreamHeaderMaxBytes: c.UpstreamHeaderMaxBytes}
	if c.GroupsFilter != "" {
		re, err := regexp.Compile(c.GroupsFilter)
		if err != nil {
			p.add("GROUPS_FILTER", "not a regular expression (RE2): %v", err)
		}
		v.GroupsFilter = re
	}
	if c.GroupsMax < 1 || c.GroupsMax > 100_000 {
		p.add("GROUPS_MAX", "%d: must be between 1 and 100000", c.GroupsMax)
	}
	switch c.GroupsOverflow {
	case "refuse":
	case "truncate":
		v.GroupsTruncate = true
	default:
		p.add("GROUPS_OVERFLOW", "%q: want refuse or truncate", c.GroupsOverflow)
	}
	if c.UpstreamHeaderMaxBytes < 1024 || c.UpstreamHeaderMaxBytes > 1<<20 {
		p.add("UPSTREAM_HEADER_MAX_BYTES", "%d: must be between 1024 and 1048576", c.UpstreamHeaderMaxBytes)
	}
	for _, g := range splitList(c.GroupsAllowlist, ",") {
		if g == "*" {
			v.AllowAllGroups = true
		}
		v.AllowedGroups = append(v.AllowedGroups, g)
	}
	if len(v.AllowedGroups) == 0 {
		p.add("GROUPS_ALLOWLIST", "empty: nobody could log in (use * to allow everybody)")
	}
	if c.UserIDTransformers != "" {
		var raw []struct {
			Matches  string `json:"matches"`
			Replaces string `json:"replaces"`
		}
		if err := json.Unmarshal([]byte(c.UserIDTransformers), &raw); err != nil {
			p.add("USERID_TRANSFORMERS", "not a JSON list of {matches, replaces}: %v", err)
		}
		for i, r := range raw {
			re, err := regexp.Compile(r.Matches)
			if err != nil {
				p.add("USERID_TRANSFORMERS", "rule %d: %v", i, err)
				continue
			}
			v.Transformers = append(v.Transformers, Transformer{Matches: re, Replaces: r.Replaces})
		}
	}
	for env, val := range map[string]string{"USERID_HEADER": c.UserIDHeader, "GROUPS_HEADER": c.GroupsHeader, "USERID_CLAIM": c.UserIDClaim} {
		if val == "" {
			p.add(env, "must not be empty")
		}
	}
	return v
}

func (c *Config) servers(p *problems) Servers {
	v := Servers{Host: c.Hostname, CheckPort: c.Port, ProbePort: c.ReadinessPort, WebPort: c.WebServerPort, GRPCPort: c.GRPCPort,
		AccessLog: c.AccessLog, AccessLogRate: c.AccessLogRate}
	for _, port := range []struct {
		env string
		n   int
	}{{"SERVER_PORT", c.Port}, {"READINESS_PROBE_PORT", c.ReadinessPort}, {"WEB_SERVER_PORT", c.WebServerPort}} {
		if port.n < 1 || port.n > 65535 {
			p.add(port.env, "%d is not a port (1 to 65535)", port.n)
		}
	}
	switch g := c.GRPCPort; {
	case g < 0 || g > 65535:
		p.add("GRPC_PORT", "%d is not a port (1 to 65535, or 0 for no gRPC check)", g)
	case g != 0 && (g == c.Port || g == c.ReadinessPort || g == c.WebServerPort):
		p.add("GRPC_PORT", "%d is already SERVER_PORT, READINESS_PROBE_PORT or WEB_SERVER_PORT: the gRPC check needs a port of its own", g)
	}
	if c.AccessLogRate < 0 || c.AccessLogRate > 1 || c.AccessLogRate != c.AccessLogRate {
		p.add("ACCESS_LOG_SAMPLE_RATE", "%v: want a fraction between 0 and 1", c.AccessLogRate)
	}
	switch f := strings.ToLower(strings.TrimSpace(c.LogFormat)); f {
	case "json", "console":
		v.LogFormat = f
	default:
		p.add("LOG_FORMAT", "%q: want json or console", c.LogFormat)
	}
	if l, ok := parseLogLevel(c.LogLevel); ok {
		v.LogLevel = l
	} else {
		p.add("LOG_LEVEL", "%q: want debug, info, warn or error (or the predecessor's TRACE, WARNING, FATAL, PANIC)", c.LogLevel)
	}
	return v
}

func (c *Config) sessions(p *problems) Sessions {
	v := Sessions{MaxAge: time.Duration(c.SessionMaxAge) * time.Second, CookieName: c.SessionCookieName, HTTPOnly: c.SessionHTTPOnly,
		Secure: c.SessionSecure, HostPrefix: c.SessionHostPrefix, AcceptPlain: c.SessionAcceptPlain, Domain: c.SessionDomain,
		LoginStateTTL: c.LoginStateTTL, MaxPendingLogins: c.MaxPendingLogins, IdleTimeout: c.SessionIdleTimeout, RenewRedirect: c.SessionRenewRedirect,
		CacheSize: c.SessionCacheSize, MaxCookies: c.SessionMaxCookies,
		RefreshBeforeExpiry: c.RefreshBeforeExpiry, StrictValidation: c.StrictValidation, StrictInterval: c.StrictInterval,
		StrictGrace: c.StrictGrace, CheckProviderBudget: c.CheckProviderBudget}
	if c.SessionMaxAge <= 0 {
		p.add("SESSION_MAX_AGE", "must be a positive number of seconds")
	}
	switch strings.ToLower(c.SessionSameSite) {
	case "lax", "":
		v.SameSite = http.SameSiteLaxMode
	case "strict":
		v.SameSite = http.SameSiteStrictMode
	case "none":
		v.SameSite = http.SameSiteNoneMode
	default:
		p.add("SESSION_SAME_SITE", "%q: want Lax, Strict or None", c.SessionSameSite)
	}
	switch c.SessionSecure {
	case "auto", "true", "false":
	default:
		p.add("SESSION_COOKIE_SECURE", "%q: want auto, true or false", c.SessionSecure)
	}
	if v.SameSite == http.SameSiteNoneMode && c.SessionSecure == "false" {
		p.add("SESSION_SAME_SITE", "None requires Secure cookies (SESSION_COOKIE_SECURE must not be false)")
	}
	if !validCookieName(c.SessionCookieName) {
		p.add("SESSION_COOKIE_NAME", "%q is not a valid cookie name", c.SessionCookieName)
	}
	if c.SessionMaxCookies < 1 || c.SessionMaxCookies > 8 {
		p.add("SESSION_MAX_COOKIES", "%d: must be between 1 and 8", c.SessionMaxCookies)
	}
	if c.LoginStateTTL <= 0 || c.LoginStateTTL > 15*time.Minute {
		p.add("LOGIN_STATE_TTL", "must be between 1s and 15m")
	}
	if c.MaxPendingLogins < 1 || c.MaxPendingLogins > 20 {
		p.add("MAX_PENDING_LOGINS", "must be between 1 and 20")
	}
	if c.SessionIdleTimeout < 0 {
		p.add("SESSION_IDLE_TIMEOUT", "must not be negative")
	}
	if c.RefreshBeforeExpiry < 0 {
		p.add("REFRESH_BEFORE_EXPIRY", "must not be negative")
	}
	if c.StrictInterval <= 0 {
		p.add("STRICT_SESSION_VALIDATION_INTERVAL", "must be positive")
	}
	if c.StrictGrace < 0 {
		p.add("STRICT_SESSION_VALIDATION_GRACE", "must not be negative")
	}
	if c.CheckProviderBudget <= 0 {
		p.add("CHECK_PROVIDER_BUDGET", "must be positive")
	}
	keys, from := c.SessionKeys, "SESSION_KEYS"
	if c.SessionKeysFile != "" {
		b, err := os.ReadFile(c.SessionKeysFile)
		if err != nil {
			p.add("SESSION_KEYS_FILE", "cannot read: %v", err)
		} else {
			keys, from = string(b), "SESSION_KEYS_FILE"
		}
	}
	v.Generated = strings.TrimSpace(keys) == ""
	v.KeySecret = strings.TrimSpace(c.SessionKeysSecret)
	if v.KeySecret != "" && !validObjectName(v.KeySecret) {
		p.add("SESSION_KEYS_SECRET", "%q is not a Secret name (lower-case letters, digits, - and ., at most 253)", v.KeySecret)
	}
	secrets, errs := SessionSecrets(keys)
	for _, err := range errs {
		p.add(from, "%v", err)
	}
	v.Secrets = secrets
	return v
}

// validObjectName reports whether n is a Kubernetes object name (a DNS
// subdomain: RFC 1123 labels joined by dots).
func validObjectName(n string) bool {
	if len(n) > 253 {
		return false
	}
	for _, l := range strings.Split(n, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return false
			}
		}
	}
	return true
}

func (c *Config) logout(p *problems) Logout {
	switch c.ProviderSignOutMode {
	case "button", "auto":
	default:
		p.add("PROVIDER_SIGN_OUT_MODE", "%q: want button or auto", c.ProviderSignOutMode)
	}
	if c.ProviderSignOutURL != "" && !httpURL(c.ProviderSignOutURL) {
		p.add("PROVIDER_SIGN_OUT_URL", "must be an absolute http(s) URL")
	}
	if c.BackchannelMaxAge <= 0 {
		p.add("BACKCHANNEL_LOGOUT_MAX_AGE", "must be positive (every logout token would be refused)")
	}
	v := Logout{RevokeTokens: c.RevokeOnLogout, ProviderLogout: c.ProviderLogout, PostLogoutRedirectURL: c.PostLogoutRedirectURL,
		ProviderSignOutURL: c.ProviderSignOutURL, ProviderSignOutMode: c.ProviderSignOutMode, BackchannelMaxAge: c.BackchannelMaxAge,
		RedisURL: c.RedisURL, RedisKeyPrefix: c.RedisKeyPrefix, RedisSentinelMaster: strings.TrimSpace(c.RedisSentinelMaster),
		RedisSentinelAddrs: splitList(c.RedisSentinelAddrs, ", "), RedisSentinelPassword: c.RedisSentinelPassword,
		RedisClusterAddrs: splitList(c.RedisClusterAddrs, ", ")}
	c.redis(p, &v)
	return v
}

// redis checks the Redis variables: one mode (a single Redis, Sentinel or
// Cluster), host:port addresses, and with Sentinel or Cluster a REDIS_URL
// that names no server. The URL's own syntax is checked where it is parsed
// (package revocation), with its password kept out of the message.
func (c *Config) redis(p *problems, v *Logout) {
	sentinel, cluster := v.RedisSentinelMaster != "", len(v.RedisClusterAddrs) > 0
	switch {
	case sentinel && cluster:
		p.add("REDIS_CLUSTER_ADDRS", "set with REDIS_SENTINEL_MASTER_NAME: use Sentinel or Cluster, not both")
	case sentinel && len(v.RedisSentinelAddrs) == 0:
		p.add("REDIS_SENTINEL_ADDRS", "required with REDIS_SENTINEL_MASTER_NAME")
	case !sentinel && len(v.RedisSentinelAddrs) > 0:
		p.add("REDIS_SENTINEL_MASTER_NAME", "required with REDIS_SENTINEL_ADDRS")
	case !sentinel && v.RedisSentinelPassword != "":
		p.add("REDIS_SENTINEL_PASSWORD", "set without REDIS_SENTINEL_MASTER_NAME")
	}
	for _, list := range []struct {
		name  string
		addrs []string
	}{{"REDIS_SENTINEL_ADDRS", v.RedisSentinelAddrs}, {"REDIS_CLUSTER_ADDRS", v.RedisClusterAddrs}} {
		for _, a := range list.addrs {
			host, port, err := net.SplitHostPort(a)
			if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
				p.add(list.name, "%q is not host:port", a)
			}
		}
	}
	if (!sentinel && !cluster) || v.RedisURL == "" {
		return
	}
	u, err := url.Parse(v.RedisURL)
	switch {
	case err != nil || (u.Scheme != "redis" && u.Scheme != "rediss"):
		p.add("REDIS_URL", "with Sentinel or Cluster, must be redis://:password@ or rediss://user:password@ (no host)")
	case u.Host != "":
		p.add("REDIS_URL", "names the server %s: with Sentinel or Cluster the servers come from REDIS_SENTINEL_ADDRS or REDIS_CLUSTER_ADDRS; give only the password, user, database and TLS (redis://:password@/0)", u.Host)
	case cluster && strings.Trim(u.Path, "/") != "" && strings.Trim(u.Path, "/") != "0":
		p.add("REDIS_URL", "database %s: a Redis Cluster has only database 0", strings.Trim(u.Path, "/"))
	}
}

func (c *Config) forwardAuth(p *problems) ForwardAuth {
	v := ForwardAuth{Proxy: c.ForwardAuthProxy, Redirect: c.ForwardAuthRedirect, AnswerMax: c.ForwardAuthAnswerMax}
	if c.ForwardAuthAnswerMax != 0 && (c.ForwardAuthAnswerMax < 1024 || c.ForwardAuthAnswerMax > 1<<20) {
		p.add("FORWARD_AUTH_ANSWER_MAX_BYTES", "%d: must be 0 (no bound) or between 1024 and 1048576", c.ForwardAuthAnswerMax)
	}
	switch c.ForwardAuthProxy {
	case "nginx", "ingress-nginx", "caddy", "traefik":
	default:
		p.add("FORWARD_AUTH_PROXY", "%q: want nginx, ingress-nginx, caddy or traefik", c.ForwardAuthProxy)
	}
	for _, s := range splitList(c.ForwardAuthTrustedProxies, ",") {
		if !strings.Contains(s, "/") {
			if strings.Contains(s, ":") {
				s += "/128"
			} else {
				s += "/32"
			}
		}
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			p.add("FORWARD_AUTH_TRUSTED_PROXIES", "%q is not an address or CIDR", s)
			continue
		}
		v.TrustedProxies = append(v.TrustedProxies, pfx)
	}
	return v
}

func (c *Config) upstreamToken(p *problems) UpstreamToken {
	switch c.UpstreamToken {
	case "none", "id_token", "issued":
	default:
		p.add("UPSTREAM_TOKEN", "%q: want none, id_token or issued", c.UpstreamToken)
	}
	if c.UpstreamToken == "issued" && !httpURL(c.UpstreamTokenIssuer) {
		p.add("UPSTREAM_TOKEN_ISSUER", "%q must be an absolute http(s) URL (the iss of issued tokens)", c.UpstreamTokenIssuer)
	}
	if c.UpstreamTokenLifetime < 10*time.Second || c.UpstreamTokenLifetime > 24*time.Hour {
		p.add("UPSTREAM_TOKEN_LIFETIME", "must be between 10s and 24h")
	}
	switch c.UpstreamBearer {
	case "remove", "keep":
	default:
		p.add("UPSTREAM_BEARER", "%q: want remove or keep", c.UpstreamBearer)
	}
	return UpstreamToken{Mode: c.UpstreamToken, Issuer: c.UpstreamTokenIssuer, Audience: c.UpstreamTokenAudience,
		Lifetime: c.UpstreamTokenLifetime, KeysFile: c.UpstreamTokenKeysFile, KeepBearer: c.UpstreamBearer == "keep"}
}

func (c *Config) pages(p *problems, v *Pages) {
	v.ClientName, v.Theme, v.ThemesURL, v.TemplatePath = c.ClientName, c.Theme, c.ThemesURL, c.TemplatePath
	if c.ThemesURL != "" && !httpURL(c.ThemesURL) {
		p.add("THEMES_URL", "must be an absolute http(s) URL")
	}
	if c.TemplatePath != "" {
		if fi, err := os.Stat(c.TemplatePath); err != nil || !fi.IsDir() {
			p.add("TEMPLATE_PATH", "not a readable folder")
		}
	}
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

// samplers are the values of OTEL_TRACES_SAMPLER the service implements
// (the specification's, without the Jaeger remote and X-Ray ones).
var samplers = []string{"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"}

func (c *Config) tracing(p *problems) Tracing {
	v := Tracing{Protocol: c.OTLPProtocol, Sampler: strings.ToLower(strings.TrimSpace(c.TracesSampler)), SamplerArg: 1,
		ServiceName: c.ServiceName}
	if c.OTLPTracesProtocol != "" {
		v.Protocol = c.OTLPTracesProtocol
	}
	protocolVar := "OTEL_EXPORTER_OTLP_PROTOCOL"
	if c.OTLPTracesProtocol != "" {
		protocolVar = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	}
	switch v.Protocol {
	case "http/protobuf", "grpc":
	case "http/json":
		p.add(protocolVar, "http/json is not supported by the OpenTelemetry Go SDK: use http/protobuf or grpc")
	default:
		p.add(protocolVar, "%q: must be http/protobuf or grpc", v.Protocol)
	}
	if !slices.Contains(samplers, v.Sampler) {
		p.add("OTEL_TRACES_SAMPLER", "%q: must be one of %s", c.TracesSampler, strings.Join(samplers, ", "))
	}
	if a := strings.TrimSpace(c.TracesSamplerArg); a != "" && strings.HasSuffix(v.Sampler, "traceidratio") {
		f, err := strconv.ParseFloat(a, 64)
		if err != nil || f < 0 || f > 1 {
			p.add("OTEL_TRACES_SAMPLER_ARG", "%q: must be a number from 0 to 1", a)
		} else {
			v.SamplerArg = f
		}
	}
	for _, kv := range strings.Split(c.ResourceAttributes, ",") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		k, val, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		dec, err := url.PathUnescape(strings.TrimSpace(val))
		if !ok || k == "" || err != nil {
			p.add("OTEL_RESOURCE_ATTRIBUTES", "%q: must be key=value pairs separated by commas, values percent-encoded", kv)
			continue
		}
		v.Attributes = append(v.Attributes, [2]string{k, dec})
		if k == "service.name" && v.ServiceName == "" {
			v.ServiceName = dec
		}
	}
	if v.ServiceName == "" {
		v.ServiceName = "oidc-authservice"
	}
	endpoint, name := c.OTLPEndpoint, "OTEL_EXPORTER_OTLP_ENDPOINT"
	if c.OTLPTracesEndpoint != "" {
		endpoint, name = c.OTLPTracesEndpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	}
	if endpoint == "" || strings.EqualFold(strings.TrimSpace(c.SDKDisabled), "true") {
		return v
	}
	u, err := url.Parse(endpoint)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		p.add(name, "must be an absolute http(s) URL (http://otel-collector:4318)")
		return v
	case u.User != nil:
		p.add(name, "credentials in the URL: put them in OTEL_EXPORTER_OTLP_HEADERS")
		return v
	case u.RawQuery != "" || u.Fragment != "":
		p.add(name, "must have no query or fragment")
		return v
	}
	switch {
	case v.Protocol == "grpc":
		u.Path, u.RawPath = "", ""
	case name == "OTEL_EXPORTER_OTLP_ENDPOINT":
		// The specification: the base URL with v1/traces appended.
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
		u.RawPath = ""
	}
	v.Endpoint = u.String()
	return v
}

// accessTokens reads ACCESS_TOKEN_*: which of the provider's access tokens
// are accepted as bearer tokens, and the bounds of opaque-token lookups.
func (c *Config) accessTokens(p *problems, b *Bearer) {
	mode := strings.ToLower(strings.TrimSpace(c.AccessTokenAuthn))
	switch mode {
	case "jwt", "opaque":
	default:
		p.add("ACCESS_TOKEN_AUTHN", "%q: want jwt or opaque", c.AccessTokenAuthn)
	}
	if c.AccessTokenAuthnEnabled {
		b.AccessTokens = mode
	}
	b.AccessAudiences = splitList(c.AccessTokenAudiences, ",")
	if c.AccessTokenAudiences == "" {
		b.AccessAudiences = splitList(c.Audiences, ",")
	}
	b.AccessCacheTTL, b.AccessLookupRate, b.AccessLookupConcurr = c.AccessTokenCacheTTL, c.AccessTokenLookupRate, c.AccessTokenLookupConc
	if c.AccessTokenCacheTTL < time.Second || c.AccessTokenCacheTTL > 10*time.Minute {
		p.add("ACCESS_TOKEN_CACHE_TTL", "%v: must be between 1s and 10m", c.AccessTokenCacheTTL)
	}
	if c.AccessTokenLookupRate < 1 || c.AccessTokenLookupRate > 10000 {
		p.add("ACCESS_TOKEN_LOOKUPS_PER_SECOND", "%d: must be between 1 and 10000", c.AccessTokenLookupRate)
	}
	if c.AccessTokenLookupConc < 1 || c.AccessTokenLookupConc > 1000 {
		p.add("ACCESS_TOKEN_LOOKUP_CONCURRENCY", "%d: must be between 1 and 1000", c.AccessTokenLookupConc)
	}
}

// authorizer reads EXTERNAL_AUTHZ_*.
func (c *Config) authorizer(p *problems) Authorizer {
	v := Authorizer{URL: strings.TrimSpace(c.ExternalAuthzURL), Format: strings.ToLower(strings.TrimSpace(c.ExternalAuthzFormat)),
		Timeout: c.ExternalAuthzTimeout, MaxConcurrent: c.ExternalAuthzMaxCalls, CacheTTL: c.ExternalAuthzCacheTTL,
		CacheSize: c.ExternalAuthzCacheMax, CABundle: c.ExternalAuthzCA}
	switch v.Format {
	case "arrikto", "opa":
	default:
		p.add("EXTERNAL_AUTHZ_FORMAT", "%q: want arrikto or opa", c.ExternalAuthzFormat)
	}
	if v.URL != "" {
		u, err := url.Parse(v.URL)
		switch {
		case err != nil || !httpURL(v.URL):
			p.add("EXTERNAL_AUTHZ_URL", "must be an absolute http(s) URL")
		case u.User != nil || u.Fragment != "":
			p.add("EXTERNAL_AUTHZ_URL", "must have no user info and no fragment")
		case v.Format == "opa" && !strings.HasPrefix(u.Path, "/v1/data/"):
			p.add("EXTERNAL_AUTHZ_URL", "with EXTERNAL_AUTHZ_FORMAT=opa, OPA's Data API URL of the policy: http(s)://<opa>/v1/data/<policy path>")
		}
	}
	if v.Timeout < 10*time.Millisecond || v.Timeout > 30*time.Second {
		p.add("EXTERNAL_AUTHZ_TIMEOUT", "%v: must be between 10ms and 30s", v.Timeout)
	}
	if v.MaxConcurrent < 1 || v.MaxConcurrent > 10000 {
		p.add("EXTERNAL_AUTHZ_MAX_CONCURRENT", "%d: must be between 1 and 10000", v.MaxConcurrent)
	}
	if v.CacheTTL < 0 || v.CacheTTL > 5*time.Minute {
		p.add("EXTERNAL_AUTHZ_CACHE_TTL", "%v: must be between 0 and 5m", v.CacheTTL)
	}
	if v.CacheSize < 100 || v.CacheSize > 10_000_000 {
		p.add("EXTERNAL_AUTHZ_CACHE_SIZE", "%d: must be between 100 and 10000000", v.CacheSize)
	}
	if v.CABundle != "" {
		if _, err := os.Stat(v.CABundle); err != nil {
			p.add("EXTERNAL_AUTHZ_CA_BUNDLE", "cannot read: %v", err)
		}
	}
	return v
}
