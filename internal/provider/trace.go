package provider

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/trace"

	"github.com/oidc-authservice/oidc-authservice/internal/tracing"
)

// span starts the span of one operation at the provider (a child of the
// request's span; nothing when tracing is off or there is none). The HTTP
// calls it makes are its children (Options.Tracer's transport).
func (p *Provider) span(ctx context.Context, name string) (context.Context, tracing.Span) {
	return p.opts.Tracer.Start(ctx, name, trace.SpanKindInternal)
}

// endSpan ends span, failed with err's kind only: an error's text may quote
// what the provider answered.
func endSpan(span tracing.Span, err error) {
	switch {
	case err == nil:
	case errors.Is(err, ErrRejected):
		span.Fail(ErrRejected)
	case errors.Is(err, ErrInvalidToken):
		span.Fail(ErrInvalidToken)
	case errors.Is(err, ErrNotReady):
		span.Fail(ErrNotReady)
	default:
		span.Fail(ErrUnavailable)
	}
	span.End()
}
