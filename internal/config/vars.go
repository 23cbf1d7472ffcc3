package config

import "time"

// Config is every variable of the service, as read from the environment,
// grouped by concern. Field tags carry the variable name (env), its default
// and a description; the same tags produce --help and
// docs/configuration.md, so they cannot drift apart. Secret fields are
// tagged secret:"true" and never printed (Settings.Redacted).
type Config struct {
	ProviderVars
	URLVars
	IdentityVars
	ServerVars
	SessionVars
	LifetimeVars
	LogoutVars
	BearerVars
	ExternalAuthzVars
	ForwardAuthVars
	UpstreamTokenVars
	PagesVars
	TracingVars
}

// ProviderVars are the variables of the provider and the client registered there.
type ProviderVars struct {
	Provider         string        `env:"OIDC_PROVIDER" desc:"Issuer URL of the OpenID Connect provider; discovery is read from <issuer>/.well-known/openid-configuration. Required."`
	AuthURL          string        `env:"OIDC_AUTH_URL" desc:"Overrides the provider's authorization endpoint as the browser sees it. May be relative (Kubeflow: /dex/auth), then it is resolved by the browser against the request's host."`
	ClientID         string        `env:"CLIENT_ID" desc:"OAuth client id registered at the provider. Required."`
	ClientSecret     string        `env:"CLIENT_SECRET" secret:"true" desc:"OAuth client secret. Required unless CLIENT_SECRET_FILE is set."`
	ClientSecretFile string        `env:"CLIENT_SECRET_FILE" desc:"File holding the client secret (a mounted Kubernetes Secret); trailing newline is ignored."`
	RedirectURL      string        `env:"REDIRECT_URL" desc:"Callback URL sent to the provider, exactly as configured (may be relative, as Kubeflow's Dex client expects). Default <AUTHSERVICE_URL_PREFIX>oidc/callback."`
	Scopes           string        `env:"OIDC_SCOPES" default:"openid,email" desc:"Scopes to request, comma- or space-separated; openid is always added."`
	CABundle         string        `env:"CA_BUNDLE" desc:"PEM file of CA certificates trusted for calls to the provider, added to the system pool."`
	ProviderTimeout  time.Duration `env:"PROVIDER_TIMEOUT" default:"10s" desc:"Timeout of every outbound call to the provider (discovery, token, keys, userinfo, revocation). A callback's calls together get at most twice this."`
}

// URLVars are the variables of URLs and paths.
type URLVars struct {
	URLPrefix                   string `env:"AUTHSERVICE_URL_PREFIX" default:"/authservice/" desc:"Path prefix of the service's own endpoints (callback, logout, pages)."`
	SkipAuthURLs                string `env:"SKIP_AUTH_URLS" desc:"Comma-separated path prefixes let through without authentication (identity headers are stripped). Kubeflow: /dex. A prefix without a trailing slash matches that path and its sub-paths only."`
	SkipAuthURI                 string `env:"SKIP_AUTH_URI" desc:"Deprecated space-separated form of SKIP_AUTH_URLS (Kubeflow ≤1.6); both are merged."`
	APIPathPrefixes             string `env:"API_PATH_PREFIXES" default:"/api/,/apis/,/ml_metadata" desc:"Comma-separated path prefixes treated as API routes: without a session they get 401 instead of a login redirect."`
	AfterLoginURL               string `env:"AFTER_LOGIN_URL" desc:"If set, after login the browser goes here with ?next=<original URL> instead of straight to the original URL."`
	AfterLogoutURL              string `env:"AFTER_LOGOUT_URL" desc:"Where the browser goes after logout. Default <AUTHSERVICE_URL_PREFIX>site/after_logout (the service's own page on WEB_SERVER_PORT)."`
	HomepageURL                 string `env:"HOMEPAGE_URL" desc:"Link target of the after-logout page's \"Sign in again\" button. Default <AUTHSERVICE_URL_PREFIX>start: straight to the provider's login, then to /."`
	AllowedRedirectHosts        string `env:"ALLOWED_REDIRECT_HOSTS" desc:"Comma-separated hosts (a leading *. matches sub-domains) a login may return to besides the callback request's own host."`
	LogoutPath                  string `env:"LOGOUT_PATH" desc:"Path of the logout endpoint on SERVER_PORT (GET: 302 to AFTER_LOGOUT_URL; POST: 201 JSON). Default <AUTHSERVICE_URL_PREFIX>logout. In oauth2-proxy's place: /oauth2/sign_out, the dashboard's LOGOUT_URL."`
	AllowUnauthenticatedOptions bool   `env:"ALLOW_UNAUTHENTICATED_OPTIONS" default:"false" desc:"Let OPTIONS requests (CORS pre-flights) through without a session, identity headers stripped."`
}

