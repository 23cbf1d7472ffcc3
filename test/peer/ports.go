package peer

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Ports for programs that must be told theirs before they listen.
//
// A server of the test process listens on port 0 and reads the port it got
// (Listen, ReservePort). A program started later needs a number in
// advance: FreePort finds one free, and between that and the program's own
// listen another process may take it ("bind: address already in use").
// FreePort therefore takes ports below the kernel's ephemeral range, which
// the kernel never hands to a listener on port 0 or to an outgoing
// connection, never the same one twice in a test process; and the starters
// of external programs (StartDex, RunRedis, StartCaddy, ...) start them
// again on other ports when one was taken all the same, by another test
// process choosing the same port at the same moment (OnFreePorts).

var (
	portMu     sync.Mutex
	portsGiven = map[int]bool{}
	reserved   = map[int]net.Listener{}
	portRange  = sync.OnceValues(freePortRange)
)

// freePortRange is where FreePort draws from: from 16384 up to the kernel's
// ephemeral range, or above it, whichever is larger; ok false when neither
// leaves 2,000 ports.
func freePortRange() (lo, hi int) {
	elo, ehi := 32768, 60999 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			a, err1 := strconv.Atoi(f[0])
			b, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && a <= b {
				elo, ehi = a, b
			}
		}
	}
	lo, hi = 16384, elo
	if 65536-(ehi+1) > hi-lo {
		lo, hi = ehi+1, 65536
	}
	if hi-lo < 2000 {
		return 0, 0
	}
	return lo, hi
}

// FreePort returns a port free on 127.0.0.1 at the time of the call, for a
// program that is given its number and listens later (a server of the test
// process listens on port 0 instead: Listen). It lies outside the kernel's
// ephemeral range (net.ipv4.ip_local_port_range), so that no listener on
// port 0 and no outgoing connection can take it meanwhile, and this process
// hands out each port once.
func FreePort(t testing.TB) int {
	t.Helper()
	lo, hi := portRange()
	portMu.Lock()
	defer portMu.Unlock()
	for range 200 {
		if hi == 0 {
			break
		}
		p := lo + rand.IntN(hi-lo)
		if portsGiven[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[p] = true
		return p
	}
	// No room outside the ephemeral range: one the kernel picks.
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !portsGiven[p] {
			portsGiven[p] = true
			return p
		}
	}
}

// Listen listens on a port of 127.0.0.1 the kernel picks, closed by the
// test's cleanup.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// ReservePort listens on a port the kernel picks and returns its number,
// for a server of this test process that must be named before it starts
// (a gateway whose address a provider's redirect URI holds): GatewayAt,
// GatewayHandlerAt and KubeflowGatewayAt serve on the reserved listener
// itself. Never for an external program (it would find the port taken).
func ReservePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	portMu.Lock()
	reserved[p] = l
	portMu.Unlock()
	t.Cleanup(func() {
		portMu.Lock()
		if reserved[p] == l {
			delete(reserved, p)
		}
		portMu.Unlock()
		l.Close()
	})
	return p
}

// listenAt listens on port of 127.0.0.1 (0: any), taking the listener of
// ReservePort when the port was reserved.
func listenAt(port int) (net.Listener, error) {
	if port != 0 {
		portMu.Lock()
		l, ok := reserved[port]
		delete(reserved, port)
		portMu.Unlock()
		if ok {
			return l, nil
		}
	}
	return net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}

// ErrPortTaken: a program could not listen on a port it was given; another
// process took it after FreePort found it free.
var ErrPortTaken = errors.New("a port was taken before the program listened")

// portTaken reports whether a program's output says it could not listen
// because the address was in use (Go, redis, nginx, Python, gunicorn).
func portTaken(output string) bool {
	o := strings.ToLower(output)
	return strings.Contains(o, "address already in use") || strings.Contains(o, "connection in use")
}

// OnFreePorts calls start with n ports of FreePort, and again with new ones
// while it fails with ErrPortTaken, at most 5 times (then the test fails);
// any other error stops the test as Require does.
func OnFreePorts(t testing.TB, what string, n int, start func(ports []int) error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ports := make([]int, n)
		for i := range ports {
			ports[i] = FreePort(t)
		}
		err := start(ports)
		switch {
		case err == nil:
			return
		case !errors.Is(err, ErrPortTaken):
			Require(t, what, err)
			return
		case attempt == 5:
			t.Fatalf("%s: a port taken in each of %d attempts: %v", what, attempt, err)
		}
		t.Logf("%s: %v; starting it again on other ports", what, err)
	}
}

// process is an external program a starter runs.
type process struct {
	cmd  *exec.Cmd
	sig  syscall.Signal // what stops it
	done chan struct{}
	log  string // the file its output goes to ("": see out)
	off  int64  // where this run's output starts in it
	out  *syncBuffer
}

