package authn_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// gitlabConfig is the configuration of CONTRACT.md §3, as written: one jwt
// entry for GitLab serving users and CI jobs.
func gitlabConfig(issuer string) string {
	return fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1beta1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: %s
    audiences: ["gitlab-application-id", "https://kubeflow.example.com"]
    audienceMatchPolicy: MatchAny
  claimMappings:
    username:
      expression: 'has(claims.preferred_username) ? "gitlab:" + claims.preferred_username : "gitlab-ci:" + claims.sub'
    uid:
      expression: 'has(claims.preferred_username) ? "gitlab:" + claims.preferred_username : "gitlab-ci:" + claims.sub'
    groups:
      claim: groups_direct
      prefix: "gitlab:"
`, issuer)
}

// serviceAccountConfig is the documented entry for Kubernetes service
// account tokens (docs/machine-identities.md).
func serviceAccountConfig(issuer string) string {
	return fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: %s
    audiences: ["pipelines.kubeflow.org"]
  claimMappings:
    username:
      expression: '"system:serviceaccount:" + claims["kubernetes.io"].namespace + ":" + claims["kubernetes.io"].serviceaccount.name'
    uid:
      expression: 'claims["kubernetes.io"].serviceaccount.uid'
    groups:
      expression: '["system:serviceaccounts", "system:serviceaccounts:" + claims["kubernetes.io"].namespace]'
  claimValidationRules:
  - expression: '"kubernetes.io" in claims && "serviceaccount" in claims["kubernetes.io"]'
    message: not a service account token
`, issuer)
}

