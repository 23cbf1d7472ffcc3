// Package checkconfig is `oidc-authservice check-config`: it validates the
// settings, reaches the provider's discovery document, and prints what the
// service will do, listing every problem it finds. It is meant for a
// Kubernetes Job or an init container, and for a human at a terminal.
package checkconfig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/authorizer"
	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
	"github.com/oidc-authservice/oidc-authservice/internal/server"
	"github.com/oidc-authservice/oidc-authservice/internal/sessionkeys"
)

// Report collects what check-config found.
type Report struct {
	out      io.Writer
	Problems []string
	Warnings []string
}

func (r *Report) section(title string) { fmt.Fprintf(r.out, "\n%s\n", title) }
func (r *Report) item(k string, v any) {
	if k != "" {
		k += ":"
	}
	fmt.Fprintf(r.out, "  %-30s %v\n", k, v)
}
func (r *Report) problem(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	r.Problems = append(r.Problems, msg)
	fmt.Fprintf(r.out, "  PROBLEM: %s\n", msg)
}
func (r *Report) warn(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	r.Warnings = append(r.Warnings, msg)
	fmt.Fprintf(r.out, "  warning: %s\n", msg)
}

// discovery is the part of the discovery document check-config reads.
type discovery struct {
	Issuer                string   `json:"issuer"`
	BackchannelLogout     bool     `json:"backchannel_logout_supported"`
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	ResponseTypes         []string `json:"response_types_supported"`
	TokenEndpoint         string   `json:"token_endpoint"`
	AuthMethods           []string `json:"token_endpoint_auth_methods_supported"`
	PKCEMethods           []string `json:"code_challenge_methods_supported"`
	UserinfoEndpoint      string   `json:"userinfo_endpoint"`
	ClaimsSupported       []string `json:"claims_supported"`
	ScopesSupported       []string `json:"scopes_supported"`
	JWKSURI               string   `json:"jwks_uri"`
	EndSessionEndpoint    string   `json:"end_session_endpoint"`
	RevocationEndpoint    string   `json:"revocation_endpoint"`
}

// Run checks s and writes the summary to out. It builds the service's
// parts as the server does (server.Build), reaches the provider and Redis,
// and returns the report; the command exits non-zero when it has problems.
func Run(ctx context.Context, s *config.Settings, out io.Writer) *Report {
	r := &Report{out: out}
	fmt.Fprintln(out, "oidc-authservice check-config")
	p, err := server.Build(s, "check-config", zap.NewNop())
	built := map[string]error{}
	for _, e := range unwrap(err) {
		what, _, _ := strings.Cut(e.Error(), ":")
		built[what] = e
	}
	defer p.Close()
	r.providerSection(ctx, s, p, built["provider"])
	r.loginSection(s)
	r.identitySection(s, built)
	r.requestSection(s, p, built["bearer tokens"])
	r.tokenReviewSection(s, built["TokenReview"])
	r.authorizerSection(ctx, s, p, built["EXTERNAL_AUTHZ_URL"])
	r.sessionSection(ctx, s, p, built["REDIS_URL"])
	r.tracingSection(s, built["traces"])
	r.section("Servers")
	sv := s.Servers
	r.item("check", fmt.Sprintf("%s:%d", sv.Host, sv.CheckPort))
	r.item("probes and /metrics", fmt.Sprintf("%s:%d", sv.Host, sv.ProbePort))
	r.item("web pages", fmt.Sprintf("%s:%d", sv.Host, sv.WebPort))
	for what, e := range built {
		switch what {
		case "provider", "authorization", "upstream token", "bearer tokens", "TokenReview", "REDIS_URL", "traces", "EXTERNAL_AUTHZ_URL":
		default:
			r.problem("%v", e)
		}
	}
	fmt.Fprintln(out)
	switch {
	case len(r.Problems) > 0:
		fmt.Fprintf(out, "%d problem(s), %d warning(s): the service would not work as configured.\n", len(r.Problems), len(r.Warnings))
	case len(r.Warnings) > 0:
		fmt.Fprintf(out, "OK, with %d warning(s).\n", len(r.Warnings))
	default:
		fmt.Fprintln(out, "OK.")
	}
	return r
}

