package peer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// OPABinary is Open Policy Agent built from the Go module proxy (test/opa,
// `make bin/opa-peer`): $OPA_PEER, else bin/opa-peer. It is never built
// here: a cold build takes minutes.
func OPABinary() (string, error) {
	p := os.Getenv("OPA_PEER")
	if p == "" {
		p = filepath.Join(RepoRoot(), "bin", "opa-peer")
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s: %v (make bin/opa-peer builds it)", p, err)
	}
	return p, nil
}

// OPA is a running Open Policy Agent server.
type OPA struct {
	URL string // http://127.0.0.1:<port>
	cmd *exec.Cmd
}

// StartOPA runs `opa run --server` on a free port with the Rego policies
// (file name → source), and waits for its health endpoint.
func StartOPA(t testing.TB, policies map[string]string) *OPA {
	t.Helper()
	bin, err := OPABinary()
	Require(t, "opa", err)
	dir := t.TempDir()
	args := []string{"run", "--server", "--skip-version-check", "--log-level", "error"}
	port := FreePort(t)
	args = append(args, "--addr", "127.0.0.1:"+strconv.Itoa(port))
	for name, src := range policies {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, f)
	}
	cmd := exec.Command(bin, args...)
	log, err := os.Create(filepath.Join(ArtifactsDir(t), "opa.log"))
	if err == nil {
		cmd.Stdout, cmd.Stderr = log, log
		t.Cleanup(func() { log.Close() })
	}
	if err := cmd.Start(); err != nil {
		Require(t, "opa", err)
	}
	o := &OPA{URL: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd}
	t.Cleanup(o.Stop)
	if err := WaitHTTP(o.URL+"/health", 30*time.Second); err != nil {
		o.Stop()
		t.Fatalf("opa did not start (see %s): %v", filepath.Join(ArtifactsDir(t), "opa.log"), err)
	}
	return o
}

// Stop ends OPA; safe to call twice.
func (o *OPA) Stop() {
	if o.cmd == nil || o.cmd.Process == nil {
		return
	}
	o.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { o.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		o.cmd.Process.Kill()
		<-done
	}
	o.cmd = nil
}
