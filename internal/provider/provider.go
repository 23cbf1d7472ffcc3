package provider

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/oidc-authservice/oidc-authservice/internal/jwks"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/outbound"
	"github.com/oidc-authservice/oidc-authservice/internal/tracing"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// Options configure a Provider.
type Options struct {
	Issuer       string
	AuthURL      string // optional override of the authorization endpoint; may be relative
	ClientID     string
	ClientSecret string
	RedirectURL  string // sent exactly as configured
	Scopes       []string
	CABundle     string // PEM file; optional
	Timeout      time.Duration
	Logger       *zap.Logger
	Now          func() time.Time
	Metrics      *metrics.Metrics // optional: provider requests by endpoint
	Tracer       *tracing.Tracer  // optional: spans of the provider calls
}

// Errors of the login path, for errors.Is.
var (
	// ErrNotReady: discovery has not succeeded yet.
	ErrNotReady = errors.New("provider discovery has not succeeded yet")
	// ErrRejected: the provider refused the code or refresh token
	// (invalid_grant and friends): the user must log in again.
	ErrRejected = errors.New("provider rejected the grant")
	// ErrUnavailable: the provider could not be reached or answered 5xx.
	ErrUnavailable = errors.New("provider unavailable")
	// ErrInvalidToken: the ID token failed verification.
	ErrInvalidToken = errors.New("invalid ID token")
)

// Provider talks to one OpenID Connect provider.
type Provider struct {
	opts   Options
	log    *zap.Logger
	client *http.Client
	keys   *jwks.Set                  // the provider's signing keys, for every token of its that is verified
	d      atomic.Pointer[discovered] // nil until discovery succeeds
}

// discovered is everything derived from the discovery document; it is
// replaced as a whole, never modified.
type discovered struct {
	oidc       *oidc.Provider
	verifier   *oidc.IDTokenVerifier
	oauth      oauth2.Config
	authURL    authURL // oauth's AuthCodeURL for logins, built once
	userinfo   bool
	endSession string
	revocation string
	// endpoints names the provider's URLs (without query) for metrics.
	endpoints map[string]string
}

// Metadata is the part of the discovery document beyond what go-oidc reads.
type Metadata struct {
	EndSessionEndpoint string `json:"end_session_endpoint"`
	RevocationEndpoint string `json:"revocation_endpoint"`
	JWKSURI            string `json:"jwks_uri"`
}

// New builds a Provider; call Discover (or Run) before use.
func New(o Options) (*Provider, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	client, err := newHTTPClient(o.CABundle, o.Timeout)
	if err != nil {
		return nil, err
	}
	p := &Provider{opts: o, log: o.Logger, client: client}
	client.Transport = o.Tracer.Transport(o.Metrics.Transport(client.Transport, p.endpointOf), p.endpointOf)
	p.keys = jwks.New("", client, 0, o.Logger)
	return p, nil
}

// KeySet is the provider's key set: bearer ID tokens of the provider are
// verified with it too, so that every path shares one rate limit.
func (p *Provider) KeySet() *jwks.Set { return p.keys }

// verifier checks tokens of the provider with its shared key set.
func (p *Provider) verifier(c oidc.Config) *oidc.IDTokenVerifier {
	c.SupportedSigningAlgs = jwks.Algorithms
	c.Now = p.opts.Now
	return oidc.NewVerifier(p.opts.Issuer, p.keys, &c)
}

// endpointOf names the provider endpoint a request goes to, for metrics.
func (p *Provider) endpointOf(r *http.Request) string {
	u := *r.URL
	u.RawQuery, u.Fragment = "", ""
	if d := p.d.Load(); d != nil {
		if name, ok := d.endpoints[u.String()]; ok {
			return name
		}
	}
	if strings.HasSuffix(u.Path, "/.well-known/openid-configuration") {
		return "discovery"
	}
	return "other"
}

// HTTPClient is the client used for every call to the provider.
func (p *Provider) HTTPClient() *http.Client { return p.client }

func newHTTPClient(caBundle string, timeout time.Duration) (*http.Client, error) {
	var pem []byte
	if caBundle != "" {
		var err error
		if pem, err = os.ReadFile(caBundle); err != nil {
			return nil, fmt.Errorf("CA_BUNDLE: %w", err)
		}
	}
	c, err := outbound.NewClient(outbound.Options{Timeout: timeout, CAPEM: pem, MaxIdleConnsPerHost: 16})
	if err != nil {
		return nil, fmt.Errorf("CA_BUNDLE %s: %w", caBundle, err)
	}
	return c, nil
}

func (p *Provider) ctx(ctx context.Context) context.Context {
	ctx = oidc.ClientContext(ctx, p.client)
	return context.WithValue(ctx, oauth2.HTTPClient, p.client)
}

// Ready reports whether discovery has succeeded.
func (p *Provider) Ready() bool { return p.d.Load() != nil }

