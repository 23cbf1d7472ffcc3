package config

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Settings is the validated, parsed configuration, grouped by concern.
// The composition root (package server) hands each part of the service
// only the options it needs.
type Settings struct {
	Provider    Provider
	Paths       Paths
	Identity    Identity
	Servers     Servers
	Sessions    Sessions
	Logout      Logout
	Bearer      Bearer
	Authorizer  Authorizer
	ForwardAuth ForwardAuth
	Upstream    UpstreamToken
	Pages       Pages
	Tracing     Tracing
	// Ignored lists the predecessor's variables that are set and are not
	// settings here (predecessor.go), for the start-up warning.
	Ignored []Ignored
	// Warnings are said at start-up and by check-config: settings that
	// work but should not stay as they are.
	Warnings []string

	raw Config // as read, for Redacted
}

// Provider is the OpenID Connect provider and this client's registration.
type Provider struct {
	Issuer       string
	AuthURL      string // may be relative
	ClientID     string
	ClientSecret string
	RedirectURL  string // sent exactly as configured
	Scopes       []string
	CABundle     string
	Timeout      time.Duration
}

// Paths are the service's own endpoints and the path lists it judges by.
type Paths struct {
	Prefix      string // AUTHSERVICE_URL_PREFIX, ending in "/"
	Callback    string // the path of REDIRECT_URL
	Logout      string // LOGOUT_PATH
	Backchannel string // <prefix>oidc/backchannel-logout
	Verify      string // forward-auth verify endpoint
	Start       string // forward-auth login start
	Site        string // <prefix>site/, the web pages
	Skip        []string
	API         []string

	AfterLogin           string
	AfterLogout          string
	Homepage             string
	AllowedRedirectHosts []string
	AllowOptions         bool // ALLOW_UNAUTHENTICATED_OPTIONS
}

// Identity is how claims become the identity forwarded upstream.
type Identity struct {
	UserHeader           string
	UserPrefix           string
	UserClaim            string
	Transformers         []Transformer
	GroupsHeader         string
	GroupsClaim          string
	AllowAllGroups       bool     // GROUPS_ALLOWLIST is *
	AllowedGroups        []string // GROUPS_ALLOWLIST
	AllowUnverifiedEmail bool
	AuthRequestHeaders   bool // oauth2-proxy's X-Auth-Request-* on allow

	GroupsFilter         *regexp.Regexp // GROUPS_FILTER; nil: none
	GroupsFilterPrefixes []string       // GROUPS_FILTER_PREFIXES
	GroupsMax            int            // GROUPS_MAX
	GroupsTruncate       bool           // GROUPS_OVERFLOW=truncate
	// UpstreamHeaderMaxBytes is the longest header line the upstreams
	// accept (UPSTREAM_HEADER_MAX_BYTES).
	UpstreamHeaderMaxBytes int
}

// GroupsHeaderMaxBytes is the longest value of the groups headers the
// service sets (GROUPS_HEADER, and X-Auth-Request-Groups with
// AUTH_REQUEST_HEADERS): a header line "<name>: <value>\r\n" within
// UpstreamHeaderMaxBytes.
func (i Identity) GroupsHeaderMaxBytes() int {
	name := len(i.GroupsHeader)
	if i.AuthRequestHeaders {
		name = max(name, len("X-Auth-Request-Groups"))
	}
	return i.UpstreamHeaderMaxBytes - name - 4
}

// Transformer rewrites a user id, as USERID_TRANSFORMERS describes.
type Transformer struct {
	Matches  *regexp.Regexp
	Replaces string
}

// Servers are the listeners and what they log.
type Servers struct {
	Host          string
	CheckPort     int
	ProbePort     int
	WebPort       int
	GRPCPort      int    // 0: no gRPC check server
	LogLevel      string // a level zap parses
	LogFormat     string // json or console
	AccessLog     bool
	AccessLogRate float64
}

// Sessions are the cookies and a session's life.
type Sessions struct {
	// Secrets are the SESSION_KEYS secrets, newest first; none when
	// Generated: no key was given, and the composition root reads them
	// from KeySecret in a cluster, else draws a random one.
	Secrets          [][]byte
	Generated        bool
	KeySecret        string // SESSION_KEYS_SECRET: "" is off
	MaxAge           time.Duration
	CookieName       string
	SameSite         http.SameSite
	HTTPOnly         bool
	Secure           string // auto, true or false
	HostPrefix       bool
	AcceptPlain      bool
	Domain           string
	LoginStateTTL    time.Duration
	MaxPendingLogins int
	IdleTimeout      time.Duration
	RenewRedirect    bool // SESSION_RENEW_REDIRECT
	CacheSize        int  // SESSION_CACHE_SIZE: verified sessions kept per replica
	MaxCookies       int  // SESSION_MAX_COOKIES

	RefreshBeforeExpiry time.Duration
	StrictValidation    bool
	StrictInterval      time.Duration
	StrictGrace         time.Duration
	CheckProviderBudget time.Duration
}

// Logout is how sessions end.
type Logout struct {
	RevokeTokens          bool
	ProviderLogout        bool
	PostLogoutRedirectURL string
	ProviderSignOutURL    string
	ProviderSignOutMode   string // button or auto
	BackchannelMaxAge     time.Duration
	RedisURL              string
	RedisKeyPrefix        string
	RedisSentinelMaster   string
	RedisSentinelAddrs    []string
	RedisSentinelPassword string
	RedisClusterAddrs     []string
}