// IdentityVars are the variables of the identity forwarded upstream.
type IdentityVars struct {
	UserIDHeader           string `env:"USERID_HEADER" default:"kubeflow-userid" desc:"Header that carries the user id upstream."`
	UserIDPrefix           string `env:"USERID_PREFIX" desc:"Prefix put before the user id in USERID_HEADER."`
	UserIDClaim            string `env:"USERID_CLAIM" default:"email" desc:"Claim (ID token merged with userinfo) that holds the user id."`
	UserIDTransformers     string `env:"USERID_TRANSFORMERS" desc:"JSON list [{\"matches\": regex, \"replaces\": replacement}] applied to the user id; the first matching rule applies."`
	GroupsHeader           string `env:"GROUPS_HEADER" default:"kubeflow-groups" desc:"Header that carries the comma-joined groups upstream (always set, possibly empty)."`
	GroupsClaim            string `env:"GROUPS_CLAIM" default:"groups" desc:"Claim that holds the user's groups (a list of strings)."`
	GroupsAllowlist        string `env:"GROUPS_ALLOWLIST" default:"*" desc:"Comma-separated groups allowed in; * allows every authenticated user."`
	GroupsFilter           string `env:"GROUPS_FILTER" desc:"Regular expression (RE2): only the groups it matches are kept, wherever groups enter (login: ID token and userinfo; sessions sealed under another filter, when opened; bearer tokens of every issuer; TokenReview), before GROUPS_ALLOWLIST, the rules and the limits. It matches anywhere in a name: anchor it, e.g. ^(acme/ml|acme/data)(/|$) keeps two GitLab groups and their subgroups. A group named in GROUPS_ALLOWLIST or the rules that it removes is a configuration error. Empty (and GROUPS_FILTER_PREFIXES empty): every group. See Groups below."`
	GroupsFilterPrefixes   string `env:"GROUPS_FILTER_PREFIXES" desc:"Comma-separated prefixes: only the groups that start with one of them are kept (with GROUPS_FILTER too, a group either keeps stays), e.g. kubeflow-,acme/ml/."`
	GroupsMax              int    `env:"GROUPS_MAX" default:"256" desc:"Most groups an identity keeps, after GROUPS_FILTER (1 to 100000). Beyond it, or beyond what UPSTREAM_HEADER_MAX_BYTES lets the groups header carry, GROUPS_OVERFLOW decides."`
	GroupsOverflow         string `env:"GROUPS_OVERFLOW" default:"refuse" desc:"What happens to an identity whose groups (after GROUPS_FILTER) exceed GROUPS_MAX or the groups header's UPSTREAM_HEADER_MAX_BYTES: refuse (a login gets a page, an API client JSON, saying how many groups there are and what to set; a bearer token gets 403 identity_too_large) or truncate (the first groups that fit are kept; requests needing a group beyond them are refused by the policy or the application). Either way the metric oidc_authservice_identity_limits_total counts it and one log line gives the counts."`
	UpstreamHeaderMaxBytes int    `env:"UPSTREAM_HEADER_MAX_BYTES" default:"8190" desc:"Longest header line (name, colon, space, value, CRLF) the upstreams accept. Every identity header the service hands upstream must fit: GROUPS_HEADER and X-Auth-Request-Groups (so the joined groups are at most this minus the header name and 4 bytes: 8171 for kubeflow-groups), the Authorization of UPSTREAM_TOKEN (an ID token longer than that refuses the login with a page). Default: gunicorn's limit_request_field_size (Kubeflow's Python web apps), which also holds behind nginx's large_client_header_buffers (8k) and Envoy's 60 KiB of request headers. 1024 to 1048576."`
	AuthRequestHeaders     bool   `env:"AUTH_REQUEST_HEADERS" default:"false" desc:"Also answer allowed requests with oauth2-proxy's X-Auth-Request-User (the user id with USERID_PREFIX), X-Auth-Request-Email (the email claim) and X-Auth-Request-Groups (comma-joined), which Kubeflow 1.9.1+ lists in headersToUpstreamOnAllow. A client-sent copy never reaches the upstream: a header without a value is removed."`
	AllowUnverifiedEmail   bool   `env:"ALLOW_UNVERIFIED_EMAIL" default:"false" desc:"With USERID_CLAIM=email, accept a login or a provider ID token whose email_verified claim is false. Off: such a login gets a 403 page (on a provider with self-registration, anyone could otherwise claim a colleague's address and namespace)."`
}

