// Package tracing exports the service's OpenTelemetry traces over OTLP
// (OTEL_EXPORTER_OTLP_* and OTEL_TRACES_SAMPLER*, parsed by package config).
//
// A *Tracer is nil when tracing is off, and every method then does nothing
// and allocates nothing, so the parts of the service hold one
// unconditionally and the check path pays a nil comparison.
//
// Traces start only from requests: StartCheck continues the trace context
// the gateway sent with the check (W3C traceparent, B3 single or
// multi-header) in a server span. Every other span — the provider calls,
// key-set fetches, TokenReview, Redis — is a child of a span in its
// context and is not started without one, so background work (discovery
// retries, the revocation resync, key-set refreshes ahead of time) makes no
// traces of its own. A front other than HTTP (the gRPC ext_authz check)
// starts its span with StartCheck too, giving the carrier of what it
// received (package grpccheck: the call's metadata, where Envoy's gRPC
// client puts its span's context, else the CheckRequest's headers).
//
// No token, cookie, code or query string is ever an attribute: spans carry
// methods, paths, hosts, endpoint names, statuses and the check's decision
// and reason.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// Options configure the exporter, the sampler and the resource.
type Options struct {
	Endpoint    string // the traces URL (http/protobuf) or scheme://host:port (grpc); "" is off
	Protocol    string // "http/protobuf" or "grpc"
	Sampler     string // an OTEL_TRACES_SAMPLER value
	SamplerArg  float64
	ServiceName string
	Version     string      // service.version
	Attributes  [][2]string // OTEL_RESOURCE_ATTRIBUTES

	// Exporter replaces the OTLP exporter (benchmarks, tests).
	Exporter sdktrace.SpanExporter
}

// Tracer makes the service's spans. Nil is off.
type Tracer struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	w3c    propagation.TraceContext
	b3     propagation.TextMapPropagator
	// followsParent: the sampler is parent-based, so a check whose
	// trace context says "not sampled" is not sampled either (the SDK's
	// answer, given without building a span); never: always_off.
	followsParent, never bool
	server               []trace.SpanStartOption
}

// New builds the tracer provider and its exporter, or returns nil when
// o.Endpoint is empty. The exporter connects lazily: an unreachable
// receiver costs dropped spans, never a check.
func New(o Options) (*Tracer, error) {
	if o.Endpoint == "" && o.Exporter == nil {
		return nil, nil
	}
	sampler, err := Sampler(o.Sampler, o.SamplerArg)
	if err != nil {
		return nil, err
	}
	exp := o.Exporter
	if exp == nil {
		var client otlptrace.Client
		switch o.Protocol {
		case "grpc":
			client = otlptracegrpc.NewClient(otlptracegrpc.WithEndpointURL(o.Endpoint))
		case "http/protobuf", "":
			client = otlptracehttp.NewClient(otlptracehttp.WithEndpointURL(o.Endpoint))
		default:
			return nil, fmt.Errorf("OTLP protocol %q: must be http/protobuf or grpc", o.Protocol)
		}
		if exp, err = otlptrace.New(context.Background(), client); err != nil {
			return nil, err
		}
	}
	attrs := []attribute.KeyValue{}
	for _, kv := range o.Attributes {
		attrs = append(attrs, attribute.String(kv[0], kv[1]))
	}
	// After OTEL_RESOURCE_ATTRIBUTES: OTEL_SERVICE_NAME wins over its
	// service.name, as the specification says.
	attrs = append(attrs, attribute.String("service.name", o.ServiceName))
	if o.Version != "" {
		attrs = append(attrs, attribute.String("service.version", o.Version))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sampler),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		// A full queue drops spans rather than making a check wait.
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(2*time.Second), sdktrace.WithMaxQueueSize(4096)),
	)
	return &Tracer{
		tp:            tp,
		tracer:        tp.Tracer("github.com/oidc-authservice/oidc-authservice"),
		b3:            b3.New(),
		followsParent: strings.HasPrefix(o.Sampler, "parentbased_") || o.Sampler == "",
		never:         o.Sampler == "always_off",
		server:        []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)},
	}, nil
}

