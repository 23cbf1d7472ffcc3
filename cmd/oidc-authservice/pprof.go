//go:build pprof

package main

import (
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux, served only here
	"os"
)

// A binary built with -tags pprof (make bench-profile, never a release)
// serves the runtime profiles on OIDC_AUTHSERVICE_PPROF_ADDR, a loopback
// address, so the running service can be profiled under load. Release
// builds contain none of this.
func init() {
	addr := os.Getenv("OIDC_AUTHSERVICE_PPROF_ADDR")
	if addr == "" {
		return
	}
	if host, _, err := net.SplitHostPort(addr); err != nil || !net.ParseIP(host).IsLoopback() {
		panic("OIDC_AUTHSERVICE_PPROF_ADDR must be a loopback host:port")
	}
	go http.ListenAndServe(addr, nil)
}