// syncBuffer keeps the last 64 KiB written to it.
type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	if len(s.b) > 64<<10 {
		s.b = s.b[len(s.b)-64<<10:]
	}
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}

// startProcess starts cmd with its output appended to the artifacts file
// logName ("": what cmd has no other place for, kept in memory and copied
// to also when that is not nil) and stops it with the test's cleanup: sig
// (SIGTERM: SIGKILL after 5 s).
func startProcess(t testing.TB, cmd *exec.Cmd, logName string, also io.Writer, sig syscall.Signal) (*process, error) {
	p := &process{cmd: cmd, sig: sig, done: make(chan struct{})}
	if logName != "" {
		f := logFile(t, logName)
		if f != nil {
			if st, err := f.Stat(); err == nil {
				p.off = st.Size()
			}
			p.log = f.Name()
			cmd.Stdout, cmd.Stderr = f, f
		}
	} else {
		p.out = &syncBuffer{}
		var w io.Writer = p.out
		if also != nil {
			w = io.MultiWriter(p.out, also)
		}
		if cmd.Stdout == nil {
			cmd.Stdout = w
		}
		if cmd.Stderr == nil {
			cmd.Stderr = w
		}
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(p.stop)
	return p, nil
}

// stop ends the program with its signal (SIGKILL after 5 s); safe to call
// twice.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(p.sig)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// output is what the program printed in this run.
func (p *process) output() string {
	if p.out != nil {
		return p.out.String()
	}
	f, err := os.Open(p.log)
	if err != nil {
		return ""
	}
	defer f.Close()
	f.Seek(p.off, io.SeekStart)
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	return string(b)
}

// exited is the error for a program that ended before it was ready:
// ErrPortTaken when its output says a port was taken.
func (p *process) exited(what string) error {
	out := strings.TrimSpace(p.output())
	if len(out) > 2000 {
		out = "…" + out[len(out)-2000:]
	}
	if portTaken(out) {
		return fmt.Errorf("%w: %s exited: %s", ErrPortTaken, what, out)
	}
	return fmt.Errorf("%s exited (%v): %s", what, p.cmd.ProcessState, out)
}

// waitReady polls ready until it succeeds while the program runs and
// listens itself on each of ports (not another process that holds one: it
// answers too). A program that ends first is p.exited's error; one still
// running is stopped when the timeout passes.
func (p *process) waitReady(what string, ready func() error, timeout time.Duration, ports ...int) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		for _, port := range ports {
			if err != nil {
				break
			}
			if !listensOn(p.cmd.Process.Pid, port) {
				err = fmt.Errorf("%s does not listen on port %d (yet)", what, port)
			}
		}
		select {
		case <-p.done:
			return p.exited(what)
		default:
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return fmt.Errorf("%s not ready after %s: %v", what, timeout, err)
		}
		select {
		case <-p.done:
			return p.exited(what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dialable is a readiness check: addr accepts connections.
func dialable(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
}

// answers200 is a readiness check: url answers 200.
func answers200(url string) func() error {
	c := &http.Client{Timeout: time.Second}
	return func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
		}
		return nil
	}
}

// StartOnFreePorts runs the program command returns for n ports of
// FreePort, its output appended to the artifacts file logName, stopped
// with SIGTERM by the test's cleanup, and waits (up to timeout) until
// ready succeeds for those ports; when the program ends first because a
// port was taken, it runs it again on others (OnFreePorts). It returns the
// ports.
func StartOnFreePorts(t testing.TB, what, logName string, n int, command func(ports []int) *exec.Cmd,
	ready func(ports []int) func() error, timeout time.Duration) []int {
	t.Helper()
	var got []int
	OnFreePorts(t, what, n, func(ports []int) error {
		p, err := startProcess(t, command(ports), logName, nil, syscall.SIGTERM)
		if err != nil {
			return err
		}
		if err := p.waitReady(what, ready(ports), timeout, ports...); err != nil {
			return err
		}
		got = ports
		return nil
	})
	return got
}

// HTTPReady is a readiness check for StartOnFreePorts: url answers 200.
func HTTPReady(url string) func() error { return answers200(url) }

// listensOn reports whether process pid (or one of its children) holds a
// listening TCP socket on port of 127.0.0.1 or any address: the socket's
// inode in /proc/net/tcp{,6} among the process's file descriptors. true
// where /proc cannot tell.
func listensOn(pid, port int) bool {
	inodes := map[string]bool{}
	readable := false
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		readable = true
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(f[1], ":")
			if n, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && int(n) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if !readable {
		return true
	}
	pids := []int{pid}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
		for _, c := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(c); err == nil {
				pids = append(pids, n)
			}
		}
	}
	for _, id := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", id)
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && inodes[l] {
				return true
			}
		}
	}
	return false
}
