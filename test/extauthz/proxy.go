// Package extauthz is an Envoy-faithful emulation of the HTTP ext_authz
// filter (envoy.extensions.filters.http.ext_authz.v3, http_service) in front
// of a reverse proxy, for tests and `make run`: there is no Envoy here. It
// follows ../shared/CONTRACT.md §1:
//
//   - the check request has the client's method, PathPrefix + the original
//     path with query, an empty body (Content-Length: 0), Host, Content-Length
//     and Authorization always, and other client headers only when they
//     match AllowedHeaders;
//   - only 200 allows: check response headers matching AllowedUpstreamHeaders
//     are set on the upstream request (overwriting), those matching
//     AllowedUpstreamHeadersToAppend appended, then x-envoy-auth-headers-to-remove
//     strips request headers (never Host); AllowedClientHeadersOnSuccess go
//     back to the client;
//   - any other status denies: status, body and headers go to the client (all
//     headers when AllowedClientHeaders is empty, else only those plus
//     Location, WWW-Authenticate and Content-Length), several Set-Cookie kept;
//   - a 5xx, a connection error or a timeout is an error: StatusOnError
//     (default 403) with an empty body, unless FailureModeAllow.
package extauthz

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config mirrors the filter's settings. Matcher entries are lowercase header
// names; an entry ending in "*" matches by prefix.
type Config struct {
	CheckURL                       string
	PathPrefix                     string
	Timeout                        time.Duration // default 200ms, as the filter's
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
	// Upstream serves requests no route matches.
	Upstream string
	// SkipCheck exempts requests from the check (Istio CUSTOM policy rules).
	SkipCheck func(*http.Request) bool
	// HTTP2 speaks HTTP/2 with prior knowledge to the check server, as
	// Envoy does to a cluster whose Service port is named http2 or grpc.
	HTTP2 bool
}

// Route sends a path prefix to an upstream.
type Route struct {
	Prefix    string
	Upstream  string
	SkipCheck bool
}

// KubeflowEnvoyFilter is the EnvoyFilter Kubeflow ≤ 1.9.0 inserted.
func KubeflowEnvoyFilter(checkURL string) Config {
	return Config{
		CheckURL:               checkURL,
		Timeout:                10 * time.Second,
		AllowedHeaders:         []string{"authorization", "cookie", "x-auth-token"},
		AllowedUpstreamHeaders: []string{"kubeflow-userid"},
		StatusOnError:          http.StatusForbidden,
	}
}

// KubeflowEnvoyFilterCorrected is the EnvoyFilter with what the service
// needs: the groups header upstream, set-cookie to the client on allow (for
// refreshed sessions), the headers that tell a navigation from an API call
// and a cross-site request from a same-origin one, and the upstream's
// Cookie header rewritten without the service's cookies.
func KubeflowEnvoyFilterCorrected(checkURL string) Config {
	c := KubeflowEnvoyFilter(checkURL)
	c.AllowedHeaders = append(c.AllowedHeaders, "x-request-id", "x-requested-with", "accept", "x-forwarded-proto", "sec-fetch-mode", "sec-fetch-site")
	c.AllowedUpstreamHeaders = append(c.AllowedUpstreamHeaders, "kubeflow-groups", "authorization", "cookie")
	c.AllowedClientHeadersOnSuccess = []string{"set-cookie"}
	return c
}

// IstioProvider is Istio's envoyExtAuthzHttp extension provider as Kubeflow
// 1.9.1+ configures it (includeRequestHeadersInCheck, headersToUpstreamOnAllow
// with the Kubeflow identity headers added, headersToDownstreamOnDeny).
func IstioProvider(checkURL string) Config {
	return Config{
		CheckURL:       checkURL,
		Timeout:        10 * time.Second,
		AllowedHeaders: []string{"authorization", "cookie"},
		AllowedUpstreamHeaders: []string{"authorization", "path", "x-auth-request-email", "x-auth-request-groups",
			"x-auth-request-user", "kubeflow-userid", "kubeflow-groups"},
		AllowedClientHeaders: []string{"content-type", "set-cookie"},
		StatusOnError:        http.StatusForbidden,
	}
}

// Proxy is the gateway: an http.Handler.
type Proxy struct {
	cfg       Config
	client    *http.Client
	upstreams map[string]*httputil.ReverseProxy
}