// ServerVars are the variables of the servers and their logs.
type ServerVars struct {
	Hostname      string  `env:"SERVER_HOSTNAME" desc:"Address the servers listen on (empty: all interfaces)."`
	Port          int     `env:"SERVER_PORT" default:"8080" desc:"Port of the ext_authz check server."`
	ReadinessPort int     `env:"READINESS_PROBE_PORT" default:"8081" desc:"Port of /healthz (alive), /readyz (ready once provider discovery succeeded; every other path answers as /readyz) and /metrics (Prometheus)."`
	WebServerPort int     `env:"WEB_SERVER_PORT" default:"8082" desc:"Port of the web pages (after-logout, homepage, themes)."`
	GRPCPort      int     `env:"GRPC_PORT" default:"9000" desc:"Port of the gRPC check: Envoy's envoy.service.auth.v3.Authorization/Check over plaintext HTTP/2 (Istio's envoyExtAuthzGrpc), the same decision as SERVER_PORT, and the standard gRPC health service (grpc.health.v1: SERVING once provider discovery succeeded). 0 turns it off."`
	LogFormat     string  `env:"LOG_FORMAT" default:"json" desc:"json: one JSON object per line, for log collectors (containers). console: tab-separated lines for a terminal, with the start-up line listing only the settings that differ from their defaults (make run sets it)."`
	LogLevel      string  `env:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error, any case (the predecessor's FATAL, TRACE, WARNING and PANIC are accepted too). At debug every decision is logged."`
	AccessLog     bool    `env:"ACCESS_LOG" default:"false" desc:"Write an audit line at info for checks: decision, reason, user, method, host and path (never the query string or credentials)."`
	AccessLogRate float64 `env:"ACCESS_LOG_SAMPLE_RATE" default:"1" desc:"Fraction (0 to 1) of allowed checks that get an access-log line. Denials, redirects and refusals are always logged when ACCESS_LOG is on."`
}

// SessionVars are the variables of the session and login-state cookies.
type SessionVars struct {
	SessionKeys          string        `env:"SESSION_KEYS" secret:"true" desc:"Comma-separated secrets (each ≥ 32 bytes, raw or base64: openssl rand -base64 32). The first seals new cookies, all open existing ones. A key published anywhere (a placeholder, a documentation example, Kubeflow's oauth2-proxy cookie secret) is refused. Unset: in a Kubernetes cluster the service keeps a key of its own in Secret SESSION_KEYS_SECRET; elsewhere random keys, sessions lost on restart and not shared by processes."`
	SessionKeysFile      string        `env:"SESSION_KEYS_FILE" desc:"File holding SESSION_KEYS (comma- or newline-separated); the same keys are refused."`
	SessionKeysSecret    string        `env:"SESSION_KEYS_SECRET" default:"authservice-session-keys" desc:"With neither SESSION_KEYS nor SESSION_KEYS_FILE, in a Kubernetes pod: the Secret of the service's own namespace that holds its keys (data key SESSION_KEYS, as SESSION_KEYS_FILE). The first replica to start creates it with a random key; every replica and every restart reads the same one. Needs the Role and ValidatingAdmissionPolicy of deploy/components/session-keys (deploy/base includes it; a new name must be changed there too). Empty: off (random keys per process)."`
	SessionMaxAge        int           `env:"SESSION_MAX_AGE" default:"86400" desc:"Absolute session lifetime in seconds."`
	SessionSameSite      string        `env:"SESSION_SAME_SITE" default:"Lax" desc:"SameSite attribute of the session cookie: Lax, Strict or None."`
	SessionCookieName    string        `env:"SESSION_COOKIE_NAME" default:"authservice_session" desc:"Name of the session cookie."`
	SessionHTTPOnly      bool          `env:"SESSION_HTTP_ONLY" default:"true" desc:"HttpOnly on the session cookie. Set false only for Kubeflow dashboards before v1.10, whose JavaScript reads the cookie to log out."`
	SessionSecure        string        `env:"SESSION_COOKIE_SECURE" default:"auto" desc:"Secure attribute: auto (when X-Forwarded-Proto is https or REDIRECT_URL is https), true or false."`
	SessionHostPrefix    bool          `env:"SESSION_COOKIE_HOST_PREFIX" default:"true" desc:"Name cookies __Host-<name> when they are Secure and SESSION_DOMAIN is empty, so that no sibling subdomain or network attacker can plant or overwrite them. The session cookie keeps its plain name when SESSION_HTTP_ONLY=false (the older dashboard reads it by name). Both names are always read."`
	SessionAcceptPlain   bool          `env:"SESSION_COOKIE_ACCEPT_PLAIN" default:"false" desc:"Migration window: also accept a session cookie under its plain name where the __Host- form is in use (sessions issued before SESSION_COOKIE_HOST_PREFIX, or by the predecessor). Risk: a sibling subdomain or a plain-http attacker can then plant its own session and the browser is logged in as the attacker. Never applies to login states. Turn it off again once SESSION_MAX_AGE has passed."`
	SessionDomain        string        `env:"SESSION_DOMAIN" desc:"Domain attribute of the cookies (empty: host-only)."`
	LoginStateTTL        time.Duration `env:"LOGIN_STATE_TTL" default:"10m" desc:"How long a started login may take (≤ 15m)."`
	MaxPendingLogins     int           `env:"MAX_PENDING_LOGINS" default:"5" desc:"Pending-login cookies kept per browser; the oldest is dropped beyond this."`
	SessionRenewRedirect bool          `env:"SESSION_RENEW_REDIRECT" default:"false" desc:"For gateways that pass no Set-Cookie on allow (Kubeflow 1.9.1+'s mesh configuration has no headersToDownstreamOnAllow): a GET or HEAD whose session was renewed (refresh, idle timeout) is answered 307 to the same URL with the new cookie (once per renewal and replica: the browser follows with the new cookie, which is not due again), instead of being allowed with a cookie the browser never sees."`
	SessionIdleTimeout   time.Duration `env:"SESSION_IDLE_TIMEOUT" default:"0s" desc:"End a session unused for this long (0: no idle limit). Needs set-cookie passed to the browser on allow."`
	SessionMaxCookies    int           `env:"SESSION_MAX_COOKIES" default:"2" desc:"Most cookies (3,800 bytes each) a session may take, 1 to 8. A login (or a refresh) whose session would not fit drops the tokens it keeps only for logout (the ID token for id_token_hint, the access token for revocation), then gets a page saying what to set; a session never lives in one replica's memory only. Default 2: the Cookie header then stays within nginx's 8k header line and gunicorn's 8190 bytes (Kubeflow ≥ 1.9.1 passes the Cookie header upstream). 1: behind nginx with its default proxy_buffer_size (4k), which must hold the login's answer."`
	SessionCacheSize     int           `env:"SESSION_CACHE_SIZE" default:"20000" desc:"Verified session cookies each replica keeps (two generations: the older half is dropped when the newer fills; a hit moves an entry back). A session beyond it is opened again (about 2 µs) when next seen. See docs/performance.md for the memory per entry. 1,000 to 10,000,000."`
}

