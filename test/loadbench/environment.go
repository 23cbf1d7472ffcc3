package main

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // the bare server's profiles, served only with -bare-pprof
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// The Kubeflow example's Dex client, user and session key.
const (
	clientID     = "kubeflow-oidc-authservice"
	clientSecret = "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok"
	dexUser      = "user@example.com"
	dexPassword  = "12341234"
	dexGroups    = "team-a,team-b"
)

// sessionKey is the services' SESSION_KEYS: random for each run (the
// service refuses keys published anywhere, this repository included).
var sessionKey = func() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}()

type kind int

const (
	kindService kind = iota
	kindOAuth2Proxy
	kindBare
)

// server is a process the environment starts and restarts.
type server struct {
	name     string
	kind     kind
	addr     string
	grpcAddr string // the gRPC check (the service's GRPC_PORT, the bare gRPC server)
	start    func() (*proc, error)
	p        *proc
}

// system is what a path measures: a server spoken to in one protocol.
type system struct {
	*server
	proto string // "" (HTTP/1.1, the Go generator), "h1" or "h2c" (h2load), "grpc" (the gRPC generator)
}

func (s *system) label(p *path) string {
	name := s.name
	if s.kind == kindBare && s.proto == "grpc" {
		return "bare grpc-go"
	}
	if s.proto != "" {
		name += " " + map[string]string{"h1": "HTTP/1.1", "h2c": "h2c", "grpc": "gRPC"}[s.proto]
	}
	return name
}

// environment is Dex, the systems, and the credentials the paths send.
type environment struct {
	o        *options
	dex      *proc
	dexURL   string // http://127.0.0.1:<port>, where /dex is served
	svc      *server
	baseline *server // nil without -baseline
	o2p      *server // nil without -compare
	bare     *server
	cookie   string          // the service's session cookie from the real login
	o2Cookie string          // oauth2-proxy's
	sealed   func() []string // sealed sessions of -users distinct users
	jwts     func() []string // -tokens bearer JWTs
	issuer   string          // of the bearer JWTs
}

