package grpccheck

import (
	"context"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// CheckMessage is the server's work for one Check without the transport:
// read the message, decide, translate the answer (for benchmarks).
func CheckMessage(ctx context.Context, s *Service, b []byte) (*authv3.CheckResponse, error) {
	in := s.inputs.Get().(*input)
	in.reset(s.limits)
	defer s.inputs.Put(in)
	if err := in.decode(b); err != nil {
		return nil, err
	}
	return s.check(ctx, in)
}
