package server

import (
	"context"
	"net"
	"strconv"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/tap"

	"github.com/oidc-authservice/oidc-authservice/internal/grpccheck"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
)

// The limits of every check port.
const (
	// maxHeaderBytes is every check port's header limit (the HTTP
	// servers' MaxHeaderBytes); the gRPC front refuses more with 431.
	maxHeaderBytes = 64 << 10
	// maxHeaderFields bounds the header fields of a gRPC check (431
	// beyond); Envoy passes at most 100 by default.
	maxHeaderFields = 1000
)

// grpcLimits are the gRPC check server's limits: the HTTP ports' in gRPC's
// terms.
type grpcLimits struct {
	// maxMessage bounds a CheckRequest: room for maxHeaderBytes of header
	// twice over (the attributes repeat a few) and whatever else Envoy
	// attaches; a larger message is refused before it is read
	// (RESOURCE_EXHAUSTED: Envoy answers status_on_error).
	maxMessage int
	// maxHeaderList bounds the HTTP/2 header block of a gRPC call itself
	// (Envoy's are a few hundred bytes).
	maxHeaderList uint32
	// maxStreams is the concurrent streams of one connection, the HTTP/2
	// server's default on SERVER_PORT.
	maxStreams uint32
	// stream is what a stream has to arrive and be answered: the HTTP
	// port's whole budget (checkBudget), or less when the client's own
	// grpc-timeout says so (Envoy sends its ext_authz timeout).
	stream time.Duration
	// handshake bounds the HTTP/2 handshake of a new connection, as
	// ReadHeaderTimeout bounds a request's header.
	handshake time.Duration
	// idle closes a connection without streams, as IdleTimeout does.
	idle time.Duration
	// minPing is the closest keepalive pings may come (closer: GOAWAY,
	// too_many_pings); ping and pingTimeout close a connection whose
	// peer stopped answering.
	minPing, ping, pingTimeout time.Duration
}

func defaultGRPCLimits(checkBudget time.Duration) grpcLimits {
	return grpcLimits{maxMessage: 256 << 10, maxHeaderList: 16 << 10, maxStreams: 250, stream: checkBudget,
		handshake: 5 * time.Second, idle: 120 * time.Second, minPing: 10 * time.Second, ping: time.Minute, pingTimeout: 20 * time.Second}
}

// newGRPCServer is the gRPC check server: the Authorization service of
// the check, and the standard health service (grpc.health.v1), NOT_SERVING
// until provider discovery succeeded (readiness, as /readyz) and again
// while the server shuts down.
//
// A client that opens streams and never finishes them holds each for
// l.stream at most, and at most l.maxStreams per connection; keepalive
// pings closer than l.minPing end the connection, so pings cannot keep
// the server busy.
func newGRPCServer(svc *grpccheck.Service, l grpcLimits) (*grpc.Server, *health.Server) {
	g := grpc.NewServer(
		grpc.ForceServerCodecV2(grpccheck.Codec()),
		grpc.MaxRecvMsgSize(l.maxMessage),
		grpc.MaxHeaderListSize(l.maxHeaderList),
		grpc.MaxConcurrentStreams(l.maxStreams),
		grpc.ConnectionTimeout(l.handshake),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.minPing, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: l.idle, Time: l.ping, Timeout: l.pingTimeout}),
		grpc.InTapHandle(streamDeadline(l.stream)),
	)
	svc.Register(g)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(authorizationService, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	return g, hs
}

// authorizationService is the Authorization service's name, for health
// checks that name it.
const authorizationService = "envoy.service.auth.v3.Authorization"

// streamDeadline gives a stream at most budget, unless its own deadline is
// sooner. (grpc-go calls it with the connection's lock held: it must stay
// cheap.)
func streamDeadline(budget time.Duration) tap.ServerInHandle {
	return func(ctx context.Context, _ *tap.Info) (context.Context, error) {
		if d, ok := ctx.Deadline(); ok && time.Until(d) <= budget {
			return ctx, nil
		}
		ctx, cancel := context.WithTimeout(ctx, budget)
		// Nothing to call: grpc-go cancels the stream's context when the
		// stream ends, which cancels this one and stops its timer.
		_ = cancel
		return ctx, nil
	}
}

// discover runs provider discovery (retrying until it succeeds or ctx
// ends) and, with a gRPC server, marks its services SERVING the moment it
// succeeds, as /readyz turns 200: a client that saw /readyz ready finds
// the health service SERVING too.
func discover(ctx context.Context, p *provider.Provider, hs *health.Server) {
	p.Run(ctx)
	if hs == nil || !p.Ready() {
		return
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(authorizationService, healthpb.HealthCheckResponse_SERVING)
}

// stopGRPC ends the gRPC server gracefully: health NOT_SERVING, no new
// streams, the streams in flight answered; when ctx ends first, the rest
// are cut.
func stopGRPC(ctx context.Context, g *grpc.Server, hs *health.Server, log *zap.Logger) {
	hs.Shutdown()
	done := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		log.Warn("gRPC checks still in flight at the end of the shutdown period: cut")
		g.Stop()
		<-done
	}
}

func grpcAddr(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