// Discover fetches the discovery document once.
func (p *Provider) Discover(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	op, err := oidc.NewProvider(p.ctx(ctx), p.opts.Issuer)
	if err != nil {
		return fmt.Errorf("discovery of %s: %w", p.opts.Issuer, err)
	}
	var md Metadata
	if err := op.Claims(&md); err != nil {
		return fmt.Errorf("discovery of %s: %w", p.opts.Issuer, err)
	}
	ep := op.Endpoint()
	if p.opts.AuthURL != "" {
		ep.AuthURL = p.opts.AuthURL
	}
	p.keys.SetURL(md.JWKSURI)
	d := &discovered{
		oidc:     op,
		verifier: p.verifier(oidc.Config{ClientID: p.opts.ClientID}),
		oauth: oauth2.Config{
			ClientID:     p.opts.ClientID,
			ClientSecret: p.opts.ClientSecret,
			Endpoint:     ep,
			RedirectURL:  p.opts.RedirectURL,
			Scopes:       p.opts.Scopes,
		},
		userinfo:   op.UserInfoEndpoint() != "",
		endSession: md.EndSessionEndpoint,
		revocation: md.RevocationEndpoint,
		endpoints:  map[string]string{},
	}
	d.authURL = newAuthURL(d.oauth)
	for name, u := range map[string]string{"token": ep.TokenURL, "userinfo": op.UserInfoEndpoint(),
		"jwks": md.JWKSURI, "revocation": md.RevocationEndpoint} {
		if u != "" {
			d.endpoints[u] = name
		}
	}
	p.d.Store(d)
	return nil
}

// Run retries discovery with exponential backoff (1 s doubling to 30 s)
// until it succeeds or ctx ends. It never gives up: a provider that comes up
// late makes the service ready without a restart.
func (p *Provider) Run(ctx context.Context) {
	backoff := time.Second
	for attempt := 1; ; attempt++ {
		err := p.Discover(ctx)
		if err == nil {
			p.log.Info("provider discovered", zap.String("issuer", p.opts.Issuer), zap.Int("attempt", attempt))
			return
		}
		p.log.Warn("provider discovery failed; retrying", zap.String("issuer", p.opts.Issuer),
			zap.Int("attempt", attempt), zap.Duration("retry_in", backoff), zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// AuthCodeURL is the URL that starts a login at the provider, with state,
// nonce and the PKCE S256 challenge.
func (p *Provider) AuthCodeURL(state, nonce, challenge string) (string, error) {
	d := p.d.Load()
	if d == nil {
		return "", ErrNotReady
	}
	return d.authURL.url(state, nonce, challenge), nil
}

// Login is the result of a completed code exchange.
type Login struct {
	Token   *oauth2.Token
	IDToken *oidc.IDToken
	RawID   string
	// Claims are the ID token's claims, overlaid with userinfo's when the
	// provider has a userinfo endpoint (GitLab's groups exist only there).
	Claims map[string]any
}

// Exchange redeems an authorization code with its PKCE verifier, verifies
// the ID token and its nonce, and merges userinfo.
func (p *Provider) Exchange(ctx context.Context, code, verifier, nonce string) (login *Login, err error) {
	ctx, span := p.span(ctx, "code exchange")
	defer func() { endSpan(span, err) }()
	d := p.d.Load()
	if d == nil {
		return nil, ErrNotReady
	}
	ctx = p.ctx(ctx)
	tok, err := d.oauth.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, classify("token exchange", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, fmt.Errorf("%w: token response has no id_token", ErrInvalidToken)
	}
	// The token comes from the provider itself: it may wait for the key set.
	idt, err := d.verifier.Verify(jwks.MayWait(ctx), raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return nil, fmt.Errorf("%w: nonce does not match the login", ErrInvalidToken)
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
		}
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrInvalidToken, err)
	}
	if d.userinfo {
		ui, err := d.oidc.UserInfo(ctx, oauth2.StaticTokenSource(tok))
		if err != nil {
			return nil, classify("userinfo", err)
		}
		if ui.Subject != idt.Subject {
			return nil, fmt.Errorf("%w: userinfo subject differs from the ID token's", ErrInvalidToken)
		}
		var extra map[string]any
		if err := ui.Claims(&extra); err != nil {
			return nil, fmt.Errorf("%w: userinfo claims: %v", ErrUnavailable, err)
		}
		for k, v := range extra {
			switch k {
			case "iss", "aud", "exp", "iat", "nbf", "nonce", "sub":
				continue // identity and validity come from the verified ID token only
			}
			claims[k] = v
		}
	}
	return &Login{Token: tok, IDToken: idt, RawID: raw, Claims: claims}, nil
}

// classify maps an oauth2/http failure to ErrRejected or ErrUnavailable.
func classify(what string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.Response != nil && re.Response.StatusCode >= 500 {
			return fmt.Errorf("%w: %s: HTTP %d", ErrUnavailable, what, re.Response.StatusCode)
		}
		code := re.ErrorCode
		if code == "" {
			code = "HTTP " + fmt.Sprint(statusOf(re.Response))
		}
		return fmt.Errorf("%w: %s: %s", ErrRejected, what, code)
	}
	if msg := err.Error(); strings.HasPrefix(msg, "401 ") || strings.HasPrefix(msg, "403 ") {
		return fmt.Errorf("%w: %s: %v", ErrRejected, what, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, what, err)
}

func statusOf(r *http.Response) int {
	if r == nil {
		return 0
	}
	return r.StatusCode
}

// EndSessionEndpoint is the provider's RP-initiated logout endpoint, if any.
func (p *Provider) EndSessionEndpoint() string {
	if d := p.d.Load(); d != nil {
		return d.endSession
	}
	return ""
}

// RevocationEndpoint is the provider's RFC 7009 endpoint, if any.
func (p *Provider) RevocationEndpoint() string {
	if d := p.d.Load(); d != nil {
		return d.revocation
	}
	return ""
}

// DiscoveryJSON is a helper for tests and check-config: the raw claims.
func (p *Provider) DiscoveryJSON() (json.RawMessage, error) {
	d := p.d.Load()
	if d == nil {
		return nil, ErrNotReady
	}
	var raw json.RawMessage
	err := d.oidc.Claims(&raw)
	return raw, err
}
