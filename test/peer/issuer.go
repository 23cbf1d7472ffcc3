package peer

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is a token issuer with real RSA keys served over HTTP (discovery
// and JWKS), for bearer-token tests: GitLab CI, Kubernetes service
// accounts, anything that signs JWTs.
type Issuer struct {
	URL string
	// Name is the issuer its discovery names and its tokens carry (iss):
	// URL, unless started with StartIssuerAs.
	Name        string
	JWKSFetches atomic.Int64
	srv         *httptest.Server
	mu          sync.Mutex
	keys        []*rsa.PrivateKey
	kids        []string
	extraKeys   int // junk keys added to the published set
}

var (
	rsaOnce sync.Once
	rsaKeys []*rsa.PrivateKey
)

// testKeys are generated once per process: 2048-bit generation is slow.
func testKeys() []*rsa.PrivateKey {
	rsaOnce.Do(func() {
		for i := 0; i < 3; i++ {
			k, _ := rsa.GenerateKey(rand.Reader, 2048)
			rsaKeys = append(rsaKeys, k)
		}
	})
	return rsaKeys
}

// StartIssuer serves discovery and JWKS with one signing key.
func StartIssuer(t testing.TB) *Issuer {
	t.Helper()
	is := &Issuer{keys: testKeys()[:1], kids: []string{"key-1"}}
	is.srv = httptest.NewServer(http.HandlerFunc(is.serve))
	is.URL, is.Name = is.srv.URL, is.srv.URL
	t.Cleanup(is.srv.Close)
	return is
}

// StartIssuerAs is StartIssuer for an issuer named name that is served
// elsewhere (the cluster's https://kubernetes.default.svc.cluster.local):
// its discovery document, at URL, names it, and its tokens carry it as iss.
// Clients reach it with a discovery URL of their own (issuer.discoveryURL).
func StartIssuerAs(t testing.TB, name string) *Issuer {
	t.Helper()
	is := StartIssuer(t)
	is.Name = name
	return is
}

func (is *Issuer) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		json.NewEncoder(w).Encode(map[string]any{"issuer": is.Name, "jwks_uri": is.URL + "/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256"}})
	case "/jwks", "/openid/v1/jwks": // the second is the Kubernetes API server's path
		is.JWKSFetches.Add(1)
		is.mu.Lock()
		var set jose.JSONWebKeySet
		for i, k := range is.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: is.kids[i], Algorithm: "RS256", Use: "sig"})
		}
		for i := 0; i < is.extraKeys; i++ {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &testKeys()[2].PublicKey, KeyID: fmt.Sprintf("junk-%d", i), Algorithm: "RS256", Use: "sig"})
		}
		is.mu.Unlock()
		json.NewEncoder(w).Encode(set)
	default:
		http.NotFound(w, r)
	}
}

// Rotate publishes a new key, signs with it from now on, and keeps the old
// one published.
func (is *Issuer) Rotate() {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys = append([]*rsa.PrivateKey{testKeys()[1]}, is.keys...)
	is.kids = append([]string{fmt.Sprintf("key-%d", len(is.kids)+1)}, is.kids...)
}

// PadJWKS publishes n more (junk) keys.
func (is *Issuer) PadJWKS(n int) { is.mu.Lock(); is.extraKeys = n; is.mu.Unlock() }

// Sign signs claims with the current key (iss defaults to Name, exp to
// an hour, iat to now).
func (is *Issuer) Sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	is.mu.Lock()
	key, kid := is.keys[0], is.kids[0]
	is.mu.Unlock()
	return SignWith(t, key, kid, is.withDefaults(claims))
}

func (is *Issuer) withDefaults(claims map[string]any) map[string]any {
	c := map[string]any{"iss": is.Name, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// SignTyped is Sign with the JOSE header typ set to typ: "at+jwt" for an
// access token of RFC 9068.
func (is *Issuer) SignTyped(t testing.TB, typ string, claims map[string]any) string {
	t.Helper()
	is.mu.Lock()
	key, kid := is.keys[0], is.kids[0]
	is.mu.Unlock()
	return signTyped(t, key, kid, typ, is.withDefaults(claims))
}

// SignWith signs claims with any RSA key and kid.
func SignWith(t testing.TB, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	return signTyped(t, key, kid, "JWT", claims)
}

func signTyped(t testing.TB, key *rsa.PrivateKey, kid, typ string, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// ForeignKey is a key the issuer never published.
func ForeignKey() *rsa.PrivateKey { return testKeys()[2] }
