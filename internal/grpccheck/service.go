package grpccheck

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.uber.org/zap"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/oidc-authservice/oidc-authservice/internal/check"
)

// MetadataNamespace is where Envoy puts the dynamic metadata of an answer:
// the ext_authz filter's name. An access log reads the user as
// %DYNAMIC_METADATA(envoy.filters.http.ext_authz:user_id)%.
const MetadataNamespace = "envoy.filters.http.ext_authz"

// Options are the limits the front shares with the HTTP check port.
type Options struct {
	// MaxHeaderBytes is the HTTP port's header limit: the request line and
	// header fields (name, value and 4 bytes each) beyond it are refused
	// (431), as the HTTP server refuses them.
	MaxHeaderBytes int
	// MaxHeaderFields bounds the header fields of one check (431 beyond).
	// Envoy's own default limit is 100.
	MaxHeaderFields int
	Logger          *zap.Logger
}

// Service answers envoy.service.auth.v3.Authorization/Check with the
// check's decision.
type Service struct {
	h      *check.Handler
	limits limits
	log    *zap.Logger

	inputs  sync.Pool // *input
	answers sync.Pool // *check.Answer

	// lower and splits memoize what every answer repeats: the lowercase
	// form of the header names the check writes, and its lists of headers
	// to remove. Both come from the check's own small vocabulary, never
	// from a client; the bound is a safeguard.
	lower, splits memo
}

// New builds the front of h.
func New(h *check.Handler, o Options) *Service {
	s := &Service{h: h, limits: limits{headerBytes: o.MaxHeaderBytes, fields: o.MaxHeaderFields}, log: o.Logger.Named("grpc")}
	s.inputs.New = func() any { return new(input) }
	s.answers.New = func() any { return new(check.Answer) }
	return s
}

// Register serves the Authorization service on g, which must be built
// with Codec.
func (s *Service) Register(g *grpc.Server) { g.RegisterService(&serviceDesc, s) }

// authorization is the handler type of serviceDesc.
type authorization interface {
	check(context.Context, *input) (*authv3.CheckResponse, error)
}

// serviceDesc is envoy.service.auth.v3.Authorization with a Check that
// reads the request into an input (Codec) rather than a CheckRequest.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: authv3.Authorization_ServiceDesc.ServiceName,
	HandlerType: (*authorization)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Check", Handler: checkHandler}},
	Metadata:    authv3.Authorization_ServiceDesc.Metadata,
}

func checkHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	s := srv.(*Service)
	in := s.inputs.Get().(*input)
	in.reset(s.limits)
	defer s.inputs.Put(in)
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return s.check(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: authv3.Authorization_Check_FullMethodName}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) { return s.check(ctx, req.(*input)) })
}

// check translates in, has the Handler answer it, and translates the
// answer. A panic is a failure of the service: INTERNAL, never OK.
func (s *Service) check(ctx context.Context, in *input) (resp *authv3.CheckResponse, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("gRPC check failed: answered INTERNAL (Envoy answers status_on_error)", zap.Any("panic", p), zap.Stack("stack"))
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()
	a := s.answers.Get().(*check.Answer)
	a.Reset()
	defer s.answers.Put(a)
	r := in.request(ctx)
	in.trace = traceCarrier{ctx: ctx, header: r.Header}
	if in.status != 0 {
		s.h.RefuseGRPC(a, r, &in.trace, in.status, in.why)
	} else {
		s.h.ServeGRPC(a, r, &in.trace)
	}
	return s.response(a)
}

// request is the *http.Request the HTTP check port would have received:
// the method, the path with query as the request target, Host, the header,
// no body (Envoy sends none to the check either); RemoteAddr is the gRPC
// peer (the gateway), as it is the HTTP client on the HTTP port.
func (in *input) request(ctx context.Context) *http.Request {
	u, err := url.ParseRequestURI(in.path)
	if err != nil || in.status != 0 {
		if in.status == 0 {
			in.refuse(http400, "attributes.request.http.path %q is not a request target", truncate([]byte(in.path)))
		}
		u = &url.URL{Path: "/"}
		id := in.header["X-Request-Id"]
		in.header = http.Header{}
		if id != nil {
			in.header["X-Request-Id"] = id
		}
	}
	r := &http.Request{Method: in.method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: in.header,
		Body: http.NoBody, Host: in.host, RequestURI: in.path}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		r.RemoteAddr = p.Addr.String()
	}
	return r.WithContext(ctx)
}

