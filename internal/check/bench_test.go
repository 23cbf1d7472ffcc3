package check

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// benchWriter is a ResponseWriter that costs nothing, so the benchmarks
// measure the handler, not the recorder.
type benchWriter struct {
	h    http.Header
	code int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *benchWriter) WriteHeader(c int)           { w.code = c }

func benchCheck(b *testing.B, f *fixture, r *http.Request, want int) {
	b.Helper()
	w := &benchWriter{h: http.Header{}}
	f.h.ServeHTTP(w, r)
	if w.code != want {
		b.Fatalf("status %d, want %d", w.code, want)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clear(w.h)
		f.h.ServeHTTP(w, r)
	}
}

func benchRequest(method, target string, hdr map[string]string) *http.Request {
	r, _ := http.NewRequest(method, "http://kubeflow.example.com"+target, nil)
	r.RequestURI = target
	r.Host = "kubeflow.example.com"
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	return r
}

// A browser request with a valid session cookie among other cookies.
func BenchmarkCheckSessionCookie(b *testing.B) {
	f := newFixture(b, nil)
	c := f.cookie(b, "user@example.com", []string{"team-a", "team-b"}, f.now.Add(time.Hour))
	benchCheck(b, f, benchRequest("GET", "/notebook/ns/nb/lab?x=1", map[string]string{
		"Cookie": "_ga=GA1.1.123; authservice_session=" + c + "; theme=dark",
	}), 200)
}

// A session large enough to be split into chunks.
func BenchmarkCheckSessionCookieChunked(b *testing.B) {
	f := newFixture(b, nil)
	s := &session.Session{ID: "x", Subject: "s", User: "user@example.com", Groups: []string{"a"}, Created: f.now.Unix(),
		Expires: f.now.Add(time.Hour).Unix(), IDToken: strings.Repeat("t", 4000)}
	sealed, _ := f.codec.SealSession("authservice_session", s)
	chunks := session.Split(sealed)
	var parts []string
	for i, c := range chunks {
		parts = append(parts, session.ChunkName("authservice_session", i)+"="+c)
	}
	if len(chunks) < 2 {
		b.Fatal("not chunked")
	}
	benchCheck(b, f, benchRequest("GET", "/x", map[string]string{"Cookie": strings.Join(parts, "; ")}), 200)
}

// An older SDK sending the session value as a bearer token.
func BenchmarkCheckSessionAsBearer(b *testing.B) {
	f := newFixture(b, nil)
	c := f.cookie(b, "user@example.com", nil, f.now.Add(time.Hour))
	benchCheck(b, f, benchRequest("POST", "/pipeline/apis/v2beta1/runs", map[string]string{"Authorization": "Bearer " + c}), 200)
}

// An unauthenticated browser navigation: a new login (state, PKCE, nonce,
// sealed state cookie, authorization URL).
func BenchmarkCheckUnauthenticatedRedirect(b *testing.B) {
	f := newFixture(b, nil)
	benchCheck(b, f, benchRequest("GET", "/jupyter/", nil), 302)
}

// An XHR without a session.
func BenchmarkCheckXHRUnauthenticated(b *testing.B) {
	f := newFixture(b, nil)
	benchCheck(b, f, benchRequest("GET", "/api/workgroup/env-info", map[string]string{"X-Requested-With": "XMLHttpRequest"}), 401)
}

// A path under SKIP_AUTH_URLS.
func BenchmarkCheckSkipPath(b *testing.B) {
	f := newFixture(b, nil)
	benchCheck(b, f, benchRequest("GET", "/dex/auth/local?req=abc", nil), 200)
}

// Opening a cookie this replica has not seen: the cost of a cache miss
// (base64, HMAC, AES, JSON).
func BenchmarkOpenSessionUncached(b *testing.B) {
	f := newFixture(b, nil)
	c := f.cookie(b, "user@example.com", []string{"team-a", "team-b"}, f.now.Add(time.Hour))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.codec.OpenSession("authservice_session", c); err != nil {
			b.Fatal(err)
		}
	}
}

// A bearer JWT already verified by this replica (the common case for SDKs
// and CI jobs).
func BenchmarkCheckBearerTokenCached(b *testing.B) {
	tok := strings.Repeat("a", 300) + "." + strings.Repeat("b", 400) + "." + strings.Repeat("c", 342)
	f := newFixtureWith(b, nil, fixedToken{raw: tok, exp: time.Now().Add(time.Hour)})
	benchCheck(b, f, benchRequest("POST", "/pipeline/apis/v2beta1/runs", map[string]string{"Authorization": "Bearer " + tok}), 200)
}

// fixedToken authenticates one token as a service account: what is
// measured is the check with a cached token, not the verification.
type fixedToken struct {
	raw string
	exp time.Time
}

func (f fixedToken) Authenticate(_ context.Context, raw string) (*authn.Identity, error) {
	if raw != f.raw {
		return nil, authn.ErrInvalidToken
	}
	return &authn.Identity{Username: "system:serviceaccount:ns:sa", Groups: []string{"system:serviceaccounts"}, Expiry: f.exp}, nil
}

// A Dex ID token already verified by this replica, as an upstream or a
// notebook forwards it: the revocation list is consulted on every use (by
// the token's digest, its session, sid and subject), here holding 10,000
// entries of other sessions.
func BenchmarkCheckProviderTokenCached(b *testing.B) {
	tok := strings.Repeat("a", 300) + "." + strings.Repeat("b", 400) + "." + strings.Repeat("c", 342)
	p := &providerTokens{claims: map[string]authn.Identity{tok: {Username: "user@example.com", Subject: "sub-1", Nonce: "nonce-1",
		SID: "sid-1", IssuedAt: time.Now(), Expiry: time.Now().Add(time.Hour)}}}
	f := newFixtureWith(b, nil, p)
	p.iss = f.s.Provider.Issuer
	for i := range 10_000 {
		f.h.d.Revocations.Revoke(context.Background(), revocation.Session, fmt.Sprintf("other-session-%d", i))
	}
	benchCheck(b, f, benchRequest("POST", "/pipeline/apis/v2beta1/runs", map[string]string{"Authorization": "Bearer " + tok}), 200)
}

// The forward-auth verify endpoint (nginx's recipe) for a browser with a
// valid session cookie among other cookies and the application's own
// Authorization: the answer carries the identity, the Cookie header without
// the service's cookies and the client's Authorization.
func BenchmarkVerifySessionCookie(b *testing.B) {
	f := newFixture(b, map[string]string{"FORWARD_AUTH_PROXY": "nginx"})
	c := f.cookie(b, "user@example.com", []string{"team-a", "team-b"}, f.now.Add(time.Hour))
	r := benchRequest("GET", "/authservice/verify", map[string]string{
		"Cookie": "_ga=GA1.1.123; authservice_session=" + c + "; theme=dark", "Authorization": "Basic dTpw",
		"X-Original-Method": "GET", "X-Original-Url": "http://kubeflow.example.com/notebook/ns/nb/lab?x=1",
	})
	r.RemoteAddr = "127.0.0.1:5000"
	benchCheck(b, f, r, 200)
}
