package check

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
	"github.com/oidc-authservice/oidc-authservice/internal/tracing"
	"github.com/oidc-authservice/oidc-authservice/test/groupnames"
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

// The check for a session of 10 groups against one of 1,000 (about 40
// bytes each; GROUPS_MAX and UPSTREAM_HEADER_MAX_BYTES raised for it,
// SESSION_MAX_COOKIES=8). cached: a cookie this replica verified before,
// whose header values were made once, so the cost hardly grows with the
// groups. uncached: a cookie this replica has not seen (a restart, more
// users than SESSION_CACHE_SIZE): four cookies joined, HMAC, AES, the
// identity inflated and decoded, the headers joined.
func BenchmarkCheckSessionGroups(b *testing.B) {
	for _, n := range []int{10, 1000} {
		f := newFixture(b, map[string]string{"GROUPS_MAX": "100000", "UPSTREAM_HEADER_MAX_BYTES": "1048576", "SESSION_MAX_COOKIES": "8"})
		s := &session.Session{ID: "x", Subject: "CiA3NTczNjU3MjQwNjU3ODYxNmQ3MDZjNjUyZTYzNmY2ZBIFbG9jYWw", User: "user@example.com",
			Groups: groupnames.List(n), Created: f.now.Unix(), Expires: f.now.Add(time.Hour).Unix(), RefreshToken: strings.Repeat("r", 40),
			GroupsPolicy: f.h.d.Mapper.Policy().Fingerprint()}
		sealed, err := f.h.d.Sessions.Seal(s)
		if err != nil {
			b.Fatal(err)
		}
		var parts []string
		for i, c := range session.Split(sealed) {
			parts = append(parts, session.ChunkName("authservice_session", i)+"="+c)
		}
		r := benchRequest("GET", "/notebook/ns/nb/lab?x=1", map[string]string{"Cookie": "_ga=GA1.1.123; " + strings.Join(parts, "; ")})
		b.Run(fmt.Sprintf("groups=%d/cached", n), func(b *testing.B) { benchCheck(b, f, r, 200) })
		b.Run(fmt.Sprintf("groups=%d/uncached", n), func(b *testing.B) {
			w := &benchWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				f.h.d.Sessions.Forget(sealed)
				clear(w.h)
				f.h.ServeHTTP(w, r)
				if w.code != 200 {
					b.Fatalf("status %d", w.code)
				}
			}
		})
	}
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

// The session check of BenchmarkCheckSessionCookie with traces: off (no
// OTLP endpoint: the service's default), sampled (every check a span,
// exported to a receiver that discards it, or over OTLP/HTTP to a local
// server: the batch export runs on another goroutine and its CPU shows as
// the other core's), and sampled out (the gateway's traceparent says not
// sampled: Istio's default of 1 % sends this on 99 checks in 100, or
// OTEL_TRACES_SAMPLER=always_off).
func BenchmarkCheckTracing(b *testing.B) {
	const sampled, unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer receiver.Close()
	for _, c := range []struct {
		name, traceparent string
		o                 *tracing.Options
	}{
		{"off", "", nil},
		{"off-traceparent-sent", sampled, nil},
		{"sampled-discarded", sampled, &tracing.Options{Exporter: discard{}, Sampler: "parentbased_always_on"}},
		{"sampled-otlp-http", sampled, &tracing.Options{Endpoint: receiver.URL + "/v1/traces", Protocol: "http/protobuf", Sampler: "parentbased_always_on"}},
		{"sampled-no-traceparent", "", &tracing.Options{Exporter: discard{}, Sampler: "parentbased_always_on"}},
		{"sampled-out-by-gateway", unsampled, &tracing.Options{Exporter: discard{}, Sampler: "parentbased_always_on"}},
		{"sampled-out-always_off", sampled, &tracing.Options{Exporter: discard{}, Sampler: "always_off"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			f := newFixture(b, nil)
			if c.o != nil {
				c.o.ServiceName = "bench"
				tr, err := tracing.New(*c.o)
				if err != nil {
					b.Fatal(err)
				}
				defer tr.Shutdown(context.Background())
				f.h.d.Tracer = tr
			}
			ck := f.cookie(b, "user@example.com", []string{"team-a", "team-b"}, f.now.Add(time.Hour))
			hdr := map[string]string{"Cookie": "_ga=GA1.1.123; authservice_session=" + ck + "; theme=dark"}
			if c.traceparent != "" {
				hdr["traceparent"] = c.traceparent
			}
			benchCheck(b, f, benchRequest("GET", "/notebook/ns/nb/lab?x=1", hdr), 200)
		})
	}
}

// discard is a span exporter that drops what it is given.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// A session cookie with an external authorizer whose decision is cached
// (EXTERNAL_AUTHZ_CACHE_TTL): what the authorizer adds to the common check.
func BenchmarkCheckSessionCookieAuthorizerCached(b *testing.B) {
	az := newBenchAuthorizer(b)
	f := newFixture(b, map[string]string{"EXTERNAL_AUTHZ_URL": az, "EXTERNAL_AUTHZ_CACHE_TTL": "5m"})
	c := f.cookie(b, "user@example.com", []string{"team-a", "team-b"}, f.now.Add(time.Hour))
	benchCheck(b, f, benchRequest("GET", "/notebook/ns/nb/lab?x=1", map[string]string{
		"Cookie": "_ga=GA1.1.123; authservice_session=" + c + "; theme=dark",
	}), 200)
}

// The same with every decision asked (EXTERNAL_AUTHZ_CACHE_TTL=0), of an
// authorizer on loopback that allows at once: the round trip's cost.
func BenchmarkCheckSessionCookieAuthorizerAsked(b *testing.B) {
	az := newBenchAuthorizer(b)
	f := newFixture(b, map[string]string{"EXTERNAL_AUTHZ_URL": az, "EXTERNAL_AUTHZ_CACHE_TTL": "0s"})
	c := f.cookie(b, "user@example.com", []string{"team-a", "team-b"}, f.now.Add(time.Hour))
	benchCheck(b, f, benchRequest("GET", "/notebook/ns/nb/lab?x=1", map[string]string{
		"Cookie": "_ga=GA1.1.123; authservice_session=" + c + "; theme=dark",
	}), 200)
}

// newBenchAuthorizer is an authorizer of arrikto's protocol that allows
// everything.
func newBenchAuthorizer(b *testing.B) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	b.Cleanup(srv.Close)
	return srv.URL + "/authorize"
}
