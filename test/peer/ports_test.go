package peer

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FreePort's ports are ones the kernel never picks by itself (outside
// net.ipv4.ip_local_port_range: not for a listener on port 0, not for an
// outgoing connection), and never the same twice, so that nothing but an
// explicit bind can take one between FreePort and the program's listen. A
// port taken from the kernel's range and released (as FreePort did) could
// be handed on to the next listener on port 0 of any process: the gateway
// and upstream of TestSessionCookieNeverReachesTheUpstream, and the
// services of TestTokenReviewWithoutRBACAndWithTheAPIServerDown, failed
// with "bind: address already in use".
func TestFreePortIsNeverTheKernels(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skipf("no ip_local_port_range here: %v", err)
	}
	f := strings.Fields(string(b))
	lo, _ := strconv.Atoi(f[0])
	hi, _ := strconv.Atoi(f[1])
	seen := map[int]bool{}
	for range 500 {
		p := FreePort(t)
		if p >= lo && p <= hi {
			t.Fatalf("FreePort %d lies in the kernel's ephemeral range %d-%d", p, lo, hi)
		}
		if seen[p] {
			t.Fatalf("FreePort handed out %d twice", p)
		}
		seen[p] = true
	}
	// A listener on port 0 never gets one of them.
	for range 200 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if seen[p] {
			t.Fatalf("a listener on port 0 got %d, which FreePort had handed out", p)
		}
	}
}

// occupied is a port another listener holds, answering HTTP 200 to every
// request and accepting connections: what a program started on it must
// not be mistaken for.
func occupied(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), ReadHeaderTimeout: time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// A program started on a port another process took says so
// (ErrPortTaken), rather than being taken for ready because the port
// answers (the other process does), and the starters then run it again on
// other ports: redis-server, the Dex runner, a process of StartOnFreePorts,
// and the service in this process.
func TestATakenPortIsNoticedAndAnotherTaken(t *testing.T) {
	t.Run("redis-server", func(t *testing.T) {
		port := occupied(t)
		if _, err := runRedis(t, port); !errors.Is(err, ErrPortTaken) {
			t.Fatalf("redis-server on a taken port: %v, want ErrPortTaken", err)
		}
		tries := 0
		var r *Redis
		OnFreePorts(t, "redis-server", 1, func(ports []int) (err error) {
			if tries++; tries == 1 {
				ports[0] = port
			}
			r, err = runRedis(t, ports[0])
			return err
		})
		if tries != 2 || r.Addr == fmt.Sprintf("127.0.0.1:%d", port) {
			t.Fatalf("%d attempts, redis at %s", tries, r.Addr)
		}
		if err := WaitTCP(r.Addr, time.Second); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("dex", func(t *testing.T) {
		port := occupied(t)
		d := NewDex(t, DexOptions{Port: port})
		if err := d.start(); !errors.Is(err, ErrPortTaken) {
			t.Fatalf("Dex on a taken port: %v, want ErrPortTaken", err)
		}
		d = StartDex(t, DexOptions{})
		if err := WaitHTTP(d.URL+"/.well-known/openid-configuration", time.Second); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("StartOnFreePorts", func(t *testing.T) {
		port := occupied(t)
		tries := 0
		got := StartOnFreePorts(t, "python3 http.server", "http-server.log", 1, func(ports []int) *exec.Cmd {
			if tries++; tries == 1 {
				ports[0] = port
			}
			return pythonHTTPServer(t, ports[0])
		}, func(ports []int) func() error {
			return HTTPReady(fmt.Sprintf("http://127.0.0.1:%d/", ports[0]))
		}, 20*time.Second)
		if tries != 2 || got[0] == port {
			t.Fatalf("%d attempts, on port %v", tries, got)
		}
	})
	t.Run("service", func(t *testing.T) {
		port := occupied(t)
		env := map[string]string{"OIDC_PROVIDER": "http://127.0.0.1:1/dex", "CLIENT_ID": "c", "CLIENT_SECRET": RandomSecret(),
			"SESSION_KEYS": RandomKey(), "SERVER_PORT": strconv.Itoa(port)}
		if _, err := startService(t, env, []int{FreePort(t), FreePort(t), FreePort(t), FreePort(t)}); !errors.Is(err, ErrPortTaken) {
			t.Fatalf("the service on a taken port: %v, want ErrPortTaken", err)
		}
		delete(env, "SERVER_PORT")
		svc := StartService(t, env)
		if err := WaitHTTP(svc.ProbeURL+"/healthz", time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

// pythonHTTPServer is Python's http.server on port.
func pythonHTTPServer(t *testing.T, port int) *exec.Cmd {
	t.Helper()
	bin, err := exec.LookPath("python3")
	Require(t, "python3", err)
	cmd := exec.Command(bin, "-m", "http.server", "--bind", "127.0.0.1", strconv.Itoa(port))
	cmd.Dir = t.TempDir()
	return cmd
}
