package grpccheck

import (
	"context"
	"net/http"
	"testing"

	grpcmd "google.golang.org/grpc/metadata"
)

// The trace context of a gRPC check: the call's metadata when it carries
// one (Envoy's ext_authz span), else the CheckRequest's headers; never a
// mix of both.
func TestTraceCarrier(t *testing.T) {
	const envoy, client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-11111111111111111111111111111111-2222222222222222-01"
	header := http.Header{"Traceparent": {client}, "Tracestate": {"client=1"}}
	cases := []struct {
		name               string
		md                 grpcmd.MD
		traceparent, state string
	}{
		{"metadata with traceparent", grpcmd.Pairs("traceparent", envoy, "grpc-timeout", "10S"), envoy, ""},
		{"metadata with B3", grpcmd.Pairs("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736", "x-b3-spanid", "00f067aa0ba902b7"), "", ""},
		{"metadata without a trace context", grpcmd.Pairs("x-envoy-expected-rq-timeout-ms", "10000"), client, "client=1"},
		{"no metadata", nil, client, "client=1"},
	}
	for _, c := range cases {
		ctx := context.Background()
		if c.md != nil {
			ctx = grpcmd.NewIncomingContext(ctx, c.md)
		}
		tc := &traceCarrier{ctx: ctx, header: header}
		if got := tc.Get("traceparent"); got != c.traceparent {
			t.Errorf("%s: traceparent %q, want %q", c.name, got, c.traceparent)
		}
		if got := tc.Get("tracestate"); got != c.state {
			t.Errorf("%s: tracestate %q, want %q", c.name, got, c.state)
		}
	}
}
