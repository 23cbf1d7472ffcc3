package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/authorizer"
	"github.com/oidc-authservice/oidc-authservice/internal/authz"
	"github.com/oidc-authservice/oidc-authservice/internal/check"
	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/credential"
	"github.com/oidc-authservice/oidc-authservice/internal/grpccheck"
	"github.com/oidc-authservice/oidc-authservice/internal/identity"
	"github.com/oidc-authservice/oidc-authservice/internal/jwks"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/pages"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
	"github.com/oidc-authservice/oidc-authservice/internal/tracing"
	"github.com/oidc-authservice/oidc-authservice/internal/upstreamtoken"
	"github.com/oidc-authservice/oidc-authservice/internal/web"
)

// Parts are the running parts of the service, built once from the settings
// by Build, for the server and for check-config alike.
type Parts struct {
	Metrics     *metrics.Metrics
	Tracer      *tracing.Tracer // nil without an OTLP endpoint
	Provider    *provider.Provider
	Pages       *pages.Pages
	Redis       *revocation.RedisStore // nil without REDIS_URL
	Revocations *revocation.List
	Policy      *authz.Policy
	Authorizer  *authorizer.Authorizer   // nil without EXTERNAL_AUTHZ_URL
	Bearer      *authn.Authenticator     // nil when no issuer is configured
	Reviews     credential.Authenticator // Kubernetes TokenReview; nil unless KUBERNETES_AUTHN_ENABLED
	Upstream    *upstreamtoken.Issuer    // nil unless UPSTREAM_TOKEN=issued
	Check       *check.Handler           // SERVER_PORT
	GRPC        *grpccheck.Service       // GRPC_PORT: the gRPC front of Check
	Web         *web.Handler             // WEB_SERVER_PORT
	Probe       http.Handler             // READINESS_PROBE_PORT
	Warnings    []string                 // said at start-up
}

