package peer

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Redis is a throw-away redis-server (Debian's package) on 127.0.0.1,
// without persistence, stopped by the test's cleanup.
type Redis struct {
	URL  string // redis://127.0.0.1:<port>/0
	Addr string // 127.0.0.1:<port>
	cmd  *exec.Cmd
}

// StartRedis runs a redis-server on a free port and returns its redis://
// URL.
func StartRedis(t testing.TB) string { return RunRedis(t).URL }

// RunRedis runs a redis-server on a free port; args are added to its
// command line.
func RunRedis(t testing.TB, args ...string) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	Require(t, "redis-server (apt-get install redis-server)", err)
	port := FreePort(t)
	cmd := exec.Command(bin, append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	Require(t, "redis-server", cmd.Start())
	r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd}
	r.URL = "redis://" + r.Addr + "/0"
	t.Cleanup(r.Kill)
	Require(t, "redis-server", WaitTCP(r.Addr, 10*time.Second))
	return r
}

// Kill ends the server at once (SIGKILL: no goodbye to its clients); safe
// to call twice.
func (r *Redis) Kill() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	r.cmd.Process.Kill()
	r.cmd.Wait()
	r.cmd = nil
}

// WaitTCP waits until addr accepts connections.
func WaitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not listening on %s after %s", addr, timeout)
}