// unwrap lists the errors joined in err.
// Invalid reports settings that do not load (config.Load's error): every
// problem on its own PROBLEM line, as Run reports the others. It returns how
// many there are.
func Invalid(out io.Writer, err error) int {
	r := &Report{out: out}
	fmt.Fprintln(out, "oidc-authservice check-config")
	r.section("Configuration")
	for _, e := range flatten(err) {
		r.problem("%s", strings.TrimPrefix(e.Error(), config.ErrInvalid.Error()+": "))
	}
	fmt.Fprintf(out, "\n%d problem(s): the service would not start.\n", len(r.Problems))
	return len(r.Problems)
}

// flatten lists the errors joined in err, however deeply.
func flatten(err error) []error {
	var out []error
	for _, e := range unwrap(err) {
		if _, ok := e.(interface{ Unwrap() []error }); ok {
			out = append(out, flatten(e)...)
		} else {
			out = append(out, e)
		}
	}
	return out
}

func unwrap(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err != nil {
		return []error{err}
	}
	return nil
}

func (r *Report) providerSection(ctx context.Context, s *config.Settings, p *server.Parts, buildErr error) {
	r.section("Provider")
	r.item("issuer (OIDC_PROVIDER)", s.Provider.Issuer)
	if buildErr != nil {
		r.problem("%v", buildErr)
		return
	}
	start := time.Now()
	if err := p.Provider.Discover(ctx); err != nil {
		r.problem("discovery failed: %v", err)
		return
	}
	r.item("discovery", fmt.Sprintf("ok (%d ms)", time.Since(start).Milliseconds()))
	r.provider(s, p.Provider)
}

func (r *Report) loginSection(s *config.Settings) {
	r.section("Login")
	r.item("client id", s.Provider.ClientID)
	r.item("client secret", secretState(s.Provider.ClientSecret))
	r.item("redirect URL (sent as is)", s.Provider.RedirectURL)
	if !strings.Contains(s.Provider.RedirectURL, "://") {
		r.item("", "relative: the provider must accept it literally (Dex does); the browser resolves it against the gateway host")
	}
	r.item("callback path", s.Paths.Callback)
	r.item("scopes", strings.Join(s.Provider.Scopes, " "))
	r.item("login state lifetime", s.Sessions.LoginStateTTL)
	r.item("PKCE, state, nonce", "always (S256)")
	if s.Paths.AfterLogin != "" {
		r.item("after login", s.Paths.AfterLogin)
	}
}

func (r *Report) identitySection(s *config.Settings, built map[string]error) {
	id, up := s.Identity, s.Upstream
	r.section("Identity headers")
	r.item("user id", fmt.Sprintf("%s: %s<claim %q>", id.UserHeader, id.UserPrefix, id.UserClaim))
	r.item("groups", fmt.Sprintf("%s: claim %q, comma-joined", id.GroupsHeader, id.GroupsClaim))
	if len(id.Transformers) > 0 {
		r.item("user id transformers", len(id.Transformers))
	}
	if id.AllowAllGroups {
		r.item("groups allowlist", "* (every authenticated user)")
	} else {
		r.item("groups allowlist", strings.Join(id.AllowedGroups, ", "))
	}
	if err := built["authorization"]; err != nil {
		r.problem("%v", err)
	} else if s.Bearer.RulesFile != "" {
		r.item("authorization rules", s.Bearer.RulesFile+" (ok)")
	}
	r.item("upstream token", up.Mode)
	if up.Mode != "issued" {
		return
	}
	r.item("issued token issuer", up.Issuer)
	r.item("issued token audience", up.Audience)
	switch err := built["upstream token"]; {
	case up.KeysFile == "":
		r.problem("UPSTREAM_TOKEN=issued without UPSTREAM_TOKEN_KEYS_FILE: each replica signs with a random key and tokens fail validation after a restart")
	case err != nil:
		r.problem("UPSTREAM_TOKEN_KEYS_FILE: %v", err)
	default:
		r.item("signing keys", "ok")
	}
}

