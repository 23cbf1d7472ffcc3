package check

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/oidc-authservice/oidc-authservice/internal/authorizer"
	"github.com/oidc-authservice/oidc-authservice/internal/tracing"
)

// traced gives the fixture's handler a tracer that samples everything and
// keeps the spans in memory.
func traced(t testing.TB, f *fixture, sampler string) func() tracetest.SpanStubs {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr, err := tracing.New(tracing.Options{Exporter: exp, Sampler: sampler, SamplerArg: 1, ServiceName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	f.h.d.Tracer = tr
	return func() tracetest.SpanStubs {
		tr.Flush(context.Background())
		return exp.GetSpans()
	}
}

// TestCheckSpans: every request to the check port is a server span in the
// gateway's trace, named by the endpoint that answered, with the decision
// and reason of oidc_authservice_checks_total and the status as
// attributes; no cookie, token, code or query string is an attribute.
func TestCheckSpans(t *testing.T) {
	const traceID, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	f := newFixture(t, nil)
	spans := traced(t, f, "parentbased_always_on")
	valid := f.cookie(t, "user@example.com", []string{"team-a"}, f.now.Add(time.Hour))
	tp := "00-" + traceID + "-" + parent + "-01"
	cases := []struct {
		method, target string
		hdr            map[string]string
		name           string
		decision       string
		reason         string
		status         string
	}{
		{"GET", "/notebook/?token=query-secret", map[string]string{"Cookie": "authservice_session=" + valid, "traceparent": tp}, "check", "allow", "session", "200"},
		{"GET", "/api/x", map[string]string{"Authorization": "Bearer bearer-secret.x.y", "Accept": "application/json",
			"x-b3-traceid": traceID, "x-b3-spanid": parent, "x-b3-sampled": "1"}, "check", "deny", "invalid_token", "401"},
		{"GET", "/jupyter/", map[string]string{"b3": traceID + "-" + parent + "-1"}, "check", "redirect", "no_credentials", "302"},
		{"GET", "/authservice/oidc/callback?code=code-secret&state=" + strings.Repeat("s", 43), map[string]string{"traceparent": tp},
			"login callback", "", "", "400"},
		{"GET", "/authservice/logout", map[string]string{"Cookie": "authservice_session=" + valid, "traceparent": tp}, "logout", "", "", "302"},
	}
	for _, c := range cases {
		f.do(c.method, c.target, c.hdr)
	}
	got := spans()
	if len(got) != len(cases) {
		t.Fatalf("%d spans for %d requests", len(got), len(cases))
	}
	for i, c := range cases {
		s := got[i]
		attrs := map[string]string{}
		for _, a := range s.Attributes {
			attrs[string(a.Key)] = a.Value.String()
			for _, secret := range []string{valid, "query-secret", "bearer-secret", "code-secret"} {
				if strings.Contains(a.Value.String(), secret) {
					t.Errorf("%s %s: attribute %s carries a credential", c.method, c.target, a.Key)
				}
			}
		}
		if s.Name != c.name || s.SpanContext.TraceID().String() != traceID || s.Parent.SpanID().String() != parent {
			t.Errorf("%s: span %q in trace %s under %s", c.target, s.Name, s.SpanContext.TraceID(), s.Parent.SpanID())
		}
		if c.name == "login callback" && attrs["oidc_authservice.login"] != "invalid_state" {
			t.Errorf("callback: login %q", attrs["oidc_authservice.login"])
		}
		if c.decision != "" && (attrs["oidc_authservice.decision"] != c.decision || attrs["oidc_authservice.reason"] != c.reason) {
			t.Errorf("%s: decision %q reason %q", c.target, attrs["oidc_authservice.decision"], attrs["oidc_authservice.reason"])
		}
		if attrs["http.response.status_code"] != c.status || attrs["http.request.method"] != c.method ||
			attrs["server.address"] != "kubeflow.example.com" || strings.Contains(attrs["url.path"], "?") {
			t.Errorf("%s: attributes %v", c.target, attrs)
		}
	}
}

// TestCheckSpansSampledOut: with the gateway's trace not sampled nothing is
// exported, and the answer is the same.
func TestCheckSpansSampledOut(t *testing.T) {
	f := newFixture(t, nil)
	spans := traced(t, f, "parentbased_always_on")
	valid := f.cookie(t, "user@example.com", nil, f.now.Add(time.Hour))
	w := f.do("GET", "/x", map[string]string{"Cookie": "authservice_session=" + valid,
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"})
	if w.Code != 200 || w.Header().Get("kubeflow-userid") != "user@example.com" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	if got := spans(); len(got) != 0 {
		t.Fatalf("%d spans exported for an unsampled trace", len(got))
	}
}

// TestGRPCCheckSpans: a check that arrived over gRPC is a server span that
// continues the trace context its front gives (not the header's), with the
// same attributes as over HTTP and rpc.system=grpc; a check the front
// refused is traced too.
func TestGRPCCheckSpans(t *testing.T) {
	const traceID, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	f := newFixture(t, nil)
	spans := traced(t, f, "parentbased_always_on")
	valid := f.cookie(t, "user@example.com", []string{"team-a"}, f.now.Add(time.Hour))
	carrier := propagation.MapCarrier{"traceparent": "00-" + traceID + "-" + parent + "-01"}
	r := httptest.NewRequest("GET", "/notebook/", nil)
	r.Host = "kubeflow.example.com"
	r.Header.Set("Cookie", "authservice_session="+valid)
	r.Header.Set("Traceparent", "00-11111111111111111111111111111111-2222222222222222-01")
	var a Answer
	f.h.ServeGRPC(&a, r, carrier)
	if a.Status != 200 {
		t.Fatalf("answer %d", a.Status)
	}
	a.Reset()
	f.h.RefuseGRPC(&a, httptest.NewRequest("GET", "/", nil), carrier, 400, "attributes.request.http.method missing")
	got := spans()
	if len(got) != 2 {
		t.Fatalf("%d spans for 2 gRPC checks", len(got))
	}
	for i, want := range []struct{ decision, reason, status string }{{"allow", "session", "200"}, {"deny", "bad_request", "400"}} {
		s := got[i]
		attrs := map[string]string{}
		for _, kv := range s.Attributes {
			attrs[string(kv.Key)] = kv.Value.String()
		}
		if s.Name != "check" || s.SpanContext.TraceID().String() != traceID || s.Parent.SpanID().String() != parent {
			t.Errorf("span %d: %q in trace %s under %s, want check in the front's trace", i, s.Name, s.SpanContext.TraceID(), s.Parent.SpanID())
		}
		if attrs["rpc.system"] != "grpc" || attrs["oidc_authservice.decision"] != want.decision ||
			attrs["oidc_authservice.reason"] != want.reason || attrs["http.response.status_code"] != want.status {
			t.Errorf("span %d: attributes %v", i, attrs)
		}
	}
}

// TestCheckSpansAuthorizer: a call to the external authorizer made for a
// traced check is a client span "POST authorizer" under the check's span,
// and the authorizer receives the trace context; a decision reused from the
// cache makes no call and no span; the span carries no claim or user id.
func TestCheckSpansAuthorizer(t *testing.T) {
	const traceID, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	var mu sync.Mutex
	var got []string // traceparent of each call
	az := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		got = append(got, r.Header.Get("traceparent"))
		mu.Unlock()
	}))
	defer az.Close()
	f := newFixture(t, nil)
	exp := tracetest.NewInMemoryExporter()
	tr, err := tracing.New(tracing.Options{Exporter: exp, Sampler: "parentbased_always_on", ServiceName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	f.h.d.Tracer = tr
	f.h.d.Authorizer, err = authorizer.New(authorizer.Options{URL: az.URL + "/authorize", CacheTTL: time.Minute, Tracer: tr, Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	valid := f.cookie(t, "user@example.com", []string{"team-a"}, f.now.Add(time.Hour))
	hdr := map[string]string{"Cookie": "authservice_session=" + valid, "traceparent": "00-" + traceID + "-" + parent + "-01"}
	for range 2 { // the second is answered from the decision cache
		if w := f.do("GET", "/notebook/ns/?q=1", hdr); w.Code != 200 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	tr.Flush(context.Background())
	spans := exp.GetSpans()
	var checks, calls []tracetest.SpanStub
	for _, s := range spans {
		switch s.Name {
		case "check":
			checks = append(checks, s)
		case "POST authorizer":
			calls = append(calls, s)
		}
		for _, a := range s.Attributes {
			if v := a.Value.String(); strings.Contains(v, "user@example.com") || strings.Contains(v, valid) || strings.Contains(v, "q=1") {
				t.Errorf("span %s: attribute %s = %q", s.Name, a.Key, v)
			}
		}
	}
	if len(checks) != 2 || len(calls) != 1 || len(got) != 1 {
		t.Fatalf("%d check spans, %d authorizer spans, %d calls: %v", len(checks), len(calls), len(got), spans)
	}
	c := calls[0]
	if c.SpanKind != trace.SpanKindClient || c.Parent.SpanID() != checks[0].SpanContext.SpanID() || c.SpanContext.TraceID().String() != traceID {
		t.Errorf("authorizer span: kind %v, parent %s, trace %s", c.SpanKind, c.Parent.SpanID(), c.SpanContext.TraceID())
	}
	if want := "00-" + traceID + "-" + c.SpanContext.SpanID().String() + "-01"; got[0] != want {
		t.Errorf("the authorizer got traceparent %q, want %q", got[0], want)
	}
}