// RedisMode is how revocations are shared: "" (not at all), "single"
// (REDIS_URL), "sentinel" or "cluster".
func (l Logout) RedisMode() string {
	switch {
	case l.RedisSentinelMaster != "":
		return "sentinel"
	case len(l.RedisClusterAddrs) > 0:
		return "cluster"
	case l.RedisURL != "":
		return "single"
	}
	return ""
}

// Bearer is how bearer tokens are accepted and requests authorized.
type Bearer struct {
	AuthenticationConfigFile string
	AcceptProviderIDTokens   bool
	ProviderTokenAudiences   []string // PROVIDER_ID_TOKEN_AUDIENCES, default CLIENT_ID
	RulesFile                string
	CacheSize                int // TOKEN_CACHE_SIZE: verified tokens kept per replica

	// TokenReview of service-account tokens (KUBERNETES_AUTHN_ENABLED).
	TokenReview       bool
	ReviewAudiences   []string // AUDIENCES
	ServiceAccountDir string   // KUBERNETES_SERVICE_ACCOUNT_DIR

	// AccessTokens: "" (off), "jwt" or "opaque" (ACCESS_TOKEN_AUTHN_ENABLED
	// and ACCESS_TOKEN_AUTHN).
	AccessTokens        string
	AccessAudiences     []string      // ACCESS_TOKEN_AUDIENCES, default AUDIENCES
	AccessCacheTTL      time.Duration // ACCESS_TOKEN_CACHE_TTL
	AccessLookupRate    int           // ACCESS_TOKEN_LOOKUPS_PER_SECOND
	AccessLookupConcurr int           // ACCESS_TOKEN_LOOKUP_CONCURRENCY
}

// Authorizer is the external authorizer (EXTERNAL_AUTHZ_URL); URL "" is none.
type Authorizer struct {
	URL           string
	Format        string // arrikto or opa
	Timeout       time.Duration
	MaxConcurrent int
	CacheTTL      time.Duration
	CacheSize     int
	CABundle      string
}

// ForwardAuth is the verify endpoint's trust in the proxy in front.
type ForwardAuth struct {
	Proxy          string // nginx, ingress-nginx, caddy or traefik
	TrustedProxies []netip.Prefix
	Redirect       bool
	AnswerMax      int // FORWARD_AUTH_ANSWER_MAX_BYTES; 0: no bound
}

// UpstreamToken is the token the upstream gets in Authorization.
type UpstreamToken struct {
	Mode     string // none, id_token or issued
	Issuer   string
	Audience string
	Lifetime time.Duration
	KeysFile string
	// KeepBearer: a client's bearer token the service accepted stays on the
	// upstream request (UPSTREAM_BEARER=keep).
	KeepBearer bool
}

// Pages are the HTML pages' look.
type Pages struct {
	ClientName   string
	Theme        string
	ThemesURL    string
	TemplatePath string
	Context      map[string]string // TEMPLATE_CONTEXT_<KEY>
}

// Tracing is where spans are exported; Endpoint "" is off.
type Tracing struct {
	// Endpoint is the URL spans go to: the full traces URL for
	// http/protobuf, the receiver's scheme://host:port for grpc.
	Endpoint    string
	Protocol    string  // "http/protobuf" or "grpc"
	Sampler     string  // OTEL_TRACES_SAMPLER's value
	SamplerArg  float64 // the ratio of the traceidratio samplers
	ServiceName string
	// Attributes are OTEL_RESOURCE_ATTRIBUTES' key=value pairs, in order,
	// values decoded.
	Attributes [][2]string
}

// ErrInvalid wraps every validation problem.
var ErrInvalid = errors.New("invalid configuration")

// Load reads the configuration from environ (os.Environ, or FromMap in
// tests: nothing here reads the process environment) and validates it.
// The error lists every problem found, each naming its variable.
func Load(environ func() []string) (*Settings, error) {
	env := map[string]string{}
	for _, kv := range environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	ignored, perr := predecessor(env)
	var c Config
	if errs := decode(&c, env); len(errs) > 0 {
		return nil, errors.Join(append(errs, perr)...)
	}
	s := &Settings{raw: c, Ignored: ignored}
	s.Pages.Context = map[string]string{}
	for k, v := range env {
		if key, ok := strings.CutPrefix(k, "TEMPLATE_CONTEXT_"); ok {
			s.Pages.Context[key] = v
		}
	}
	if err := errors.Join(perr, s.validate(&c)); err != nil {
		return nil, err
	}
	return s, nil
}

// FromMap is an environment of exactly the variables in m, for Load.
func FromMap(m map[string]string) func() []string {
	return func() []string {
		out := make([]string, 0, len(m))
		for k, v := range m {
			out = append(out, k+"="+v)
		}
		return out
	}
}

// problems collects validation problems, each naming its variable.
type problems []error

func (p *problems) add(env, format string, a ...any) {
	*p = append(*p, fmt.Errorf("%w: %s: %s", ErrInvalid, env, fmt.Sprintf(format, a...)))
}

// httpURL reports whether v is an absolute http(s) URL.
func httpURL(v string) bool {
	u, err := url.Parse(v)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
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