// Build turns validated settings into the running parts. It does no I/O
// beyond reading files the settings name (no discovery, no connection):
// Run starts what runs. Every part that cannot be built is reported, all at
// once; the parts that could be built are returned with the error.
func Build(s *config.Settings, version string, log *zap.Logger) (*Parts, error) {
	now := time.Now
	p := &Parts{Metrics: metrics.New(version)}
	var errs []error
	fail := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	var err error
	p.Tracer, err = newTracer(s.Tracing, version, log)
	fail("traces", err)
	p.Provider, err = provider.New(provider.Options{Issuer: s.Provider.Issuer, AuthURL: s.Provider.AuthURL,
		ClientID: s.Provider.ClientID, ClientSecret: s.Provider.ClientSecret, RedirectURL: s.Provider.RedirectURL,
		Scopes: s.Provider.Scopes, CABundle: s.Provider.CABundle, Timeout: s.Provider.Timeout,
		Logger: log.Named("provider"), Now: now, Metrics: p.Metrics, Tracer: p.Tracer})
	fail("provider", err)
	p.Pages, err = pages.New(pages.Options{ClientName: s.Pages.ClientName, Theme: s.Pages.Theme, ThemesURL: s.Pages.ThemesURL,
		TemplatePath: s.Pages.TemplatePath, Context: s.Pages.Context})
	fail("pages", err)
	if lo := s.Logout; lo.RedisMode() != "" {
		p.Redis, err = revocation.NewRedisStore(revocation.RedisOptions{URL: lo.RedisURL, SentinelMaster: lo.RedisSentinelMaster,
			SentinelAddrs: lo.RedisSentinelAddrs, SentinelPassword: lo.RedisSentinelPassword, ClusterAddrs: lo.RedisClusterAddrs,
			KeyPrefix: lo.RedisKeyPrefix})
		fail("REDIS_URL", err)
		if p.Redis != nil {
			revocation.LogRedisTo(log)
			p.Redis.Metrics = p.Metrics.Redis()
			if p.Tracer != nil {
				fail("REDIS_URL", p.Redis.Trace(p.Tracer.Provider()))
			}
		}
	}
	var store revocation.Store
	if p.Redis != nil {
		store = p.Redis
	}
	p.Revocations = revocation.New(revocation.Retention(s.Sessions.MaxAge), store, now, log)
	if p.Redis != nil {
		p.Redis.Metrics.Unshared(p.Revocations.Unshared)
	}
	p.Metrics.Sizes(p.Revocations.Len, p.Revocations.OnceLen)
	p.Policy, err = authz.New(authz.Options{AllowAll: s.Identity.AllowAllGroups, Groups: s.Identity.AllowedGroups, RulesFile: s.Bearer.RulesFile})
	fail("authorization", err)
	p.Authorizer, err = externalAuthorizer(s, p.Metrics, p.Tracer, log, now)
	fail("EXTERNAL_AUTHZ_URL", err)
	p.Upstream, err = p.upstreamIssuer(s, now)
	fail("upstream token", err)
	p.Reviews, err = tokenReviews(s, p.Metrics, p.Tracer, log, now)
	fail("TokenReview", err)
	if p.Provider == nil || p.Pages == nil || p.Policy == nil || (s.Authorizer.URL != "" && p.Authorizer == nil) {
		if s.Bearer.AuthenticationConfigFile != "" || s.Bearer.AcceptProviderIDTokens || s.Bearer.AccessTokens == "jwt" {
			fail("bearer tokens", errors.New("not checked: the provider, pages or authorization could not be built"))
		}
		return p, errors.Join(errs...)
	}
	p.Bearer, err = bearerAuthenticator(s, p.Provider, p.Metrics, log, now)
	fail("bearer tokens", err)
	secrets := s.Sessions.Secrets
	if s.Sessions.Generated {
		secret := make([]byte, 32)
		_, err := rand.Read(secret)
		fail("random session key", err)
		secrets = [][]byte{secret}
		p.Warnings = append(p.Warnings, "SESSION_KEYS is not set and the service keeps no key in a Kubernetes Secret (not in a pod, or SESSION_KEYS_SECRET is empty): "+
			"using a random key. Sessions will NOT survive a restart and will NOT work across processes. Set SESSION_KEYS (openssl rand -base64 32) for anything but a trial.")
	}
	groups, err := p.groupsPolicy(s)
	fail("GROUPS_FILTER", err)
	p.Check, p.Web = p.handlers(s, secrets, groups, log, now)
	p.Metrics.Readiness(p.Provider.Ready)
	// net/http reads MaxHeaderBytes and 4 KiB of slack: the same header is
	// accepted on both check ports.
	p.GRPC = grpccheck.New(p.Check, grpccheck.Options{MaxHeaderBytes: maxHeaderBytes + 4<<10, MaxHeaderFields: maxHeaderFields, Logger: log})
	p.Probe = probe(p.Provider, p.Metrics.Handler())
	return p, errors.Join(errs...)
}

// Close releases what Build opened; the spans still queued are exported
// within 5 s.
func (p *Parts) Close() {
	if p.Redis != nil {
		p.Redis.Close()
	}
	if p.Tracer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p.Tracer.Shutdown(ctx)
		cancel()
	}
}

func (p *Parts) upstreamIssuer(s *config.Settings, now func() time.Time) (*upstreamtoken.Issuer, error) {
	u := s.Upstream
	if u.Mode != "issued" {
		return nil, nil
	}
	var keys []upstreamtoken.Key
	if u.KeysFile != "" {
		var err error
		if keys, err = upstreamtoken.LoadKeys(u.KeysFile); err != nil {
			return nil, err
		}
	} else {
		k, err := upstreamtoken.GenerateKey()
		if err != nil {
			return nil, err
		}
		keys = []upstreamtoken.Key{k}
		p.Warnings = append(p.Warnings, "UPSTREAM_TOKEN=issued without UPSTREAM_TOKEN_KEYS_FILE: a random signing key; replicas will not agree and tokens fail validation after a restart")
	}
	return upstreamtoken.New(keys, u.Issuer, u.Audience, u.Lifetime, now)
}

