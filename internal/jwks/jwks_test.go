package jwks_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/jwks"
	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

func claims(iss string) map[string]any {
	return map[string]any{"iss": iss, "aud": "a", "sub": "1", "exp": time.Now().Add(time.Hour).Unix()}
}

// Unknown kids from anonymous callers are answered at once, however far
// their deadline is, and cause no fetch before the interval has passed.
func TestUnknownKidAnsweredAtOnce(t *testing.T) {
	is := peer.StartIssuer(t)
	set := jwks.New(is.URL+"/jwks", http.DefaultClient, time.Hour, nil)
	if _, err := set.VerifySignature(context.Background(), is.Sign(t, claims(is.URL))); err != nil {
		t.Fatal(err)
	}
	before := is.JWKSFetches.Load()
	done := make(chan error, 50)
	go func() {
		for i := 0; i < 50; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
			tok := peer.SignWith(t, peer.ForeignKey(), fmt.Sprintf("invented-%d", i), claims(is.URL))
			_, err := set.VerifySignature(ctx, tok)
			cancel()
			done <- err
		}
	}()
	for i := 0; i < 50; i++ {
		select {
		case err := <-done:
			if !errors.Is(err, jwks.ErrUnknownKey) {
				t.Fatalf("invented kid %d: %v", i, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a caller with an unknown kid was held waiting for the next allowed fetch")
		}
	}
	if n := is.JWKSFetches.Load() - before; n != 0 {
		t.Fatalf("%d fetches within the interval", n)
	}
}

// Tokens the service obtained from the provider itself may wait for the
// next allowed fetch: a login right after a key rotation succeeds.
func TestMayWaitPicksUpARotatedKey(t *testing.T) {
	is := peer.StartIssuer(t)
	set := jwks.New(is.URL+"/jwks", http.DefaultClient, 300*time.Millisecond, nil)
	if _, err := set.VerifySignature(context.Background(), is.Sign(t, claims(is.URL))); err != nil {
		t.Fatal(err)
	}
	is.Rotate()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := set.VerifySignature(jwks.MayWait(ctx), is.Sign(t, claims(is.URL))); err != nil {
		t.Fatalf("a token of the provider's new key, obtained from the provider: %v", err)
	}
}

func TestNoURLYet(t *testing.T) {
	set := jwks.New("", http.DefaultClient, 0, nil)
	is := peer.StartIssuer(t)
	if _, err := set.VerifySignature(context.Background(), is.Sign(t, claims(is.URL))); err == nil {
		t.Fatal("verified without keys")
	}
}
