package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/server"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
	"github.com/oidc-authservice/oidc-authservice/test/extauthz"
)

// Service is an oidc-authservice running in the test process.
type Service struct {
	CheckURL, ProbeURL, WebURL string
	GRPCAddr                   string // host:port of the gRPC check ("" with GRPC_PORT=0)
	Settings                   *config.Settings
	stop                       context.CancelFunc
	done                       chan error
}

// StartService runs the service with env (on top of an empty environment
// for every configuration variable) on free ports (others when a port is
// taken before the service listens on it). It does not wait for
// readiness: use WaitReady.
func StartService(t testing.TB, env map[string]string) *Service {
	t.Helper()
	for attempt := 1; ; attempt++ {
		svc, err := startService(t, env)
		if err == nil {
			return svc
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 3 {
			t.Fatalf("service did not start: %v", err)
		}
		// A port FreePort gave was taken by someone else (another test's
		// peer, another process) before the service listened: other ports.
		t.Logf("service did not start (%v): again on other ports", err)
	}
}

// servicePorts are the check, probe, web and gRPC ports of a service to
// start, four different ones (the kernel may hand a port FreePort just
// closed out again: the configuration would refuse the repetition).
var servicePorts = func(t testing.TB) [4]int {
	var p [4]int
	for i := 0; i < len(p); i++ {
		p[i] = FreePort(t)
		if slices.Contains(p[:i], p[i]) {
			i--
		}
	}
	return p
}

// startService starts the service once; an error says why it did not
// start: it exited (a port taken meanwhile: EADDRINUSE), or no health
// answer within 10 s.
func startService(t testing.TB, env map[string]string) (*Service, error) {
	t.Helper()
	ports := servicePorts(t)
	all := map[string]string{"SERVER_HOSTNAME": "127.0.0.1", "SERVER_PORT": strconv.Itoa(ports[0]),
		"READINESS_PROBE_PORT": strconv.Itoa(ports[1]), "WEB_SERVER_PORT": strconv.Itoa(ports[2]),
		"GRPC_PORT": strconv.Itoa(ports[3]), "LOG_LEVEL": "debug"}
	for k, v := range env {
		all[k] = v
	}
	s, err := config.Load(config.FromMap(all))
	if err != nil {
		t.Fatalf("configuration: %v", err)
	}
	log := serviceLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	svc := &Service{
		CheckURL: fmt.Sprintf("http://127.0.0.1:%d", s.Servers.CheckPort),
		ProbeURL: fmt.Sprintf("http://127.0.0.1:%d", s.Servers.ProbePort),
		WebURL:   fmt.Sprintf("http://127.0.0.1:%d", s.Servers.WebPort),
		Settings: s, stop: cancel, done: make(chan error, 1),
	}
	if s.Servers.GRPCPort != 0 {
		svc.GRPCAddr = fmt.Sprintf("127.0.0.1:%d", s.Servers.GRPCPort)
	}
	go func() { svc.done <- server.Run(ctx, s, "dev", log) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-svc.done:
			cancel()
			return nil, fmt.Errorf("it exited: %w", err)
		default:
		}
		err := WaitHTTP(svc.ProbeURL+"/healthz", 200*time.Millisecond)
		if err == nil {
			t.Cleanup(svc.Stop)
			return svc, nil
		}
		if time.Now().After(deadline) {
			svc.Stop()
			return nil, fmt.Errorf("no answer from /healthz in 10s: %w", err)
		}
	}
}

// ArtifactsDir is test/artifacts/<test name>, where tests leave logs and
// screenshots for diagnosing failures (git ignores it).
func ArtifactsDir(t testing.TB) string {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	dir := filepath.Join(RepoRoot(), "test", "artifacts", name)
	os.MkdirAll(dir, 0o755)
	return dir
}

// serviceLogger writes the service's JSON log to the test's artifacts
// folder (and to the test log with -v).
func serviceLogger(t testing.TB) *zap.Logger {
	path := filepath.Join(ArtifactsDir(t), "service.log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return zap.NewNop()
	}
	t.Cleanup(func() { f.Close() })
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(f), zap.DebugLevel)
	if testing.Verbose() {
		return zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
	}
	return zap.New(core)
}

// WaitReady waits for /readyz.
func (s *Service) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	if err := WaitHTTP(s.ProbeURL+"/readyz", timeout); err != nil {
		t.Fatalf("service not ready: %v", err)
	}
}

// Stop shuts the service down gracefully; safe to call twice.
func (s *Service) Stop() {
	if s.stop == nil {
		return
	}
	s.stop()
	<-s.done
	s.stop = nil
}

// Gateway starts an Envoy-faithful gateway in front of the check server.
func Gateway(t testing.TB, cfg extauthz.Config) string { return GatewayAt(t, cfg, FreePort(t)) }

// GatewayAt starts the gateway on a given port (for providers that need
// the absolute redirect URI before the gateway exists).
func GatewayAt(t testing.TB, cfg extauthz.Config, port int) string {
	t.Helper()
	srv, l, err := extauthz.Serve(cfg, fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}

// OpenSession opens a session cookie sealed with SessionKey, so tests can
// read the tokens and ids inside.
func OpenSession(t testing.TB, value string) *session.Session {
	t.Helper()
	secret, err := config.ParseSecret(SessionKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.NewCodec([][]byte{secret}, 24*time.Hour, time.Now).OpenSession("authservice_session", value)
	if err != nil {
		t.Fatalf("open session: %v", err)
	}
	return s
}

// GatewayHandler serves any gateway (test/extauthz's Envoy) on a free
// port and returns its URL.
func GatewayHandler(t testing.TB, h http.Handler) string { return GatewayHandlerAt(t, h, 0) }

// GatewayHandlerAt serves a gateway on a given port (0: a free one).
func GatewayHandlerAt(t testing.TB, h http.Handler, port int) string {
	t.Helper()
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}
