// Command loadbench measures the check server under load against a bare
// net/http server that answers 200 with the two identity headers, on
// loopback, with the same requests, alternating the servers run by run.
// With -compare it measures oauth2-proxy, configured as Kubeflow's
// manifests configure it, in the same rounds.
//
//	go run ./test/loadbench -bin bin/oidc-authservice -dex bin/dex-runner
//
// One table per path: requests per second, p99 latency, server CPU per
// check (user+system time of the process, from /proc, divided by the answers),
// and memory, each as the median of the rounds with its spread
// (lowest–highest), and the ratios to the bare server (medians of the
// per-round ratios: each round's runs are back to back). Every answer is
// read to its end and checked: status, identity headers, login redirect,
// so a server that answers fast but wrongly fails the run.
//
// The session of the authenticated path comes from one real login through
// Dex per system. The many-session and bearer-token paths use cookies
// sealed here with the service's configured key (as a login would seal
// them) and JWTs of an issuer served here and trusted through
// AUTHENTICATION_CONFIG_FILE: nothing in the product is bypassed.
//
// -json writes the results for cmd docgen, which renders
// docs/performance.md from them.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/loadbench/results"
)

func main() {
	bareAddr := flag.String("bare", "", "internal: serve the bare server on this address")
	bareH2C := flag.Bool("bare-h2c", false, "internal: the bare server also speaks HTTP/2 cleartext (prior knowledge)")
	barePprof := flag.String("bare-pprof", "", "internal: the bare server serves its profiles on this address")
	bareGRPC := flag.String("bare-grpc", "", "internal: the bare gRPC Authorization server's address")
	var o options
	flag.StringVar(&o.bin, "bin", "bin/oidc-authservice", "service binary")
	flag.StringVar(&o.dex, "dex", "bin/dex-runner", "Dex runner (test/dex)")
	flag.StringVar(&o.baseline, "baseline", "", "another build of the service (before a change): measure it in the same rounds")
	flag.StringVar(&o.compare, "compare", "", "oauth2-proxy binary: measure it in the same rounds (bench-compare)")
	flag.StringVar(&o.kubeflow, "kubeflow", "test/manifests/testdata/kubeflow/master/common/oauth2-proxy/base", "Kubeflow's oauth2-proxy base (its oauth2_proxy.cfg and kustomization.yaml)")
	flag.StringVar(&o.paths, "paths", "session,login,api,sessions,tokens,tokens-first,h2c,grpc", "paths to measure, comma-separated")
	flag.IntVar(&o.conns, "c", 32, "concurrent connections")
	flag.DurationVar(&o.dur, "d", 5*time.Second, "duration of each run")
	flag.IntVar(&o.rounds, "rounds", 5, "alternating rounds per path")
	flag.IntVar(&o.users, "users", 100000, "distinct sessions of the many-sessions path")
	flag.IntVar(&o.tokens, "tokens", 10000, "distinct bearer JWTs of the token path")
	flag.StringVar(&o.jsonOut, "json", "", "write the results to this file (for docgen)")
	flag.StringVar(&o.profile, "profile", "", "directory: before the rounds of each path, take CPU and allocation profiles of the service under load (needs a binary built with -tags pprof)")
	flag.StringVar(&o.logs, "logs", "", "directory for the servers' logs (default: a temporary one)")
	flag.Func("svc-env", "NAME=value added to the service's environment (repeatable), for experiments", func(v string) error {
		o.svcEnv = append(o.svcEnv, v)
		return nil
	})
	flag.Parse()
	if *bareAddr != "" {
		serveBare(*bareAddr, *bareH2C, *barePprof, *bareGRPC)
		return
	}
	if err := o.run(); err != nil {
		log.Fatal(err)
	}
}

type options struct {
	bin, baseline, dex, compare, kubeflow, paths, jsonOut, profile, logs string
	conns, rounds, users, tokens                                         int
	dur                                                                  time.Duration
	svcEnv                                                               []string
}

func (o *options) run() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if o.logs == "" {
		if o.logs, err = os.MkdirTemp("", "loadbench-"); err != nil {
			return err
		}
		defer os.RemoveAll(o.logs)
	} else if err := os.MkdirAll(o.logs, 0o755); err != nil {
		return err
	}
	env, err := newEnvironment(o, self)
	if err != nil {
		return err
	}
	defer env.close()
	rep := newReport(o)
	fmt.Printf("loadbench: %s; %d connections, %d alternating rounds of %s per path\n", rep.Machine, o.conns, o.rounds, o.dur)
	for _, key := range strings.Split(o.paths, ",") {
		p, ok := env.paths()[key]
		if !ok {
			return fmt.Errorf("unknown path %q", key)
		}
		if _, err := exec.LookPath("h2load"); err != nil && key == "h2c" {
			fmt.Printf("\n== h2c: skipped: h2load is not installed (Debian: apt-get install nghttp2-client)\n")
			continue
		}
		res, err := env.measure(p)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		printPath(os.Stdout, res)
		rep.Paths = append(rep.Paths, res)
	}
	failed := false
	for _, p := range rep.Paths {
		for _, s := range p.Systems {
			for _, r := range s.Runs {
				failed = failed || r.Errors > 0
			}
		}
	}
	if o.jsonOut != "" {
		if err := os.MkdirAll(filepath.Dir(o.jsonOut), 0o755); err != nil {
			return err
		}
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Printf("\nresults written to %s\n", o.jsonOut)
	}
	if failed {
		return fmt.Errorf("some answers were wrong (see the errors above): the figures do not count")
	}
	return nil
}

// measure runs a path: a warm-up of each system, then rounds that alternate
// the systems, each run measured on both sides.
func (e *environment) measure(p *path) (results.PathResult, error) {
	res := results.PathResult{Key: p.key, Title: p.title, Note: p.note, Ref: p.ref}
	systems := p.systems
	if err := e.restart(systems); err != nil {
		return res, err
	}
	for _, s := range systems {
		res.Systems = append(res.Systems, results.SystemResult{Name: s.label(p)})
	}
	if p.prepare != nil {
		if err := p.prepare(); err != nil {
			return res, err
		}
	}
	for _, s := range systems {
		if p.firstSight && s.kind != kindBare {
			continue // a warm-up would make the first sight a second one
		}
		p.drive(s, e.o.conns, time.Second)
	}
	if e.o.profile != "" && !p.firstSight {
		if err := e.profile(p); err != nil {
			return res, err
		}
	}
	for r := 0; r < e.o.rounds; r++ {
		for i, s := range systems {
			run := p.drive(s, e.o.conns, e.o.dur)
			res.Systems[i].Runs = append(res.Systems[i].Runs, run)
			if run.Errors > 0 {
				fmt.Printf("  %s round %d: %d of %d answers wrong; first: %s\n", s.name, r+1, run.Errors, run.Requests, run.FirstError)
			}
		}
		if p.firstSight {
			// Each round sees the tokens for the first time: new service.
			if err := e.restart(systems); err != nil {
				return res, err
			}
		}
	}
	res.Targets = p.targets(&res)
	return res, nil
}
