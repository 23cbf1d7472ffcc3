package main

import (
	"fmt"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/oidc-authservice/oidc-authservice/test/loadbench/results"
)

// path is one kind of check request, sent alike to every system.
type path struct {
	key, title, note string
	systems          []*system
	method, target   string
	fixed            []string // header lines besides Host
	header           string   // the header whose value cycles ("" for none)
	values           func(s *system) []string
	want             func(s *system) func(i int) *expect
	// firstSight: each run sends every value once, to a freshly started
	// service, so every answer is a first sight.
	firstSight bool
	prepare    func() error
	targets    func(*results.PathResult) []results.Target
	ref        []int // results.PathResult.Ref
	// grpcMsg and grpcWant are the CheckRequest of the path's gRPC systems
	// and how their answers are checked.
	grpcMsg  func() []byte
	grpcWant func(s *system) func(*authv3.CheckResponse) error
}

// The headers Envoy's ext_authz filter passes to the check of a browser's
// navigation, of a script's API call and of a machine client (the
// allowed_headers of deploy/overlays/istio-envoyfilter), besides Host and
// the credential.
var (
	navigation = []string{"Content-Length: 0", "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
		"Sec-Fetch-Mode: navigate", "Sec-Fetch-Site: same-origin", "X-Forwarded-Proto: http",
		"X-Request-Id: 6c3f1a52-0d1e-4b7a-9f57-2a8e5c0b9d41"}
	xhr = []string{"Content-Length: 0", "Accept: application/json, text/plain, */*", "X-Requested-With: XMLHttpRequest",
		"Sec-Fetch-Mode: cors", "Sec-Fetch-Site: same-origin", "X-Forwarded-Proto: http",
		"X-Request-Id: 0b8d2f7e-5c41-4e09-a3d6-91f2c7e4b5a0"}
	machineClient = []string{"Content-Length: 0", "Accept: application/json", "X-Forwarded-Proto: http",
		"X-Request-Id: 9e4a7c21-3b5d-4f8e-8a10-c6d2e9f0b731"}
)

const foreignCookie = "_ga=GA1.1.1"

func (e *environment) systems(withCompare bool) []*system {
	out := []*system{{server: e.svc}}
	if e.baseline != nil {
		out = append(out, &system{server: e.baseline})
	}
	if withCompare && e.o2p != nil {
		out = append(out, &system{server: e.o2p})
	}
	return append(out, &system{server: e.bare})
}

func one(v string) []string { return []string{v} }

func same(x *expect) func(int) *expect { return func(int) *expect { return x } }

var ok200 = &expect{status: 200}

