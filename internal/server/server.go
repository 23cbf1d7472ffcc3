// Package server owns the process: it builds every part once from the
// settings (Build), runs the three HTTP servers and the gRPC server,
// provider discovery and the revocation list's resync, and shuts down
// gracefully when its context ends.
//
//	SERVER_PORT           (8080)  the ext_authz check            package check
//	GRPC_PORT             (9000)  the same check over gRPC       package grpccheck (grpc.go:
//	                              (Envoy's Authorization/Check)  limits), and grpc.health.v1
//	READINESS_PROBE_PORT  (8081)  /healthz alive; /metrics Prometheus; /readyz and every
//	                              other path: ready once provider discovery succeeded
//	WEB_SERVER_PORT       (8082)  pages, back-channel logout,    package web
//	                              upstream token issuer
//
// Build is the one composition root: it turns validated settings into the
// running parts, handing each package only the options it needs; Run and
// check-config both use it.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
)

// Run obtains the session keys when none is given (the installation's
// Secret in a cluster), builds the service (Build), serves until ctx ends, then shuts down
// within 10 s. version is the build's, for oidc_authservice_build_info.
func Run(ctx context.Context, s *config.Settings, version string, log *zap.Logger) error {
	s, err := sessionKeys(ctx, s, log)
	if err != nil {
		return err
	}
	p, err := Build(s, version, log)
	if err != nil {
		p.Close() // what could be built (a Redis client) is released
		return err
	}
	defer p.Close()
	defer tuneGC(gcHeapFloor).stop()
	for _, w := range append(s.Warnings, p.Warnings...) {
		log.Warn(w)
	}
	for _, v := range s.Ignored {
		log.Warn("variable of the predecessor ignored", zap.String("variable", v.Name), zap.String("why", v.Why))
	}
	if p.Redis != nil {
		pingCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if err := p.Redis.Ping(pingCtx); err != nil {
			log.Warn("Redis not reachable at start; revocations stay local until it is", zap.Error(err))
		}
		cancel()
	} else {
		log.Info("no Redis: logout and back-channel logout end sessions on this replica only; with several replicas set REDIS_URL (or Redis Sentinel or Cluster)")
	}
	sv := s.Servers
	servers := []*http.Server{
		withCleartextHTTP2(newServer(sv.Host, sv.CheckPort, p.Check, s.Provider.Timeout)),
		newServer(sv.Host, sv.ProbePort, p.Probe, s.Provider.Timeout),
		newServer(sv.Host, sv.WebPort, p.Web, s.Provider.Timeout),
	}
	listeners := make([]net.Listener, len(servers))
	for i, srv := range servers {
		l, err := net.Listen("tcp", srv.Addr)
		if err != nil {
			for _, l := range listeners[:i] {
				l.Close()
			}
			return fmt.Errorf("listen %s: %w", srv.Addr, err)
		}
		listeners[i] = l
	}
	var grpcListener net.Listener
	if sv.GRPCPort != 0 {
		if grpcListener, err = net.Listen("tcp", grpcAddr(sv.Host, sv.GRPCPort)); err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return fmt.Errorf("listen %s: %w", grpcAddr(sv.Host, sv.GRPCPort), err)
		}
	}
	addrs := []zap.Field{zap.String("check", listeners[0].Addr().String()),
		zap.String("probe", listeners[1].Addr().String()), zap.String("web", listeners[2].Addr().String())}
	if grpcListener != nil {
		addrs = append(addrs, zap.String("grpc", grpcListener.Addr().String()))
	}
	if sv.LogFormat == "console" {
		// A terminal: the settings one per line, and only those that are
		// not defaults (check-config prints them all).
		log.Info("starting", append(addrs, zap.String("version", version))...)
		log.Info(settingsBlock(s.Changed()))
	} else {
		log.Info("starting", append(addrs, zap.Any("config", s.Redacted()))...)
	}

	var (
		g  *grpc.Server
		hs *health.Server // nil without GRPC_PORT
	)
	if grpcListener != nil {
		g, hs = newGRPCServer(p.GRPC, defaultGRPCLimits(checkBudget(s.Provider.Timeout)))
	}
	discoveryCtx, stopDiscovery := context.WithCancel(ctx)
	defer stopDiscovery()
	go discover(discoveryCtx, p.Provider, hs)
	go p.Revocations.Run(discoveryCtx, 30*time.Second)

	errc := make(chan error, len(servers)+1)
	for i, srv := range servers {
		go func() {
			if err := srv.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("server %s: %w", srv.Addr, err)
			}
		}()
	}
	var stopGRPCServer func(context.Context)
	if grpcListener != nil {
		go func() {
			if err := g.Serve(grpcListener); err != nil {
				errc <- fmt.Errorf("gRPC server %s: %w", grpcListener.Addr(), err)
			}
		}()
		stopGRPCServer = func(ctx context.Context) { stopGRPC(ctx, g, hs, log) }
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var grpcStopped sync.WaitGroup
	if stopGRPCServer != nil { // beside the HTTP servers', within the same 10 s
		grpcStopped.Go(func() { stopGRPCServer(shutdownCtx) })
	}
	for _, srv := range servers {
		srv.Shutdown(shutdownCtx)
	}
	grpcStopped.Wait()
	return err
}

// settingsBlock lists settings one per line, sorted, for the console log.
func settingsBlock(m map[string]string) string {
	if len(m) == 0 {
		return "settings: all defaults"
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("settings other than the defaults (secrets redacted; check-config prints them all):")
	for _, k := range names {
		b.WriteString("\n\t" + k + "=" + m[k])
	}
	return b.String()
}

// checkBudget is the longest a check may take to be answered: a callback
// waits for the token endpoint and userinfo.
func checkBudget(providerTimeout time.Duration) time.Duration {
	return 2*providerTimeout + 10*time.Second
}

func newServer(host string, port int, h http.Handler, providerTimeout time.Duration) *http.Server {
	return &http.Server{
		Addr:              net.JoinHostPort(host, strconv.Itoa(port)),
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      checkBudget(providerTimeout),
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

// withCleartextHTTP2 lets a server speak HTTP/2 without TLS to a client
// that starts with HTTP/2's connection preface (prior knowledge: what Envoy
// does towards a cluster whose Service port says http2 or grpc), beside
// HTTP/1.1 on the same port. There is no Upgrade: h2c (nothing a client's
// request can switch). An HTTP/2 stream has the same header limit and
// timeouts as an HTTP/1.1 request; the runtime's defaults bound the streams
// of a connection (250) and its flow-control windows.
func withCleartextHTTP2(srv *http.Server) *http.Server {
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	return srv
}

func probe(p *provider.Provider, metricsHandler http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			metricsHandler.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if r.URL.Path == "/healthz" {
			w.Write([]byte("ok\n"))
			return
		}
		if !p.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("provider discovery has not succeeded yet\n"))
			return
		}
		w.Write([]byte("ready\n"))
	})
}
