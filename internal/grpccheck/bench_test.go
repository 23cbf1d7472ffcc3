package grpccheck_test

import (
	"context"
	"net"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/oidc-authservice/oidc-authservice/internal/grpccheck"
)

// bare is the cheapest Authorization server: OK with the two identity
// headers, whatever the request (the reference of make bench's gRPC path).
type bare struct {
	authv3.UnimplementedAuthorizationServer
}

func (bare) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
		Headers: []*corev3.HeaderValueOption{
			{Header: &corev3.HeaderValue{Key: "kubeflow-userid", Value: "user@example.com"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
			{Header: &corev3.HeaderValue{Key: "kubeflow-groups", Value: "team-a,team-b"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
		}}}}, nil
}

// sessionRequest is the session path's request: a navigation with the
// session cookie among others, the headers a browser and the gateway add.
func sessionRequest(e *env, b *testing.B) req {
	cookie := "_ga=GA1.1.1; authservice_session=" + e.seal(b, "user@example.com", "team-a", "team-b")
	return req{method: "GET", path: "/notebook/kubeflow-user-example-com/nb/lab", host: "kubeflow.example.com", scheme: "http",
		headers: map[string]string{"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
			"sec-fetch-mode": "navigate", "sec-fetch-site": "same-origin", "x-forwarded-proto": "http",
			"x-request-id": "6c3f1a52-0d1e-4b7a-9f57-2a8e5c0b9d41", "user-agent": "Mozilla/5.0 (X11; Linux x86_64)",
			"accept-encoding": "gzip, deflate, br", "accept-language": "en-US,en;q=0.9", "x-forwarded-for": "10.0.0.1",
			"x-envoy-external-address": "10.0.0.1", "cookie": cookie}}
}

// inMemory serves g on an in-memory listener and returns a client of it.
func inMemory(b *testing.B, g *grpc.Server) authv3.AuthorizationClient {
	l := bufconn.Listen(1 << 20)
	go g.Serve(l)
	b.Cleanup(g.Stop)
	conn, err := grpc.NewClient("passthrough:///bench", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return l.Dial() }))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// BenchmarkGRPCCheck: the session path's check over gRPC (the request a
// navigation makes Envoy send, with the pseudo-headers and the headers the
// gateway adds), the service against a bare Authorization server, both in
// memory with the same client and 32 calls in flight on one connection.
// The difference per op is what the service adds to gRPC's own cost.
func BenchmarkGRPCCheck(b *testing.B) {
	e := newEnv(b, nil)
	r := sessionRequest(e, b)
	msg := r.checkRequest()
	for _, sys := range []struct {
		name   string
		server func() *grpc.Server
	}{
		{"bare", func() *grpc.Server {
			g := grpc.NewServer()
			authv3.RegisterAuthorizationServer(g, bare{})
			return g
		}},
		{"service", func() *grpc.Server {
			g := grpc.NewServer(grpc.ForceServerCodecV2(grpccheck.Codec()))
			e.parts.GRPC.Register(g)
			return g
		}},
	} {
		b.Run(sys.name, func(b *testing.B) {
			c := inMemory(b, sys.server())
			resp, err := c.Check(context.Background(), msg)
			if err != nil || len(resp.GetOkResponse().GetHeaders()) < 2 {
				b.Fatalf("%v %v", resp, err)
			}
			b.ReportAllocs()
			b.SetParallelism(16) // 32 in flight on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Check(context.Background(), msg); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
	b.Run("message", func(b *testing.B) {
		b.ReportMetric(float64(proto.Size(msg)), "request-bytes")
	})
}

// BenchmarkCheckWork: the server's own work for one check of the session
// path, without the transport: read the message, decide, build and marshal
// the answer; the bare server's is to unmarshal the CheckRequest and marshal
// its two headers. The difference is the service's CPU per check over the
// bare server's.
func BenchmarkCheckWork(b *testing.B) {
	e := newEnv(b, nil)
	msg, err := proto.Marshal(sessionRequest(e, b).checkRequest())
	if err != nil {
		b.Fatal(err)
	}
	codec := grpccheck.Codec()
	b.Run("bare", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var c authv3.CheckRequest
			if err := proto.Unmarshal(msg, &c); err != nil {
				b.Fatal(err)
			}
			resp, _ := bare{}.Check(context.Background(), &c)
			out, err := codec.Marshal(resp)
			if err != nil {
				b.Fatal(err)
			}
			out.Free()
		}
	})
	b.Run("service", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			resp, err := grpccheck.CheckMessage(context.Background(), e.parts.GRPC, msg)
			if err != nil || resp.GetOkResponse() == nil {
				b.Fatal(resp, err)
			}
			out, err := codec.Marshal(resp)
			if err != nil {
				b.Fatal(err)
			}
			out.Free()
		}
	})
}