func (e *environment) paths() map[string]*path {
	session := &path{key: "session", title: "Authenticated check: the session cookie of a real Dex login, among other cookies",
		note:    "GET /notebook/kubeflow-user-example-com/nb/lab with the headers Envoy passes for a navigation. The service answers 200 with kubeflow-userid, kubeflow-groups and the upstream's Cookie header without its own cookie; oauth2-proxy 200 with X-Auth-Request-* and Authorization.",
		systems: e.systems(true), method: "GET", target: "/notebook/kubeflow-user-example-com/nb/lab", fixed: navigation, header: "Cookie",
		values: func(s *system) []string {
			if s.kind == kindOAuth2Proxy {
				return one(foreignCookie + "; " + e.o2Cookie)
			}
			return one(foreignCookie + "; " + e.cookie)
		},
		want: func(s *system) func(int) *expect {
			switch s.kind {
			case kindService:
				return same(&expect{status: 200, headers: []wantHeader{{name: "kubeflow-userid", value: dexUser},
					{name: "kubeflow-groups", value: dexGroups}, {name: "cookie", value: foreignCookie}}})
			case kindOAuth2Proxy:
				return same(&expect{status: 200, headers: []wantHeader{{name: "x-auth-request-email", value: dexUser},
					{name: "authorization", value: "Bearer ", prefix: true}}})
			}
			return same(&expect{status: 200, headers: []wantHeader{{name: "kubeflow-userid", value: dexUser}}})
		},
		targets: func(r *results.PathResult) []results.Target {
			return []results.Target{r.RatioTarget("throughput ≥ 0.95× bare", 0.95), r.P99Target("p99 ≤ 1.2× bare", 1.2),
				r.CPUTarget("CPU per check ≤ bare + 3 µs", 3)}
		},
	}
	login := &path{key: "login", title: "Unauthenticated navigation: a new login (302 to Dex with a new login state)",
		note:    "GET /jupyter/ without a session, as a browser navigates. The service answers 302 to /dex/auth with PKCE, state and nonce, and a sealed login-state cookie; oauth2-proxy with Kubeflow's skip_provider_button = false answers 403 with its sign-in page.",
		systems: e.systems(true), method: "GET", target: "/jupyter/", fixed: navigation,
		want: func(s *system) func(int) *expect {
			switch s.kind {
			case kindService:
				return same(&expect{status: 302, headers: []wantHeader{{name: "location", value: "/dex/auth?", prefix: true},
					{name: "set-cookie", value: "authservice_state_", prefix: true}}})
			case kindOAuth2Proxy:
				return same(&expect{status: 403, headers: []wantHeader{{name: "content-type", value: "text/html", prefix: true}}})
			}
			return same(ok200)
		},
		targets: func(r *results.PathResult) []results.Target {
			return []results.Target{r.RatioTarget("throughput ≥ 0.8× bare", 0.8)}
		},
	}
	api := &path{key: "api", title: "Unauthenticated API call (XHR): 401",
		note:    "GET /api/workgroup/env-info without a session, as the dashboard's script calls it. The service answers 401 JSON with WWW-Authenticate; oauth2-proxy (api_routes) 401.",
		systems: e.systems(true), method: "GET", target: "/api/workgroup/env-info", fixed: xhr,
		want: func(s *system) func(int) *expect {
			switch s.kind {
			case kindService:
				return same(&expect{status: 401, headers: []wantHeader{{name: "www-authenticate", value: `Bearer realm="oidc-authservice"`}}})
			case kindOAuth2Proxy:
				return same(&expect{status: 401})
			}
			return same(ok200)
		},
		targets: func(r *results.PathResult) []results.Target {
			return []results.Target{r.RatioTarget("throughput ≥ 0.9× bare", 0.9)}
		},
	}
	sessionValues := sync.OnceValue(func() []string {
		v := make([]string, len(e.sealed()))
		for i, s := range e.sealed() {
			v[i] = foreignCookie + "; authservice_session=" + s
		}
		return v
	})
	sessionWant := sync.OnceValue(func() []expect {
		want := make([]expect, len(e.sealed()))
		for i := range want {
			want[i] = expect{status: 200, headers: []wantHeader{{name: "kubeflow-userid", value: fmt.Sprintf("user%d@example.com", i)}}}
		}
		return want
	})
	sessions := &path{key: "sessions", title: fmt.Sprintf("Many users: %d distinct valid sessions, round-robin", e.o.users),
		note:    "Each request carries the next of the sessions (sealed with the service's key, as a login seals them), so with more sessions than the verified-session cache holds most checks open their cookie (HMAC, AES, JSON).",
		systems: e.systems(false), method: "GET", target: "/notebook/kubeflow-user-example-com/nb/lab", fixed: navigation, header: "Cookie",
		values: func(*system) []string { return sessionValues() },
		want: func(s *system) func(int) *expect {
			if s.kind != kindService {
				return same(ok200)
			}
			want := sessionWant()
			return func(i int) *expect { return &want[i] }
		},
		targets: func(r *results.PathResult) []results.Target {
			return []results.Target{r.RatioTarget("throughput ≥ 0.8× bare", 0.8), r.RSSTarget("peak RSS ≤ 96 MiB", 96)}
		},
	}
	bearers := sync.OnceValue(func() []string {
		v := make([]string, len(e.jwts()))
		for i, t := range e.jwts() {
			v[i] = "Bearer " + t
		}
		return v
	})
	bearerWant := sync.OnceValue(func() []expect {
		want := make([]expect, len(e.jwts()))
		for i := range want {
			want[i] = expect{status: 200, headers: []wantHeader{{name: "kubeflow-userid", value: tokenSubject(i)}}}
		}
		return want
	})
	tokenValues := func(*system) []string { return bearers() }
	tokenWant := func(s *system) func(int) *expect {
		switch s.kind {
		case kindService:
			want := bearerWant()
			return func(i int) *expect { return &want[i] }
		case kindOAuth2Proxy:
			return same(&expect{status: 200, headers: []wantHeader{{name: "x-auth-request-user"}}})
		}
		return same(ok200)
	}
	tokens := &path{key: "tokens", title: fmt.Sprintf("Bearer JWTs: %d distinct tokens, each verified before (cached)", e.o.tokens),
		note:    "GET /pipeline/apis/v2beta1/runs with Authorization: Bearer, RS256 tokens of an issuer trusted through AUTHENTICATION_CONFIG_FILE (oauth2-proxy: EXTRA_JWT_ISSUERS), round-robin.",
		systems: e.systems(true), method: "GET", target: "/pipeline/apis/v2beta1/runs", fixed: machineClient, header: "Authorization",
		values: tokenValues, want: tokenWant,
		targets: func(r *results.PathResult) []results.Target {
			return []results.Target{r.RatioTarget("throughput ≥ 0.9× bare", 0.9)}
		},
	}
	tokens.prepare = func() error { // every token seen once before the rounds
		for _, s := range tokens.systems {
			if s.kind != kindBare {
				run := tokens.driveN(s, e.o.conns, e.o.tokens)
				if run.Errors > 0 {
					return fmt.Errorf("%s: %d wrong answers while verifying the tokens first: %s", s.name, run.Errors, run.FirstError)
				}
			}
		}
		return nil
	}
	first := &path{key: "tokens-first", title: fmt.Sprintf("Bearer JWTs: first sight (%d distinct tokens, each sent once to a fresh service)", e.o.tokens),
		note:    "Every check verifies its token: parse, RS256 signature, claims, mappings, then the cache. The CPU per check minus bare's is what a first sight costs over an HTTP answer under load: the verification itself (BenchmarkVerify, judged against the issue's 70 µs below) plus the garbage collection of the ~21 KB it allocates and the cost of sharing two cores with the generator.",
		systems: e.systems(true), method: "GET", target: "/pipeline/apis/v2beta1/runs", fixed: machineClient, header: "Authorization",
		values: tokenValues, want: tokenWant, firstSight: true,
		targets: func(r *results.PathResult) []results.Target { return nil },
	}
	h2c := &path{key: "h2c", title: "Authenticated check over HTTP/1.1 and over HTTP/2 cleartext (h2load)",
		note:   "The session path driven by h2load: HTTP/1.1 with 32 connections, h2c (prior knowledge, as Envoy speaks to an http2 cluster) with 4 connections of 8 concurrent streams. Answers are checked by status only (h2load counts them).",
		method: "GET", target: "/notebook/kubeflow-user-example-com/nb/lab", fixed: navigation, header: "Cookie",
		values: func(*system) []string { return one(foreignCookie + "; " + e.cookie) },
	}
	// Each system against bare in the same protocol; h2c against HTTP/1.1.
	h2c.systems = []*system{{server: e.svc, proto: "h1"}, {server: e.bare, proto: "h1"}, {server: e.svc, proto: "h2c"}, {server: e.bare, proto: "h2c"}}
	h2c.ref = []int{1, -1, 3, 1}
	h2c.targets = func(r *results.PathResult) []results.Target { return nil }
	grpcSession := &path{key: "grpc", title: "Authenticated check over gRPC: Envoy's Authorization/Check",
		note: fmt.Sprintf("The session path as Envoy's ext_authz filter asks it over gRPC (envoyExtAuthzGrpc): the CheckRequest of the navigation, every request header in it "+
			"(the pseudo-headers and those the gateway adds), %d calls in flight on %d HTTP/2 connections, each with Envoy's grpc-timeout. The service answers OK with "+
			"kubeflow-userid, kubeflow-groups, the upstream's Cookie header and headers_to_remove, and dynamic metadata; the bare server is a grpc-go "+
			"Authorization server answering OK with the two identity headers.", e.o.conns, grpcConns),
		method: "GET", target: "/notebook/kubeflow-user-example-com/nb/lab"}
	grpcSession.systems = []*system{{server: e.svc, proto: "grpc"}, {server: e.bare, proto: "grpc"}}
	grpcSession.grpcMsg = sync.OnceValue(func() []byte {
		return envoyCheckRequest("GET", grpcSession.target, "kubeflow.example.com", navigation, map[string]string{"cookie": foreignCookie + "; " + e.cookie})
	})
	grpcSession.grpcWant = func(s *system) func(*authv3.CheckResponse) error {
		if s.kind == kindService {
			return okWith(map[string]string{"kubeflow-userid": dexUser, "kubeflow-groups": dexGroups, "cookie": foreignCookie})
		}
		return okWith(map[string]string{"kubeflow-userid": dexUser})
	}
	grpcSession.targets = func(r *results.PathResult) []results.Target {
		return []results.Target{r.RatioTarget("throughput ≥ 0.9× bare", 0.9), r.CPUTarget("CPU per check ≤ bare + 3 µs", 3)}
	}
	m := map[string]*path{}
	for _, p := range []*path{session, login, api, sessions, tokens, first, h2c, grpcSession} {
		m[p.key] = p
	}
	return m
}

