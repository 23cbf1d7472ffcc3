package authn_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// providerAuthenticator accepts the login provider's tokens as the
// composition root configures it: ID tokens for the client (withID), and
// JWT access tokens for accessAud (none: off).
func providerAuthenticator(t *testing.T, issuer string, withID bool, accessAud ...string) *authn.Authenticator {
	t.Helper()
	var extra []authn.JWTAuthenticator
	if withID {
		extra = append(extra, authn.ProviderEntry(issuer, []string{"kubeflow"}, "email", "groups"))
	}
	p := &authn.Provider{Issuer: issuer, IDAudiences: []string{"kubeflow"}}
	if len(accessAud) > 0 {
		e := authn.AccessTokenEntry(issuer, accessAud, "email", "groups")
		p.Access = &e
	}
	a, err := authn.Load("", extra, authn.Options{KeyRefetchInterval: time.Hour, Provider: p})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestProviderAccessTokens: the provider's JWT access tokens are accepted
// for the configured audiences, and an ID token is never taken for an
// access token, nor an access token for an ID token, where the two can be
// told apart.
func TestProviderAccessTokens(t *testing.T) {
	is := peer.StartIssuer(t)
	ctx := context.Background()
	user := map[string]any{"sub": "4217", "email": "alice@example.com", "email_verified": true, "groups": []string{"ml"}}
	with := func(extra map[string]any) map[string]any {
		c := map[string]any{}
		for k, v := range user {
			c[k] = v
		}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	const api = "istio-ingressgateway.istio-system.svc.cluster.local"
	idToken := is.Sign(t, with(map[string]any{"aud": "kubeflow", "nonce": "n"}))
	accessPlain := is.Sign(t, with(map[string]any{"aud": api}))                                         // typ JWT, for the gateway's audience
	accessTyped := is.SignTyped(t, "at+jwt", with(map[string]any{"aud": api, "client_id": "kubeflow"})) // RFC 9068
	accessTypedForClient := is.SignTyped(t, "application/at+jwt", with(map[string]any{"aud": "kubeflow"}))
	otherAud := is.Sign(t, with(map[string]any{"aud": "another-app"}))
	expired := is.Sign(t, with(map[string]any{"aud": api, "exp": time.Now().Add(-time.Minute).Unix()}))
	noUser := is.Sign(t, map[string]any{"aud": api, "sub": "4217"})
	unverified := is.Sign(t, with(map[string]any{"aud": api, "email_verified": false}))
	forged := peer.SignWith(t, peer.ForeignKey(), "key-1", with(map[string]any{"iss": is.URL, "aud": api}))

	for _, c := range []struct {
		name   string
		a      *authn.Authenticator
		token  string
		ok     bool
		reason string // in the error
	}{
		{"ID tokens on, access tokens on: an ID token", providerAuthenticator(t, is.URL, true, api), idToken, true, ""},
		{"ID tokens on, access tokens on: an access token", providerAuthenticator(t, is.URL, true, api), accessPlain, true, ""},
		{"an at+jwt access token", providerAuthenticator(t, is.URL, true, api), accessTyped, true, ""},
		{"an at+jwt access token for the client's own audience", providerAuthenticator(t, is.URL, false, api, "kubeflow"), accessTypedForClient, true, ""},
		{"access tokens off: an at+jwt token is not an ID token", providerAuthenticator(t, is.URL, true), accessTypedForClient, false, "not an ID token"},
		{"access tokens off: a token for another audience", providerAuthenticator(t, is.URL, true), accessPlain, false, "audience"},
		{"ID tokens off: an ID token is not an access token", providerAuthenticator(t, is.URL, false, api), idToken, false, "ID tokens are not accepted"},
		{"ID tokens off, the client's audience listed for access tokens: still an ID token", providerAuthenticator(t, is.URL, false, api, "kubeflow"), idToken, false, "ID tokens are not accepted"},
		{"an access token for an audience not configured", providerAuthenticator(t, is.URL, true, api), otherAud, false, "audience"},
		{"an expired access token", providerAuthenticator(t, is.URL, true, api), expired, false, "expired"},
		{"an access token without the user id claim", providerAuthenticator(t, is.URL, true, api), noUser, false, "email"},
		{"an access token whose email is not verified", providerAuthenticator(t, is.URL, true, api), unverified, false, "email_verified"},
		{"an access token signed with another key", providerAuthenticator(t, is.URL, true, api), forged, false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			id, err := c.a.Authenticate(ctx, c.token)
			if c.ok {
				if err != nil {
					t.Fatal(err)
				}
				if id.Username != "alice@example.com" || strings.Join(id.Groups, ",") != "ml" || id.Claims["sub"] != "4217" {
					t.Fatalf("identity %+v", id)
				}
				return
			}
			if !errors.Is(err, authn.ErrInvalidToken) || !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("accepted or refused for another reason (want %q): %+v %v", c.reason, id, err)
			}
		})
	}

	// Neither ID tokens nor access tokens: the provider's issuer is unknown.
	a, err := authn.Load("", nil, authn.Options{Provider: &authn.Provider{Issuer: is.URL, IDAudiences: []string{"kubeflow"}}})
	if err != nil || a != nil {
		t.Fatalf("nothing of the provider accepted: %v %v", a, err)
	}
}
