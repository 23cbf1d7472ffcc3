package authn_test

import (
	"context"
	"strings"
	"testing"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// FuzzBearerToken: no token the issuer did not sign is accepted.
func FuzzBearerToken(f *testing.F) {
	is := peer.StartIssuer(f)
	_, cfgs, err := authn.Parse([]byte(gitlabConfig(is.URL)))
	if err != nil {
		f.Fatal(err)
	}
	a, _ := authn.New(cfgs, authn.Options{})
	good := is.Sign(f, map[string]any{"aud": "gitlab-application-id", "sub": "1", "preferred_username": "a"})
	f.Add(good)
	f.Add(good[:len(good)-3] + "AAA")
	f.Add("eyJhbGciOiJub25lIn0." + good[len(good)/3:])
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := a.Authenticate(context.Background(), tok)
		// Base64 malleability of the signature's last character is not a
		// forgery: header and payload must be the signed ones.
		signed := good[:strings.LastIndexByte(good, '.')+1]
		if err == nil && !strings.HasPrefix(tok, signed) {
			t.Fatalf("accepted a token the issuer did not sign: %q → %+v", tok, id)
		}
	})
}
