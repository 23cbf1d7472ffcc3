package authn

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/jwks"
	"github.com/oidc-authservice/oidc-authservice/internal/logtext"
	"github.com/oidc-authservice/oidc-authservice/internal/outbound"
)

// ErrInvalidToken wraps every reason a bearer token is refused.
var ErrInvalidToken = errors.New("invalid bearer token")

// ErrUnknownIssuer comes with ErrInvalidToken when no configured issuer
// matches the token's iss, so that another authenticator (TokenReview) may
// be asked.
var ErrUnknownIssuer = errors.New("issuer not configured")

// MaxTokenSize bounds what is parsed at all.
const MaxTokenSize = 16 << 10

// Identity is who a token says the caller is.
type Identity struct {
	Username string
	UID      string
	Groups   []string
	Extra    map[string][]string
	Issuer   string
	Expiry   time.Time

	// What links a JWT to the logins and logouts of its issuer, so that a
	// logout reaches it (credential.Tokens); empty when the token has none.
	Subject  string    // sub
	SID      string    // sid, the provider's session
	Nonce    string    // nonce, of the login it was issued for
	IssuedAt time.Time // iat

	// Claims are the token's verified claims (nil for a TokenReview answer).
	Claims map[string]any
}

// Options configure an Authenticator.
type Options struct {
	Logger             *zap.Logger
	Now                func() time.Time
	Timeout            time.Duration // of discovery and key fetches
	KeyRefetchInterval time.Duration // at most one key set refetch per issuer per interval
	// KeySets are key sets shared with other verifiers, by issuer URL: the
	// login provider's, so that every path verifying its tokens uses one
	// rate-limited set. An issuer listed here is not discovered again.
	KeySets map[string]*jwks.Set
	// Provider is the login provider's issuer: its access tokens
	// (ACCESS_TOKEN_AUTHN=jwt) and how they are told from its ID tokens.
	Provider *Provider
}

// Authenticator verifies bearer JWTs of the configured issuers.
type Authenticator struct {
	opts    Options
	log     *zap.Logger
	issuers map[string]*issuer
}

// New builds an Authenticator from compiled configurations.
func New(cfgs []*compiled, o Options) (*Authenticator, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.KeyRefetchInterval == 0 {
		o.KeyRefetchInterval = jwks.DefaultInterval
	}
	a := &Authenticator{opts: o, log: o.Logger.Named("authn"), issuers: map[string]*issuer{}}
	for _, c := range cfgs {
		client, err := httpClient(c.Issuer, o.Timeout)
		if err != nil {
			return nil, fmt.Errorf("%w: issuer %s: %v", ErrConfig, c.Issuer.URL, err)
		}
		a.issuers[c.Issuer.URL] = &issuer{c: c, entry: c, client: client, opts: o, log: a.log}
	}
	if p := o.Provider; p != nil {
		pi := &providerIssuer{idAudiences: p.IDAudiences, stats: p.Stats}
		if p.Access != nil {
			c, err := compile(*p.Access)
			if err != nil {
				return nil, fmt.Errorf("%w: access tokens (ACCESS_TOKEN_AUDIENCES): %v", ErrConfig, err)
			}
			pi.access = c
		}
		is := a.issuers[p.Issuer]
		switch {
		case is != nil:
		case pi.access != nil:
			client, err := httpClient(pi.access.Issuer, o.Timeout)
			if err != nil {
				return nil, fmt.Errorf("%w: issuer %s: %v", ErrConfig, p.Issuer, err)
			}
			is = &issuer{entry: pi.access, client: client, opts: o, log: a.log}
			a.issuers[p.Issuer] = is
		default:
			return a, nil // neither ID tokens nor access tokens of the provider are accepted
		}
		is.provider = pi
	}
	return a, nil
}

// Issuers lists the configured issuer URLs.
func (a *Authenticator) Issuers() []string {
	var out []string
	for u := range a.issuers {
		out = append(out, u)
	}
	return out
}

