package kube

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"os/exec"
	"sync"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// productBinary builds, once per test process, the service and the test
// programs of the product's own module it runs beside (the Envoy-faithful
// gateway, the demo upstream, the authentication probe) and returns the
// path of name. Built from the product's module, they have its dependency
// versions, not this module's.
func productBinary(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "oidc-authservice-bin-"); buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/oidc-authservice",
			"./test/extauthz/cmd/extauthz-proxy", "./test/upstream/cmd/demo-upstream", "./test/authnprobe")
		cmd.Dir = RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building the product's programs: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

// Service is an oidc-authservice process behind an Envoy-faithful gateway
// (Kubeflow's EnvoyFilter, corrected) in front of the demo upstream.
type Service struct {
	Gateway  string // http://127.0.0.1:<port>
	CheckURL string
	ProbeURL string // /readyz, /metrics
	LogFile  string
	probe    string
	env      map[string]string
	cmd      *exec.Cmd
	done     chan struct{}
}

// StartService runs the service with env on top of a minimal configuration
// (a stub provider, a random session key, free ports), waits for /readyz
// and puts a gateway in front of it.
func StartService(t testing.TB, env map[string]string) *Service {
	t.Helper()
	s := LaunchService(t, env)
	s.WaitReady(t)
	s.StartGateway(t)
	return s
}

// LaunchService starts the service as StartService does, without waiting.
// An env value "" leaves the variable out (SESSION_KEYS: "" for none); a
// stub provider is started unless env names OIDC_PROVIDER.
func LaunchService(t testing.TB, env map[string]string) *Service {
	t.Helper()
	all := map[string]string{
		"CLIENT_ID": "kubeflow-oidc-authservice", "CLIENT_SECRET": "secret",
		"SESSION_KEYS": randomKey(), "ACCEPT_PROVIDER_ID_TOKENS": "false",
		"SERVER_HOSTNAME": "127.0.0.1", "LOG_LEVEL": "debug", "PATH": os.Getenv("PATH"),
	}
	if _, ok := env["OIDC_PROVIDER"]; !ok {
		all["OIDC_PROVIDER"] = stubProvider(t)
	}
	for k, v := range env {
		all[k] = v
	}
	s := &Service{env: all}
	s.launch(t)
	t.Cleanup(s.Stop)
	return s
}

// launch starts the process on ports of FreePort.
func (s *Service) launch(t testing.TB) {
	t.Helper()
	bin := productBinary(t, "oidc-authservice")
	ports := []int{FreePort(t), FreePort(t), FreePort(t), FreePort(t)}
	s.CheckURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	s.probe = fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[1])
	s.ProbeURL = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	s.done = make(chan struct{})
	// One file per process: a test may run several.
	log, err := os.CreateTemp(ArtifactsDir(t), "service-*.log")
	if err != nil {
		t.Fatal(err)
	}
	s.LogFile = log.Name()
	s.cmd = exec.Command(bin)
	env := map[string]string{"SERVER_PORT": strconv.Itoa(ports[0]), "READINESS_PROBE_PORT": strconv.Itoa(ports[1]),
		"WEB_SERVER_PORT": strconv.Itoa(ports[2]), "GRPC_PORT": strconv.Itoa(ports[3])}
	for k, v := range s.env {
		env[k] = v
	}
	for k, v := range env {
		if v != "" {
			s.cmd.Env = append(s.cmd.Env, k+"="+v)
		}
	}
	s.cmd.Stdout, s.cmd.Stderr = log, log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := s.done
	go func() { s.cmd.Wait(); log.Close(); close(done) }()
}

// WaitReady waits until /readyz answers 200. A service that exited because
// a port was taken (another process took it after FreePort) is started
// again on others.
func (s *Service) WaitReady(t testing.TB) {
	t.Helper()
	err := retryPorts(t, "the service", func() error {
		err := s.waitListening(60 * time.Second)
		if err != nil && s.exited() && portTaken(s.Log()) {
			old := s.LogFile
			s.launch(t)
			return fmt.Errorf("%w: %v (log: %s)", errPortTaken, err, old)
		}
		if err != nil {
			return err
		}
		return waitHTTP(s.probe, 60*time.Second, s.done)
	})
	if err != nil {
		t.Fatalf("service not ready: %v\n%s", err, s.Log())
	}
}