// response translates the check's HTTP answer (see the package comment).
func (s *Service) response(a *check.Answer) (*authv3.CheckResponse, error) {
	switch {
	case a.Status == http.StatusOK:
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: s.ok(a)}, DynamicMetadata: metadata(a)}, nil
	case a.Status < 100 || a.Status > 599:
		// Nothing was answered: never OK.
		s.log.Error("gRPC check: the check wrote no answer; answered INTERNAL", zap.Int("status", a.Status))
		return nil, status.Error(codes.Internal, "internal error")
	case a.Status >= 500:
		// Envoy's HTTP ext_authz client takes a 5xx for a failure of the
		// authorizer (status_on_error, never the page): the same here.
		s.log.Error("gRPC check: the check answered a server error; answered UNAVAILABLE", zap.Int("status", a.Status))
		return nil, status.Error(codes.Unavailable, "internal error")
	}
	d := &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode(a.Status)}, Body: string(a.Body)}
	hd := a.Header()
	for _, name := range sortedNames(hd) {
		if name == "Content-Length" { // Envoy sets it from the body
			continue
		}
		d.Headers = s.appendValues(d.Headers, name, hd[name])
	}
	code := codes.PermissionDenied
	switch a.Status {
	case http.StatusUnauthorized:
		code = codes.Unauthenticated
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusRequestHeaderFieldsTooLarge:
		code = codes.InvalidArgument
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: d}, DynamicMetadata: metadata(a)}, nil
}

// ok is the allow answer's mutations.
func (s *Service) ok(a *check.Answer) *authv3.OkHttpResponse {
	ok := &authv3.OkHttpResponse{}
	hd := a.Header()
	for _, name := range sortedNames(hd) {
		switch name {
		case "Set-Cookie":
			for _, v := range hd[name] {
				ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, option(s.lower.get(name, strings.ToLower), v, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD))
			}
		case "X-Envoy-Auth-Headers-To-Remove":
			for _, v := range hd[name] {
				ok.HeadersToRemove = append(ok.HeadersToRemove, s.splits.list(v)...)
			}
		case "Content-Length":
		default:
			ok.Headers = s.appendValues(ok.Headers, name, hd[name])
		}
	}
	return ok
}

// appendValues adds a header's values: the first overwrites (what the
// client sent upstream, what Envoy put in a local reply), the others are
// added beside it (several Set-Cookie on a deny). The deprecated append
// field is left unset: Envoy then follows append_action, and an Envoy too
// old to know it sets the header.
func (s *Service) appendValues(opts []*corev3.HeaderValueOption, name string, values []string) []*corev3.HeaderValueOption {
	lower := s.lower.get(name, strings.ToLower)
	for i, v := range values {
		action := corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		if i == 0 {
			action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		}
		opts = append(opts, option(lower, v, action))
	}
	return opts
}

func option(name, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: value}, AppendAction: action}
}

// sortedNames are the header's names in order: the answer is the same for
// the same check, whatever the map's order.
func sortedNames(hd http.Header) []string {
	names := make([]string, 0, len(hd))
	for k := range hd {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// metadata is the answer's dynamic metadata: the decision and its reason,
// and the principal's user id and groups.
func metadata(a *check.Answer) *structpb.Struct {
	f := make(map[string]*structpb.Value, 4)
	f["decision"] = structpb.NewStringValue(a.Decision)
	f["reason"] = structpb.NewStringValue(a.Reason)
	if a.User != "" {
		f["user_id"] = structpb.NewStringValue(a.User)
		groups := make([]*structpb.Value, len(a.Groups))
		for i, g := range a.Groups {
			groups[i] = structpb.NewStringValue(g)
		}
		f["groups"] = structpb.NewListValue(&structpb.ListValue{Values: groups})
	}
	return &structpb.Struct{Fields: f}
}

// memo is a bounded memo of strings derived from the check's own header
// names and lists.
type memo struct {
	m sync.Map
	n atomic.Int32
}

const memoSize = 1024

func (m *memo) get(k string, f func(string) string) string {
	if v, ok := m.m.Load(k); ok {
		return v.(string)
	}
	v := f(k)
	if m.n.Add(1) <= memoSize {
		m.m.Store(k, v)
	}
	return v
}

// list splits a header list ("a,b, c") into names; the slice is shared:
// callers copy its elements, never change it.
func (m *memo) list(k string) []string {
	if v, ok := m.m.Load(k); ok {
		return v.([]string)
	}
	var names []string
	for _, n := range strings.Split(k, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	if m.n.Add(1) <= memoSize {
		m.m.Store(k, names)
	}
	return names
}