// Has reports whether iss is configured.
func (a *Authenticator) Has(iss string) bool { _, ok := a.issuers[iss]; return ok }

// Authenticate verifies raw and maps it to an Identity.
func (a *Authenticator) Authenticate(ctx context.Context, raw string) (*Identity, error) {
	if len(raw) > MaxTokenSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidToken, MaxTokenSize)
	}
	iss, err := unverifiedIssuer(raw)
	if err != nil {
		return nil, err
	}
	is, ok := a.issuers[iss]
	if !ok {
		return nil, fmt.Errorf("%w: %w: %q", ErrInvalidToken, ErrUnknownIssuer, logtext.Bound(iss, 100))
	}
	return is.authenticate(ctx, raw)
}

// unverifiedIssuer reads iss from the payload to choose the authenticator;
// nothing else of the unverified token is trusted.
func unverifiedIssuer(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("%w: not a JWS compact token", ErrInvalidToken)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("%w: payload is not base64url: %v", ErrInvalidToken, err)
	}
	var c struct {
		Iss any `json:"iss"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", fmt.Errorf("%w: payload is not JSON", ErrInvalidToken)
	}
	s, ok := c.Iss.(string)
	if !ok || s == "" {
		return "", fmt.Errorf("%w: no iss", ErrInvalidToken)
	}
	return s, nil
}

// issuer is one configured issuer with its lazily discovered keys.
type issuer struct {
	c *compiled // the entry judging its tokens; for the provider, its ID tokens (nil: not accepted)
	// entry says where the issuer is and how to reach it: c, or for the
	// provider's issuer without ID tokens, the access tokens' entry.
	entry    *compiled
	provider *providerIssuer // the login provider's issuer; nil for the others
	client   *http.Client
	opts     Options
	log      *zap.Logger

	mu       sync.Mutex // guards verifier and lastTry
	verifier *oidc.IDTokenVerifier
	lastTry  time.Time
}

func (is *issuer) getVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.verifier != nil {
		return is.verifier, nil
	}
	if ks := is.opts.KeySets[is.entry.Issuer.URL]; ks != nil {
		is.verifier = is.newVerifier(ks)
		return is.verifier, nil
	}
	if now := is.opts.Now(); now.Sub(is.lastTry) < 5*time.Second {
		return nil, fmt.Errorf("%w: issuer %s: discovery failed recently", ErrInvalidToken, is.entry.Issuer.URL)
	}
	is.lastTry = is.opts.Now()
	jwksURL, err := is.discover(ctx)
	if err != nil {
		is.log.Warn("issuer discovery failed", zap.String("issuer", is.entry.Issuer.URL), zap.Error(err))
		return nil, fmt.Errorf("%w: issuer %s: %v", ErrInvalidToken, is.entry.Issuer.URL, err)
	}
	is.verifier = is.newVerifier(jwks.New(jwksURL, is.client, is.opts.KeyRefetchInterval, is.log))
	return is.verifier, nil
}

func (is *issuer) newVerifier(ks oidc.KeySet) *oidc.IDTokenVerifier {
	return oidc.NewVerifier(is.entry.Issuer.URL, ks, &oidc.Config{
		SkipClientIDCheck: true, SupportedSigningAlgs: jwks.Algorithms, Now: is.opts.Now,
	})
}

func (is *issuer) discover(ctx context.Context) (string, error) {
	u := is.entry.Issuer.DiscoveryURL
	if u == "" {
		u = strings.TrimSuffix(is.entry.Issuer.URL, "/") + "/.well-known/openid-configuration"
	}
	ctx, cancel := context.WithTimeout(ctx, is.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := is.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("discovery %s: HTTP %d", u, resp.StatusCode)
	}
	var d struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, jwks.MaxBytes)).Decode(&d); err != nil {
		return "", fmt.Errorf("discovery %s: %v", u, err)
	}
	if d.Issuer != is.entry.Issuer.URL {
		return "", fmt.Errorf("discovery %s names issuer %q, configured %q", u, logtext.Bound(d.Issuer, 200), is.entry.Issuer.URL)
	}
	if d.JWKSURI == "" {
		return "", fmt.Errorf("discovery %s has no jwks_uri", u)
	}
	return d.JWKSURI, nil
}

func (is *issuer) authenticate(ctx context.Context, raw string) (*Identity, error) {
	v, err := is.getVerifier(ctx)
	if err != nil {
		return nil, err
	}
	idt, err := v.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	c, access := is.c, false
	if is.provider != nil {
		if c, access, err = is.provider.profile(raw, idt.Audience, is.c); err != nil {
			return nil, err
		}
	}
	id, err := is.judge(idt, c)
	if access {
		if err != nil {
			is.provider.count("rejected")
			return nil, fmt.Errorf("%w (as an access token)", err)
		}
		is.provider.count("ok")
	}
	return id, err
}

// judge applies entry c (audience, claim rules, mappings) to a token whose
// signature, issuer and expiry verified.
func (is *issuer) judge(idt *oidc.IDToken, c *compiled) (*Identity, error) {
	if !audienceMatches(idt.Audience, c.Issuer.Audiences) {
		return nil, fmt.Errorf("%w: audience %q not accepted", ErrInvalidToken, idt.Audience)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrInvalidToken, err)
	}
	// go-oidc allows nbf five minutes ahead for clock skew; kube-apiserver
	// allows none, and the service answers as it does.
	if nbf, ok := claims["nbf"].(float64); ok && is.opts.Now().Before(time.Unix(int64(nbf), 0)) {
		return nil, fmt.Errorf("%w: not valid before %s", ErrInvalidToken, time.Unix(int64(nbf), 0).UTC().Format(time.RFC3339))
	}
	id, err := c.mapClaims(claims)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	id.Issuer, id.Expiry, id.Claims = idt.Issuer, idt.Expiry, claims
	id.Subject, id.Nonce, id.IssuedAt = idt.Subject, idt.Nonce, idt.IssuedAt
	id.SID, _ = claims["sid"].(string)
	return id, nil
}

func audienceMatches(got, accepted []string) bool {
	for _, g := range got {
		for _, a := range accepted {
			if g == a {
				return true
			}
		}
	}
	return false
}

// mapClaims applies validation rules and claim mappings as the API server
// does.
func (c *compiled) mapClaims(claims map[string]any) (*Identity, error) {
	vars := map[string]any{"claims": claims}
	for _, r := range c.claimRules {
		if r.p == nil {
			if s, ok := claims[r.claim].(string); !ok || s != r.required {
				return nil, fmt.Errorf("claim %q must be %q", r.claim, r.required)
			}
			continue
		}
		v, err := eval(r.p, vars)
		if err != nil {
			return nil, fmt.Errorf("claim validation rule: %v", err)
		}
		if ok, err := asBool(v); err != nil || !ok {
			return nil, fmt.Errorf("claim validation rule failed: %s", r.message)
		}
	}
	id := &Identity{}
	var err error
	if id.Username, err = c.username.str(vars, claims); err != nil {
		return nil, fmt.Errorf("username: %v", err)
	}
	if c.username.claim == "email" && !c.AllowUnverifiedEmail {
		if v, ok := claims["email_verified"]; ok && v != true {
			return nil, fmt.Errorf("username: email_verified is not true")
		}
	}
	if id.Username == "" {
		return nil, fmt.Errorf("username is empty")
	}
	if id.Groups, err = c.groups.list(vars, claims); err != nil {
		return nil, fmt.Errorf("groups: %v", err)
	}
	if id.UID, err = c.uid.str(vars, claims); err != nil {
		return nil, fmt.Errorf("uid: %v", err)
	}
	for _, x := range c.extra {
		v, err := eval(x.p, vars)
		if err != nil {
			return nil, fmt.Errorf("extra %s: %v", x.key, err)
		}
		vals, err := asStrings(v)
		if err != nil {
			return nil, fmt.Errorf("extra %s: %v", x.key, err)
		}
		if len(vals) > 0 {
			if id.Extra == nil {
				id.Extra = map[string][]string{}
			}
			id.Extra[x.key] = vals
		}
	}
	if len(c.userRules) > 0 {
		user := UserInfo{Username: id.Username, UID: id.UID, Groups: id.Groups, Extra: id.Extra}
		if user.Groups == nil {
			user.Groups = []string{}
		}
		if user.Extra == nil {
			user.Extra = map[string][]string{}
		}
		for _, r := range c.userRules {
			v, err := eval(r.p, map[string]any{"user": userEnv.CELTypeAdapter().NativeToValue(user)})
			if err != nil {
				return nil, fmt.Errorf("user validation rule: %v", err)
			}
			if ok, err := asBool(v); err != nil || !ok {
				return nil, fmt.Errorf("user validation rule failed: %s", r.message)
			}
		}
	}
	return id, nil
}

func (v celValue) str(vars map[string]any, claims map[string]any) (string, error) {
	switch {
	case v.p != nil:
		r, err := eval(v.p, vars)
		if err != nil {
			return "", err
		}
		return asString(r)
	case v.claim != "":
		raw, ok := claims[v.claim]
		if !ok {
			return "", fmt.Errorf("claim %q missing", v.claim)
		}
		s, ok := raw.(string)
		if !ok {
			return "", fmt.Errorf("claim %q is not a string", v.claim)
		}
		return v.prefix + s, nil
	}
	return "", nil
}

func (v celValue) list(vars map[string]any, claims map[string]any) ([]string, error) {
	var out []string
	switch {
	case v.p != nil:
		r, err := eval(v.p, vars)
		if err != nil {
			return nil, err
		}
		return asStrings(r)
	case v.claim != "":
		switch raw := claims[v.claim].(type) {
		case nil:
		case string:
			out = []string{v.prefix + raw}
		case []any:
			for _, e := range raw {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("claim %q has a non-string element", v.claim)
				}
				out = append(out, v.prefix+s)
			}
		default:
			return nil, fmt.Errorf("claim %q is neither a string nor a list of strings", v.claim)
		}
	}
	return out, nil
}

// httpClient is the client for one issuer: its CA, an optional bearer token
// for discovery and keys, and timeouts.
func httpClient(is Issuer, timeout time.Duration) (*http.Client, error) {
	pemData := []byte(is.CertificateAuthority)
	if is.CertificateAuthorityFile != "" {
		b, err := os.ReadFile(is.CertificateAuthorityFile)
		if err != nil {
			return nil, err
		}
		pemData = b
	}
	c, err := outbound.NewClient(outbound.Options{Timeout: timeout, CAPEM: pemData, OnlyCA: true})
	if err != nil {
		return nil, fmt.Errorf("certificateAuthority: %w", err)
	}
	if is.DiscoveryTokenFile != "" {
		u := is.DiscoveryURL
		if u == "" {
			u = is.URL
		}
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" {
			return nil, fmt.Errorf("discoveryTokenFile: no host to send it to in %q", u)
		}
		c.Transport = tokenFileTransport{file: is.DiscoveryTokenFile, host: pu.Host, next: c.Transport}
	}
	return c, nil
}

// tokenFileTransport adds the bearer token read from a file (re-read on
// every request: projected tokens rotate) to requests for host, the
// discovery document's: never to a jwks_uri on another host or a redirect
// elsewhere, which the discovery answer chooses.
type tokenFileTransport struct {
	file string
	host string
	next http.RoundTripper
}

func (t tokenFileTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !strings.EqualFold(r.URL.Host, t.host) {
		return t.next.RoundTrip(r)
	}
	b, err := os.ReadFile(t.file)
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(b)))
	return t.next.RoundTrip(r)
}