// LifetimeVars are the variables of a session's life at the provider (refresh, strict validation).
type LifetimeVars struct {
	RefreshBeforeExpiry time.Duration `env:"REFRESH_BEFORE_EXPIRY" default:"60s" desc:"Refresh the provider's access token (with UPSTREAM_TOKEN=id_token, the ID token when it expires first) this long before it expires, when the session has a refresh token, but never more than a third of the tokens' lifetime before (30 s tokens refresh every 20 s, not on every request). The new cookie is returned with Set-Cookie on the allow answer."`
	StrictValidation    bool          `env:"STRICT_SESSION_VALIDATION" default:"false" desc:"Check each session's access token at the provider's userinfo endpoint (at most once per interval per replica); a token the provider refuses ends the session."`
	StrictInterval      time.Duration `env:"STRICT_SESSION_VALIDATION_INTERVAL" default:"60s" desc:"How often strict validation asks the provider about one session."`
	StrictGrace         time.Duration `env:"STRICT_SESSION_VALIDATION_GRACE" default:"5m" desc:"While the provider cannot be reached, sessions last validated less than this long ago keep working; older ones are refused until it answers again."`
	CheckProviderBudget time.Duration `env:"CHECK_PROVIDER_BUDGET" default:"3s" desc:"Longest a check waits for the provider (refresh, strict validation); after it, the session is kept or refused as if the provider were down."`
}

