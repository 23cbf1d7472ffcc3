package extauthz

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The gateway's gRPC mode, on the layouts whose ext_authz filter has a
// grpc_service: what Envoy sends in the CheckRequest and what it does with
// each field of the answer.

func okResponse(ok *authv3.OkHttpResponse) *authv3.CheckResponse {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok}}
}

func hvo(name, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: value}, AppendAction: action}
}

func hvoAppend(name, value string, appendBool bool) *corev3.HeaderValueOption {
	//lint:ignore SA1019 the deprecated field is what this tests
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: value}, Append: wrapperspb.Bool(appendBool)}
}

// everyGRPCLayout is TestEveryGeneratedLayout's branch for a gRPC check:
// a request without a session is checked over gRPC with the client's
// Cookie, the path with its query and the pseudo-headers, and the
// service's redirect reaches the client; the logout reaches the service.
func everyGRPCLayout(t *testing.T, f *envoyFixture) {
	f.replyGRPC(func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_Found}, Headers: []*corev3.HeaderValueOption{
					hvo("location", "/dex/auth", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}}}}, nil
	})
	resp, _ := f.get(t, "/pipeline/?ns=a", "Cookie", "authservice_session=x")
	c := f.lastGRPC.Load()
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "/dex/auth" || c == nil {
		t.Fatalf("no session: %d %v, check %v", resp.StatusCode, resp.Header, c)
	}
	h := c.GetAttributes().GetRequest().GetHttp()
	if h.GetHeaders()["cookie"] != "authservice_session=x" || h.GetPath() != "/pipeline/?ns=a" || h.GetHeaders()[":path"] != "/pipeline/?ns=a" ||
		h.GetMethod() != "GET" || h.GetHeaders()[":method"] != "GET" || h.GetScheme() != "http" || h.GetHeaders()[":scheme"] != "http" ||
		h.GetHeaders()[":authority"] != h.GetHost() || h.GetHeaders()["x-request-id"] == "" || h.GetHeaders()["x-forwarded-proto"] != "http" {
		t.Errorf("the CheckRequest: %v", h)
	}
	// Every header, the client's trace context (W3C and B3) included
	// (docs/operations.md, Traces).
	trace := []string{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate", "vendor=x",
		"b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", "x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736",
		"x-b3-spanid", "00f067aa0ba902b7", "x-b3-parentspanid", "0a1b2c3d4e5f6071", "x-b3-sampled", "1", "x-b3-flags", "1"}
	f.get(t, "/pipeline/", trace...)
	for i, got := 0, f.lastGRPC.Load().GetAttributes().GetRequest().GetHttp().GetHeaders(); i < len(trace); i += 2 {
		if got[trace[i]] != trace[i+1] {
			t.Errorf("the CheckRequest's %s: %q, want %q", trace[i], got[trace[i]], trace[i+1])
		}
	}
	n := f.grpcChecks.Load()
	f.get(t, "/oauth2/sign_out")
	f.get(t, "/authservice/logout")
	if f.grpcChecks.Load() == n {
		t.Errorf("neither /oauth2/sign_out nor /authservice/logout reached the service")
	}
}