func authenticator(t *testing.T, yaml string) *authn.Authenticator {
	t.Helper()
	_, cfgs, err := authn.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	a, err := authn.New(cfgs, authn.Options{KeyRefetchInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestGitLabUsersAndCIJobs(t *testing.T) {
	is := peer.StartIssuer(t)
	a := authenticator(t, gitlabConfig(is.URL))
	ctx := context.Background()

	ci := is.Sign(t, map[string]any{"aud": "https://kubeflow.example.com", "sub": "project_path:foo/bar:ref_type:branch:ref:main",
		"namespace_path": "foo", "project_path": "foo/bar", "ref": "main", "ref_protected": "true", "user_login": "alice"})
	id, err := a.Authenticate(ctx, ci)
	if err != nil {
		t.Fatal(err)
	}
	if id.Username != "gitlab-ci:project_path:foo/bar:ref_type:branch:ref:main" || len(id.Groups) != 0 || id.UID != id.Username {
		t.Fatalf("CI job: %+v", id)
	}

	user := is.Sign(t, map[string]any{"aud": "gitlab-application-id", "sub": "4217", "preferred_username": "alice",
		"email": "alice@example.com", "groups_direct": []string{"acme", "acme/ml"}})
	id, err = a.Authenticate(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if id.Username != "gitlab:alice" || strings.Join(id.Groups, ",") != "gitlab:acme,gitlab:acme/ml" {
		t.Fatalf("user: %+v", id)
	}
}

func TestServiceAccountTokens(t *testing.T) {
	is := peer.StartIssuer(t)
	a := authenticator(t, serviceAccountConfig(is.URL))
	tok := is.Sign(t, map[string]any{"aud": []string{"pipelines.kubeflow.org"}, "sub": "system:serviceaccount:ns:sa",
		"kubernetes.io": map[string]any{"namespace": "ns", "serviceaccount": map[string]any{"name": "sa", "uid": "u-1"}}})
	id, err := a.Authenticate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.Username != "system:serviceaccount:ns:sa" || strings.Join(id.Groups, ",") != "system:serviceaccounts,system:serviceaccounts:ns" || id.UID != "u-1" {
		t.Fatalf("%+v", id)
	}
	notSA := is.Sign(t, map[string]any{"aud": "pipelines.kubeflow.org", "sub": "x"})
	if _, err := a.Authenticate(context.Background(), notSA); err == nil {
		t.Fatal("a token without kubernetes.io claims passed the claim validation rule")
	}
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestRejections(t *testing.T) {
	is := peer.StartIssuer(t)
	a := authenticator(t, gitlabConfig(is.URL))
	good := map[string]any{"aud": "gitlab-application-id", "sub": "1", "preferred_username": "alice"}
	with := func(k string, v any) map[string]any {
		c := map[string]any{}
		for kk, vv := range good {
			c[kk] = vv
		}
		c[k] = v
		return c
	}
	payload := b64(map[string]any{"iss": is.URL, "aud": "gitlab-application-id", "sub": "1", "preferred_username": "alice",
		"exp": time.Now().Add(time.Hour).Unix()})
	pubDER, _ := x509.MarshalPKIXPublicKey(&peer.ForeignKey().PublicKey)
	hsInput := b64(map[string]any{"alg": "HS256", "typ": "JWT", "kid": "key-1"}) + "." + payload
	mac := hmac.New(sha256.New, pubDER)
	mac.Write([]byte(hsInput))

	cases := map[string]string{
		"wrong issuer":                    peer.SignWith(t, peer.ForeignKey(), "key-1", map[string]any{"iss": "https://evil.example", "aud": "gitlab-application-id", "sub": "1", "exp": time.Now().Add(time.Hour).Unix()}),
		"issuer claims ours, foreign key": peer.SignWith(t, peer.ForeignKey(), "key-1", map[string]any{"iss": is.URL, "aud": "gitlab-application-id", "sub": "1", "preferred_username": "a", "exp": time.Now().Add(time.Hour).Unix()}),
		"wrong audience":                  is.Sign(t, with("aud", "another-app")),
		"expired":                         is.Sign(t, with("exp", time.Now().Add(-time.Minute).Unix())),
		"not yet valid":                   is.Sign(t, with("nbf", time.Now().Add(time.Hour).Unix())),
		"nbf two minutes ahead":           is.Sign(t, with("nbf", time.Now().Add(2*time.Minute).Unix())),
		"no exp":                          is.Sign(t, with("exp", nil)),
		"alg none":                        b64(map[string]any{"alg": "none", "typ": "JWT"}) + "." + payload + ".",
		"HMAC with the public key":        hsInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)),
		"unknown kid":                     peer.SignWith(t, peer.ForeignKey(), "key-999", map[string]any{"iss": is.URL, "aud": "gitlab-application-id", "sub": "1", "preferred_username": "a", "exp": time.Now().Add(time.Hour).Unix()}),
		"kid with path characters":        peer.SignWith(t, peer.ForeignKey(), "../../etc/passwd", map[string]any{"iss": is.URL, "aud": "gitlab-application-id", "sub": "1", "preferred_username": "a", "exp": time.Now().Add(time.Hour).Unix()}),
		"oversized":                       is.Sign(t, with("pad", strings.Repeat("x", authn.MaxTokenSize))),
		"malformed base64":                "eyJhbGciOiJSUzI1NiJ9.!!!notbase64!!!.sig",
		"two parts":                       "abc.def",
		"username not a string":           is.Sign(t, with("preferred_username", 42)),
		"groups not strings":              is.Sign(t, with("groups_direct", []any{1, 2})),
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			id, err := a.Authenticate(context.Background(), tok)
			if err == nil {
				t.Fatalf("accepted: %+v", id)
			}
			if !errors.Is(err, authn.ErrInvalidToken) {
				t.Fatalf("error does not wrap ErrInvalidToken: %v", err)
			}
		})
	}
}

func TestKeyRotationAndRefetchRateLimit(t *testing.T) {
	is := peer.StartIssuer(t)
	_, cfgs, err := authn.Parse([]byte(gitlabConfig(is.URL)))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := authn.New(cfgs, authn.Options{KeyRefetchInterval: 200 * time.Millisecond})
	ctx := context.Background()
	claims := map[string]any{"aud": "gitlab-application-id", "sub": "1", "preferred_username": "alice"}
	if _, err := a.Authenticate(ctx, is.Sign(t, claims)); err != nil {
		t.Fatal(err)
	}
	is.Rotate()
	time.Sleep(250 * time.Millisecond) // past the refetch interval since the first fetch
	if _, err := a.Authenticate(ctx, is.Sign(t, claims)); err != nil {
		t.Fatalf("token of the rotated key: %v", err)
	}
	// A flood of invented kids refetches at most once per interval: on a
	// loaded machine the flood may span several intervals, so the bound is
	// one fetch per interval elapsed (plus the one at the start), never one
	// per kid.
	tokens := make([]string, 50)
	for i := range tokens {
		tokens[i] = peer.SignWith(t, peer.ForeignKey(), fmt.Sprintf("invented-%d", i), map[string]any{"iss": is.URL, "aud": "gitlab-application-id",
			"sub": "1", "preferred_username": "a", "exp": time.Now().Add(time.Hour).Unix()})
	}
	before, start := is.JWKSFetches.Load(), time.Now()
	for _, tok := range tokens {
		a.Authenticate(ctx, tok)
	}
	allowed := 1 + int64(time.Since(start)/(200*time.Millisecond))
	if n := is.JWKSFetches.Load() - before; n > allowed || n >= int64(len(tokens)) {
		t.Fatalf("%d key set fetches for %d unknown kids within %s (%d intervals of 200 ms)", n, len(tokens), time.Since(start), allowed)
	}
}

// A bearer token signed with a key rotated in right after a fetch is
// answered at once (anonymous input never holds a check waiting for the
// issuer); the key set fetched at the end of the interval then accepts it.
// However many requests and invented kids arrive, there is at most one
// fetch per interval.
func TestRotationJustAfterAFetchAnswersAtOnce(t *testing.T) {
	is := peer.StartIssuer(t)
	_, cfgs, err := authn.Parse([]byte(gitlabConfig(is.URL)))
	if err != nil {
		t.Fatal(err)
	}
	const interval = 300 * time.Millisecond
	a, _ := authn.New(cfgs, authn.Options{KeyRefetchInterval: interval})
	claims := map[string]any{"aud": "gitlab-application-id", "sub": "1", "preferred_username": "alice"}
	if _, err := a.Authenticate(context.Background(), is.Sign(t, claims)); err != nil {
		t.Fatal(err)
	}
	is.Rotate()
	rotated := is.Sign(t, claims)
	before := is.JWKSFetches.Load()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 20)
	took := make([]time.Duration, 20)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			t0 := time.Now()
			_, errs[i] = a.Authenticate(ctx, rotated)
			took[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil && time.Since(start) < interval {
			t.Fatalf("request %d accepted before any fetch was allowed", i)
		}
		if took[i] >= interval {
			t.Fatalf("request %d held for %s: anonymous input must not wait for the next allowed fetch", i, took[i])
		}
	}
	// The trailing fetch at the end of the interval brings the new key.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := a.Authenticate(context.Background(), rotated); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the rotated key was never fetched: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := is.JWKSFetches.Load() - before; n != 1 {
		t.Fatalf("%d key set fetches for 20 requests with one new kid, want 1 (the trailing fetch)", n)
	}
	// Invented kids: still at most one fetch per interval, none waits.
	before = is.JWKSFetches.Load()
	start = time.Now()
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			tok := peer.SignWith(t, peer.ForeignKey(), fmt.Sprintf("invented-%d", i), map[string]any{"iss": is.URL, "aud": "gitlab-application-id",
				"sub": "1", "preferred_username": "a", "exp": time.Now().Add(time.Hour).Unix()})
			_, errs[i] = a.Authenticate(ctx, tok)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			t.Fatalf("invented kid %d accepted", i)
		}
	}
	time.Sleep(interval + 100*time.Millisecond) // let a trailing fetch happen
	if n, max := is.JWKSFetches.Load()-before, int64(time.Since(start)/interval)+1; n > max {
		t.Fatalf("%d key set fetches in %s, want at most %d", n, time.Since(start), max)
	}
}