// LogoutVars are the variables of logout and back-channel logout.
type LogoutVars struct {
	RevokeOnLogout        bool          `env:"REVOKE_TOKENS_ON_LOGOUT" default:"true" desc:"On logout, revoke the refresh and access tokens at the provider's revocation_endpoint (RFC 7009), when it has one."`
	ProviderLogout        bool          `env:"PROVIDER_LOGOUT" default:"true" desc:"On logout, send the browser to the provider's end_session_endpoint (RP-initiated logout), when it has one."`
	PostLogoutRedirectURL string        `env:"POST_LOGOUT_REDIRECT_URL" desc:"post_logout_redirect_uri sent to the provider's end_session_endpoint (must be registered there). Default: AFTER_LOGOUT_URL made absolute with the request's host."`
	ProviderSignOutURL    string        `env:"PROVIDER_SIGN_OUT_URL" desc:"For providers without end_session_endpoint (GitLab: https://gitlab.example.com/users/sign_out): the after-logout page offers to sign out there too."`
	ProviderSignOutMode   string        `env:"PROVIDER_SIGN_OUT_MODE" default:"button" desc:"button (the after-logout page shows a button that POSTs to PROVIDER_SIGN_OUT_URL) or auto (the page submits it at once)."`
	BackchannelMaxAge     time.Duration `env:"BACKCHANNEL_LOGOUT_MAX_AGE" default:"5m" desc:"Oldest iat accepted in a back-channel logout token."`
	RedisURL              string        `env:"REDIS_URL" secret:"true" desc:"redis://[[user]:password@]host:port/db (rediss:// for TLS) of a Redis shared by the replicas for logout and back-channel logout; unset (and no Sentinel or Cluster): each replica knows only its own. With REDIS_SENTINEL_MASTER_NAME or REDIS_CLUSTER_ADDRS, give it without a host (redis://:password@/0, rediss://user:password@): the password, user, database and TLS of the Redis servers. See docs/operations.md#redis."`
	RedisKeyPrefix        string        `env:"REDIS_KEY_PREFIX" default:"oidc-authservice" desc:"Prefix of the Redis keys and channel."`
	RedisSentinelMaster   string        `env:"REDIS_SENTINEL_MASTER_NAME" desc:"Name of the master Redis Sentinel monitors (sentinel monitor <name> ...): the service asks the Sentinels of REDIS_SENTINEL_ADDRS for it and follows failovers."`
	RedisSentinelAddrs    string        `env:"REDIS_SENTINEL_ADDRS" desc:"Comma-separated host:port of the Sentinels (with REDIS_SENTINEL_MASTER_NAME)."`
	RedisSentinelPassword string        `env:"REDIS_SENTINEL_PASSWORD" secret:"true" desc:"Password of the Sentinels themselves (their requirepass), when they have one; the Redis servers' password is REDIS_URL's."`
	RedisClusterAddrs     string        `env:"REDIS_CLUSTER_ADDRS" desc:"Comma-separated host:port of some nodes of a Redis Cluster (the rest are discovered)."`
}

