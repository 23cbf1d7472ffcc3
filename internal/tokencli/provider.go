package tokencli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/oidc-authservice/oidc-authservice/internal/jwks"
)

// provider is the discovered provider: the oauth2 configuration of the
// client and the verifier of its ID tokens.
type provider struct {
	conf     oauth2.Config
	verifier *oidc.IDTokenVerifier
	device   bool // device_authorization_endpoint advertised
	client   *http.Client
}

// discovery is the part of the discovery document the command reads.
type discovery struct {
	oidc.ProviderConfig
	ScopesSupported []string `json:"scopes_supported"`
}

// httpClient is the client of every call to the provider: the system's
// roots plus --ca-bundle, --request-timeout per call.
func (c *command) httpClient() (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if c.o.CABundle != "" {
		pem, err := os.ReadFile(c.o.CABundle)
		if err != nil {
			return nil, fmt.Errorf("--ca-bundle: %v", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-bundle %s holds no PEM certificate", c.o.CABundle)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t, Timeout: c.o.RequestTimeout}, nil
}

// discover reads the provider's discovery document (at --provider-url when
// given) and builds the client's configuration.
func (c *command) discover(ctx context.Context) (*provider, error) {
	hc, err := c.httpClient()
	if err != nil {
		return nil, err
	}
	base := c.o.Issuer
	if c.o.ProviderURL != "" {
		base = c.o.ProviderURL
	}
	u := strings.TrimSuffix(base, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the provider at %s: %v. Check the URL and your network%s", u, reason(err), c.caHint(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %v", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered HTTP %d: is --issuer the provider's issuer URL (Dex: https://<host>/dex)?", u, resp.StatusCode)
	}
	var d discovery
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, fmt.Errorf("%s is not a discovery document: %v", u, err)
	}
	if d.IssuerURL != c.o.Issuer {
		hint := "pass --issuer " + d.IssuerURL
		if c.o.ProviderURL == "" {
			hint += " --provider-url " + c.o.Issuer
		}
		return nil, fmt.Errorf("the provider at %s names its issuer %q, not %q: %s", base, d.IssuerURL, c.o.Issuer, hint)
	}
	if c.o.ProviderURL != "" {
		// Endpoints the provider publishes under its (unreachable) issuer
		// URL are reached under --provider-url instead.
		for _, e := range []*string{&d.AuthURL, &d.TokenURL, &d.DeviceAuthURL, &d.JWKSURL, &d.UserInfoURL} {
			*e = rebase(*e, c.o.Issuer, c.o.ProviderURL)
		}
	}
	if d.DeviceAuthURL == "" {
		d.DeviceAuthURL = c.o.DeviceAuthURL
	}
	if d.AuthURL == "" || d.TokenURL == "" || d.JWKSURL == "" {
		return nil, fmt.Errorf("the discovery document at %s lacks authorization_endpoint, token_endpoint or jwks_uri", u)
	}
	scopes := c.o.Scopes
	if scopes == nil {
		scopes = defaultScopes(d.ScopesSupported)
	}
	for _, a := range c.o.Audiences {
		scopes = append(scopes, "audience:server:client_id:"+a)
	}
	p := &provider{
		conf: oauth2.Config{
			ClientID:     c.o.ClientID,
			ClientSecret: c.o.ClientSecret,
			Endpoint:     oauth2.Endpoint{AuthURL: d.AuthURL, TokenURL: d.TokenURL, DeviceAuthURL: d.DeviceAuthURL},
			Scopes:       scopes,
		},
		// The service's bounded key set (go-oidc's RemoteKeySet reads a
		// key set of any size).
		verifier: oidc.NewVerifier(d.IssuerURL, jwks.New(d.JWKSURL, hc, 0, nil),
			&oidc.Config{ClientID: c.o.ClientID, Now: c.env.Now, SupportedSigningAlgs: jwks.Algorithms}),
		device: d.DeviceAuthURL != "",
		client: hc,
	}
	if c.o.ClientSecret == "" {
		// A public client identifies itself with client_id in the body
		// (RFC 6749 §2.3.1); auto-detection would first try Basic auth.
		p.conf.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	}
	return p, nil
}

// defaultScopes asks for the profile, and for groups and a refresh token
// where the provider knows those scopes (GitLab refuses "groups").
func defaultScopes(supported []string) []string {
	s := []string{oidc.ScopeOpenID, "profile", "email"}
	if slices.Contains(supported, "groups") {
		s = append(s, "groups")
	}
	if len(supported) == 0 || slices.Contains(supported, oidc.ScopeOfflineAccess) {
		s = append(s, oidc.ScopeOfflineAccess)
	}
	return s
}

// rebase replaces the prefix from of u by to.
func rebase(u, from, to string) string {
	from, to = strings.TrimSuffix(from, "/"), strings.TrimSuffix(to, "/")
	if u == from || strings.HasPrefix(u, from+"/") {
		return to + strings.TrimPrefix(u, from)
	}
	return u
}

// verify checks an ID token from the provider: signature, issuer, audience
// (the client), expiry and, for the code flow, the nonce.
func (p *provider) verify(ctx context.Context, raw, nonce string) (*oidc.IDToken, error) {
	// The token came from the provider itself: it may wait for a fetch of
	// a key rotated in moments ago.
	idt, err := p.verifier.Verify(jwks.MayWait(ctx), raw)
	if err != nil {
		return nil, fmt.Errorf("the provider's ID token did not verify: %v", err)
	}
	if nonce != "" && idt.Nonce != nonce {
		return nil, errors.New("the provider's ID token carries another nonce than this login's: try again")
	}
	return idt, nil
}

// ctx is ctx carrying the provider's HTTP client for x/oauth2.
func (p *provider) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, p.client)
}

// reason is a transport error without the request's method and URL,
// which the message names already.
func reason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// caHint suggests --ca-bundle for certificate errors.
func (c *command) caHint(err error) string {
	var ua x509.UnknownAuthorityError
	var cv *tls.CertificateVerificationError
	if errors.As(err, &ua) || errors.As(err, &cv) {
		return "; the provider's certificate is not trusted here: pass its CA with --ca-bundle FILE"
	}
	return ""
}

// oauthError turns an OAuth error response into a sentence without the
// response body.
func oauthError(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		s := re.ErrorCode
		if s == "" && re.Response != nil {
			s = "HTTP " + re.Response.Status
		}
		if re.ErrorDescription != "" {
			s += ": " + re.ErrorDescription
		}
		return s
	}
	return reason(err)
}