// drive measures one run of p against s.
func (p *path) drive(s *system, conns int, d time.Duration) results.Run {
	if s.proto == "grpc" {
		return p.grpcDrive(s, conns, d)
	}
	if s.proto != "" {
		return p.h2load(s, conns, d)
	}
	if p.firstSight {
		return p.driveN(s, conns, len(p.values(s)))
	}
	return p.measure(s, func() outcome { return p.load(s, conns, d, 0).run() })
}

// driveN sends n requests (each value once when n = len(values)).
func (p *path) driveN(s *system, conns, n int) results.Run {
	return p.measure(s, func() outcome { return p.load(s, conns, 0, n).run() })
}

func (p *path) load(s *system, conns int, d time.Duration, total int) *load {
	var values []string
	if p.values != nil {
		values = p.values(s)
	}
	want := same(ok200)
	if p.want != nil {
		want = p.want(s)
	}
	return &load{addr: s.addr, method: p.method, path: p.target, host: "kubeflow.example.com", fixed: p.fixed,
		header: p.header, values: values, want: want, conns: conns, dur: d, total: total}
}

// measure wraps a run with the server's CPU and memory.
func (p *path) measure(s *system, f func() outcome) results.Run {
	c0 := s.p.cpu()
	o := f()
	cpu := s.p.cpu() - c0
	rss, peak := s.p.memory()
	return results.Run{Requests: o.requests, Errors: o.errors, FirstError: o.firstErr, RPS: o.rps(), P50: o.pct(0.50), P99: o.pct(0.99),
		CPU: perCheck(cpu, o.requests), GenCPU: perCheck(o.genCPU, o.requests), RSS: rss, PeakRSS: peak}
}

func perCheck(d time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(n)
}