// BearerVars are the variables of bearer tokens (machine identities) and authorization.
type BearerVars struct {
	AuthenticationConfigFile string `env:"AUTHENTICATION_CONFIG_FILE" desc:"Kubernetes AuthenticationConfiguration (apiserver.config.k8s.io/v1beta1 or v1) whose jwt issuers are accepted as Authorization: Bearer tokens (GitLab users and CI jobs, Kubernetes service accounts, ...). See docs/machine-identities.md."`
	AcceptProviderIDTokens   bool   `env:"ACCEPT_PROVIDER_ID_TOKENS" default:"true" desc:"Accept the login provider's own ID tokens (audience one of PROVIDER_ID_TOKEN_AUDIENCES) as bearer tokens, mapped with USERID_CLAIM and GROUPS_CLAIM, as the predecessor did. A token the service obtained for a session (the ID token it hands upstream with UPSTREAM_TOKEN=id_token, refreshed ones) is refused once that session is logged out, and so is any provider token issued more than 24 h (or SESSION_MAX_AGE) ago."`
	ProviderIDTokenAudiences string `env:"PROVIDER_ID_TOKEN_AUDIENCES" desc:"Comma-separated audiences (client ids) of the provider ID tokens accepted as bearer tokens; a token for any of them is accepted. Add the public client of command-line tools (kubeflow-cli) so that tokens from oidc-authservice token pass; see docs/programmatic-access.md. Default: CLIENT_ID."`
	AuthorizationRulesFile   string `env:"AUTHORIZATION_RULES_FILE" desc:"YAML rules: host, path prefix and methods → allowed users, groups, email domains or any authenticated; first match wins. See docs/authorization.md."`
	// Kubernetes service-account tokens by TokenReview (arrikto's path).
	KubernetesAuthn      bool   `env:"KUBERNETES_AUTHN_ENABLED" default:"false" desc:"Authenticate Authorization: Bearer tokens of the cluster's service-account issuer by TokenReview at the API server (arrikto's default was on; here off, so the service runs outside a cluster; Kubeflow overlays set it). Needs the RBAC of deploy/components/tokenreview. Issuers of AUTHENTICATION_CONFIG_FILE are tried first. See docs/machine-identities.md."`
	Audiences            string `env:"AUDIENCES" default:"istio-ingressgateway.istio-system.svc.cluster.local" desc:"Comma-separated audiences a service-account token must be meant for (TokenReview spec.audiences; KUBERNETES_AUTHN_ENABLED). Empty: the API server's own audiences. Also the default of ACCESS_TOKEN_AUDIENCES, as the predecessor used it for both."`
	TokenCacheSize       int    `env:"TOKEN_CACHE_SIZE" default:"20000" desc:"Verified bearer tokens each replica keeps until they expire (as SESSION_CACHE_SIZE). A token beyond it is verified again (signature, claims, mappings: about 60 µs) when next seen. 1,000 to 10,000,000."`
	KubernetesServiceDir string `env:"KUBERNETES_SERVICE_ACCOUNT_DIR" default:"/var/run/secrets/kubernetes.io/serviceaccount" desc:"Where the service's own token (token, re-read as it rotates), the cluster's CA (ca.crt) and the pod's namespace (namespace) are read for TokenReview and the session-key Secret (SESSION_KEYS_SECRET); the API server is https://KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT. Change only to run outside a pod."`
	// The provider's access tokens as bearer tokens (arrikto's access-token authenticators).
	AccessTokenAuthnEnabled bool          `env:"ACCESS_TOKEN_AUTHN_ENABLED" default:"true" desc:"Accept the login provider's access tokens as Authorization: Bearer tokens (the predecessor's default), where they can be verified: with ACCESS_TOKEN_AUTHN=jwt, tokens signed with the provider's keys for an audience of ACCESS_TOKEN_AUDIENCES; with opaque, tokens the provider's userinfo endpoint accepts (a provider without one accepts none). See docs/machine-identities.md#the-providers-access-tokens."`
	AccessTokenAuthn        string        `env:"ACCESS_TOKEN_AUTHN" default:"jwt" desc:"jwt (the predecessor's default): access tokens are JWTs verified with the provider's key set, issuer OIDC_PROVIDER, an audience of ACCESS_TOKEN_AUDIENCES, user id and groups from USERID_CLAIM and GROUPS_CLAIM; a token typed at+jwt (RFC 9068) is never taken for an ID token, nor one for an ID-token audience (PROVIDER_ID_TOKEN_AUDIENCES) without that type for an access token. opaque (GitLab's OAuth tokens): a bearer value that is neither a JWT nor a session is sent to the provider's userinfo endpoint once, and the answer cached for ACCESS_TOKEN_CACHE_TTL."`
	AccessTokenAudiences    string        `env:"ACCESS_TOKEN_AUDIENCES" desc:"Comma-separated audiences (aud) of the provider's JWT access tokens that are accepted (ACCESS_TOKEN_AUTHN=jwt). Default: AUDIENCES, as the predecessor. Empty (AUDIENCES empty too): no JWT access token is accepted."`
	AccessTokenCacheTTL     time.Duration `env:"ACCESS_TOKEN_CACHE_TTL" default:"60s" desc:"How long the provider's answer about an opaque access token is reused (accepted or refused; 5 s at most when the provider could not be asked): a token revoked at the provider stops working within this time. 1s to 10m."`
	AccessTokenLookupRate   int           `env:"ACCESS_TOKEN_LOOKUPS_PER_SECOND" default:"10" desc:"Userinfo lookups of opaque access tokens not seen before, per second and replica, all tokens together (bursts up to the same number). A new token beyond it, or beyond ACCESS_TOKEN_LOOKUP_CONCURRENCY, is answered 401 at once: a flood of invented tokens never becomes a flood of calls to the provider. 1 to 10000."`
	AccessTokenLookupConc   int           `env:"ACCESS_TOKEN_LOOKUP_CONCURRENCY" default:"4" desc:"Userinfo lookups of opaque access tokens in flight at once per replica. 1 to 1000."`
}