func newEnvironment(o *options, self string) (*environment, error) {
	e := &environment{o: o}
	ok := false
	defer func() {
		if !ok {
			e.close()
		}
	}()
	dexPort := freePort()
	e.dexURL = "http://" + hostPort(dexPort)
	var err error
	e.dex, err = start("dex", o.dex, []string{"-addr", hostPort(dexPort), "-issuer", e.dexURL + "/dex",
		"-client-id", clientID, "-client-secret", clientSecret, "-user", dexUser, "-password", dexPassword, "-groups", dexGroups,
		"-redirect-uri", "/authservice/oidc/callback", "-redirect-uri", "/oauth2/callback"},
		nil, hostPort(dexPort), e.dexURL+"/dex/.well-known/openid-configuration", o.logs)
	if err != nil {
		return nil, fmt.Errorf("%w (build it with make bin/dex-runner)", err)
	}
	var sign func(sub string) string
	e.issuer, sign, err = tokenIssuer()
	if err != nil {
		return nil, err
	}
	authnFile := filepath.Join(o.logs, "authentication.yaml")
	if err := os.WriteFile(authnFile, []byte(fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1beta1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: %s
    audiences: [bench]
  claimMappings:
    username:
      claim: sub
      prefix: ""
`, e.issuer)), 0o644); err != nil {
		return nil, err
	}
	e.svc = e.serviceServer("oidc-authservice", o.bin, authnFile)
	if o.baseline != "" {
		e.baseline = e.serviceServer("oidc-authservice (baseline)", o.baseline, authnFile)
	}
	barePort, bareGRPC := freePort(), freePort()
	e.bare = &server{name: "bare net/http", kind: kindBare, addr: hostPort(barePort), grpcAddr: hostPort(bareGRPC), start: func() (*proc, error) {
		args, env, pprof := []string{"-bare", hostPort(barePort), "-bare-h2c", "-bare-grpc", hostPort(bareGRPC)}, []string(nil), ""
		if o.profile != "" {
			pprof = hostPort(freePort())
			args, env = append(args, "-bare-pprof", pprof), []string{"GODEBUG=gctrace=1"}
		}
		p, err := start("bare", self, args, env, hostPort(barePort), "http://"+hostPort(barePort)+"/", o.logs)
		if p != nil {
			p.pprof = pprof
		}
		return p, err
	}}
	if o.compare != "" {
		if e.o2p, err = e.oauth2Proxy(); err != nil {
			return nil, err
		}
	}
	// One real login per system, through Dex.
	if err := e.restart([]*system{{server: e.svc}}); err != nil {
		return nil, err
	}
	if e.cookie, err = login("oidc-authservice", "http://"+e.svc.addr+"/jupyter/", e.dexURL, dexUser, dexPassword, "authservice_session"); err != nil {
		return nil, err
	}
	if e.o2p != nil {
		if err := e.restart([]*system{{server: e.o2p}}); err != nil {
			return nil, err
		}
		if e.o2Cookie, err = login("oauth2-proxy", "http://"+e.o2p.addr+"/oauth2/start?rd=%2Fjupyter%2F", e.dexURL, dexUser, dexPassword, "oauth2_proxy_kubeflow"); err != nil {
			return nil, err
		}
	}
	// Sessions sealed as a login seals them, and bearer JWTs, made when a
	// path first needs them.
	e.sealed = sync.OnceValue(func() []string {
		secret, err := config.ParseSecret(sessionKey)
		if err != nil {
			panic(err)
		}
		codec := session.NewCodec([][]byte{secret}, 24*time.Hour, time.Now)
		now := time.Now()
		return parallel(o.users, func(i int) string {
			v, err := codec.SealSession("authservice_session", &session.Session{ID: fmt.Sprintf("bench-%d", i), Subject: fmt.Sprint(i),
				User: fmt.Sprintf("user%d@example.com", i), Groups: []string{"team-a", "team-b"},
				Created: now.Unix(), Expires: now.Add(24 * time.Hour).Unix()})
			if err != nil {
				panic(err)
			}
			return v
		})
	})
	e.jwts = sync.OnceValue(func() []string {
		return parallel(o.tokens, func(i int) string { return sign(tokenSubject(i)) })
	})
	ok = true
	return e, nil
}

// parallel makes n values with f on every core.
func parallel(n int, f func(i int) string) []string {
	out := make([]string, n)
	var wg sync.WaitGroup
	var next atomic.Int64
	for range runtime.NumCPU() {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				out[i] = f(i)
			}
		})
	}
	wg.Wait()
	return out
}

func tokenSubject(i int) string {
	return fmt.Sprintf("system:serviceaccount:kubeflow-user-example-com:job-%d", i)
}

// serviceServer runs the service as Kubeflow's manifests configure it
// (deploy/base/params.env), against the Dex here.
func (e *environment) serviceServer(name, bin, authnFile string) *server {
	port, probe, web, grpcPort := freePort(), freePort(), freePort(), freePort()
	env := []string{
		"OIDC_PROVIDER=" + e.dexURL + "/dex", "OIDC_AUTH_URL=/dex/auth", "OIDC_SCOPES=profile email groups",
		"AUTHSERVICE_URL_PREFIX=/authservice/", "SKIP_AUTH_URLS=/dex", "AFTER_LOGOUT_URL=/",
		"USERID_HEADER=kubeflow-userid", "USERID_PREFIX=", "USERID_CLAIM=email", "GROUPS_CLAIM=groups",
		"REDIRECT_URL=/authservice/oidc/callback",
		"CLIENT_ID=" + clientID, "CLIENT_SECRET=" + clientSecret, "SESSION_KEYS=" + sessionKey,
		"AUTHENTICATION_CONFIG_FILE=" + authnFile,
		"SERVER_HOSTNAME=127.0.0.1", "SERVER_PORT=" + strconv.Itoa(port),
		"READINESS_PROBE_PORT=" + strconv.Itoa(probe), "WEB_SERVER_PORT=" + strconv.Itoa(web), "GRPC_PORT=" + strconv.Itoa(grpcPort),
		// deploy/base/deployment.yaml: GOMEMLIMIT from the container's limit.
		"GOMEMLIMIT=268435456",
	}
	env = append(env, e.o.svcEnv...)
	s := &server{name: name, kind: kindService, addr: hostPort(port), grpcAddr: hostPort(grpcPort)}
	s.start = func() (*proc, error) {
		env, pprof := env, ""
		if e.o.profile != "" {
			pprof = hostPort(freePort())
			env = append(env, "OIDC_AUTHSERVICE_PPROF_ADDR="+pprof, "GODEBUG=gctrace=1")
		}
		p, err := start("service", bin, nil, env, s.addr, fmt.Sprintf("http://127.0.0.1:%d/readyz", probe), e.o.logs)
		if p != nil {
			p.pprof = pprof
		}
		return p, err
	}
	return s
}

// oauth2Proxy runs oauth2-proxy with Kubeflow's oauth2_proxy.cfg and the
// environment of its Deployment, its Dex URLs pointed at the Dex here.
func (e *environment) oauth2Proxy() (*server, error) {
	cfg, err := os.ReadFile(filepath.Join(e.o.kubeflow, "oauth2_proxy.cfg"))
	if err != nil {
		return nil, err
	}
	kust, err := os.ReadFile(filepath.Join(e.o.kubeflow, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	literal := func(key string) string {
		m := regexp.MustCompile(`(?m)^\s*- ` + key + `=(.*)$`).FindStringSubmatch(string(kust))
		if m == nil {
			return ""
		}
		return strings.TrimSpace(m[1])
	}
	text := strings.ReplaceAll(string(cfg), "http://dex.auth.svc.cluster.local:5556/dex", e.dexURL+"/dex")
	logo := filepath.Join(e.o.kubeflow, "kubeflow-logo.svg")
	text = strings.ReplaceAll(text, "/custom-theme/kubeflow-logo.svg", logo)
	file := filepath.Join(e.o.logs, "oauth2_proxy.cfg")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		return nil, err
	}
	port := freePort()
	env := []string{
		"OAUTH2_PROXY_CLIENT_ID=" + literal("client-id"), "OAUTH2_PROXY_CLIENT_SECRET=" + literal("client-secret"),
		"OAUTH2_PROXY_COOKIE_SECRET=" + literal("cookie-secret"), "OAUTH2_PROXY_COOKIE_SECURE=" + literal("FORCE_HTTPS"),
		"OAUTH2_PROXY_SSL_INSECURE_SKIP_VERIFY=" + literal("ALLOW_SELF_SIGNED_ISSUER"),
		"OAUTH2_PROXY_SKIP_JWT_BEARER_TOKENS=" + literal("ENABLE_M2M_TOKENS"),
		// Kubeflow's EXTRA_JWT_ISSUERS is empty; machine-to-machine tokens
		// are set up by adding their issuer (as its comment says).
		"OAUTH2_PROXY_EXTRA_JWT_ISSUERS=" + e.issuer + "=bench",
	}
	s := &server{name: "oauth2-proxy", kind: kindOAuth2Proxy, addr: hostPort(port)}
	s.start = func() (*proc, error) {
		return start("oauth2-proxy", e.o.compare, []string{"--http-address=" + hostPort(port), "--config=" + file}, env, s.addr,
			"http://"+hostPort(port)+"/ready", e.o.logs)
	}
	return s, nil
}

// restart (re)starts the servers of systems, so each path starts with
// empty caches and its own peak memory.
func (e *environment) restart(systems []*system) error {
	seen := map[*server]bool{}
	for _, s := range systems {
		if seen[s.server] {
			continue
		}
		seen[s.server] = true
		s.p.stop()
		p, err := s.start()
		if err != nil {
			return err
		}
		s.p = p
	}
	return nil
}

func (e *environment) close() {
	for _, s := range []*server{e.svc, e.baseline, e.o2p, e.bare} {
		if s != nil {
			s.p.stop()
		}
	}
	e.dex.stop()
}

// tokenIssuer serves discovery and the JWKS of a fresh RS256 key (the
// algorithm of Kubernetes service-account tokens and of Dex) and returns its
// URL and a signer.
func tokenIssuer() (string, func(sub string) string, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	u := "http://" + l.Addr().String()
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/jwks" {
			json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &priv.PublicKey, KeyID: "bench", Algorithm: "RS256", Use: "sig"}}})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"issuer": u, "jwks_uri": u + "/jwks", "id_token_signing_alg_values_supported": []string{"RS256"}})
	}))
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: priv}, (&jose.SignerOptions{}).WithHeader("kid", "bench").WithType("JWT"))
	if err != nil {
		return "", nil, err
	}
	return u, func(sub string) string {
		now := time.Now()
		b, _ := json.Marshal(map[string]any{"iss": u, "aud": "bench", "sub": sub, "email": strings.ReplaceAll(sub, ":", ".") + "@bench.example.com",
			"email_verified": true, "iat": now.Unix(), "exp": now.Add(2 * time.Hour).Unix()})
		jws, err := signer.Sign(b)
		if err != nil {
			panic(err)
		}
		tok, _ := jws.CompactSerialize()
		return tok
	}, nil
}

// serveBare is the bare server: a net/http server (with a header timeout)
// whose handler answers 200 with the two identity headers, and with
// grpcAddr the bare gRPC Authorization server beside it.
func serveBare(addr string, h2c bool, pprof, grpcAddr string) {
	if pprof != "" {
		go http.ListenAndServe(pprof, nil) // net/http/pprof's handlers
	}
	if grpcAddr != "" {
		go serveBareGRPC(grpcAddr)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Kubeflow-Userid"] = []string{dexUser}
		w.Header()["Kubeflow-Groups"] = []string{dexGroups}
		w.WriteHeader(http.StatusOK)
	})
	s := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	if h2c {
		s.Protocols = new(http.Protocols)
		s.Protocols.SetHTTP1(true)
		s.Protocols.SetUnencryptedHTTP2(true)
	}
	fmt.Fprintln(os.Stderr, s.ListenAndServe())
	os.Exit(1)
}