func TestHugeJWKSRefused(t *testing.T) {
	is := peer.StartIssuer(t)
	is.PadJWKS(500)
	a := authenticator(t, gitlabConfig(is.URL))
	if _, err := a.Authenticate(context.Background(), is.Sign(t, map[string]any{"aud": "gitlab-application-id", "sub": "1", "preferred_username": "a"})); err == nil {
		t.Fatal("a key set of 500 keys was used")
	}
}

func TestConfigErrorsNameTheEntry(t *testing.T) {
	bad := strings.Replace(gitlabConfig("https://gitlab.example.com"), `"gitlab-ci:" + claims.sub'`, `"gitlab-ci:" + claims.sub +'`, 1)
	_, _, err := authn.Parse([]byte(bad))
	if !errors.Is(err, authn.ErrConfig) || !strings.Contains(err.Error(), "jwt[0] (issuer https://gitlab.example.com)") || !strings.Contains(err.Error(), "claimMappings.username.expression") {
		t.Fatalf("err = %v", err)
	}
	for name, y := range map[string]string{
		"two audiences without MatchAny": strings.Replace(gitlabConfig("https://g"), "    audienceMatchPolicy: MatchAny\n", "", 1),
		"claim without prefix":           strings.Replace(gitlabConfig("https://g"), "      prefix: \"gitlab:\"\n", "", 1),
		"unknown field":                  strings.Replace(gitlabConfig("https://g"), "kind:", "bogus: 1\nkind:", 1),
		"wrong kind":                     strings.Replace(gitlabConfig("https://g"), "kind: AuthenticationConfiguration", "kind: Other", 1),
	} {
		if _, _, err := authn.Parse([]byte(y)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// BenchmarkVerify is the verify path of a bearer token (no cache): parse,
// RS256 signature, claims, CEL mappings.
func BenchmarkVerify(b *testing.B) {
	is := peer.StartIssuer(b)
	_, cfgs, err := authn.Parse([]byte(gitlabConfig(is.URL)))
	if err != nil {
		b.Fatal(err)
	}
	a, _ := authn.New(cfgs, authn.Options{})
	tok := is.Sign(b, map[string]any{"aud": "gitlab-application-id", "sub": "4217", "preferred_username": "alice", "groups_direct": []string{"acme"}})
	if _, err := a.Authenticate(context.Background(), tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := a.Authenticate(context.Background(), tok); err != nil {
			b.Fatal(err)
		}
	}
}

// The behaviours test/kube's comparison with kube-apiserver found: the API
// server's own file (with anonymous) is read; optional claims and the
// strings library compile; escaped claim names find dotted claims; "", null
// and empty elements of groups and extra results count as absent.
func TestKubeAPIServerSemantics(t *testing.T) {
	is := peer.StartIssuer(t)
	a := authenticator(t, fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
anonymous:
  enabled: true
  conditions:
  - path: /readyz
jwt:
- issuer:
    url: %s
    audiences: ["app"]
  claimMappings:
    username:
      expression: 'claims.example__dot__com__slash__user.lowerAscii()'
    uid:
      expression: 'claims.?uid.orValue("")'
    groups:
      expression: 'claims.g'
    extra:
    - key: example.com/e
      valueExpression: 'claims.?e.orValue("")'
`, is.URL))
	cases := []struct {
		g      any
		groups string
	}{{[]string{"a", "", "b"}, "a,b"}, {"", ""}, {[]string(nil), ""}, {"solo", "solo"}}
	for _, c := range cases {
		id, err := a.Authenticate(context.Background(), is.Sign(t, map[string]any{"aud": "app", "example.com/user": "Erin", "g": c.g, "e": ""}))
		if err != nil {
			t.Fatalf("g=%v: %v", c.g, err)
		}
		if id.Username != "erin" || id.UID != "" || strings.Join(id.Groups, ",") != c.groups || id.Extra != nil {
			t.Fatalf("g=%v: %+v", c.g, id)
		}
	}
	if _, err := a.Authenticate(context.Background(), is.Sign(t, map[string]any{"aud": "app", "example.com/user": "e", "g": []any{1}})); err == nil {
		t.Fatal("a list of numbers was taken for groups")
	}
}

// userValidationRules see the mapped user with the API server's fields.
func TestUserValidationRules(t *testing.T) {
	is := peer.StartIssuer(t)
	a := authenticator(t, fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: %s
    audiences: ["app"]
  claimMappings:
    username:
      claim: sub
      prefix: ""
    groups:
      claim: g
      prefix: ""
    uid:
      claim: sub
    extra:
    - key: example.com/team
      valueExpression: 'claims.?team.orValue("")'
  userValidationRules:
  - expression: '!user.username.startsWith("system:") && user.uid == user.username'
    message: no system users
  - expression: '!("banned" in user.groups) && !("example.com/team" in user.extra && "red" in user.extra["example.com/team"])'
    message: banned
`, is.URL))
	for _, c := range []struct {
		claims map[string]any
		ok     bool
	}{
		{map[string]any{"sub": "alice"}, true},
		{map[string]any{"sub": "alice", "g": []string{"a"}, "team": "blue"}, true},
		{map[string]any{"sub": "system:admin"}, false},
		{map[string]any{"sub": "alice", "g": []string{"banned"}}, false},
		{map[string]any{"sub": "alice", "team": "red"}, false},
	} {
		c.claims["aud"] = "app"
		_, err := a.Authenticate(context.Background(), is.Sign(t, c.claims))
		if (err == nil) != c.ok {
			t.Errorf("%v: err = %v", c.claims, err)
		}
	}
}