// ExternalAuthzVars are the variables of the external authorizer (arrikto's EXTERNAL_AUTHZ_URL, or Open Policy Agent).
type ExternalAuthzVars struct {
	ExternalAuthzURL      string        `env:"EXTERNAL_AUTHZ_URL" desc:"An external authorization service asked about every authenticated request that GROUPS_ALLOWLIST and AUTHORIZATION_RULES_FILE allowed: both must allow. Empty: none. With EXTERNAL_AUTHZ_FORMAT=opa, OPA's Data API URL of the policy (http://opa:8181/v1/data/<policy path>). An error, a timeout or too many calls in flight deny (403). See docs/authorization.md#external-authorizer."`
	ExternalAuthzFormat   string        `env:"EXTERNAL_AUTHZ_FORMAT" default:"arrikto" desc:"arrikto (the predecessor's protocol: POST {timestamp, user, request}; 2xx allows, 401/403 deny with the body as the reason) or opa (Open Policy Agent's Data API: POST {input: ...}; result true/false or {allow, reason}; no result denies)."`
	ExternalAuthzTimeout  time.Duration `env:"EXTERNAL_AUTHZ_TIMEOUT" default:"2s" desc:"Longest wait for one answer of the external authorizer; after it the request is denied (403). 10ms to 30s."`
	ExternalAuthzMaxCalls int           `env:"EXTERNAL_AUTHZ_MAX_CONCURRENT" default:"32" desc:"Calls to the external authorizer in flight at once per replica; a request needing another is denied at once (403). 1 to 10000."`
	ExternalAuthzCacheTTL time.Duration `env:"EXTERNAL_AUTHZ_CACHE_TTL" default:"10s" desc:"How long a decision (allow or deny; never an error) is reused for the same user, groups, method, host, port and canonical path. 0: ask every time. At most 5m: a permission withdrawn at the authorizer stops working within this time."`
	ExternalAuthzCacheMax int           `env:"EXTERNAL_AUTHZ_CACHE_SIZE" default:"10000" desc:"Decisions each replica keeps (as SESSION_CACHE_SIZE). 100 to 10000000."`
	ExternalAuthzCA       string        `env:"EXTERNAL_AUTHZ_CA_BUNDLE" desc:"PEM file of CA certificates trusted for an https EXTERNAL_AUTHZ_URL, added to the system pool."`
}

// ForwardAuthVars are the variables of forward auth (nginx, Caddy, Traefik).
type ForwardAuthVars struct {
	VerifyAuthURL             string `env:"VERIFY_AUTH_URL" desc:"Path of the forward-auth verify endpoint on SERVER_PORT. Default <AUTHSERVICE_URL_PREFIX>verify. The login-start endpoint for nginx is <AUTHSERVICE_URL_PREFIX>start?rd=<url>."`
	ForwardAuthProxy          string `env:"FORWARD_AUTH_PROXY" default:"nginx" desc:"Which proxy calls the verify endpoint, and so which headers describe the original request: nginx or ingress-nginx (X-Original-Method, X-Original-URL), caddy or traefik (X-Forwarded-Method, -Proto, -Host, -Uri). Every other forwarding header is the client's and is ignored; a missing or malformed header, one sent twice with different values, or a URL with a raw #, space, control character or non-ASCII byte, gets 400. See docs/forward-auth.md."`
	ForwardAuthTrustedProxies string `env:"FORWARD_AUTH_TRUSTED_PROXIES" default:"127.0.0.1/32,::1/128" desc:"Comma-separated addresses or CIDRs whose forwarding headers (FORWARD_AUTH_PROXY) the verify endpoint believes; from anyone else they are ignored and the verify request itself is judged."`
	ForwardAuthAnswerMax      int    `env:"FORWARD_AUTH_ANSWER_MAX_BYTES" default:"4096" desc:"Most bytes of headers the forward-auth proxy reads from the service's answers: nginx and ingress-nginx read them into proxy_buffer_size, one memory page (4096 bytes on x86-64 and arm64), and answer 500/502 (upstream sent too big header) beyond it. A login started at the start endpoint (the nginx recipes) whose verify answers (identity headers, the renewed session's Set-Cookie) or callback answer would not fit gets a page saying so instead; behind nginx and ingress-nginx a renewal whose answer would not fit ends the session with that page. Raise it together with proxy_buffer_size (docs/forward-auth.md); 0: no bound."`
	ForwardAuthRedirect       bool   `env:"FORWARD_AUTH_REDIRECT" default:"false" desc:"The verify endpoint answers an unauthenticated browser navigation with a 302 to the provider (Caddy, Traefik pass it on) instead of 401 (nginx: use error_page 401 with the start endpoint)."`
}