// externalAuthorizer is the client of EXTERNAL_AUTHZ_URL, or nil.
func externalAuthorizer(s *config.Settings, m *metrics.Metrics, tr *tracing.Tracer, log *zap.Logger, now func() time.Time) (*authorizer.Authorizer, error) {
	a := s.Authorizer
	if a.URL == "" {
		return nil, nil
	}
	var ca []byte
	if a.CABundle != "" {
		var err error
		if ca, err = os.ReadFile(a.CABundle); err != nil {
			return nil, fmt.Errorf("EXTERNAL_AUTHZ_CA_BUNDLE: %w", err)
		}
	}
	return authorizer.New(authorizer.Options{URL: a.URL, Format: a.Format, Timeout: a.Timeout, MaxConcurrent: a.MaxConcurrent,
		CacheTTL: a.CacheTTL, CacheSize: a.CacheSize, CAPEM: ca, Logger: log, Metrics: m, Tracer: tr, Now: now})
}

// bearerAuthenticator accepts the JWTs of AUTHENTICATION_CONFIG_FILE and,
// with ACCEPT_PROVIDER_ID_TOKENS, the provider's own ID tokens, and with
// ACCESS_TOKEN_AUTHN=jwt its access tokens, verified with the provider's
// shared key set.
func bearerAuthenticator(s *config.Settings, prov *provider.Provider, m *metrics.Metrics, log *zap.Logger, now func() time.Time) (*authn.Authenticator, error) {
	var extra []authn.JWTAuthenticator
	if s.Bearer.AcceptProviderIDTokens {
		e := authn.ProviderEntry(s.Provider.Issuer, s.Bearer.ProviderTokenAudiences, s.Identity.UserClaim, s.Identity.GroupsClaim)
		e.AllowUnverifiedEmail = s.Identity.AllowUnverifiedEmail
		extra = append(extra, e)
	}
	pv := &authn.Provider{Issuer: s.Provider.Issuer, IDAudiences: s.Bearer.ProviderTokenAudiences}
	if st := m.AccessTokenStats("jwt"); st != nil {
		pv.Stats = st
	}
	if s.Bearer.AccessTokens == "jwt" && len(s.Bearer.AccessAudiences) > 0 {
		e := authn.AccessTokenEntry(s.Provider.Issuer, s.Bearer.AccessAudiences, s.Identity.UserClaim, s.Identity.GroupsClaim)
		e.AllowUnverifiedEmail = s.Identity.AllowUnverifiedEmail
		pv.Access = &e
	}
	return authn.Load(s.Bearer.AuthenticationConfigFile, extra, authn.Options{Logger: log, Now: now, Timeout: s.Provider.Timeout,
		KeySets: map[string]*jwks.Set{s.Provider.Issuer: prov.KeySet()}, Provider: pv})
}