// New validates cfg and builds the proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.CheckURL == "" {
		return nil, errors.New("extauthz: CheckURL required")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 200 * time.Millisecond
	}
	if cfg.StatusOnError == 0 {
		cfg.StatusOnError = http.StatusForbidden
	}
	p := &Proxy{
		cfg: cfg,
		client: &http.Client{
			Timeout:       cfg.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		upstreams: map[string]*httputil.ReverseProxy{},
	}
	if cfg.HTTP2 {
		t := &http.Transport{Protocols: new(http.Protocols)}
		t.Protocols.SetUnencryptedHTTP2(true) // and nothing else: no fallback
		p.client.Transport = t
	}
	targets := []string{cfg.Upstream}
	for _, r := range cfg.Routes {
		targets = append(targets, r.Upstream)
	}
	for _, t := range targets {
		if t == "" {
			continue
		}
		u, err := url.Parse(t)
		if err != nil {
			return nil, fmt.Errorf("extauthz: upstream %q: %w", t, err)
		}
		rp := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(u)
				pr.Out.Host = pr.In.Host // Envoy keeps the authority
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				http.Error(w, "upstream connect error", http.StatusServiceUnavailable)
			},
		}
		p.upstreams[t] = rp
	}
	return p, nil
}

func (p *Proxy) route(r *http.Request) (string, bool) {
	for _, rt := range p.cfg.Routes {
		if strings.HasPrefix(r.URL.Path, rt.Prefix) {
			return rt.Upstream, rt.SkipCheck
		}
	}
	return p.cfg.Upstream, false
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	upstream, skip := p.route(r)
	if !skip && (p.cfg.SkipCheck == nil || !p.cfg.SkipCheck(r)) {
		if !p.check(w, r) {
			return
		}
	}
	rp := p.upstreams[upstream]
	if rp == nil {
		http.Error(w, "no route", http.StatusNotFound)
		return
	}
	rp.ServeHTTP(w, r)
}

// check asks the auth service; it reports whether the request may go on.
func (p *Proxy) check(w http.ResponseWriter, r *http.Request) bool {
	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, strings.TrimSuffix(p.cfg.CheckURL, "/")+p.cfg.PathPrefix+r.URL.RequestURI(), http.NoBody)
	if err != nil {
		return p.failed(w, r)
	}
	req.Host = r.Host
	req.ContentLength = 0
	req.Header.Set("Content-Length", "0")
	if a := r.Header.Values("Authorization"); len(a) > 0 {
		req.Header["Authorization"] = a
	}
	for name, vals := range r.Header {
		if matches(p.cfg.AllowedHeaders, name) {
			req.Header[name] = vals
		}
	}
	for k, v := range p.cfg.HeadersToAdd {
		req.Header.Set(k, v)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return p.failed(w, r)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode >= 500 {
		return p.failed(w, r)
	}
	if resp.StatusCode != http.StatusOK {
		p.deny(w, resp, body)
		return false
	}
	for name, vals := range resp.Header {
		switch {
		case matches(p.cfg.AllowedUpstreamHeaders, name):
			r.Header[name] = append([]string(nil), vals...)
		case matches(p.cfg.AllowedUpstreamHeadersToAppend, name):
			r.Header[name] = append(r.Header[name], vals...)
		}
		if matches(p.cfg.AllowedClientHeadersOnSuccess, name) {
			for _, v := range vals {
				w.Header().Add(name, v)
			}
		}
	}
	for _, rm := range resp.Header.Values("X-Envoy-Auth-Headers-To-Remove") {
		for _, name := range strings.Split(rm, ",") {
			name = strings.TrimSpace(name)
			if name == "" || strings.EqualFold(name, "host") || strings.HasPrefix(name, ":") {
				continue
			}
			r.Header.Del(name)
		}
	}
	return true
}

func (p *Proxy) deny(w http.ResponseWriter, resp *http.Response, body []byte) {
	for name, vals := range resp.Header {
		if len(p.cfg.AllowedClientHeaders) > 0 && !matches(p.cfg.AllowedClientHeaders, name) &&
			!matches([]string{"location", "www-authenticate", "content-length"}, name) {
			continue
		}
		if strings.EqualFold(name, "Content-Length") {
			continue
		}
		w.Header()[name] = append([]string(nil), vals...)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, bytes.NewReader(body))
}

func (p *Proxy) failed(w http.ResponseWriter, r *http.Request) bool {
	if p.cfg.FailureModeAllow {
		return true
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(p.cfg.StatusOnError)
	return false
}

func matches(list []string, name string) bool {
	n := strings.ToLower(name)
	for _, m := range list {
		if strings.HasSuffix(m, "*") {
			if strings.HasPrefix(n, strings.TrimSuffix(m, "*")) {
				return true
			}
		} else if n == m {
			return true
		}
	}
	return false
}

// Serve runs the proxy on addr until the returned server is shut down.
func Serve(cfg Config, addr string) (*http.Server, net.Listener, error) {
	p, err := New(cfg)
	if err != nil {
		return nil, nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	return srv, l, nil
}
