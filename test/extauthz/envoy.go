package extauthz

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// Envoy is the ingress gateway as Envoy runs the configuration istiod
// pushes to it: one listener's HTTP connection manager (its header and
// path handling), its HTTP filters in their order (ext_authz, RBAC,
// jwt_authn; the others are named in ignoredFilters with the reason), the
// route configuration it names, and the clusters the routes and filters
// send to, reached at the local addresses the test maps them to. The
// configuration is what test/istio generates with Istio's own translation
// (test/istio/testdata/envoy/<layout>.json, make istio-config).
//
// A request goes through, in Envoy's order:
//
//  1. the HCM: X-Forwarded-For gets the client's address appended,
//     X-Forwarded-Proto is set to the connection's scheme, X-Request-Id is
//     replaced, the client's x-envoy-* and X-Forwarded-Client-Cert headers
//     are removed (use_remote_address: the client is external); :path is
//     rewritten (normalize.go), a path it cannot rewrite is a 400;
//  2. the HTTP filters, each of which may answer instead (403 from RBAC,
//     401 from jwt_authn, the check's answer from ext_authz);
//  3. the router: the first route of the first virtual host whose domains
//     match the Host; none is a 404 (after the filters: an unrouted path is
//     checked first); the request goes to the route's cluster with the
//     route's prefix_rewrite, or a 503 when the cluster has no address.
type Envoy struct {
	opts      EnvoyOptions
	paths     pathSettings
	hcm       hcmConfig
	filters   []httpFilter
	routes    *routeConfig
	clusters  map[string]*clusterConfig
	listener  int // the listener's port, for RBAC's destination_port
	mu        sync.Mutex
	upstreams map[string]*httputil.ReverseProxy
	grpcConns map[string]*grpc.ClientConn
}

// EnvoyOptions configure an Envoy gateway.
type EnvoyOptions struct {
	// Layout names a generated configuration (LayoutFile), or File gives
	// its path.
	Layout, File string
	// Listener is the listener to serve (default "0.0.0.0_8080", the
	// gateway's port 80).
	Listener string
	// Addresses maps cluster addresses (host:port, as the cluster names
	// outbound|port||host them) to local base URLs (http://127.0.0.1:port),
	// as cluster DNS would resolve them.
	Addresses map[string]string
	// Default serves the clusters Addresses does not map (Kubeflow's
	// applications: a demo upstream); empty: those answer 503.
	Default string
	// Now is jwt_authn's clock (default time.Now).
	Now func() time.Time
	// Edits change the configuration before the gateway is built: a
	// variation a test names (StatusOnError, CheckOverHTTP2).
	Edits []Edit
}

// Edit changes a parsed configuration.
type Edit func(*Envoy) error

// LayoutFile is the path of a generated layout's configuration, found from
// the working directory up to the repository's root.
func LayoutFile(layout string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		f := filepath.Join(d, "test", "istio", "testdata", "envoy", layout+".json")
		if _, err := os.Stat(f); err == nil {
			return f, nil
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("no generated configuration for layout %q (test/istio/testdata/envoy; make istio-config)", layout)
		}
	}
}

// generated is the file test/istio writes.
type generated struct {
	Layout      string            `json:"layout"`
	Translation string            `json:"translation"`
	Istiod      string            `json:"istiod"`
	Proxy       string            `json:"proxy"`
	Listeners   []json.RawMessage `json:"listeners"`
	Routes      []json.RawMessage `json:"routes"`
	Clusters    []json.RawMessage `json:"clusters"`
}

type listenerConfig struct {
	Name    string `json:"name"`
	Address struct {
		SocketAddress struct {
			Address   string `json:"address"`
			PortValue int    `json:"portValue"`
		} `json:"socketAddress"`
	} `json:"address"`
	FilterChains []struct {
		FilterChainMatch json.RawMessage `json:"filterChainMatch,omitempty"`
		Filters          []struct {
			Name        string          `json:"name"`
			TypedConfig json.RawMessage `json:"typedConfig"`
		} `json:"filters"`
	} `json:"filterChains"`
}

