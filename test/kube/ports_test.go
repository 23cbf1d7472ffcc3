package kube

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FreePort's ports are ones the kernel never picks by itself (outside
// net.ipv4.ip_local_port_range), never the same twice: a port taken from
// the kernel's range and released, as FreePort did, could be handed on to
// any listener on port 0 or outgoing connection before kube-apiserver, the
// service or Dex listened on it (TestTokenReviewWithoutRBACAndWithTheAPIServerDown:
// "bind: address already in use").
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

// The demo upstream and the gateway listen on a port the kernel picks and
// say which: nothing else can hold it.
func TestGatewayListensWherePrinted(t *testing.T) {
	u := startProgram(t, productBinary(t, "demo-upstream"), "-listen", "127.0.0.1:0")
	if !strings.HasPrefix(u, "http://127.0.0.1:") || strings.HasSuffix(u, ":0") {
		t.Fatalf("demo-upstream printed %q", u)
	}
	if err := waitHTTP(u+"/", 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
}
