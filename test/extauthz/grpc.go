package extauthz

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The ext_authz filter with its gRPC service (grpc_service.envoy_grpc),
// as Envoy's ext_authz_grpc_impl.cc and the filter (ext_authz.cc) do it:
//
//   - the check is envoy.service.auth.v3.Authorization/Check on the
//     cluster (which must speak HTTP/2), with the envoy_grpc authority as
//     :authority and grpc_service.timeout (default 200 ms) as the call's
//     deadline (grpc-timeout);
//   - the CheckRequest's attributes.request.http has the client's method,
//     :path as the HCM rewrote it (with the query), the host (:authority),
//     the scheme, the protocol, and the request's headers with lowercase
//     names, the pseudo-headers :authority, :path, :method and :scheme
//     among them, the values of a repeated header joined with ","; with
//     allowed_headers (Istio's includeRequestHeadersInCheck) only the
//     headers it matches;
//   - a CheckResponse with status OK allows: ok_response.headers mutate
//     the request in order by their append_action (or, when the deprecated
//     append is set, true: appended to the value with ",", false:
//     overwritten), headers_to_remove are removed (never Host or a
//     pseudo-header), query_parameters_to_set/_to_remove rewrite the
//     query, response_headers_to_add mutate the answer the client gets,
//     dynamic_metadata goes to the stream's metadata under
//     envoy.filters.http.ext_authz;
//   - any other status with an error_response is an error (its status,
//     body and headers when it names a status, else status_on_error);
//     otherwise it denies: denied_response's status (403 when none), body
//     and headers go to the client as a local reply;
//   - a gRPC error, a deadline exceeded, a connection that fails: an
//     error, status_on_error (403 by default) with an empty body, or the
//     request goes on when failure_mode_allow is configured.

// grpcServiceConfig is grpc_service as protojson spells it.
type grpcServiceConfig struct {
	EnvoyGrpc *struct {
		ClusterName string `json:"clusterName"`
		Authority   string `json:"authority,omitempty"`
	} `json:"envoyGrpc"`
	Timeout string `json:"timeout,omitempty"`
}

// headerMutation is one HeaderValueOption of a gRPC answer.
type headerMutation struct {
	name, value string
	action      corev3.HeaderValueOption_HeaderAppendAction
	deprecated  bool // from the deprecated append field
}

type queryParam struct{ key, value string }

// grpcCheck is the gRPC service.
type grpcCheck struct {
	f         *extAuthzFilter
	g         *Envoy
	cluster   string
	authority string
	timeout   time.Duration
	allowed   *listStringMatcher
	ids       atomic.Uint64
}

func newGRPCCheck(f *extAuthzFilter, g *Envoy) (*grpcCheck, error) {
	var gs grpcServiceConfig
	if err := decodeStrict(f.cfg.GrpcService, &gs); err != nil {
		return nil, fmt.Errorf("ext_authz: grpc_service: %w", err)
	}
	if gs.EnvoyGrpc == nil || gs.EnvoyGrpc.ClusterName == "" {
		return nil, fmt.Errorf("ext_authz: only grpc_service.envoy_grpc with a cluster_name is emulated")
	}
	c := &grpcCheck{f: f, g: g, cluster: gs.EnvoyGrpc.ClusterName, authority: gs.EnvoyGrpc.Authority,
		timeout: 200 * time.Millisecond, allowed: f.cfg.AllowedHeaders}
	if c.authority == "" {
		c.authority = c.cluster
	}
	if gs.Timeout != "" {
		d, err := time.ParseDuration(gs.Timeout)
		if err != nil {
			return nil, fmt.Errorf("ext_authz: grpc_service.timeout %q", gs.Timeout)
		}
		c.timeout = d
	}
	if err := c.allowed.compile(); err != nil {
		return nil, fmt.Errorf("ext_authz: %w", err)
	}
	f.cluster = c.cluster
	return c, nil
}

// conn is the gateway's connection to a gRPC cluster, made once: Envoy
// multiplexes the checks as streams on few HTTP/2 connections.
func (g *Envoy) grpcConn(target, authority string) (*grpc.ClientConn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	key := target + " " + authority
	if c := g.grpcConns[key]; c != nil {
		return c, nil
	}
	host := strings.TrimPrefix(strings.TrimPrefix(target, "http://"), "https://")
	host = strings.TrimSuffix(host, "/")
	c, err := grpc.NewClient("passthrough:///"+host, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority))
	if err != nil {
		return nil, err
	}
	g.grpcConns[key] = c
	return c, nil
}

