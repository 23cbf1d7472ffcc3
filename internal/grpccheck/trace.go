package grpccheck

import (
	"context"
	"net/http"

	grpcmd "google.golang.org/grpc/metadata"

	"github.com/oidc-authservice/oidc-authservice/internal/tracing"
)

// traceCarrier is the trace context of a gRPC check (TRACING), read only
// when the check is traced (the first Get): the gRPC call's metadata when
// it carries one — Envoy's gRPC client puts the context of its ext_authz
// span there, as its HTTP client puts it in the HTTP check's header — else
// the CheckRequest's headers (what the client sent, when the gateway passes
// it). One source or the other, never a mix of both.
type traceCarrier struct {
	ctx    context.Context
	header http.Header
	md     grpcmd.MD
	read   bool
}

// traceKeys are the headers that start a trace context (tracing.StartCheck):
// W3C, B3 single and B3 multi.
var traceKeys = [...]string{"traceparent", "b3", "x-b3-traceid"}

func (c *traceCarrier) source() {
	if c.read {
		return
	}
	c.read = true
	md, _ := grpcmd.FromIncomingContext(c.ctx)
	for _, k := range traceKeys {
		if len(md[k]) > 0 {
			c.md = md
			return
		}
	}
}

// Get implements propagation.TextMapCarrier.
func (c *traceCarrier) Get(key string) string {
	c.source()
	if c.md != nil {
		if v := c.md[key]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	return tracing.HeaderCarrier(c.header).Get(key)
}

// Set implements propagation.TextMapCarrier (extraction never sets).
func (c *traceCarrier) Set(key, value string) {
	c.source()
	if c.md != nil {
		c.md.Set(key, value)
		return
	}
	c.header.Set(key, value)
}

// Keys implements propagation.TextMapCarrier.
func (c *traceCarrier) Keys() []string {
	c.source()
	if c.md != nil {
		keys := make([]string, 0, len(c.md))
		for k := range c.md {
			keys = append(keys, k)
		}
		return keys
	}
	return tracing.HeaderCarrier(c.header).Keys()
}
