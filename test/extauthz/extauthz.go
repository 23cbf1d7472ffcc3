package extauthz

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The ext_authz filter (envoy.extensions.filters.http.ext_authz.v3.ExtAuthz)
// with its HTTP service (CONTRACT.md §1, Envoy's ext_authz_http_impl.cc):
//
//   - with filter_enabled_metadata, the filter runs only when the dynamic
//     metadata matches (Istio's CUSTOM action: the shadow RBAC filter before
//     it matched a policy of this provider);
//   - the check request has the client's method, path_prefix + :path as the
//     HCM rewrote it (with the query), no body (Content-Length: 0), Host, and
//     of the client's headers Authorization and those the allowed_headers
//     matchers name (ExtAuthz.allowed_headers, or the deprecated
//     authorization_request.allowed_headers), plus headers_to_add; it goes
//     to the cluster of server_uri, with its timeout;
//   - 200 allows: answer headers matching allowed_upstream_headers are set
//     on the request, allowed_upstream_headers_to_append appended, those of
//     x-envoy-auth-headers-to-remove removed (never Host or pseudo-headers),
//     allowed_client_headers_on_success go to the client with the
//     upstream's answer;
//   - any other status below 500 denies: its status, body and headers go to
//     the client (all but Host when allowed_client_headers is empty, else
//     those plus Location, WWW-Authenticate, Content-Length);
//   - a 5xx, a reset or a timeout is an error: status_on_error (403 by
//     default) with an empty body, or the request goes on with
//     failure_mode_allow.
//
// The check is a checkClient: the HTTP service here, the gRPC service
// (grpc_service) in grpc.go; the filter's handling of the result does not
// depend on the transport.

// extAuthzConfig is the filter's configuration as protojson spells it.
type extAuthzConfig struct {
	HTTPService *struct {
		ServerURI *struct {
			URI     string `json:"uri"`
			Cluster string `json:"cluster"`
			Timeout string `json:"timeout"`
		} `json:"serverUri"`
		PathPrefix           string `json:"pathPrefix,omitempty"`
		AuthorizationRequest *struct {
			AllowedHeaders *listStringMatcher `json:"allowedHeaders,omitempty"`
			HeadersToAdd   []*struct {
				Key   string `json:"key"`
				Value string `json:"value"`
			} `json:"headersToAdd,omitempty"`
		} `json:"authorizationRequest,omitempty"`
		AuthorizationResponse *struct {
			AllowedUpstreamHeaders         *listStringMatcher `json:"allowedUpstreamHeaders,omitempty"`
			AllowedUpstreamHeadersToAppend *listStringMatcher `json:"allowedUpstreamHeadersToAppend,omitempty"`
			AllowedClientHeaders           *listStringMatcher `json:"allowedClientHeaders,omitempty"`
			AllowedClientHeadersOnSuccess  *listStringMatcher `json:"allowedClientHeadersOnSuccess,omitempty"`
		} `json:"authorizationResponse,omitempty"`
	} `json:"httpService,omitempty"`
	GrpcService           json.RawMessage    `json:"grpcService,omitempty"`
	TransportAPIVersion   string             `json:"transportApiVersion,omitempty"`
	AllowedHeaders        *listStringMatcher `json:"allowedHeaders,omitempty"`
	FilterEnabledMetadata *metadataMatcher   `json:"filterEnabledMetadata,omitempty"`
	FailureModeAllow      bool               `json:"failureModeAllow,omitempty"`
	StatusOnError         *struct {
		Code int `json:"code"`
	} `json:"statusOnError,omitempty"`
	StatPrefix string `json:"statPrefix,omitempty"`
}

// checkResult is the authorization server's answer as the filter reads it.
type checkResult struct {
	kind          checkKind
	status        int
	headers       http.Header // on deny: to the client
	body          []byte
	upstreamSet   http.Header // on allow
	upstreamAdd   http.Header
	upstreamDel   []string
	clientOnAllow http.Header
	// The gRPC answer's (grpc.go): request and response header mutations
	// in order, query parameter changes, dynamic metadata.
	reqMut, respMut []headerMutation
	querySet        []queryParam
	queryRemove     []string
	metadata        map[string]any
}

type checkKind int