// waitListening waits for the service's "starting" line, which it logs
// once it listens on its ports (before that, what answers on them
// could be another process).
func (s *Service) waitListening(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if l := s.Log(); strings.Contains(l, `"msg":"starting"`) || strings.Contains(l, "\tstarting\t") {
			return nil
		}
		if s.exited() {
			return fmt.Errorf("the process exited")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no \"starting\" line after %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// exited reports whether the process has ended.
func (s *Service) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// WaitExit waits until the process ends and returns its exit code.
func (s *Service) WaitExit(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-s.done:
		return s.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("the service still runs after %s:\n%s", timeout, s.Log())
		return 0
	}
}

// StartGateway puts the demo upstream behind an Envoy-faithful gateway
// (deploy/overlays/kubeflow's EnvoyFilter as Istio builds it) in front of
// the service; args are added to the gateway's (e.g. -dex http://...). Both
// listen on a port the kernel picks and print the address they got.
func (s *Service) StartGateway(t testing.TB, args ...string) {
	t.Helper()
	up := startProgram(t, productBinary(t, "demo-upstream"), "-listen", "127.0.0.1:0")
	// The gateway of deploy/overlays/kubeflow on Kubeflow 1.9.0 (our
	// EnvoyFilter with TokenReview), as Istio's translation builds it
	// (test/extauthz, test/istio/testdata/envoy).
	s.Gateway = startProgram(t, productBinary(t, "extauthz-proxy"), append([]string{"-listen", "127.0.0.1:0", "-check", s.CheckURL,
		"-layout", "v1.9.0_kubeflow", "-upstream", up}, args...)...)
}

// Metric is the value of one series of the service's /metrics, written as
// the text format does (oidc_authservice_tokenreviews_total{result="refused"});
// 0 when the series is absent.
func (s *Service) Metric(t testing.TB, series string) float64 {
	t.Helper()
	resp, err := http.Get(s.ProbeURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// startProgram runs a helper program of the product's module (the demo
// upstream, the gateway) until the test ends, and returns the URL it
// printed once listening ("... listening on http://127.0.0.1:<port>").
func startProgram(t testing.TB, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, u, ok := strings.Cut(sc.Text(), " listening on "); ok {
				found <- strings.Fields(u)[0]
				io.Copy(io.Discard, stdout)
				return
			}
		}
		close(found)
	}()
	select {
	case u, ok := <-found:
		if !ok {
			t.Fatalf("%s exited without listening: %s", filepath.Base(bin), stderr.String())
		}
		return u
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not say where it listens within 30 s", filepath.Base(bin))
		return ""
	}
}

// Stop ends the service; safe to call twice.
func (s *Service) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// Log is what the service wrote so far.
func (s *Service) Log() string {
	b, _ := os.ReadFile(s.LogFile)
	return string(b)
}

// Answer is what the gateway answered to a bearer request: the status and,
// when the request reached the upstream, the identity headers it saw.
type Answer struct {
	Status          int
	User, Groups    string
	Body            string
	UpstreamReached bool
}

// Call sends GET path with Authorization: Bearer token through the gateway,
// with forged identity headers that must never arrive.
func (s *Service) Call(t testing.TB, token, path string) Answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.Gateway+path+"?format=json", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Kubeflow-Userid", "forged@example.com")
	req.Header.Set("Kubeflow-Groups", "forged")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := Answer{Status: resp.StatusCode, Body: string(b)}
	if resp.StatusCode != http.StatusOK {
		return a
	}
	var e struct {
		Headers map[string][]string
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("200 that is not the upstream's answer: %.300s", b)
	}
	a.UpstreamReached = true
	a.User = strings.Join(e.Headers["kubeflow-userid"], "|")
	a.Groups = strings.Join(e.Headers["kubeflow-groups"], "|")
	return a
}

// stubProvider serves a discovery document, enough for the service to
// start and be ready; no login happens in these tests.
func stubProvider(t testing.TB) string {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "authorization_endpoint": srv.URL + "/auth",
				"token_endpoint": srv.URL + "/token", "jwks_uri": srv.URL + "/keys",
				"id_token_signing_alg_values_supported": []string{"RS256"}, "response_types_supported": []string{"code"}})
		case "/keys":
			w.Write([]byte(`{"keys":[]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func waitHTTP(url string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second}
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("the process exited")
		default:
		}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %s: %v", url, timeout, last)
}

// randomKey is a new session key, as `openssl rand -base64 32` prints one:
// no key of this repository may work anywhere.
func randomKey() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}
