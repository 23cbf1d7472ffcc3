// Package checkconfig is `oidc-authservice check-config`: it validates the
// settings, reaches the provider's discovery document, and prints what the
// service will do, listing every problem it finds. It is meant for a
// Kubernetes Job or an init container, and for a human at a terminal.
package checkconfig

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/authz"
	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/issuer"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
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
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	TokenEndpoint         string   `json:"token_endpoint"`
	UserinfoEndpoint      string   `json:"userinfo_endpoint"`
	JWKSURI               string   `json:"jwks_uri"`
	EndSessionEndpoint    string   `json:"end_session_endpoint"`
	RevocationEndpoint    string   `json:"revocation_endpoint"`
	ScopesSupported       []string `json:"scopes_supported"`
	ClaimsSupported       []string `json:"claims_supported"`
	PKCEMethods           []string `json:"code_challenge_methods_supported"`
	ResponseTypes         []string `json:"response_types_supported"`
	AuthMethods           []string `json:"token_endpoint_auth_methods_supported"`
	BackchannelLogout     bool     `json:"backchannel_logout_supported"`
}

// Run checks s and writes the summary to out. It returns the report; the
// command exits non-zero when it has problems.
func Run(ctx context.Context, s *config.Settings, out io.Writer) *Report {
	r := &Report{out: out}
	fmt.Fprintln(out, "oidc-authservice check-config")

	r.section("Provider")
	r.item("issuer (OIDC_PROVIDER)", s.Provider)
	p, err := provider.New(provider.Options{Issuer: s.Provider, AuthURL: s.AuthURL, ClientID: s.ClientID,
		ClientSecret: s.ClientSecret, RedirectURL: s.RedirectURL, Scopes: s.Scopes, CABundle: s.CABundle, Timeout: s.ProviderTimeout})
	if err != nil {
		r.problem("%v", err)
	} else {
		start := time.Now()
		if err := p.Discover(ctx); err != nil {
			r.problem("discovery failed: %v", err)
		} else {
			r.item("discovery", fmt.Sprintf("ok (%d ms)", time.Since(start).Milliseconds()))
			r.provider(s, p)
		}
	}

	r.section("Login")
	r.item("client id", s.ClientID)
	r.item("client secret", secretState(s.ClientSecret))
	r.item("redirect URL (sent as is)", s.RedirectURL)
	if !strings.Contains(s.RedirectURL, "://") {
		r.item("", "relative: the provider must accept it literally (Dex does); the browser resolves it against the gateway host")
	}
	r.item("callback path", s.RedirectPath)
	r.item("scopes", strings.Join(s.Scopes, " "))
	r.item("login state lifetime", s.LoginStateTTL)
	r.item("PKCE, state, nonce", "always (S256)")
	if s.AfterLoginURL != "" {
		r.item("after login", s.AfterLoginURL)
	}

	r.section("Identity headers")
	r.item("user id", fmt.Sprintf("%s: %s<claim %q>", s.UserIDHeader, s.UserIDPrefix, s.UserIDClaim))
	r.item("groups", fmt.Sprintf("%s: claim %q, comma-joined", s.GroupsHeader, s.GroupsClaim))
	if len(s.Transformers) > 0 {
		r.item("user id transformers", len(s.Transformers))
	}
	if s.GroupsAllowAll {
		r.item("groups allowlist", "* (every authenticated user)")
	} else {
		r.item("groups allowlist", strings.Join(s.GroupsAllowlist, ", "))
	}
	if _, err := authz.New(s); err != nil {
		r.problem("%v", err)
	} else if s.AuthorizationRulesFile != "" {
		r.item("authorization rules", s.AuthorizationRulesFile+" (ok)")
	}
	r.item("upstream token", s.UpstreamToken)
	if s.UpstreamToken == "issued" {
		r.item("issued token issuer", s.UpstreamTokenIssuer)
		r.item("issued token audience", s.UpstreamTokenAudience)
		if s.UpstreamTokenKeysFile == "" {
			r.problem("UPSTREAM_TOKEN=issued without UPSTREAM_TOKEN_KEYS_FILE: each replica signs with a random key and tokens fail validation after a restart")
		} else if keys, err := issuer.LoadKeys(s.UpstreamTokenKeysFile); err != nil {
			r.problem("UPSTREAM_TOKEN_KEYS_FILE: %v", err)
		} else {
			r.item("signing keys", len(keys))
		}
	}

	r.section("Requests")
	r.item("URL prefix", s.URLPrefix)
	r.item("logout URL", s.LogoutPath)
	r.item("skip paths (no login)", listOrNone(s.SkipPrefixes))
	r.item("API paths (401, no redirect)", listOrNone(s.APIPrefixes))
	r.item("unauthenticated OPTIONS", s.AllowUnauthenticatedOptions)
	if s.VerifyAuthURL != "" {
		r.item("forward-auth verify", s.VerifyPath)
	}
	if len(s.AllowedHosts) > 0 {
		r.item("allowed redirect hosts", strings.Join(s.AllowedHosts, ", "))
	}
	if s.AuthenticationConfigFile != "" || s.AcceptProviderIDTokens {
		var extra []authn.JWTAuthenticator
		if s.AcceptProviderIDTokens {
			extra = append(extra, authn.ProviderEntry(s.Provider, s.ClientID, s.UserIDClaim, s.GroupsClaim))
		}
		if _, err := authn.Load(s.AuthenticationConfigFile, extra, authn.Options{Timeout: s.ProviderTimeout}); err != nil {
			r.problem("bearer tokens: %v", err)
		} else {
			r.item("bearer JWTs accepted", fmt.Sprintf("provider ID tokens: %v; AUTHENTICATION_CONFIG_FILE: %s", s.AcceptProviderIDTokens, orNone(s.AuthenticationConfigFile)))
		}
	}

	r.section("Sessions")
	r.item("cookie", fmt.Sprintf("%s (SameSite %s, HttpOnly %v, Secure %s)", s.SessionCookieName, s.SessionSameSite, s.SessionHTTPOnly, s.SessionSecure))
	r.item("max age", time.Duration(s.SessionMaxAge)*time.Second)
	if s.SessionIdleTimeout > 0 {
		r.item("idle timeout", s.SessionIdleTimeout)
	}
	if s.GeneratedKeys {
		r.problem("SESSION_KEYS is not set: sessions would not survive a restart nor work across replicas")
	} else {
		r.item("session keys", fmt.Sprintf("%d (the first seals new cookies)", len(s.Keys)))
	}
	r.item("strict validation", s.StrictValidation)
	if s.RedisURL != "" {
		rs, err := revocation.NewRedisStore(s.RedisURL, s.RedisKeyPrefix)
		if err != nil {
			r.problem("%v", err)
		} else {
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			if err := rs.Ping(pctx); err != nil {
				r.problem("Redis not reachable: %v", err)
			} else {
				r.item("revocations shared via", "Redis (ok)")
			}
			cancel()
			rs.Close()
		}
	} else {
		r.item("revocations shared via", "nothing (this replica only; set REDIS_URL with several replicas)")
	}
	for _, v := range s.Ignored {
		r.warn("%s (a variable of the predecessor) is ignored: %s", v.Name, v.Why)
	}

	r.section("Servers")
	r.item("check", fmt.Sprintf("%s:%d", s.Hostname, s.Port))
	r.item("probes and /metrics", fmt.Sprintf("%s:%d", s.Hostname, s.ReadinessPort))
	r.item("web pages", fmt.Sprintf("%s:%d", s.Hostname, s.WebServerPort))

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
	if s.AuthURL != "" {
		auth = s.AuthURL + " (OIDC_AUTH_URL; provider says " + d.AuthorizationEndpoint + ")"
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
		for _, sc := range s.Scopes {
			if !slices.Contains(d.ScopesSupported, sc) {
				r.problem("scope %q is not in the provider's scopes_supported (%s); providers such as GitLab refuse the login with invalid_scope", sc, strings.Join(d.ScopesSupported, " "))
			}
		}
	}
	if len(d.ClaimsSupported) > 0 {
		if !slices.Contains(d.ClaimsSupported, s.UserIDClaim) {
			r.warn("USERID_CLAIM %q is not in the provider's claims_supported: logins fail if the ID token lacks it", s.UserIDClaim)
		}
		if !slices.Contains(d.ClaimsSupported, s.GroupsClaim) {
			r.warn("GROUPS_CLAIM %q is not in the provider's claims_supported: users will have no groups unless the ID token or userinfo carries it", s.GroupsClaim)
		}
	}
	if s.StrictValidation && d.UserinfoEndpoint == "" {
		r.problem("STRICT_SESSION_VALIDATION needs a userinfo endpoint and the provider has none")
	}
	if s.ProviderSignOutURL == "" && d.EndSessionEndpoint == "" && s.ProviderLogout {
		r.item("logout at the provider", "no end-session endpoint: logout ends the session here only (see PROVIDER_SIGN_OUT_URL)")
	}
}

func secretState(v string) string {
	if v == "" {
		return "not set"
	}
	return fmt.Sprintf("set (%d characters)", len(v))
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