const (
	checkOK checkKind = iota
	checkDenied
	checkError
)

// checkClient asks the authorization server about a request.
type checkClient interface {
	check(s *stream) checkResult
}

type extAuthzFilter struct {
	cfg              extAuthzConfig
	client           checkClient
	cluster          string
	statusOnError    int
	failureModeAllow bool
}

func newExtAuthzFilter(raw json.RawMessage, g *Envoy) (*extAuthzFilter, error) {
	f := &extAuthzFilter{statusOnError: http.StatusForbidden}
	if err := decodeKnown(raw, &f.cfg, "@type"); err != nil {
		return nil, fmt.Errorf("ext_authz: %w", err)
	}
	if f.cfg.StatusOnError != nil && f.cfg.StatusOnError.Code != 0 {
		f.statusOnError = f.cfg.StatusOnError.Code
	}
	f.failureModeAllow = f.cfg.FailureModeAllow
	if f.cfg.FilterEnabledMetadata != nil {
		if err := f.cfg.FilterEnabledMetadata.compile(); err != nil {
			return nil, fmt.Errorf("ext_authz: %w", err)
		}
	}
	switch {
	case f.cfg.HTTPService != nil:
		c, err := newHTTPCheck(f, g)
		if err != nil {
			return nil, err
		}
		f.client = c
	case f.cfg.GrpcService != nil:
		c, err := newGRPCCheck(f, g)
		if err != nil {
			return nil, err
		}
		f.client = c
	default:
		return nil, fmt.Errorf("ext_authz: neither http_service nor grpc_service")
	}
	return f, nil
}

func (f *extAuthzFilter) name() string { return "envoy.filters.http.ext_authz" }

func (f *extAuthzFilter) decodeHeaders(s *stream) bool {
	if m := f.cfg.FilterEnabledMetadata; m != nil && !m.match(s.metadata) {
		return true
	}
	res := f.client.check(s)
	if len(res.metadata) > 0 {
		s.setMetadata("envoy.filters.http.ext_authz", res.metadata)
	}
	switch res.kind {
	case checkError:
		if f.failureModeAllow {
			return true
		}
		if res.status == 0 {
			s.localReply(f.statusOnError, "", nil)
			return false
		}
		fallthrough // a gRPC error_response with its status
	case checkDenied:
		for k, vs := range res.headers {
			s.w.Header()[k] = vs
		}
		s.w.Header().Set("Server", s.g.serverName())
		s.w.Header().Set("Content-Length", strconv.Itoa(len(res.body)))
		s.w.WriteHeader(res.status)
		s.w.Write(res.body)
		s.answered = true
		return false
	}
	for k, vs := range res.upstreamSet {
		s.r.Header[k] = vs
	}
	for k, vs := range res.upstreamAdd {
		s.r.Header[k] = append(s.r.Header[k], vs...)
	}
	for _, h := range res.upstreamDel {
		s.r.Header.Del(h)
	}
	applyMutations(s.r.Header, res.reqMut)
	for k, vs := range res.clientOnAllow {
		s.responseHeaders[k] = append(s.responseHeaders[k], vs...)
	}
	if len(res.respMut) > 0 {
		// The filter's encodeHeaders: on whatever answer the client gets
		// after it (the upstream's, or a later filter's local reply).
		s.w = &mutatingWriter{ResponseWriter: s.w, muts: res.respMut}
	}
	s.path = rewriteQuery(s.path, res.querySet, res.queryRemove)
	return true
}

// httpCheck is the HTTP service.
type httpCheck struct {
	f              *extAuthzFilter
	g              *Envoy
	cluster        string
	pathPrefix     string
	timeout        time.Duration
	allowed        *listStringMatcher
	headersToAdd   http.Header
	upstream       *listStringMatcher
	upstreamAppend *listStringMatcher
	clientDeny     *listStringMatcher
	clientAllow    *listStringMatcher
}