// What Envoy puts in a CheckRequest: the method, the path with its query
// as the HCM rewrote it, the host, the scheme, the protocol, every header
// (no allowed_headers in our gRPC layouts) with lowercase names and the
// pseudo-headers, repeated headers joined with ","; the filter's timeout
// is the call's deadline.
func TestGRPCCheckRequest(t *testing.T) {
	for _, layout := range []string{"master_istio-envoyfilter-grpc", "master_istio-extension-provider-grpc", "master-grpc_kubeflow-oauth2-proxy-headers"} {
		t.Run(layout, func(t *testing.T) {
			f := newEnvoyFixture(t, layout)
			h := http.Header{"Accept": {"text/html"}, "X-Custom": {"a", "b"}, "Cookie": {"c=1"}, "Kubeflow-Userid": {"mallory"}}
			resp, _ := f.do(t, "GET", "/pipeline/a/../b/?x=1&y=%2F", h)
			if resp.StatusCode != 200 {
				t.Fatalf("HTTP %d", resp.StatusCode)
			}
			c := f.lastGRPC.Load().GetAttributes().GetRequest().GetHttp()
			want := map[string]string{":path": "/pipeline/b/?x=1&y=%2F", ":method": "GET", ":scheme": "http", ":authority": c.GetHost(),
				"accept": "text/html", "x-custom": "a,b", "cookie": "c=1", "kubeflow-userid": "mallory", "x-forwarded-proto": "http"}
			for k, v := range want {
				if c.GetHeaders()[k] != v {
					t.Errorf("header %s: %q, want %q", k, c.GetHeaders()[k], v)
				}
			}
			for k := range c.GetHeaders() {
				if k != strings.ToLower(k) {
					t.Errorf("header %q is not lowercase", k)
				}
			}
			if c.GetMethod() != "GET" || c.GetPath() != "/pipeline/b/?x=1&y=%2F" || c.GetScheme() != "http" || c.GetProtocol() != "HTTP/1.1" ||
				!strings.HasPrefix(c.GetHost(), "127.0.0.1:") || c.GetId() == "" {
				t.Errorf("attributes: %v", c)
			}
			if d := f.lastDeadline.Load(); d == nil || *d > 10*time.Second || *d < 9*time.Second {
				t.Errorf("deadline %v, want the filter's 10s", d)
			}
		})
	}
}