// Close closes the gateway's connections to gRPC clusters.
func (g *Envoy) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, c := range g.grpcConns {
		c.Close()
		delete(g.grpcConns, k)
	}
}

// request is the CheckRequest Envoy builds for the stream.
func (c *grpcCheck) request(s *stream) *authv3.CheckRequest {
	headers := map[string]string{}
	add := func(name, value string) {
		if c.allowed != nil && len(c.allowed.Patterns) > 0 && !c.allowed.match(name) {
			return
		}
		if prev, ok := headers[name]; ok {
			headers[name] = prev + "," + value
			return
		}
		headers[name] = value
	}
	add(":authority", s.r.Host)
	add(":path", s.path)
	add(":method", s.r.Method)
	add(":scheme", "http")
	for name, vals := range s.r.Header {
		for _, v := range vals {
			add(strings.ToLower(name), v)
		}
	}
	size := s.r.ContentLength
	if size == 0 && s.r.Header.Get("Content-Length") == "" {
		size = -1
	}
	port := 0
	if _, p, err := net.SplitHostPort(s.r.RemoteAddr); err == nil {
		port, _ = strconv.Atoi(p)
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress(s.remoteIP, port)},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddress("127.0.0.1", s.g.listener)},
		Request: &authv3.AttributeContext_Request{Time: timestamppb.Now(), Http: &authv3.AttributeContext_HttpRequest{
			Id: strconv.FormatUint(c.ids.Add(1), 10), Method: s.r.Method, Path: s.path, Host: s.r.Host, Scheme: "http",
			Size: size, Protocol: s.r.Proto, Headers: headers}},
	}}
}

func socketAddress(ip string, port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}
}

func (c *grpcCheck) check(s *stream) checkResult {
	target, h2, err := c.g.clusterURL(c.cluster)
	if err != nil || !h2 {
		// Envoy's gRPC client needs an HTTP/2 cluster.
		return checkResult{kind: checkError}
	}
	conn, err := c.g.grpcConn(target, c.authority)
	if err != nil {
		return checkResult{kind: checkError}
	}
	ctx, cancel := context.WithTimeout(s.r.Context(), c.timeout)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, c.request(s))
	if err != nil {
		return checkResult{kind: checkError}
	}
	out := checkResult{metadata: resp.GetDynamicMetadata().AsMap()}
	//lint:ignore SA1019 Envoy still reads the deprecated field, and it wins over the outer one
	if md := resp.GetOkResponse().GetDynamicMetadata(); md != nil {
		out.metadata = md.AsMap()
	}
	switch {
	case codes.Code(resp.GetStatus().GetCode()) == codes.OK:
		out.kind = checkOK
		ok := resp.GetOkResponse()
		out.reqMut = mutations(ok.GetHeaders())
		out.respMut = mutations(ok.GetResponseHeadersToAdd())
		for _, h := range ok.GetHeadersToRemove() {
			if removable(h) {
				out.upstreamDel = append(out.upstreamDel, h)
			}
		}
		for _, q := range ok.GetQueryParametersToSet() {
			out.querySet = append(out.querySet, queryParam{q.GetKey(), q.GetValue()})
		}
		out.queryRemove = ok.GetQueryParametersToRemove()
	case resp.GetErrorResponse() != nil:
		e := resp.GetErrorResponse()
		out.kind = checkError
		if code := int(e.GetStatus().GetCode()); code > 0 {
			out.status, out.body = code, []byte(e.GetBody())
			out.headers = localReplyHeaders(out.body, mutations(e.GetHeaders()))
		}
	default:
		out.kind, out.status = checkDenied, http.StatusForbidden
		d := resp.GetDeniedResponse()
		if code := int(d.GetStatus().GetCode()); code > 0 {
			out.status = code
		}
		out.body = []byte(d.GetBody())
		out.headers = localReplyHeaders(out.body, mutations(d.GetHeaders()))
	}
	return out
}

// localReplyHeaders are the headers of Envoy's local reply with a body
// (text/plain) after a gRPC answer's mutations.
func localReplyHeaders(body []byte, muts []headerMutation) http.Header {
	h := http.Header{}
	if len(body) > 0 {
		h.Set("Content-Type", "text/plain")
	}
	applyMutations(h, muts)
	return h
}

