package check

import (
	"testing"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
)

func nonNilAuthenticator(t testing.TB) *authn.Authenticator {
	a, err := authn.Load("", []authn.JWTAuthenticator{authn.ProviderEntry("https://issuer.example", []string{"client"}, "email", "groups")}, authn.Options{})
	if err != nil || a == nil {
		t.Fatalf("authenticator: %v", err)
	}
	return a
}