// handlers builds the check and web handlers and what they share.
func (p *Parts) handlers(s *config.Settings, secrets [][]byte, groups *identity.GroupsPolicy, log *zap.Logger, now func() time.Time) (*check.Handler, *web.Handler) {
	ss := s.Sessions
	codec := session.NewCodec(secrets, ss.MaxAge, now)
	cookies := session.NewCookies(session.CookieOptions{Name: ss.CookieName, Domain: ss.Domain, SameSite: ss.SameSite,
		HTTPOnly: ss.HTTPOnly, HostPrefix: ss.HostPrefix, AcceptPlain: ss.AcceptPlain, Secure: ss.Secure,
		SecureRedirect: strings.HasPrefix(strings.ToLower(s.Provider.RedirectURL), "https://"), MaxCookies: ss.MaxCookies})
	mapper := &identity.Mapper{UserClaim: s.Identity.UserClaim, GroupsClaim: s.Identity.GroupsClaim,
		AllowUnverifiedEmail: s.Identity.AllowUnverifiedEmail, Groups: groups}
	for _, t := range s.Identity.Transformers {
		mapper.Transformers = append(mapper.Transformers, identity.Transformer{Matches: t.Matches, Replaces: t.Replaces})
	}
	sessions := credential.NewSessions(credential.SessionOptions{CookieName: ss.CookieName, UserPrefix: s.Identity.UserPrefix,
		IdleTimeout: ss.IdleTimeout, RefreshBeforeExpiry: ss.RefreshBeforeExpiry, StrictValidation: ss.StrictValidation,
		StrictInterval: ss.StrictInterval, StrictGrace: ss.StrictGrace, Budget: ss.CheckProviderBudget,
		UpstreamIDToken: s.Upstream.Mode == "id_token", CacheSize: ss.CacheSize, Groups: groups, MaxCookies: ss.MaxCookies,
		UpstreamHeaderMax: s.Identity.UpstreamHeaderMaxBytes, KeepClaims: p.Authorizer != nil}, codec, p.Provider, p.Revocations, p.Metrics, log, now)
	var auth credential.Authenticator
	if p.Bearer != nil {
		auth = p.Bearer
	}
	auth = credential.Chain(auth, p.Reviews)
	tokens := credential.NewTokens(credential.TokenOptions{UserPrefix: s.Identity.UserPrefix, Budget: ss.CheckProviderBudget,
		CacheSize: s.Bearer.CacheSize, ProviderIssuer: s.Provider.Issuer, KeepClaims: p.Authorizer != nil},
		auth, mapper, p.Revocations, p.Metrics, log, now)
	var opaque *credential.Opaque
	if s.Bearer.AccessTokens == "opaque" {
		opaque = credential.NewOpaque(credential.OpaqueOptions{UserPrefix: s.Identity.UserPrefix, TTL: s.Bearer.AccessCacheTTL,
			Rate: s.Bearer.AccessLookupRate, Concurrency: s.Bearer.AccessLookupConcurr, Budget: min(ss.CheckProviderBudget, s.Provider.Timeout),
			CacheSize: s.Bearer.CacheSize, KeepClaims: p.Authorizer != nil}, p.Provider, mapper, p.Revocations, p.Metrics, log, now)
	}
	backchannel := &revocation.Backchannel{List: p.Revocations, Verifier: p.Provider, MaxAge: s.Logout.BackchannelMaxAge,
		Timeout: s.Provider.Timeout, Metrics: p.Metrics, Log: log.Named("backchannel")}
	deps := check.Deps{Logger: log, Cookies: cookies, Codec: codec, Provider: p.Provider, Mapper: mapper,
		Policy: p.Policy, Authorizer: p.Authorizer, Pages: p.Pages, Sessions: sessions, Tokens: tokens, Opaque: opaque, Revocations: p.Revocations,
		Backchannel: backchannel, Metrics: p.Metrics, Tracer: p.Tracer, Now: now, Random: rand.Reader}
	if p.Upstream != nil {
		deps.Upstream = p.Upstream
	}
	h := check.New(checkOptions(s), deps)
	w := web.New(web.Options{SitePrefix: s.Paths.Site, BackchannelPath: s.Paths.Backchannel, Homepage: s.Paths.Homepage,
		ProviderSignOutURL: s.Logout.ProviderSignOutURL, ProviderSignOutMode: s.Logout.ProviderSignOutMode}, p.Pages, backchannel, p.Upstream)
	return h, w
}

// groupsPolicy is what becomes of every identity's groups. Their joined
// length is bounded so that the groups headers fit the upstreams' header
// line (UPSTREAM_HEADER_MAX_BYTES), and with UPSTREAM_TOKEN=issued so that
// the token, which carries them too, does. A group the allowlist or a rule
// names that the filter removes is an error: nobody could ever match it.
func (p *Parts) groupsPolicy(s *config.Settings) (*identity.GroupsPolicy, error) {
	id := s.Identity
	maxBytes := id.GroupsHeaderMaxBytes()
	if p.Upstream != nil {
		var err error
		if maxBytes, err = issuedGroupsBound(p.Upstream, id); err != nil {
			return nil, err
		}
	}
	g := identity.NewGroupsPolicy(identity.GroupsOptions{Filter: id.GroupsFilter, Prefixes: id.GroupsFilterPrefixes, Max: id.GroupsMax,
		MaxBytes: maxBytes, Truncate: id.GroupsTruncate, JSON: p.Upstream != nil})
	if p.Policy != nil {
		var errs []error
		for _, named := range p.Policy.NamedGroups() {
			if !g.Keeps(named[0]) {
				errs = append(errs, fmt.Errorf("group %q of %s is removed by GROUPS_FILTER/GROUPS_FILTER_PREFIXES: nobody could ever be in it here", named[0], named[1]))
			}
		}
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
	}
	return g, nil
}