func newHTTPCheck(f *extAuthzFilter, g *Envoy) (*httpCheck, error) {
	hs := f.cfg.HTTPService
	if hs.ServerURI == nil || hs.ServerURI.Cluster == "" {
		return nil, fmt.Errorf("ext_authz: http_service without server_uri.cluster")
	}
	c := &httpCheck{f: f, g: g, cluster: hs.ServerURI.Cluster, pathPrefix: hs.PathPrefix, headersToAdd: http.Header{},
		allowed: f.cfg.AllowedHeaders}
	f.cluster = c.cluster
	d, err := time.ParseDuration(hs.ServerURI.Timeout)
	if err != nil {
		return nil, fmt.Errorf("ext_authz: server_uri.timeout %q", hs.ServerURI.Timeout)
	}
	c.timeout = d
	if ar := hs.AuthorizationRequest; ar != nil {
		if c.allowed == nil {
			c.allowed = ar.AllowedHeaders
		}
		for _, h := range ar.HeadersToAdd {
			c.headersToAdd.Set(h.Key, h.Value)
		}
	}
	if ar := hs.AuthorizationResponse; ar != nil {
		c.upstream, c.upstreamAppend = ar.AllowedUpstreamHeaders, ar.AllowedUpstreamHeadersToAppend
		c.clientDeny, c.clientAllow = ar.AllowedClientHeaders, ar.AllowedClientHeadersOnSuccess
	}
	for _, m := range []*listStringMatcher{c.allowed, c.upstream, c.upstreamAppend, c.clientDeny, c.clientAllow} {
		if err := m.compile(); err != nil {
			return nil, fmt.Errorf("ext_authz: %w", err)
		}
	}
	return c, nil
}

// alwaysToClient are the headers a deny passes besides allowed_client_headers.
var alwaysToClient = map[string]bool{"location": true, "www-authenticate": true, "content-length": true}

func (c *httpCheck) check(s *stream) checkResult {
	target, h2, err := c.g.clusterURL(c.cluster)
	if err != nil {
		return checkResult{kind: checkError}
	}
	ctx, cancel := context.WithTimeout(s.r.Context(), c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, s.r.Method, strings.TrimSuffix(target, "/")+c.pathPrefix+s.path, http.NoBody)
	if err != nil {
		return checkResult{kind: checkError}
	}
	req.Host = s.r.Host
	req.ContentLength = 0
	req.Header.Set("Content-Length", "0")
	for name, vals := range s.r.Header {
		lower := strings.ToLower(name)
		if lower == "authorization" || c.allowed.match(lower) {
			req.Header[name] = vals
		}
	}
	for k, v := range c.headersToAdd {
		req.Header[k] = v
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if h2 {
		t := &http.Transport{Protocols: new(http.Protocols)}
		t.Protocols.SetUnencryptedHTTP2(true)
		client.Transport = t
	}
	resp, err := client.Do(req)
	if err != nil {
		return checkResult{kind: checkError}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode >= 500 {
		return checkResult{kind: checkError}
	}
	if resp.StatusCode != http.StatusOK {
		out := checkResult{kind: checkDenied, status: resp.StatusCode, headers: http.Header{}, body: bytes.Clone(body)}
		for name, vals := range resp.Header {
			lower := strings.ToLower(name)
			if lower == "content-length" || lower == "host" {
				continue
			}
			if c.clientDeny != nil && len(c.clientDeny.Patterns) > 0 && !c.clientDeny.match(lower) && !alwaysToClient[lower] {
				continue
			}
			out.headers[name] = append([]string(nil), vals...)
		}
		return out
	}
	out := checkResult{kind: checkOK, upstreamSet: http.Header{}, upstreamAdd: http.Header{}, clientOnAllow: http.Header{}}
	for name, vals := range resp.Header {
		lower := strings.ToLower(name)
		switch {
		case c.upstream.match(lower):
			out.upstreamSet[name] = append([]string(nil), vals...)
		case c.upstreamAppend.match(lower):
			out.upstreamAdd[name] = append([]string(nil), vals...)
		}
		if c.clientAllow.match(lower) {
			out.clientOnAllow[name] = append([]string(nil), vals...)
		}
	}
	for _, rm := range resp.Header.Values("X-Envoy-Auth-Headers-To-Remove") {
		for _, name := range strings.Split(rm, ",") {
			name = strings.TrimSpace(name)
			if name == "" || strings.EqualFold(name, "host") || strings.HasPrefix(name, ":") {
				continue
			}
			out.upstreamDel = append(out.upstreamDel, name)
		}
	}
	return out
}
