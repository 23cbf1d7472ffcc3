package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // the codec answers are read with
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/oidc-authservice/oidc-authservice/test/loadbench/results"
)

// grpcLoad is one run of the gRPC load generator, driving
// envoy.service.auth.v3.Authorization/Check as Envoy's ext_authz filter
// does: a few HTTP/2 connections (conns), many concurrent streams on each
// (streams), every call with Envoy's grpc-timeout. The CheckRequest is
// marshaled once; every answer is read and checked (want), so a server that
// answers fast but wrongly fails the run.
type grpcLoad struct {
	addr           string
	msg            []byte
	want           func(*authv3.CheckResponse) error
	conns, streams int
	dur            time.Duration
}

// checkTimeout is the grpc-timeout Envoy sends (the overlays' 10 s).
const checkTimeout = 10 * time.Second

// rawCodec sends the pre-marshaled request as it is and reads answers with
// grpc-go's proto codec.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}
func (rawCodec) Name() string { return "proto" }

func (l *grpcLoad) run() outcome {
	var stop atomic.Bool
	clients := make([]*grpc.ClientConn, l.conns)
	for i := range clients {
		// One HTTP/2 connection per client, as Envoy's pool keeps one per
		// worker thread.
		c, err := grpc.NewClient("passthrough:///"+l.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
		if err != nil {
			return outcome{errors: 1, firstErr: err.Error()}
		}
		defer c.Close()
		c.Connect()
		clients[i] = c
	}
	tl := startTally()
	time.AfterFunc(l.dur, func() { stop.Store(true) })
	var wg sync.WaitGroup
	for _, c := range clients {
		for range l.streams {
			wg.Go(func() {
				lat := make([]uint32, 0, 1<<16)
				errs, firstErr := 0, ""
				resp := new(authv3.CheckResponse)
				for !stop.Load() {
					ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
					t0 := time.Now()
					proto.Reset(resp)
					err := c.Invoke(ctx, authv3.Authorization_Check_FullMethodName, l.msg, resp)
					lat = append(lat, uint32(time.Since(t0)/time.Microsecond))
					cancel()
					if err == nil {
						err = l.want(resp)
					}
					if err != nil {
						if errs == 0 {
							firstErr = err.Error()
						}
						errs++
					}
				}
				tl.add(lat, errs, firstErr)
			})
		}
	}
	wg.Wait()
	return tl.done()
}

// envoyCheckRequest is the CheckRequest Envoy's ext_authz filter sends for
// a request: peers, the request time, the HTTP attributes, and every header
// of the request (lowercase, the pseudo-headers among them) with those the
// gateway adds.
func envoyCheckRequest(method, path, host string, fixed []string, extra map[string]string) []byte {
	h := map[string]string{":method": method, ":path": path, ":authority": host, ":scheme": "http",
		"user-agent":      "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
		"accept-encoding": "gzip, deflate, br", "accept-language": "en-US,en;q=0.9",
		"x-forwarded-for": "10.244.0.17", "x-envoy-external-address": "10.244.0.17", "x-envoy-attempt-count": "1"}
	for _, f := range fixed {
		if k, v, ok := cutHeader(f); ok && k != "content-length" {
			h[k] = v
		}
	}
	for k, v := range extra {
		h[k] = v
	}
	addr := func(ip string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: ip,
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
	}
	b, err := proto.Marshal(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: addr("10.244.0.17", 51234)},
		Destination: &authv3.AttributeContext_Peer{Address: addr("10.244.0.5", 8080)},
		Request: &authv3.AttributeContext_Request{Time: timestamppb.Now(), Http: &authv3.AttributeContext_HttpRequest{
			Id: "10086420391835729210", Method: method, Path: path, Host: host, Scheme: "http", Protocol: "HTTP/1.1", Size: 0, Headers: h}},
	}})
	if err != nil {
		panic(err)
	}
	return b
}

// cutHeader splits a "Name: value" line, the name lowercased.
func cutHeader(line string) (string, string, bool) {
	for i := 0; i < len(line); i++ {
		if line[i] == ':' {
			name := []byte(line[:i])
			for j, c := range name {
				if c >= 'A' && c <= 'Z' {
					name[j] = c + 'a' - 'A'
				}
			}
			v := line[i+1:]
			for len(v) > 0 && v[0] == ' ' {
				v = v[1:]
			}
			return string(name), v, true
		}
	}
	return "", "", false
}

// okWith checks an allow answer that sets the given headers upstream.
func okWith(headers map[string]string) func(*authv3.CheckResponse) error {
	return func(r *authv3.CheckResponse) error {
		ok := r.GetOkResponse()
		if r.GetStatus().GetCode() != 0 || ok == nil {
			return fmt.Errorf("not OK: status %v, denied %v", r.GetStatus(), r.GetDeniedResponse().GetStatus())
		}
		for k, want := range headers {
			found := false
			for _, h := range ok.GetHeaders() {
				if h.GetHeader().GetKey() == k {
					found = true
					if h.GetHeader().GetValue() != want {
						return fmt.Errorf("%s: %q, want %q", k, h.GetHeader().GetValue(), want)
					}
				}
			}
			if !found {
				return fmt.Errorf("%s missing", k)
			}
		}
		return nil
	}
}

// grpcDrive measures one run of p against s over gRPC.
func (p *path) grpcDrive(s *system, conns int, d time.Duration) results.Run {
	l := &grpcLoad{addr: s.grpcAddr, msg: p.grpcMsg(), want: p.grpcWant(s), conns: grpcConns, streams: max(conns/grpcConns, 1), dur: d}
	return p.measure(s, l.run)
}

// grpcConns is how many HTTP/2 connections carry the checks: Envoy keeps one
// per worker thread and cluster (a 2-core gateway: 2), and multiplexes the
// checks in flight on them.
const grpcConns = 2

// bareAuthorization is the bare gRPC server: OK with the two identity
// headers, whatever the request.
type bareAuthorization struct {
	authv3.UnimplementedAuthorizationServer
}

func (bareAuthorization) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
		Headers: []*corev3.HeaderValueOption{
			{Header: &corev3.HeaderValue{Key: "kubeflow-userid", Value: dexUser}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
			{Header: &corev3.HeaderValue{Key: "kubeflow-groups", Value: dexGroups}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
		}}}}, nil
}

// serveBareGRPC serves the bare gRPC server (grpc-go's defaults) on addr.
func serveBareGRPC(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	g := grpc.NewServer()
	authv3.RegisterAuthorizationServer(g, bareAuthorization{})
	fmt.Fprintln(os.Stderr, g.Serve(l))
	os.Exit(1)
}