func (r *Report) requestSection(s *config.Settings, p *server.Parts, bearerErr error) {
	ps := s.Paths
	r.section("Requests")
	r.item("URL prefix", ps.Prefix)
	r.item("logout URL", ps.Logout)
	r.item("skip paths (no login)", listOrNone(ps.Skip))
	r.item("API paths (401, no redirect)", listOrNone(ps.API))
	r.item("unauthenticated OPTIONS", ps.AllowOptions)
	r.item("forward-auth verify", ps.Verify+" (FORWARD_AUTH_PROXY "+s.ForwardAuth.Proxy+")")
	if len(ps.AllowedRedirectHosts) > 0 {
		r.item("allowed redirect hosts", strings.Join(ps.AllowedRedirectHosts, ", "))
	}
	b := s.Bearer
	r.accessTokens(s, p)
	if bearerErr != nil {
		r.problem("%v", bearerErr)
		return
	}
	if b.AuthenticationConfigFile == "" && !b.AcceptProviderIDTokens {
		return
	}
	r.item("bearer JWTs accepted", fmt.Sprintf("provider ID tokens: %v (audiences %s); AUTHENTICATION_CONFIG_FILE: %s",
		b.AcceptProviderIDTokens, strings.Join(b.ProviderTokenAudiences, ", "), orNone(b.AuthenticationConfigFile)))
}

// accessTokens says which of the provider's access tokens are accepted
// (ACCESS_TOKEN_AUTHN) and whether they can be verified at all.
func (r *Report) accessTokens(s *config.Settings, p *server.Parts) {
	b := s.Bearer
	switch b.AccessTokens {
	case "":
		r.item("provider access tokens", "not accepted (ACCESS_TOKEN_AUTHN_ENABLED=false)")
	case "jwt":
		if len(b.AccessAudiences) == 0 {
			r.item("provider access tokens", "none accepted: ACCESS_TOKEN_AUTHN=jwt without an audience (ACCESS_TOKEN_AUDIENCES and AUDIENCES are empty)")
			return
		}
		r.item("provider access tokens", fmt.Sprintf("JWTs signed by the provider for %s (typ at+jwt, or an audience that is not an ID token's)",
			strings.Join(b.AccessAudiences, ", ")))
	case "opaque":
		r.item("provider access tokens", fmt.Sprintf("opaque, asked at userinfo, answers kept %v, at most %d new tokens per second and %d at once",
			b.AccessCacheTTL, b.AccessLookupRate, b.AccessLookupConcurr))
		if p != nil && p.Provider != nil && p.Provider.Ready() && !p.Provider.HasUserinfo() {
			r.warn("ACCESS_TOKEN_AUTHN=opaque: the provider has no userinfo endpoint, so no opaque access token can be verified (every one is refused)")
		}
	}
}

// authorizerSection reports the external authorizer and asks it one
// question as a reachability check: who "check-config" is does not matter,
// an answer inside the protocol does.
func (r *Report) authorizerSection(ctx context.Context, s *config.Settings, p *server.Parts, err error) {
	a := s.Authorizer
	if a.URL == "" {
		return
	}
	r.section("External authorizer")
	r.item("URL", a.URL)
	r.item("protocol", a.Format)
	r.item("timeout, calls at once", fmt.Sprintf("%v, %d", a.Timeout, a.MaxConcurrent))
	if a.CacheTTL > 0 {
		r.item("decisions reused for", a.CacheTTL)
	} else {
		r.item("decisions reused for", "0 (asked on every request)")
	}
	if err != nil || p == nil || p.Authorizer == nil {
		if err != nil {
			r.problem("%v", err)
		}
		return
	}
	start := time.Now()
	d, err := p.Authorizer.Decide(ctx, authorizer.Input{Timestamp: start.UTC().Format(time.RFC3339),
		User:    authorizer.User{Name: "check-config", Groups: []string{}},
		Request: authorizer.Request{Host: "check-config.invalid", Port: 443, Path: "/", Method: http.MethodGet}})
	switch {
	case err != nil:
		r.problem("the external authorizer did not answer within its protocol: %v (every authenticated request would be refused)", err)
	case d.Allowed:
		r.item("reachable", fmt.Sprintf("yes (%d ms; allowed the test question)", time.Since(start).Milliseconds()))
	default:
		r.item("reachable", fmt.Sprintf("yes (%d ms; refused the test question: %s)", time.Since(start).Milliseconds(), d.Reason))
	}
}

