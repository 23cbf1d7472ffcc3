package grpccheck

import (
	"context"
	"net/http"
	"testing"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oidc-authservice/oidc-authservice/internal/check"
)

// TestFailureNeverAnswersOK: a failure of the service is a gRPC error, so
// that Envoy answers status_on_error, never OK and never a page: a panic
// in the check, a check that wrote no answer, and a 5xx answer (Envoy's
// HTTP ext_authz client takes a 5xx for an error too).
func TestFailureNeverAnswersOK(t *testing.T) {
	s := New(nil, Options{MaxHeaderBytes: 64 << 10, MaxHeaderFields: 100, Logger: zap.NewNop()})

	// A nil Handler panics on its first field: the panic of a check.
	in := &input{method: http.MethodGet, path: "/", host: "example.com", header: http.Header{}}
	resp, err := s.check(context.Background(), in)
	if status.Code(err) != codes.Internal || resp != nil {
		t.Errorf("panic in the check: %v, %v; want INTERNAL and no response", resp, err)
	}

	for _, c := range []struct {
		status int
		want   codes.Code
	}{{0, codes.Internal}, {99, codes.Internal}, {600, codes.Internal},
		{http.StatusInternalServerError, codes.Unavailable}, {http.StatusServiceUnavailable, codes.Unavailable}} {
		a := &check.Answer{Status: c.status, Body: []byte("a page")}
		a.Header().Set("Content-Type", "text/html")
		resp, err := s.response(a)
		if status.Code(err) != c.want || resp != nil {
			t.Errorf("answer %d: %v, %v; want %v and no response", c.status, resp, err, c.want)
		}
	}

	// The boundary: a 4xx is the check's answer to the client.
	resp, err = s.response(&check.Answer{Status: http.StatusForbidden})
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != http.StatusForbidden {
		t.Errorf("answer 403: %v, %v; want a denied response 403", resp, err)
	}
}