// issuedGroupsBound is the longest joined groups value, measured as the
// issued token's JSON writes it (identity.JSONLen), that keeps the token's
// header line within UPSTREAM_HEADER_MAX_BYTES (and the groups headers
// within theirs) with up to GROUPS_MAX groups. The token's other claims are
// those of the longest user id (MaxUserID bytes, JSON-escaped as the mapper
// measures it, with an @: in sub and email), signed. The groups are
// carried twice: N names as a JSON list add their escaped lengths plus 2
// quotes each and N-1 commas, and groups_csv (the claim Istio maps to a
// header: Envoy's jwt_authn writes a list claim as the base64 of its JSON)
// adds the escaped joined value: together twice the joined value plus 2N.
func issuedGroupsBound(u *upstreamtoken.Issuer, id config.Identity) (int, error) {
	base, _, err := u.Sign(id.UserPrefix+strings.Repeat("x", identity.MaxUserID-1)+"@", nil)
	if err != nil {
		return 0, fmt.Errorf("signing a probe token: %w", err)
	}
	parts := strings.Split(base, ".")
	// What the payload may take of the line (base64url characters), then
	// the most payload bytes that encode within it, less the probe's.
	avail := id.UpstreamHeaderMaxBytes - len("Authorization: Bearer \r\n") - len(base) + len(parts[1])
	room := avail*3/4 - base64.RawURLEncoding.DecodedLen(len(parts[1]))
	maxBytes := min(id.GroupsHeaderMaxBytes(), (room-2*id.GroupsMax)/2)
	if maxBytes < 64 {
		return 0, fmt.Errorf("UPSTREAM_HEADER_MAX_BYTES=%d leaves %d bytes for the groups of issued tokens (UPSTREAM_TOKEN=issued, GROUPS_MAX=%d): raise it or lower GROUPS_MAX",
			id.UpstreamHeaderMaxBytes, max(maxBytes, 0), id.GroupsMax)
	}
	return maxBytes, nil
}

// checkOptions are the settings the check reads.
func checkOptions(s *config.Settings) check.Options {
	ps, ss := s.Paths, s.Sessions
	return check.Options{
		CallbackPath: ps.Callback, LogoutPath: ps.Logout, VerifyPath: ps.Verify, StartPath: ps.Start, SitePrefix: ps.Site,
		BackchannelPath: ps.Backchannel, SkipPrefixes: ps.Skip, APIPrefixes: ps.API, AllowOptions: ps.AllowOptions,
		UserHeader: s.Identity.UserHeader, GroupsHeader: s.Identity.GroupsHeader, UserPrefix: s.Identity.UserPrefix,
		AuthRequestHeaders: s.Identity.AuthRequestHeaders, RenewRedirect: ss.RenewRedirect,
		AfterLogin: ps.AfterLogin, AfterLogout: ps.AfterLogout, AllowedRedirectHosts: ps.AllowedRedirectHosts,
		LoginStateTTL: ss.LoginStateTTL, MaxPendingLogins: ss.MaxPendingLogins, SessionMaxAge: ss.MaxAge,
		StrictValidation: ss.StrictValidation, ProviderTimeout: s.Provider.Timeout,
		RevokeTokens: s.Logout.RevokeTokens, ProviderLogout: s.Logout.ProviderLogout, PostLogoutRedirectURL: s.Logout.PostLogoutRedirectURL,
		ForwardAuthProxy: s.ForwardAuth.Proxy, TrustedProxies: s.ForwardAuth.TrustedProxies, ForwardAuthRedirect: s.ForwardAuth.Redirect,
		UpstreamToken: s.Upstream.Mode, KeepBearer: s.Upstream.KeepBearer, AcceptProviderIDTokens: s.Bearer.AcceptProviderIDTokens,
		AccessLog: s.Servers.AccessLog, AccessLogRate: s.Servers.AccessLogRate,
		ForwardAnswerMax: s.ForwardAuth.AnswerMax,
	}
}
