package kube

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Ports for the programs these tests run (kube-peer, the service, Dex),
// which must be told theirs before they listen (the gateway and the demo
// upstream listen on port 0 and print the address they got instead:
// Service.StartGateway). Between FreePort and the program's own listen
// another process may take the port ("bind: address already in use"), so
// FreePort takes ports below the kernel's ephemeral range, which the kernel
// never hands to a listener on port 0 or to an outgoing connection, never
// the same one twice in a test process; and the starters run a program
// again on other ports when one was taken all the same, by another test
// process choosing it at the same moment (errPortTaken). As test/peer does
// for the product's module.

var (
	portMu     sync.Mutex
	portsGiven = map[int]bool{}
	portRange  = sync.OnceValues(freePortRange)
)

// freePortRange: from 16384 up to the ephemeral range, or above it,
// whichever is larger; 0, 0 when neither leaves 2,000 ports.
func freePortRange() (lo, hi int) {
	elo, ehi := 32768, 60999
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
// program that is given its number and listens later: outside the kernel's
// ephemeral range, and never one this process handed out before.
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
	for {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
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

// errPortTaken: a program could not listen on a port it was given.
var errPortTaken = errors.New("a port was taken before the program listened")

// portTaken reports whether a program's output says a port was in use.
func portTaken(output string) bool {
	return strings.Contains(strings.ToLower(output), "address already in use")
}

// retryPorts calls start (which takes its ports from FreePort) again while
// it fails with errPortTaken, at most 5 times.
func retryPorts(t testing.TB, what string, start func() error) error {
	t.Helper()
	for attempt := 1; ; attempt++ {
		err := start()
		if !errors.Is(err, errPortTaken) || attempt == 5 {
			return err
		}
		t.Logf("%s: %v; starting it again on other ports", what, err)
	}
}
