package provider

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/oidc-authservice/oidc-authservice/internal/tracing"
)

// TestUserInfoSpans: an opaque access token's lookup at userinfo
// (ACCESS_TOKEN_AUTHN=opaque) is an internal span "access token lookup"
// under the check's span, with the HTTP call "GET userinfo" under it; a
// refused token fails the span with the kind only; the token is in no
// attribute and in no status message.
func TestUserInfoSpans(t *testing.T) {
	const good, bad = "glpat-good-0123456789", "glpat-bad-0123456789"
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "authorization_endpoint": srv.URL + "/auth",
				"token_endpoint": srv.URL + "/token", "jwks_uri": srv.URL + "/keys", "userinfo_endpoint": srv.URL + "/userinfo",
				"id_token_signing_alg_values_supported": []string{"RS256"}})
		case "/userinfo":
			if r.Header.Get("Authorization") != "Bearer "+good {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.Write([]byte(`{"sub":"4217","email":"alice@example.com"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	exp := tracetest.NewInMemoryExporter()
	tr, err := tracing.New(tracing.Options{Exporter: exp, Sampler: "parentbased_always_on", ServiceName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{Issuer: srv.URL, ClientID: "c", ClientSecret: "s", RedirectURL: "/cb", Timeout: 5 * time.Second, Tracer: tr})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Discover(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{good, bad} {
		ctx, check := tr.StartCheck(context.Background(), tracing.HeaderCarrier(http.Header{}), "check")
		_, err := p.UserInfo(ctx, tok)
		check.End()
		if (err == nil) != (tok == good) || (tok == bad && !errors.Is(err, ErrRejected)) {
			t.Fatalf("%s: %v", tok, err)
		}
	}
	tr.Flush(context.Background())
	spans := exp.GetSpans()
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID()] = s
		for _, a := range s.Attributes {
			if v := a.Value.String(); strings.Contains(v, "glpat") {
				t.Errorf("span %s: attribute %s = %q", s.Name, a.Key, v)
			}
		}
		if strings.Contains(s.Status.Description, "glpat") {
			t.Errorf("span %s: status %q", s.Name, s.Status.Description)
		}
	}
	var lookups []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == "GET userinfo" {
			l, ok := byID[s.Parent.SpanID()]
			if !ok || l.Name != "access token lookup" || s.SpanKind != trace.SpanKindClient {
				t.Errorf("GET userinfo under %q (kind %v)", l.Name, s.SpanKind)
			}
		}
		if s.Name == "access token lookup" {
			if c, ok := byID[s.Parent.SpanID()]; !ok || c.Name != "check" || s.SpanKind != trace.SpanKindInternal {
				t.Errorf("access token lookup under %q (kind %v)", c.Name, s.SpanKind)
			}
			lookups = append(lookups, s)
		}
	}
	if len(lookups) != 2 || len(spans) != 6 {
		t.Fatalf("%d lookup spans of %d", len(lookups), len(spans))
	}
	if lookups[0].Status.Code == codes.Error || lookups[1].Status.Code != codes.Error || lookups[1].Status.Description != ErrRejected.Error() {
		t.Errorf("statuses: accepted %v, refused %v %q", lookups[0].Status.Code, lookups[1].Status.Code, lookups[1].Status.Description)
	}
}
