package peer

import (
	"net"
	"testing"
)

// TestStartServiceTakenPort: a port FreePort gave that someone else takes
// before the service listens on it (another test's peer on a busy machine)
// does not fail the test after a 10 s wait for /healthz: the service is
// started again on other ports.
func TestStartServiceTakenPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	calls := 0
	orig := servicePorts
	t.Cleanup(func() { servicePorts = orig })
	servicePorts = func(t testing.TB) [4]int {
		calls++
		p := orig(t)
		if calls == 1 {
			p[0] = taken
		}
		return p
	}
	svc := StartService(t, map[string]string{"OIDC_PROVIDER": "http://127.0.0.1:1", "CLIENT_ID": "c", "CLIENT_SECRET": "s",
		"SESSION_KEYS": SessionKey})
	if calls != 2 || svc.Settings.Servers.CheckPort == taken {
		t.Fatalf("%d starts, check port %d (taken: %d)", calls, svc.Settings.Servers.CheckPort, taken)
	}
}