// UpstreamTokenVars are the variables of the identity token sent upstream.
type UpstreamTokenVars struct {
	UpstreamToken         string        `env:"UPSTREAM_TOKEN" default:"none" desc:"none, id_token (forward the provider's ID token as Authorization: Bearer) or issued (a short-lived JWT signed by the service, for Istio RequestAuthentication). Behind a forward-auth proxy nothing removes the token after the check: with id_token set ACCEPT_PROVIDER_ID_TOKENS=false there, or every upstream holds a token this service accepts (docs/forward-auth.md)."`
	UpstreamTokenIssuer   string        `env:"UPSTREAM_TOKEN_ISSUER" default:"http://authservice.istio-system.svc.cluster.local:8082" desc:"iss of issued tokens; its /.well-known/openid-configuration and jwks.json are served on WEB_SERVER_PORT."`
	UpstreamTokenAudience string        `env:"UPSTREAM_TOKEN_AUDIENCE" default:"kubeflow" desc:"aud of issued tokens."`
	UpstreamTokenLifetime time.Duration `env:"UPSTREAM_TOKEN_LIFETIME" default:"5m" desc:"Lifetime of issued tokens."`
	UpstreamTokenKeysFile string        `env:"UPSTREAM_TOKEN_KEYS_FILE" desc:"PEM file (a Kubernetes Secret) of the signing keys, RSA or EC P-256, newest first: the first signs, all are published. Unset with UPSTREAM_TOKEN=issued: a random key, valid for this process only."`
	UpstreamBearer        string        `env:"UPSTREAM_BEARER" default:"remove" desc:"What becomes of a client's Authorization: Bearer token that the service accepts (a provider ID token, a JWT of AUTHENTICATION_CONFIG_FILE, a service-account token), also one sent next to the session cookie: remove (the upstream never holds a token this gateway accepts from anyone who presents it) or keep (only where a RequestAuthentication after the check must read it, as in Kubeflow 1.9.0's oauth2-proxy layout, and removes it there with forwardOriginalToken: false). A token of UPSTREAM_TOKEN takes its place either way; a session value sent as a bearer token is always removed. Behind a forward-auth proxy the verify answer's Authorization is what the upstream gets (empty: none)."`
}

// PagesVars are the variables of the HTML pages.
type PagesVars struct {
	ClientName   string `env:"CLIENT_NAME" default:"Kubeflow" desc:"Name shown on the pages."`
	Theme        string `env:"THEME" default:"kubeflow" desc:"Theme of the pages: kubeflow (embedded) or the name of a folder under THEMES_URL."`
	ThemesURL    string `env:"THEMES_URL" desc:"Base URL of external themes: pages load <THEMES_URL>/<THEME>/styles.css."`
	TemplatePath string `env:"TEMPLATE_PATH" desc:"Folder with templates overriding the embedded ones (layout.html, error.html, after_logout.html, homepage.html). TEMPLATE_CONTEXT_<KEY>=value variables appear in them as .Context.<KEY>."`
}

// TracingVars are OpenTelemetry's standard variables for traces (their names
// and meanings are the specification's; only traces are exported). The
// SDK's other OTEL_EXPORTER_OTLP_* variables (HEADERS, CERTIFICATE,
// COMPRESSION, TIMEOUT and their TRACES_ forms) apply as the SDK defines
// them.
type TracingVars struct {
	OTLPEndpoint       string `env:"OTEL_EXPORTER_OTLP_ENDPOINT" desc:"Base URL of an OTLP receiver (http://otel-collector.observability:4318 for http/protobuf, :4317 for grpc); traces are sent to <base>/v1/traces over HTTP. Unset (and OTEL_EXPORTER_OTLP_TRACES_ENDPOINT unset): no tracing, at no cost on the check path. Credentials go in OTEL_EXPORTER_OTLP_HEADERS, never in the URL. See docs/operations.md#traces."`
	OTLPTracesEndpoint string `env:"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" desc:"URL traces are sent to, as is (http/protobuf: the full path, e.g. http://jaeger-collector:4318/v1/traces); overrides OTEL_EXPORTER_OTLP_ENDPOINT."`
	OTLPProtocol       string `env:"OTEL_EXPORTER_OTLP_PROTOCOL" default:"http/protobuf" desc:"http/protobuf or grpc. With grpc the endpoint's scheme says whether TLS is used (http: plain, https: TLS)."`
	OTLPTracesProtocol string `env:"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" desc:"Overrides OTEL_EXPORTER_OTLP_PROTOCOL for traces."`
	TracesSampler      string `env:"OTEL_TRACES_SAMPLER" default:"parentbased_always_on" desc:"always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio. The parentbased samplers follow the gateway's decision (the sampled flag of traceparent or B3), so the gateway's sampling percentage applies to the service too."`
	TracesSamplerArg   string `env:"OTEL_TRACES_SAMPLER_ARG" desc:"The ratio of the traceidratio samplers, 0 to 1. Default 1."`
	ServiceName        string `env:"OTEL_SERVICE_NAME" desc:"service.name of the spans. Default oidc-authservice (or service.name of OTEL_RESOURCE_ATTRIBUTES)."`
	ResourceAttributes string `env:"OTEL_RESOURCE_ATTRIBUTES" desc:"Comma-separated key=value resource attributes of the spans (values percent-encoded), e.g. deployment.environment=prod,k8s.namespace.name=istio-system."`
	SDKDisabled        string `env:"OTEL_SDK_DISABLED" default:"false" desc:"true turns tracing off whatever the endpoint."`
}