// Sampler is the sampler an OTEL_TRACES_SAMPLER value and its argument
// name.
func Sampler(name string, arg float64) (sdktrace.Sampler, error) {
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(arg), nil
	case "parentbased_always_on", "":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(arg)), nil
	}
	return nil, fmt.Errorf("sampler %q is not supported", name)
}

// Shutdown exports the spans still queued, within ctx.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// Flush exports the spans queued now, within ctx.
func (t *Tracer) Flush(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.ForceFlush(ctx)
}

// Span is a started span, or nothing. The zero Span does nothing.
type Span struct{ s trace.Span }

// End ends the span.
func (s Span) End() {
	if s.s != nil {
		s.s.End()
	}
}

// Recording reports whether attributes set on the span are kept (it was
// sampled).
func (s Span) Recording() bool { return s.s != nil && s.s.IsRecording() }

// SetAttributes adds attributes to the span.
func (s Span) SetAttributes(kv ...attribute.KeyValue) {
	if s.s != nil {
		s.s.SetAttributes(kv...)
	}
}

// Fail marks the span as failed with err (its message bounded by the
// callers: it must hold no credential).
func (s Span) Fail(err error) {
	if s.s != nil && err != nil {
		s.s.RecordError(err)
		s.s.SetStatus(codes.Error, err.Error())
	}
}

// FromContext is the span ctx carries (the check's, for the parts that
// annotate it), or nothing.
func FromContext(ctx context.Context) Span {
	if s := trace.SpanFromContext(ctx); s.SpanContext().IsValid() {
		return Span{s}
	}
	return Span{}
}

// StartCheck starts the server span of one request to the check port,
// continuing the trace context carrier holds: W3C traceparent (and
// tracestate) or B3, single (b3) or multi-header (x-b3-traceid,
// x-b3-spanid, x-b3-sampled); traceparent wins when both are sent.
// carrier is what the front received: an HTTP request's HeaderCarrier, a
// gRPC CheckRequest's propagation.MapCarrier (lower-case names). Without a
// trace context, the span starts a trace, sampled as OTEL_TRACES_SAMPLER
// says. A check that is not sampled gets no span (the zero Span, ctx
// unchanged): the caller sets attributes only when Recording.
func (t *Tracer) StartCheck(ctx context.Context, carrier propagation.TextMapCarrier, name string) (context.Context, Span) {
	if t == nil || t.never {
		return ctx, Span{}
	}
	tp := carrier.Get("traceparent")
	if t.followsParent && (notSampledW3C(tp) || (tp == "" && carrier.Get("x-b3-sampled") == "0" && carrier.Get("b3") == "")) {
		return ctx, Span{} // the common case behind a gateway sampling 1 %: decided without parsing
	}
	parent := ctx
	if tp != "" {
		parent = t.w3c.Extract(ctx, carrier)
	}
	if !trace.SpanContextFromContext(parent).IsValid() && (carrier.Get("b3") != "" || carrier.Get("x-b3-traceid") != "") {
		parent = t.b3.Extract(ctx, carrier)
	}
	if sc := trace.SpanContextFromContext(parent); sc.IsValid() && !sc.IsSampled() && t.followsParent {
		return ctx, Span{}
	}
	ctx, s := t.tracer.Start(parent, name, t.server...)
	if !s.IsRecording() {
		return ctx, Span{}
	}
	return ctx, Span{s}
}

// notSampledW3C reports whether tp is a version-00 traceparent whose
// sampled flag is off.
func notSampledW3C(tp string) bool {
	if len(tp) != 55 || tp[:3] != "00-" || tp[35] != '-' || tp[52] != '-' {
		return false
	}
	switch tp[54] { // the low bit of the flags: sampled
	case '0', '2', '4', '6', '8', 'a', 'c', 'e':
		return true
	}
	return false
}

