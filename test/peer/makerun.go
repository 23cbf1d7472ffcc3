package peer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MakeRunPorts are the port settings of deploy/local/run.sh, the script of
// `make run`.
var MakeRunPorts = []string{"DEX_PORT", "UPSTREAM_PORT", "SERVER_PORT", "READINESS_PROBE_PORT", "WEB_SERVER_PORT", "GRPC_PORT", "GATEWAY_PORT"}

var (
	makeRunOnce sync.Once
	makeRunBin  string
	makeRunErr  error
)

// MakeRunBin builds, once per test process, the programs make run starts
// (the service, the gateway, the demo upstream; the Dex runner of
// DexBinary) into one folder, for run.sh's BIN.
func MakeRunBin(t testing.TB) string {
	t.Helper()
	makeRunOnce.Do(func() {
		dex, err := DexBinary()
		if err != nil {
			makeRunErr = err
			return
		}
		if makeRunBin, makeRunErr = os.MkdirTemp("", "oidc-authservice-makerun-"); makeRunErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", makeRunBin+"/", "./cmd/oidc-authservice",
			"./test/extauthz/cmd/extauthz-proxy", "./test/upstream/cmd/demo-upstream")
		cmd.Dir = RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			makeRunErr = fmt.Errorf("building make run's programs: %v: %s", err, out)
			return
		}
		makeRunErr = os.Symlink(dex, filepath.Join(makeRunBin, "dex-runner"))
	})
	if makeRunErr != nil {
		t.Fatal(makeRunErr)
	}
	return makeRunBin
}

// MakeRun is one run of deploy/local/run.sh.
type MakeRun struct {
	Ports   map[string]int // every port setting, as given to the script
	Gateway string         // http://127.0.0.1:<GATEWAY_PORT>
	cmd     *exec.Cmd
	mu      sync.Mutex
	out     bytes.Buffer
	done    chan struct{}
	code    int
}

func (r *MakeRun) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.Write(p)
}

// Output is what the script printed so far (stdout and stderr).
func (r *MakeRun) Output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// StartMakeRun runs make run's script with free ports (env may set any of
// MakeRunPorts and other variables) and the programs of MakeRunBin. Its
// temporary folder, where the script makes the run's log folder, is the
// test's. The script is stopped (SIGTERM, as Ctrl-C would) by the test's
// cleanup.
func StartMakeRun(t testing.TB, env map[string]string) *MakeRun {
	t.Helper()
	for _, tool := range []string{"bash", "curl"} {
		_, err := exec.LookPath(tool)
		Require(t, tool+" (make run needs it)", err)
	}
	r := &MakeRun{Ports: map[string]int{}, done: make(chan struct{})}
	vars := map[string]string{"BIN": MakeRunBin(t), "TMPDIR": t.TempDir(), "PATH": os.Getenv("PATH"), "HOME": os.Getenv("HOME")}
	for _, p := range MakeRunPorts {
		if v, ok := env[p]; ok {
			r.Ports[p], _ = strconv.Atoi(v)
		} else {
			r.Ports[p] = FreePort(t)
		}
		vars[p] = strconv.Itoa(r.Ports[p])
	}
	for k, v := range env {
		vars[k] = v
	}
	r.Gateway = fmt.Sprintf("http://127.0.0.1:%d", r.Ports["GATEWAY_PORT"])
	r.cmd = exec.Command("bash", filepath.Join(RepoRoot(), "deploy", "local", "run.sh"))
	for k, v := range vars {
		r.cmd.Env = append(r.cmd.Env, k+"="+v)
	}
	r.cmd.Stdout, r.cmd.Stderr = r, r
	// Its own process group, so that the cleanup can end whatever the
	// script left behind.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := r.cmd.Wait()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			r.code = exit.ExitCode()
		} else if err != nil {
			r.code = -1
		}
		close(r.done)
	}()
	t.Cleanup(func() {
		r.Stop()
		os.WriteFile(filepath.Join(ArtifactsDir(t), "make-run.out"), []byte(r.Output()), 0o644)
	})
	return r
}

// WaitRunning waits until the script says it is running; an error when it
// exits first or the timeout passes.
func (r *MakeRun) WaitRunning(timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		if strings.Contains(r.Output(), "oidc-authservice is running") {
			return nil
		}
		select {
		case <-r.done:
			return fmt.Errorf("make run exited (status %d) without saying it runs:\n%s", r.code, r.Output())
		case <-deadline:
			return fmt.Errorf("make run did not say it runs within %s:\n%s", timeout, r.Output())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Exit waits for the script to end by itself and returns its exit status.
func (r *MakeRun) Exit(timeout time.Duration) (int, error) {
	select {
	case <-r.done:
		return r.code, nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("make run still running after %s:\n%s", timeout, r.Output())
	}
}

// Stop sends the script SIGTERM (it stops its parts), waits for it, and
// kills what is left of its process group.
func (r *MakeRun) Stop() {
	select {
	case <-r.done:
	default:
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
		}
	}
	syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
}