// hcmConfig is the HTTP connection manager's configuration, the fields
// that change what a request becomes.
type hcmConfig struct {
	Type                         string   `json:"@type"`
	NormalizePath                bool     `json:"normalizePath,omitempty"`
	MergeSlashes                 bool     `json:"mergeSlashes,omitempty"`
	PathWithEscapedSlashesAction string   `json:"pathWithEscapedSlashesAction,omitempty"`
	UseRemoteAddress             bool     `json:"useRemoteAddress,omitempty"`
	XffNumTrustedHops            int      `json:"xffNumTrustedHops,omitempty"`
	SkipXffAppend                bool     `json:"skipXffAppend,omitempty"`
	PreserveExternalRequestID    bool     `json:"preserveExternalRequestId,omitempty"`
	ForwardClientCertDetails     string   `json:"forwardClientCertDetails,omitempty"`
	ServerName                   string   `json:"serverName,omitempty"`
	Rds                          *rdsRef  `json:"rds,omitempty"`
	HTTPFilters                  []*hfCfg `json:"httpFilters"`
}

type rdsRef struct {
	RouteConfigName string          `json:"routeConfigName"`
	ConfigSource    json.RawMessage `json:"configSource,omitempty"`
}

type hfCfg struct {
	Name        string          `json:"name"`
	TypedConfig json.RawMessage `json:"typedConfig"`
}

// hcmIgnored are the HCM fields that do not change what a request
// becomes: logs, stats, tracing, timeouts of idle streams, how the
// client certificate would be forwarded (no TLS here), WebSocket upgrades
// (none in the tests), 100-continue, the request id's format.
var hcmIgnored = []string{"accessLog", "statPrefix", "tracing", "streamIdleTimeout", "setCurrentClientCertDetails",
	"upgradeConfigs", "proxy100Continue", "requestIdExtension", "httpProtocolOptions", "commonHttpProtocolOptions",
	"http2ProtocolOptions", "delayedCloseTimeout", "drainTimeout", "generateRequestId"}

// httpFilter is one HTTP filter: decodeHeaders returns false when it
// answered the request itself.
type httpFilter interface {
	name() string
	decodeHeaders(s *stream) bool
}

// ignoredFilters are the filters Istio puts on the gateway that never
// change the request, the answer or the decision here, and why.
var ignoredFilters = map[string]string{
	"istio.metadata_exchange":       "peer metadata between sidecars (no mesh peers here)",
	"envoy.filters.http.grpc_stats": "statistics of gRPC calls",
	"istio.alpn":                    "ALPN offered to mTLS upstreams",
	"istio.stats":                   "Istio's request metrics",
	"envoy.filters.http.fault":      "fault injection; its configuration is checked to be empty",
	"envoy.filters.http.cors":       "CORS policies of routes; the routes are checked to have none",
}