// HeaderCarrier reads the trace context of HTTP request headers (the
// server has canonicalized their names) without canonicalizing the names
// the propagators ask for, which propagation.HeaderCarrier does at a cost
// of an allocation each.
type HeaderCarrier http.Header

var canonicalNames = map[string]string{"traceparent": "Traceparent", "tracestate": "Tracestate", "b3": "B3",
	"x-b3-traceid": "X-B3-Traceid", "x-b3-spanid": "X-B3-Spanid", "x-b3-parentspanid": "X-B3-Parentspanid",
	"x-b3-sampled": "X-B3-Sampled", "x-b3-flags": "X-B3-Flags"}

// Get implements propagation.TextMapCarrier.
func (c HeaderCarrier) Get(key string) string {
	name, ok := canonicalNames[key]
	if !ok {
		name = http.CanonicalHeaderKey(key)
	}
	if v := c[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set implements propagation.TextMapCarrier.
func (c HeaderCarrier) Set(key, value string) { http.Header(c).Set(key, value) }

// Keys implements propagation.TextMapCarrier.
func (c HeaderCarrier) Keys() []string { return propagation.HeaderCarrier(c).Keys() }

// Start starts a child of ctx's span (kind internal or client); without a
// span in ctx, nothing.
func (t *Tracer) Start(ctx context.Context, name string, kind trace.SpanKind, kv ...attribute.KeyValue) (context.Context, Span) {
	if t == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, Span{}
	}
	ctx, s := t.tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(kv...))
	return ctx, Span{s}
}

// Transport wraps next: a request made under a span gets a client span
// named "<method> <name(req)>" (an endpoint's name: token, userinfo, jwks,
// tokenreview) and carries its trace context (traceparent) to the peer.
// The span's attributes are the method, the server's host and port, the
// URL without its query, and the status or the error.
func (t *Tracer) Transport(next http.RoundTripper, name func(*http.Request) string) http.RoundTripper {
	if t == nil {
		return next
	}
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		ctx, span := t.Start(req.Context(), req.Method+" "+name(req), trace.SpanKindClient,
			attribute.String("http.request.method", req.Method), attribute.String("server.address", req.URL.Hostname()),
			attribute.String("url.full", req.URL.Scheme+"://"+req.URL.Host+req.URL.EscapedPath()))
		if span.s == nil {
			return next.RoundTrip(req)
		}
		defer span.End()
		if p := req.URL.Port(); p != "" {
			span.SetAttributes(attribute.String("server.port", p))
		}
		req = req.Clone(ctx)
		t.w3c.Inject(ctx, propagation.HeaderCarrier(req.Header))
		resp, err := next.RoundTrip(req)
		if err != nil {
			span.SetAttributes(attribute.String("error.type", errorType(err)))
			span.Fail(errors.New("request failed: " + errorType(err)))
			return resp, err
		}
		span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
		if resp.StatusCode >= 500 {
			span.s.SetStatus(codes.Error, resp.Status)
		}
		return resp, err
	})
}

// errorType names an outbound failure without its message (which may
// quote a URL with its query).
func errorType(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return fmt.Sprintf("%T", err)
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Provider is a trace.TracerProvider for instrumentation libraries (the
// Redis client's): it starts spans only under a span of the context, as
// Start does. Nil when tracing is off.
func (t *Tracer) Provider() trace.TracerProvider {
	if t == nil {
		return nil
	}
	return childrenOnly{tp: t.tp}
}

type childrenOnly struct {
	embedded.TracerProvider
	tp *sdktrace.TracerProvider
}

func (c childrenOnly) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return childTracer{t: c.tp.Tracer(name, opts...)}
}

type childTracer struct {
	embedded.Tracer
	t trace.Tracer
}

func (c childTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, trace.SpanFromContext(ctx) // a no-op span
	}
	return c.t.Start(ctx, name, opts...)
}
