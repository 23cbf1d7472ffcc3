package check

import (
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"

	"github.com/oidc-authservice/oidc-authservice/internal/tracing"
)

// traceStart starts the server span of a check (TRACING: only when
// Deps.Tracer is set), continuing the trace context the gateway sent with
// it: carrier is the request's header on the HTTP port, what the gRPC
// front gives (ServeGRPC) over gRPC. Its name says which endpoint
// answered; its attributes are the method, host and path (never the query,
// a cookie or a token), and rpc.system=grpc over gRPC. answer adds the
// decision.
func (h *Handler) traceStart(r *http.Request, carrier propagation.TextMapCarrier, f front) (*http.Request, tracing.Span) {
	name := "check"
	switch p := r.URL.Path; {
	case p == h.o.CallbackPath:
		name = "login callback"
	case p == h.o.LogoutPath:
		name = "logout"
	case p == h.o.VerifyPath:
		name = "forward-auth verify"
	case p == h.o.StartPath:
		name = "login start"
	case p == h.o.BackchannelPath && r.Method == http.MethodPost && r.ContentLength != 0:
		name = "back-channel logout"
	}
	if carrier == nil {
		carrier = tracing.HeaderCarrier(r.Header)
	}
	ctx, span := h.d.Tracer.StartCheck(r.Context(), carrier, name)
	if !span.Recording() {
		return r, span // not sampled: nothing to annotate, no context to carry
	}
	span.SetAttributes(attribute.String("http.request.method", r.Method), attribute.String("server.address", r.Host),
		attribute.String("url.path", r.URL.EscapedPath()))
	if f == frontGRPC {
		span.SetAttributes(attribute.String("rpc.system", "grpc"))
	}
	return r.WithContext(ctx), span
}

// traceStatus records the answer's status on the request's span (every
// endpoint's answer goes through answer).
func traceStatus(q *request, v *verdict) {
	if span := tracing.FromContext(q.Context()); span.Recording() {
		span.SetAttributes(attribute.Int("http.response.status_code", v.status))
	}
}

// traceCheck records a check's decision and reason (the labels of
// oidc_authservice_checks_total) on its span.
func traceCheck(q *request, v *verdict) {
	if span := tracing.FromContext(q.Context()); span.Recording() {
		span.SetAttributes(attribute.String("oidc_authservice.decision", v.decision.String()),
			attribute.String("oidc_authservice.reason", v.reason.String()))
	}
}

// traceLogin records how a callback ended: "completed", or why the login
// failed (the reason label of oidc_authservice_logins_failed_total).
func traceLogin(q *request, failed string) {
	if failed == "" {
		failed = "completed"
	}
	tracing.FromContext(q.Context()).SetAttributes(attribute.String("oidc_authservice.login", failed))
}
