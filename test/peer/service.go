package peer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
// for every configuration variable) on free ports. It does not wait for
// readiness: use WaitReady. When a port it chose was taken before the
// service listened, it starts the service again on others.
func StartService(t testing.TB, env map[string]string) *Service {
	t.Helper()
	var svc *Service
	OnFreePorts(t, "the service", 4, func(ports []int) (err error) {
		svc, err = startService(t, env, ports)
		return err
	})
	return svc
}

// startService runs the service on ports (check, probe, web, gRPC) unless
// env names them, and waits until it listens and is alive: ErrPortTaken
// when a port was taken.
func startService(t testing.TB, env map[string]string, ports []int) (*Service, error) {
	t.Helper()
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
	// Its "starting" line comes once it listens on all its ports.
	listening := make(chan struct{})
	var once sync.Once
	log := serviceLogger(t).WithOptions(zap.Hooks(func(e zapcore.Entry) error {
		if e.LoggerName == "" && e.Message == "starting" {
			once.Do(func() { close(listening) })
		}
		return nil
	}))
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
	select {
	case <-listening:
	case err := <-svc.done:
		cancel()
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%w: %v", ErrPortTaken, err)
		}
		t.Fatalf("service did not start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("service did not start listening within 30 s")
	}
	t.Cleanup(svc.Stop)
	if err := WaitHTTP(svc.ProbeURL+"/healthz", 10*time.Second); err != nil {
		t.Fatalf("service did not start: %v", err)
	}
	return svc, nil
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
func Gateway(t testing.TB, cfg extauthz.Config) string { return GatewayAt(t, cfg, 0) }

// GatewayAt starts the gateway on a given port (0: any; for providers that
// need the absolute redirect URI before the gateway exists, one of
// ReservePort).
func GatewayAt(t testing.TB, cfg extauthz.Config, port int) string {
	t.Helper()
	p, err := extauthz.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return GatewayHandlerAt(t, p, port)
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

// GatewayHandlerAt serves a gateway on a given port (0: any; a port of
// ReservePort: its listener).
func GatewayHandlerAt(t testing.TB, h http.Handler, port int) string {
	t.Helper()
	l, err := listenAt(port)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}
