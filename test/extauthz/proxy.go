// Package extauthz is an Envoy-faithful emulation of Istio's ingress
// gateway for tests and `make run`: there is no Envoy here.
//
// NewEnvoy builds the gateway from the Envoy configuration Istio's own
// translation produces for a layout (test/istio/testdata/envoy, make
// istio-config): the HTTP connection manager's header and path handling,
// the ext_authz, RBAC and jwt_authn filters in the order Istio puts them,
// and the route table (envoy.go). New builds the plain EnvoyFilter-style
// gateway from a Config: the same HCM and ext_authz filter, first in the
// chain, then the routes of Config (Kubeflow ≤ 1.9.0's EnvoyFilter as
// Istio < 1.19 applied it: INSERT_BEFORE without a sub-filter puts the
// filter first; Istio 1.19 and later match no filter named
// envoy.http_connection_manager, so that EnvoyFilter is inert there).
package extauthz

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"
)

// Config is the plain gateway: one ext_authz filter (its http_service
// settings) and the routes behind it. Matcher entries are lowercase header
// names; an entry ending in "*" matches by prefix.
type Config struct {
	CheckURL                       string
	PathPrefix                     string
	Timeout                        time.Duration // server_uri.timeout; default 200ms, as the filter's
	AllowedHeaders                 []string
	HeadersToAdd                   map[string]string
	AllowedUpstreamHeaders         []string
	AllowedUpstreamHeadersToAppend []string
	AllowedClientHeaders           []string
	AllowedClientHeadersOnSuccess  []string
	StatusOnError                  int // default 403
	FailureModeAllow               bool
	// Routes are tried in order; the first whose prefix matches wins.
	Routes []Route
	// Upstream serves requests no route matches ("/").
	Upstream string
	// HTTP2 speaks HTTP/2 with prior knowledge to the check server, as
	// Envoy does to a cluster whose Service port is named http2 or grpc.
	HTTP2 bool
}

// Route sends a path prefix to an upstream.
type Route struct {
	Prefix   string
	Upstream string
}

// KubeflowEnvoyFilter is the EnvoyFilter Kubeflow ≤ 1.9.0 inserted
// (common/oidc-client/oidc-authservice/base/envoy-filter.yaml), as the
// Istio of those releases (1.17, 1.22 before its name matching changed)
// applied it: ext_authz first in the gateway's chain.
func KubeflowEnvoyFilter(checkURL string) Config {
	return Config{
		CheckURL:               checkURL,
		Timeout:                10 * time.Second,
		AllowedHeaders:         []string{"authorization", "cookie", "x-auth-token"},
		AllowedUpstreamHeaders: []string{"kubeflow-userid"},
		StatusOnError:          http.StatusForbidden,
	}
}

// New builds the plain gateway.
func New(cfg Config) (*Envoy, error) {
	if cfg.CheckURL == "" {
		return nil, errors.New("extauthz: CheckURL required")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 200 * time.Millisecond
	}
	if cfg.StatusOnError == 0 {
		cfg.StatusOnError = http.StatusForbidden
	}
	g := &Envoy{
		opts:      EnvoyOptions{Now: time.Now, Addresses: map[string]string{}},
		clusters:  map[string]*clusterConfig{},
		upstreams: map[string]*httputil.ReverseProxy{},
		listener:  8080,
		// An Istio gateway's HTTP connection manager (test/istio's output).
		hcm: hcmConfig{NormalizePath: true, UseRemoteAddress: true, ServerName: "istio-envoy",
			ForwardClientCertDetails: "SANITIZE_SET", PathWithEscapedSlashesAction: string(keepUnchanged)},
		paths: pathSettings{normalize: true, escapedSlashes: keepUnchanged},
	}
	cluster := func(u string) string {
		name := "plain|" + u
		g.opts.Addresses[name] = u
		return name
	}
	ea := &extAuthzFilter{statusOnError: cfg.StatusOnError, failureModeAllow: cfg.FailureModeAllow}
	hc := &httpCheck{f: ea, g: g, cluster: cluster(cfg.CheckURL), pathPrefix: cfg.PathPrefix, timeout: cfg.Timeout,
		headersToAdd: http.Header{}, allowed: patterns(cfg.AllowedHeaders), upstream: patterns(cfg.AllowedUpstreamHeaders),
		upstreamAppend: patterns(cfg.AllowedUpstreamHeadersToAppend), clientDeny: patterns(cfg.AllowedClientHeaders),
		clientAllow: patterns(cfg.AllowedClientHeadersOnSuccess)}
	for k, v := range cfg.HeadersToAdd {
		hc.headersToAdd.Set(k, v)
	}
	ea.client, ea.cluster = hc, hc.cluster
	if cfg.HTTP2 {
		if err := CheckOverHTTP2()(&Envoy{filters: []httpFilter{ea}, clusters: g.clusters}); err != nil {
			return nil, err
		}
	}
	g.filters = []httpFilter{ea}
	vh := &virtualHost{Name: "*:80", Domains: []string{"*"}}
	for _, r := range append(cfg.Routes, Route{Prefix: "/", Upstream: cfg.Upstream}) {
		if r.Upstream == "" {
			continue
		}
		prefix := r.Prefix
		vh.Routes = append(vh.Routes, &route{Match: &routeMatch{Prefix: &prefix}, Route: &routeAction{Cluster: cluster(r.Upstream)}})
	}
	g.routes = &routeConfig{Name: "plain", VirtualHosts: []*virtualHost{vh}}
	return g, nil
}

// patterns turns the Config's matcher list into Envoy's ListStringMatcher.
func patterns(l []string) *listStringMatcher {
	if len(l) == 0 {
		return nil
	}
	m := &listStringMatcher{}
	for _, p := range l {
		p := strings.ToLower(p)
		if strings.HasSuffix(p, "*") {
			pre := strings.TrimSuffix(p, "*")
			m.Patterns = append(m.Patterns, &stringMatcher{Prefix: &pre})
		} else {
			m.Patterns = append(m.Patterns, &stringMatcher{Exact: &p})
		}
	}
	return m
}

// Serve runs the plain gateway on addr until the returned server is shut down.
func Serve(cfg Config, addr string) (*http.Server, net.Listener, error) {
	p, err := New(cfg)
	if err != nil {
		return nil, nil, err
	}
	return serve(p, addr)
}

func serve(h http.Handler, addr string) (*http.Server, net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("extauthz: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	return srv, l, nil
}
