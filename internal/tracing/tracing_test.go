package tracing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const (
	traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	spanID  = "00f067aa0ba902b7"
)

func newTest(t *testing.T, sampler string) (*Tracer, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr, err := New(Options{Exporter: exp, Sampler: sampler, SamplerArg: 1, ServiceName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Shutdown(context.Background()) })
	return tr, exp
}

func flush(t *testing.T, tr *Tracer, exp *tracetest.InMemoryExporter) tracetest.SpanStubs {
	t.Helper()
	if err := tr.tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return exp.GetSpans()
}

// TestStartCheckContinuesTheGatewaysTrace: the check's span joins the trace
// the gateway sent, in each of the forms Envoy sends it (W3C, B3 single
// header, Istio's default B3 multi-header), from an HTTP request's headers
// and from a gRPC front's header map alike; the gateway's sampling decision
// holds with the default parent-based sampler.
func TestStartCheckContinuesTheGatewaysTrace(t *testing.T) {
	cases := []struct {
		name    string
		carrier propagation.TextMapCarrier
		sampled bool
	}{
		{"traceparent", headers("traceparent", "00-"+traceID+"-"+spanID+"-01"), true},
		{"traceparent, not sampled", headers("traceparent", "00-"+traceID+"-"+spanID+"-00"), false},
		{"b3 single header", headers("b3", traceID+"-"+spanID+"-1"), true},
		{"b3 multi-header (Istio's Zipkin tracing)", headers("x-b3-traceid", traceID, "x-b3-spanid", spanID, "x-b3-sampled", "1",
			"x-b3-parentspanid", "05e3ac9a4f6e3b90"), true},
		{"b3 multi-header, not sampled", headers("x-b3-traceid", traceID, "x-b3-spanid", spanID, "x-b3-sampled", "0"), false},
		{"gRPC header map", propagation.MapCarrier{"traceparent": "00-" + traceID + "-" + spanID + "-01"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr, exp := newTest(t, "parentbased_always_on")
			ctx, span := tr.StartCheck(context.Background(), c.carrier, "check")
			_, child := tr.Start(ctx, "refresh", trace.SpanKindInternal)
			child.End()
			span.End()
			spans := flush(t, tr, exp)
			if !c.sampled {
				if len(spans) != 0 {
					t.Fatalf("%d spans exported for a trace the gateway did not sample", len(spans))
				}
				return
			}
			if len(spans) != 2 {
				t.Fatalf("%d spans", len(spans))
			}
			check, refresh := spans[1], spans[0]
			if check.Name != "check" || check.SpanKind != trace.SpanKindServer || check.SpanContext.TraceID().String() != traceID ||
				check.Parent.SpanID().String() != spanID || !check.Parent.IsRemote() {
				t.Fatalf("check span %s kind %v trace %s parent %s", check.Name, check.SpanKind, check.SpanContext.TraceID(), check.Parent.SpanID())
			}
			if refresh.Parent.SpanID() != check.SpanContext.SpanID() || refresh.SpanContext.TraceID() != check.SpanContext.TraceID() {
				t.Fatal("the refresh is not the check's child")
			}
		})
	}
}

func headers(kv ...string) propagation.HeaderCarrier {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return propagation.HeaderCarrier(h)
}

// TestNoParentNoSpan: without a trace in the context (background work),
// Start, the transport and the instrumentation libraries' provider start
// nothing; a check without a trace context starts one.
func TestNoParentNoSpan(t *testing.T) {
	tr, exp := newTest(t, "parentbased_always_on")
	_, s := tr.Start(context.Background(), "resync", trace.SpanKindInternal)
	s.End()
	_, s2 := tr.Provider().Tracer("redis").Start(context.Background(), "zrangebyscore")
	s2.End()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("traceparent") != "" {
			t.Error("a background call carries a traceparent")
		}
	}))
	defer srv.Close()
	c := &http.Client{Transport: tr.Transport(http.DefaultTransport, func(*http.Request) string { return "jwks" })}
	resp, err := c.Get(srv.URL + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if spans := flush(t, tr, exp); len(spans) != 0 {
		t.Fatalf("%d spans without a parent: %v", len(spans), spans[0].Name)
	}
	_, check := tr.StartCheck(context.Background(), headers(), "check")
	check.End()
	if spans := flush(t, tr, exp); len(spans) != 1 || spans[0].Parent.IsValid() {
		t.Fatalf("a check without a trace context: %d spans", len(spans))
	}
}

// TestTransport: an outbound call under a span is a client span with the
// method, the endpoint's name and the URL without its query, and carries
// its traceparent to the peer.
func TestTransport(t *testing.T) {
	tr, exp := newTest(t, "always_on")
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("traceparent")
		w.WriteHeader(502)
	}))
	defer srv.Close()
	ctx, parent := tr.StartCheck(context.Background(), headers(), "check")
	c := &http.Client{Transport: tr.Transport(http.DefaultTransport, func(*http.Request) string { return "token" })}
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/token?code=secret-code", strings.NewReader("code=secret-code"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	parent.End()
	spans := flush(t, tr, exp)
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	call := spans[0]
	if call.Name != "POST token" || call.SpanKind != trace.SpanKindClient || call.Parent.SpanID() != spans[1].SpanContext.SpanID() {
		t.Fatalf("client span %q kind %v", call.Name, call.SpanKind)
	}
	if !strings.Contains(got, call.SpanContext.SpanID().String()) || !strings.Contains(got, call.SpanContext.TraceID().String()) {
		t.Fatalf("traceparent %q is not the client span's", got)
	}
	attrs := map[string]string{}
	for _, a := range call.Attributes {
		attrs[string(a.Key)] = a.Value.String()
	}
	if attrs["url.full"] != srv.URL+"/token" || attrs["http.response.status_code"] != "502" || call.Status.Code.String() != "Error" {
		t.Fatalf("attributes %v, status %v", attrs, call.Status)
	}
	for _, s := range spans {
		for _, a := range s.Attributes {
			if strings.Contains(a.Value.String(), "secret-code") {
				t.Fatalf("span %s carries the code in %s", s.Name, a.Key)
			}
		}
	}
}

// TestOff: a nil Tracer does nothing, allocates nothing, and hands back
// the transport it was given.
func TestOff(t *testing.T) {
	var tr *Tracer
	h := headers("traceparent", "00-"+traceID+"-"+spanID+"-01")
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		c, s := tr.StartCheck(ctx, h, "check")
		_, s2 := tr.Start(c, "refresh", trace.SpanKindInternal)
		s2.SetAttributes()
		s2.End()
		FromContext(c).SetAttributes()
		s.End()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations with tracing off", allocs)
	}
	if tr.Transport(http.DefaultTransport, nil) != http.DefaultTransport || tr.Provider() != nil || tr.Shutdown(ctx) != nil {
		t.Fatal("off is not off")
	}
}

func TestSamplers(t *testing.T) {
	for _, name := range []string{"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"} {
		if _, err := Sampler(name, 0.5); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Sampler("jaeger_remote", 0); err == nil {
		t.Error("jaeger_remote accepted")
	}
	s, _ := Sampler("always_off", 0)
	if r := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: context.Background()}); r.Decision != sdktrace.Drop {
		t.Error("always_off samples")
	}
}