func mutations(opts []*corev3.HeaderValueOption) []headerMutation {
	var out []headerMutation
	for _, o := range opts {
		m := headerMutation{name: o.GetHeader().GetKey(), value: o.GetHeader().GetValue(), action: o.GetAppendAction()}
		//lint:ignore SA1019 Envoy still reads the deprecated append, which takes precedence over append_action
		if a := o.GetAppend(); a != nil {
			m.deprecated = true
			m.action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			if a.GetValue() {
				m.action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			}
		}
		out = append(out, m)
	}
	return out
}

// removable is Envoy's HeaderUtility::isRemovableHeader: never a
// pseudo-header or Host.
func removable(name string) bool {
	return name != "" && !strings.HasPrefix(name, ":") && !strings.EqualFold(name, "host")
}

// applyMutations applies a gRPC answer's header mutations in order, as
// the filter does with Envoy's header map: APPEND_IF_EXISTS_OR_ADD adds a
// line (with the deprecated append: joins the value to the existing one
// with ","), ADD_IF_ABSENT adds only when absent, OVERWRITE_IF_EXISTS_OR_ADD
// sets, OVERWRITE_IF_EXISTS sets only when present.
func applyMutations(h http.Header, muts []headerMutation) {
	for _, m := range muts {
		_, present := h[http.CanonicalHeaderKey(m.name)]
		switch m.action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			if m.deprecated && present {
				k := http.CanonicalHeaderKey(m.name)
				h[k][0] += "," + m.value
				continue
			}
			h.Add(m.name, m.value)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !present {
				h.Add(m.name, m.value)
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if present {
				h.Set(m.name, m.value)
			}
		default: // OVERWRITE_IF_EXISTS_OR_ADD, and an unknown action as Envoy reads it
			h.Set(m.name, m.value)
		}
	}
}

// rewriteQuery applies query_parameters_to_set and _to_remove to a path,
// as the filter does (keys compared as sent, values not re-encoded; a set
// key replaces every occurrence by one, at the first's place, or is
// appended).
func rewriteQuery(path string, set []queryParam, remove []string) string {
	if len(set) == 0 && len(remove) == 0 {
		return path
	}
	base, query, _ := strings.Cut(path, "?")
	type pair struct{ k, v string }
	var pairs []pair
	for _, p := range strings.Split(query, "&") {
		if p == "" {
			continue
		}
		k, v, _ := strings.Cut(p, "=")
		pairs = append(pairs, pair{k, v})
	}
	for _, s := range set {
		replaced := false
		kept := pairs[:0]
		for _, p := range pairs {
			if p.k == s.key {
				if replaced {
					continue
				}
				p.v, replaced = s.value, true
			}
			kept = append(kept, p)
		}
		pairs = kept
		if !replaced {
			pairs = append(pairs, pair{s.key, s.value})
		}
	}
	for _, r := range remove {
		kept := pairs[:0]
		for _, p := range pairs {
			if p.k != r {
				kept = append(kept, p)
			}
		}
		pairs = kept
	}
	if len(pairs) == 0 {
		return base
	}
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p.k + "=" + p.v
	}
	return base + "?" + strings.Join(parts, "&")
}

// mutatingWriter applies response_headers_to_add to the answer the client
// gets (the filter's encodeHeaders), whatever produced it.
type mutatingWriter struct {
	http.ResponseWriter
	muts  []headerMutation
	wrote bool
}

func (w *mutatingWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		applyMutations(w.ResponseWriter.Header(), w.muts)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *mutatingWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *mutatingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if !w.wrote {
			w.WriteHeader(http.StatusOK)
		}
		f.Flush()
	}
}

// GRPCTimeout is the variation of a layout whose gRPC ext_authz filters
// wait d for the check (grpc_service.timeout).
func GRPCTimeout(d time.Duration) Edit {
	return func(g *Envoy) error {
		n := 0
		for _, f := range g.filters {
			if ea, ok := f.(*extAuthzFilter); ok {
				if c, ok := ea.client.(*grpcCheck); ok {
					c.timeout = d
					n++
				}
			}
		}
		if n == 0 {
			return fmt.Errorf("GRPCTimeout: the layout has no gRPC ext_authz filter")
		}
		return nil
	}
}