func (r *Report) tokenReviewSection(s *config.Settings, err error) {
	if !s.Bearer.TokenReview {
		return
	}
	switch {
	case err != nil:
		r.problem("%v", err)
	default:
		r.item("service-account tokens", fmt.Sprintf("TokenReview at the API server (KUBERNETES_AUTHN_ENABLED), audiences %s",
			listOrNone(s.Bearer.ReviewAudiences)))
	}
}

func (r *Report) sessionSection(ctx context.Context, s *config.Settings, p *server.Parts, redisErr error) {
	ss := s.Sessions
	r.section("Sessions")
	r.item("cookie", fmt.Sprintf("%s (SameSite %v, HttpOnly %v, Secure %s)", ss.CookieName, sameSiteName(ss.SameSite), ss.HTTPOnly, ss.Secure))
	r.item("max age", ss.MaxAge)
	if ss.IdleTimeout > 0 {
		r.item("idle timeout", ss.IdleTimeout)
	}
	r.keys(ctx, s)
	r.item("strict validation", ss.StrictValidation)
	switch {
	case redisErr != nil:
		r.problem("%v", redisErr)
	case p.Redis != nil:
		lo := s.Logout
		switch p.Redis.Mode() {
		case "sentinel":
			r.item("Redis mode", fmt.Sprintf("Sentinel: master %q via %s", lo.RedisSentinelMaster, strings.Join(lo.RedisSentinelAddrs, ", ")))
		case "cluster":
			r.item("Redis mode", "Cluster: "+strings.Join(lo.RedisClusterAddrs, ", "))
		default:
			r.item("Redis mode", "single server (REDIS_URL)")
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if found, err := p.Redis.Check(pctx); err != nil {
			r.problem("Redis not reachable: %v", err)
		} else {
			r.item("revocations shared via", "Redis (ok: "+found+")")
		}
		cancel()
	default:
		r.item("revocations shared via", "nothing (this replica only; set REDIS_URL, or Sentinel or Cluster, with several replicas)")
	}
	for _, v := range s.Ignored {
		r.warn("%s (a variable of the predecessor) is ignored: %s", v.Name, v.Why)
	}
	for _, w := range s.Warnings {
		r.warn("%s", w)
	}
}

// keys reports where the session keys come from and, in a pod, whether the
// service's account may keep its Secret and nothing more.
func (r *Report) keys(ctx context.Context, s *config.Settings) {
	ss := s.Sessions
	store, err := server.KeyStore(s)
	switch {
	case err != nil:
		r.problem("%v", err)
		return
	case !ss.Generated:
		r.item("session keys", fmt.Sprintf("%d (the first seals new cookies)", len(ss.Secrets)))
	case store == nil && ss.KeySecret == "":
		r.problem("SESSION_KEYS is not set and SESSION_KEYS_SECRET is empty: random keys, sessions would not survive a restart nor work across replicas")
	case store == nil:
		r.problem("SESSION_KEYS is not set and this is not a Kubernetes pod (no Secret to keep a key in): random keys, sessions would not survive a restart nor work across processes")
	default:
		where := store.Namespace + "/" + store.Name
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		k, err := store.Inspect(cctx)
		switch {
		case err != nil:
			r.problem("session keys (Secret %s): %v", where, err)
		case k.Exists:
			if secrets, errs := config.SessionSecrets(k.Text); len(errs) > 0 {
				r.problem("session keys (Secret %s, %s): %v", where, sessionkeys.DataKey, errors.Join(errs...))
			} else {
				r.item("session keys", fmt.Sprintf("%d, from Secret %s (the first seals new cookies)", len(secrets), where))
			}
		default:
			if err := store.CanCreate(cctx); err != nil {
				r.problem("session keys: Secret %s is absent and could not be created: %v", where, err)
			} else {
				r.item("session keys", "Secret "+where+" is absent: the first replica to start creates it with a random key (permitted)")
			}
		}
	}
	if store == nil {
		return
	}
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch err := store.Guarded(gctx); {
	case err == nil:
		r.item("Secrets the service may write", "its own only ("+store.Name+", Opaque)")
	case errors.Is(err, sessionkeys.ErrUnguarded):
		r.problem("%v", err)
	default:
		r.warn("could not check that the service's account can create no other Secret: %v", err)
	}
}

func (r *Report) tracingSection(s *config.Settings, err error) {
	t := s.Tracing
	r.section("Traces")
	switch {
	case err != nil:
		r.problem("%v", err)
	case t.Endpoint == "":
		r.item("OpenTelemetry traces", "off (no OTEL_EXPORTER_OTLP_ENDPOINT)")
	default:
		r.item("OTLP endpoint", t.Endpoint+" ("+t.Protocol+")")
		sampler := t.Sampler
		if strings.HasSuffix(sampler, "traceidratio") {
			sampler += fmt.Sprintf(" %g", t.SamplerArg)
		}
		r.item("sampler", sampler)
		r.item("service name", t.ServiceName)
	}
}

func sameSiteName(m http.SameSite) string {
	switch m {
	case http.SameSiteStrictMode:
		return "Strict"
	case http.SameSiteNoneMode:
		return "None"
	}
	return "Lax"
}

// provider prints what discovery says and compares it with the settings.
func (r *Report) provider(s *config.Settings, p *provider.Provider) {
	raw, err := p.DiscoveryJSON()
	if err != nil {
		r.problem("%v", err)
		return
	}
	var d discovery
	if err := json.Unmarshal(raw, &d); err != nil {
		r.problem("discovery document: %v", err)
		return
	}
	auth := d.AuthorizationEndpoint
	if s.Provider.AuthURL != "" {
		auth = s.Provider.AuthURL + " (OIDC_AUTH_URL; provider says " + d.AuthorizationEndpoint + ")"
	}
	r.item("authorization endpoint", auth)
	r.item("token endpoint", d.TokenEndpoint)
	r.item("userinfo endpoint", orNone(d.UserinfoEndpoint))
	r.item("keys (jwks_uri)", d.JWKSURI)
	r.item("end-session endpoint", orNone(d.EndSessionEndpoint))
	r.item("revocation endpoint", orNone(d.RevocationEndpoint))
	r.item("back-channel logout", d.BackchannelLogout)
	if len(d.PKCEMethods) > 0 && !slices.Contains(d.PKCEMethods, "S256") {
		r.problem("the provider does not list S256 in code_challenge_methods_supported (%s): PKCE would fail", strings.Join(d.PKCEMethods, ", "))
	}
	if len(d.ResponseTypes) > 0 && !slices.Contains(d.ResponseTypes, "code") {
		r.problem("the provider does not support the code flow (response_types_supported: %s)", strings.Join(d.ResponseTypes, ", "))
	}
	if len(d.ScopesSupported) > 0 {
		for _, sc := range s.Provider.Scopes {
			if !slices.Contains(d.ScopesSupported, sc) {
				r.problem("scope %q is not in the provider's scopes_supported (%s); providers such as GitLab refuse the login with invalid_scope", sc, strings.Join(d.ScopesSupported, " "))
			}
		}
	}
	if len(d.ClaimsSupported) > 0 {
		if !slices.Contains(d.ClaimsSupported, s.Identity.UserClaim) {
			r.warn("USERID_CLAIM %q is not in the provider's claims_supported: logins fail if the ID token lacks it", s.Identity.UserClaim)
		}
		if !slices.Contains(d.ClaimsSupported, s.Identity.GroupsClaim) {
			r.warn("GROUPS_CLAIM %q is not in the provider's claims_supported: users will have no groups unless the ID token or userinfo carries it", s.Identity.GroupsClaim)
		}
	}
	if s.Sessions.StrictValidation && d.UserinfoEndpoint == "" {
		r.problem("STRICT_SESSION_VALIDATION needs a userinfo endpoint and the provider has none")
	}
	if s.Logout.ProviderSignOutURL == "" && d.EndSessionEndpoint == "" && s.Logout.ProviderLogout {
		r.item("logout at the provider", "no end-session endpoint: logout ends the session here only (see PROVIDER_SIGN_OUT_URL)")
	}
}

func secretState(v string) string {
	if v == "" {
		return "not set"
	}
	return "set"
}

func orNone(v string) string {
	if v == "" {
		return "none"
	}
	return v
}

func listOrNone(v []string) string {
	if len(v) == 0 {
		return "none"
	}
	return strings.Join(v, ", ")
}