// OK: ok_response.headers by append_action (and the deprecated append),
// headers_to_remove (never Host or a pseudo-header), query parameters,
// response_headers_to_add on the client's answer.
func TestGRPCOkMutations(t *testing.T) {
	f := newEnvoyFixture(t, "master_istio-envoyfilter-grpc")
	f.replyGRPC(func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		r := okResponse(&authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				hvo("kubeflow-userid", "alice", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
				hvo("kubeflow-groups", "g1", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
				hvo("kubeflow-groups", "g2", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
				hvo("x-absent", "added", corev3.HeaderValueOption_ADD_IF_ABSENT),
				hvo("x-present", "not-added", corev3.HeaderValueOption_ADD_IF_ABSENT),
				hvo("x-overwrite-only", "no", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
				hvo("x-present2", "overwritten", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
				hvoAppend("x-legacy-append", "second", true),
				hvoAppend("x-legacy-set", "set", false),
				hvo("x-default", "set-by-default-action", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
			},
			HeadersToRemove:         []string{"x-secret", "host", ":path", "cookie"},
			ResponseHeadersToAdd:    []*corev3.HeaderValueOption{hvo("set-cookie", "a=1", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD), hvo("set-cookie", "b=2", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD), hvo("x-up", "replaced", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)},
			QueryParametersToSet:    []*corev3.QueryParameter{{Key: "ns", Value: "set"}, {Key: "new", Value: "1"}},
			QueryParametersToRemove: []string{"token"},
		})
		r.DynamicMetadata, _ = structpb.NewStruct(map[string]any{"userid": "alice"})
		return r, nil
	})
	f.setUpstreamHeader("X-Up", "from-upstream")
	resp, _ := f.do(t, "GET", "/pipeline/?ns=a&token=t&keep=k", http.Header{
		"Kubeflow-Userid": {"mallory"}, "Kubeflow-Groups": {"admins"}, "X-Present": {"p"}, "X-Present2": {"p2"},
		"X-Legacy-Append": {"first"}, "X-Legacy-Set": {"old"}, "X-Secret": {"s"}, "Cookie": {"c=1"}})
	up := f.upstream.Load()
	if resp.StatusCode != 200 || up == nil {
		t.Fatalf("HTTP %d, upstream %v", resp.StatusCode, up)
	}
	for k, want := range map[string][]string{
		"Kubeflow-Userid": {"alice"}, "Kubeflow-Groups": {"g1", "g2"}, "X-Absent": {"added"}, "X-Present": {"p"},
		"X-Overwrite-Only": nil, "X-Present2": {"overwritten"}, "X-Legacy-Append": {"first,second"}, "X-Legacy-Set": {"set"},
		"X-Default": {"set-by-default-action"}, "X-Secret": nil, "Cookie": nil,
	} {
		if got := up.Headers[k]; !slices.Equal(got, want) {
			t.Errorf("upstream %s: %q, want %q", k, got, want)
		}
	}
	if up.Path != "/pipeline/" || up.Query != "ns=set&keep=k&new=1" {
		t.Errorf("upstream path %s query %s", up.Path, up.Query)
	}
	if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"a=1", "b=2"}) {
		t.Errorf("client Set-Cookie %q", got)
	}
	if got := resp.Header.Values("X-Up"); !slices.Equal(got, []string{"replaced"}) {
		t.Errorf("client X-Up %q, want the answer's overwrite", got)
	}
}

// Denied: DeniedHttpResponse's status (403 without one), headers (two
// Set-Cookie stay two) and body; no upstream.
func TestGRPCDenied(t *testing.T) {
	f := newEnvoyFixture(t, "master_istio-envoyfilter-grpc")
	f.replyGRPC(func(_ context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		d := &authv3.DeniedHttpResponse{Body: "go away"}
		if strings.HasPrefix(r.GetAttributes().GetRequest().GetHttp().GetPath(), "/login") {
			d = &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_Found}, Headers: []*corev3.HeaderValueOption{
				hvo("location", "http://dex/auth", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
				hvo("set-cookie", "s=1", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
				hvo("set-cookie", "t=2", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
				hvo("content-type", "text/html; charset=utf-8", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
			}, Body: "<a>login</a>"}
		}
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: d}}, nil
	})
	resp, body := f.get(t, "/login")
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "http://dex/auth" || !slices.Equal(resp.Header.Values("Set-Cookie"), []string{"s=1", "t=2"}) ||
		resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || body != "<a>login</a>" || f.upstream.Load() != nil {
		t.Errorf("redirect: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	resp, body = f.get(t, "/other")
	if resp.StatusCode != 403 || body != "go away" || f.upstream.Load() != nil {
		t.Errorf("deny without a status: %d %q", resp.StatusCode, body)
	}
}

// A gRPC error, a deadline exceeded or a connection that fails answer
// status_on_error (403, or the configured code) with an empty body, and
// never let the request through (no failure_mode_allow in our layouts).
func TestGRPCErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		edits []Edit
		setup func(f *envoyFixture)
		want  int
	}{
		{"grpc error", nil, func(f *envoyFixture) {
			f.replyGRPC(func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
				return nil, status.Error(codes.Unavailable, "down")
			})
		}, 403},
		{"grpc error, status_on_error 503", []Edit{StatusOnError(503)}, func(f *envoyFixture) {
			f.replyGRPC(func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
				return nil, status.Error(codes.Internal, "bug")
			})
		}, 503},
		{"timeout", []Edit{GRPCTimeout(100 * time.Millisecond)}, func(f *envoyFixture) {
			f.replyGRPC(func(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
				<-ctx.Done()
				return okResponse(nil), nil
			})
		}, 403},
		{"connection refused", nil, func(f *envoyFixture) {
			l, _ := net.Listen("tcp", "127.0.0.1:0")
			addr := l.Addr().String()
			l.Close()
			f.g.opts.Addresses["authservice.istio-system.svc.cluster.local:9000"] = "http://" + addr
		}, 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newEnvoyFixture(t, "master_istio-envoyfilter-grpc", c.edits...)
			c.setup(f)
			resp, body := f.get(t, "/pipeline/")
			if resp.StatusCode != c.want || body != "" || f.upstream.Load() != nil {
				t.Errorf("HTTP %d %q, upstream %v; want %d, empty, none", resp.StatusCode, body, f.upstream.Load(), c.want)
			}
		})
	}
}
