package check

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/credential"
)

// fakeReviews stands in for the TokenReview authenticator.
type fakeReviews struct {
	calls  atomic.Int64
	expiry time.Time
	err    error
}

func (f *fakeReviews) Authenticate(ctx context.Context, raw string) (*authn.Identity, error) {
	f.calls.Add(1)
	if f.err != nil {
		return nil, f.err
	}
	return &authn.Identity{Username: "system:serviceaccount:kubeflow:runner", UID: "u",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kubeflow"}, Expiry: f.expiry}, nil
}

func jwtWithIssuer(iss string) string {
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	return enc(map[string]any{"alg": "RS256"}) + "." + enc(map[string]any{"iss": iss, "exp": time.Now().Add(time.Hour).Unix()}) + ".c2ln"
}

// A bearer token goes to the configured issuers first and to TokenReview
// only when none of them is its issuer; TokenReview's answer is asked again
// once its expiry passes; its refusals are 401s.
func TestBearerTokensFallBackToTokenReview(t *testing.T) {
	issuer := httptest.NewServer(http.NotFoundHandler()) // discovery fails fast
	t.Cleanup(issuer.Close)
	tokens, err := authn.Load("", []authn.JWTAuthenticator{authn.ProviderEntry(issuer.URL, []string{"client"}, "email", "groups")}, authn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reviews := &fakeReviews{expiry: time.Now().Add(-time.Hour)} // already due: every request asks again
	f := newFixtureWith(t, nil, credential.Chain(tokens, reviews))
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

	sa := jwtWithIssuer("https://kubernetes.default.svc.cluster.local")
	for i := 1; i <= 2; i++ {
		w := f.do("GET", "/pipeline/", bearer(sa))
		if w.Code != 200 || w.Header().Get("kubeflow-userid") != "system:serviceaccount:kubeflow:runner" ||
			w.Header().Get("kubeflow-groups") != "system:serviceaccounts,system:serviceaccounts:kubeflow" {
			t.Fatalf("request %d: %d %v", i, w.Code, w.Header())
		}
		if n := reviews.calls.Load(); n != int64(i) {
			t.Fatalf("request %d: %d reviews; an identity past its expiry must be asked about again", i, n)
		}
	}

	// A token of a configured issuer never reaches TokenReview.
	if w := f.do("GET", "/pipeline/", bearer(jwtWithIssuer(issuer.URL))); w.Code != 401 {
		t.Fatalf("token of the configured issuer (whose discovery fails): %d", w.Code)
	}
	if n := reviews.calls.Load(); n != 2 {
		t.Fatalf("a token of a configured issuer was sent to TokenReview")
	}

	// TokenReview unavailable: a 401, never a 5xx or an allow.
	reviews.err = fmt.Errorf("%w: TokenReview unavailable: connection refused", authn.ErrInvalidToken)
	if w := f.do("GET", "/pipeline/", bearer(jwtWithIssuer("https://kubernetes.default.svc.cluster.local/other"))); w.Code != 401 {
		t.Fatalf("TokenReview down: %d", w.Code)
	}
}