// NewEnvoy builds the gateway from a generated configuration.
func NewEnvoy(o EnvoyOptions) (*Envoy, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Listener == "" {
		o.Listener = "0.0.0.0_8080"
	}
	file := o.File
	if file == "" {
		var err error
		if file, err = LayoutFile(o.Layout); err != nil {
			return nil, err
		}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var gen generated
	if err := json.Unmarshal(b, &gen); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	g := &Envoy{opts: o, clusters: map[string]*clusterConfig{}, upstreams: map[string]*httputil.ReverseProxy{},
		grpcConns: map[string]*grpc.ClientConn{}}
	for _, raw := range gen.Clusters {
		c, err := parseCluster(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		g.clusters[c.Name] = c
	}
	var hcmRaw json.RawMessage
	for _, raw := range gen.Listeners {
		var l listenerConfig
		if err := json.Unmarshal(raw, &l); err != nil {
			return nil, err
		}
		if l.Name != o.Listener {
			continue
		}
		g.listener = l.Address.SocketAddress.PortValue
		for _, fc := range l.FilterChains {
			if len(fc.FilterChainMatch) > 0 {
				return nil, fmt.Errorf("listener %s: filter chain matches are not emulated", l.Name)
			}
			for _, f := range fc.Filters {
				if f.Name != "envoy.filters.network.http_connection_manager" {
					return nil, fmt.Errorf("listener %s: network filter %s is not emulated", l.Name, f.Name)
				}
				hcmRaw = f.TypedConfig
			}
		}
	}
	if hcmRaw == nil {
		return nil, fmt.Errorf("%s: no listener %s with an HTTP connection manager", file, o.Listener)
	}
	if err := decodeKnown(hcmRaw, &g.hcm, hcmIgnored...); err != nil {
		return nil, fmt.Errorf("%s: HTTP connection manager: %w", file, err)
	}
	g.paths = pathSettings{normalize: g.hcm.NormalizePath, mergeSlashes: g.hcm.MergeSlashes,
		escapedSlashes: escapedSlashesAction(g.hcm.PathWithEscapedSlashesAction)}
	switch g.paths.escapedSlashes {
	case "", "IMPLEMENTATION_SPECIFIC_DEFAULT":
		g.paths.escapedSlashes = keepUnchanged
	case keepUnchanged, rejectRequest, unescapeAndForward:
	default:
		return nil, fmt.Errorf("path_with_escaped_slashes_action %s is not emulated", g.paths.escapedSlashes)
	}
	if g.hcm.XffNumTrustedHops != 0 || !g.hcm.UseRemoteAddress {
		return nil, fmt.Errorf("only use_remote_address with no trusted hops is emulated (an edge gateway)")
	}
	if g.hcm.Rds == nil {
		return nil, fmt.Errorf("%s: the HTTP connection manager names no route configuration", file)
	}
	for _, raw := range gen.Routes {
		rc, err := parseRouteConfig(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if rc.Name == g.hcm.Rds.RouteConfigName {
			g.routes = rc
		}
	}
	if g.routes == nil {
		return nil, fmt.Errorf("%s: no route configuration %s", file, g.hcm.Rds.RouteConfigName)
	}
	for _, f := range g.hcm.HTTPFilters {
		hf, err := g.newFilter(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if hf != nil {
			g.filters = append(g.filters, hf)
		}
	}
	for _, e := range o.Edits {
		if err := e(g); err != nil {
			return nil, err
		}
	}
	return g, nil
}

func (g *Envoy) newFilter(f *hfCfg) (httpFilter, error) {
	switch f.Name {
	case "envoy.filters.http.ext_authz":
		return newExtAuthzFilter(f.TypedConfig, g)
	case "envoy.filters.http.rbac":
		return newRBACFilter(f.TypedConfig)
	case "envoy.filters.http.jwt_authn":
		return newJWTAuthn(f.TypedConfig, g.opts.Now)
	case "envoy.filters.http.router":
		return nil, nil
	case "envoy.filters.http.fault", "envoy.filters.http.cors":
		var m map[string]json.RawMessage
		if err := json.Unmarshal(f.TypedConfig, &m); err != nil || len(m) != 1 {
			return nil, fmt.Errorf("filter %s with a configuration is not emulated", f.Name)
		}
		return nil, nil
	}
	if _, ok := ignoredFilters[f.Name]; ok {
		return nil, nil
	}
	return nil, fmt.Errorf("HTTP filter %s is not emulated", f.Name)
}

// decodeKnown decodes protojson into v, which must know every field but
// the ignored ones.
func decodeKnown(raw json.RawMessage, v any, ignored ...string) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	for _, k := range ignored {
		delete(m, k)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return decodeStrict(b, v)
}

// stream is one request going through the gateway.
type stream struct {
	g        *Envoy
	w        http.ResponseWriter
	r        *http.Request
	path     string // :path as the HCM rewrote it
	remoteIP string
	metadata map[string]map[string]any
	// responseHeaders go to the client with the upstream's answer
	// (ext_authz's allowed_client_headers_on_success).
	responseHeaders       http.Header
	removeQueryParamToken bool
	answered              bool
}

func (s *stream) view() headerView {
	return headerView{h: s.r.Header, host: s.r.Host, method: s.r.Method, path: s.path, scheme: "http"}
}

func (s *stream) setMetadata(filter string, fields map[string]any) {
	if s.metadata[filter] == nil {
		s.metadata[filter] = map[string]any{}
	}
	for k, v := range fields {
		s.metadata[filter][k] = v
	}
}

// localReply is Envoy's sendLocalReply: text/plain, the server header.
func (s *stream) localReply(code int, body string, h http.Header) {
	for k, vs := range h {
		s.w.Header()[k] = vs
	}
	s.w.Header().Set("Content-Type", "text/plain")
	s.w.Header().Set("Server", s.g.serverName())
	s.w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	s.w.WriteHeader(code)
	s.w.Write([]byte(body))
	s.answered = true
}

func (g *Envoy) serverName() string {
	if g.hcm.ServerName != "" {
		return g.hcm.ServerName
	}
	return "envoy"
}

func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// ServeHTTP runs a request through the HCM, the filters and the router.
func (g *Envoy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := &stream{g: g, w: w, r: r, metadata: map[string]map[string]any{}, responseHeaders: http.Header{}}
	s.remoteIP, _, _ = net.SplitHostPort(r.RemoteAddr)
	raw := r.RequestURI
	if u, err := url.Parse(raw); err == nil && u.IsAbs() {
		raw = u.RequestURI()
	}
	// The HCM's header handling for an edge proxy and an external client.
	for k := range r.Header {
		if strings.HasPrefix(strings.ToLower(k), "x-envoy-") {
			r.Header.Del(k)
		}
	}
	if g.hcm.ForwardClientCertDetails != "FORWARD_ONLY" && g.hcm.ForwardClientCertDetails != "APPEND_FORWARD" {
		r.Header.Del("X-Forwarded-Client-Cert")
	}
	if !g.hcm.SkipXffAppend {
		if xff := strings.Join(r.Header.Values("X-Forwarded-For"), ","); xff != "" {
			r.Header.Set("X-Forwarded-For", xff+","+s.remoteIP)
		} else {
			r.Header.Set("X-Forwarded-For", s.remoteIP)
		}
	}
	r.Header.Set("X-Envoy-External-Address", s.remoteIP)
	r.Header.Set("X-Forwarded-Proto", "http")
	if !g.hcm.PreserveExternalRequestID || r.Header.Get("X-Request-Id") == "" {
		r.Header.Set("X-Request-Id", newRequestID())
	}
	path, ok := g.paths.rewrite(raw)
	if !ok {
		s.localReply(http.StatusBadRequest, "Bad Request", nil)
		return
	}
	s.path = path
	for _, f := range g.filters {
		if !f.decodeHeaders(s) || s.answered {
			return
		}
	}
	g.route(s)
}

// route is the router filter.
func (g *Envoy) route(s *stream) {
	rt := g.routes.match(s)
	if rt == nil {
		s.localReply(http.StatusNotFound, "", nil)
		return
	}
	if rt.Route == nil {
		s.localReply(http.StatusNotFound, "", nil)
		return
	}
	path := s.path
	if rt.Route.PrefixRewrite != nil && rt.Match.Prefix != nil {
		path = *rt.Route.PrefixRewrite + strings.TrimPrefix(path, *rt.Match.Prefix)
	}
	if s.removeQueryParamToken {
		// jwt_authn would remove a token from the query; no layout takes
		// tokens from the query.
		s.localReply(http.StatusInternalServerError, "query tokens are not emulated", nil)
		return
	}
	target, h2, err := g.clusterURL(rt.Route.Cluster)
	if err != nil {
		s.localReply(http.StatusServiceUnavailable, "no healthy upstream", nil)
		return
	}
	u, err := url.ParseRequestURI(path)
	if err != nil {
		s.localReply(http.StatusBadRequest, "Bad Request", nil)
		return
	}
	s.r.URL.Path, s.r.URL.RawPath, s.r.URL.RawQuery = u.Path, u.RawPath, u.RawQuery
	for k, vs := range s.responseHeaders {
		for _, v := range vs {
			s.w.Header().Add(k, v)
		}
	}
	g.upstream(target, h2).ServeHTTP(s.w, s.r)
}

// clusterURL is where a cluster's endpoints are reached: outbound|port||host
// mapped through Addresses, else Default.
func (g *Envoy) clusterURL(name string) (string, bool, error) {
	c := g.clusters[name]
	h2 := c != nil && c.http2()
	parts := strings.Split(name, "|")
	if len(parts) == 4 && parts[0] == "outbound" {
		if base, ok := g.opts.Addresses[parts[3]+":"+parts[1]]; ok {
			return base, h2, nil
		}
	}
	if base, ok := g.opts.Addresses[name]; ok {
		return base, h2, nil
	}
	if g.opts.Default != "" {
		return g.opts.Default, h2, nil
	}
	return "", false, fmt.Errorf("cluster %s has no address", name)
}

func (g *Envoy) upstream(target string, h2 bool) *httputil.ReverseProxy {
	g.mu.Lock()
	defer g.mu.Unlock()
	key := fmt.Sprint(target, h2)
	if rp := g.upstreams[key]; rp != nil {
		return rp
	}
	u, _ := url.Parse(target)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = u.Scheme, u.Host
			pr.Out.Host = pr.In.Host // Envoy keeps the authority
			// ReverseProxy drops these with Rewrite; the HCM set them.
			for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"} {
				if v, ok := pr.In.Header[h]; ok {
					pr.Out.Header[h] = v
				}
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Set("Server", g.serverName())
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("upstream connect error or disconnect/reset before headers"))
		},
	}
	if h2 {
		t := &http.Transport{Protocols: new(http.Protocols)}
		t.Protocols.SetUnencryptedHTTP2(true)
		rp.Transport = t
	}
	g.upstreams[key] = rp
	return rp
}

// clusterConfig is the part of a cluster that changes how it is reached.
type clusterConfig struct {
	Name                          string                     `json:"name"`
	ConnectTimeout                string                     `json:"connectTimeout,omitempty"`
	TypedExtensionProtocolOptions map[string]json.RawMessage `json:"typedExtensionProtocolOptions,omitempty"`
}

func parseCluster(raw json.RawMessage) (*clusterConfig, error) {
	var c clusterConfig
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// http2 reports whether the cluster speaks HTTP/2 (a Service port named
// http2 or grpc): explicit_http_config.http2_protocol_options.
func (c *clusterConfig) http2() bool {
	raw := c.TypedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if raw == nil {
		return false
	}
	var o struct {
		ExplicitHTTPConfig *struct {
			HTTP2ProtocolOptions json.RawMessage `json:"http2ProtocolOptions"`
		} `json:"explicitHttpConfig"`
	}
	json.Unmarshal(raw, &o)
	return o.ExplicitHTTPConfig != nil && o.ExplicitHTTPConfig.HTTP2ProtocolOptions != nil
}

// CheckOverHTTP2 is the variation of a layout whose check cluster speaks
// HTTP/2 with prior knowledge, as Istio configures it for a Service port
// named http2 or grpc.
func CheckOverHTTP2() Edit {
	return func(g *Envoy) error {
		n := 0
		for _, f := range g.filters {
			if ea, ok := f.(*extAuthzFilter); ok {
				c := g.clusters[ea.cluster]
				if c == nil {
					c = &clusterConfig{Name: ea.cluster}
					g.clusters[ea.cluster] = c
				}
				c.TypedExtensionProtocolOptions = map[string]json.RawMessage{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": json.RawMessage(
					`{"explicitHttpConfig":{"http2ProtocolOptions":{}}}`)}
				n++
			}
		}
		if n == 0 {
			return fmt.Errorf("CheckOverHTTP2: the layout has no ext_authz filter")
		}
		return nil
	}
}

// StatusOnError is the variation of a layout whose ext_authz filters answer
// code when the check fails (a 5xx, a reset, a timeout).
func StatusOnError(code int) Edit {
	return func(g *Envoy) error {
		n := 0
		for _, f := range g.filters {
			if ea, ok := f.(*extAuthzFilter); ok {
				ea.statusOnError = code
				n++
			}
		}
		if n == 0 {
			return fmt.Errorf("StatusOnError: the layout has no ext_authz filter")
		}
		return nil
	}
}

// Filters names the gateway's emulated HTTP filters in their order.
func (g *Envoy) Filters() []string {
	var out []string
	for _, f := range g.filters {
		out = append(out, f.name())
	}
	return out
}

// ServeEnvoy runs the gateway on addr until the returned server is shut down.
func ServeEnvoy(o EnvoyOptions, addr string) (*http.Server, net.Listener, error) {
	g, err := NewEnvoy(o)
	if err != nil {
		return nil, nil, err
	}
	return serve(g, addr)
}
