package integration

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// grpcClient is a client of the service's gRPC port.
func grpcClient(t *testing.T, svc *peer.Service) *grpc.ClientConn {
	t.Helper()
	if svc.GRPCAddr == "" {
		t.Fatal("the service runs without GRPC_PORT")
	}
	c, err := grpc.NewClient("passthrough:///"+svc.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// envoyCheck is the CheckRequest Envoy sends for a request with these
// headers (lowercase names, the pseudo-headers among them).
func envoyCheck(method, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":method": method, ":path": path, ":authority": "kubeflow.example.com", ":scheme": "http",
		"x-forwarded-proto": "http", "x-request-id": "grpc-it"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Host: "kubeflow.example.com", Scheme: "http",
			Protocol: "HTTP/1.1", Headers: h}}}}
}

// The service's gRPC port answers a check of a session that a real login
// through Dex made (via the HTTP gateway) with the same identity, counts it
// under protocol="grpc", and says SERVING on its health service.
func TestGRPCPortAnswersARealSession(t *testing.T) {
	s := newSetup(t, peer.EnvoyFilterLayout, nil)
	b := newBrowser()
	s.login(t, b, "/notebook/ns?format=json")
	gw, _ := url.Parse(s.gateway)
	cookie := cookieHeader(b, gw)
	conn := grpcClient(t, s.svc)
	before := scrape(t, s.svc)

	r, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v, want SERVING", r, err)
	}
	resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), envoyCheck("GET", "/notebook/ns/nb/lab",
		map[string]string{"cookie": "_ga=GA1; " + cookie, "accept": "text/html", "kubeflow-userid": "mallory@example.com"}))
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]string{}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	if set["kubeflow-userid"] != legitUser || set["kubeflow-groups"] != legitGroups || set["cookie"] != "_ga=GA1" {
		t.Fatalf("allow answer sets %v, want the user, the groups and the Cookie header without the session", set)
	}
	if m := resp.GetDynamicMetadata().AsMap(); m["user_id"] != legitUser || m["reason"] != "session" {
		t.Errorf("dynamic metadata %v", m)
	}
	// Without the session: the login redirect, as over HTTP.
	resp, err = authv3.NewAuthorizationClient(conn).Check(context.Background(), envoyCheck("GET", "/jupyter/", map[string]string{"accept": "text/html"}))
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 302 {
		t.Fatalf("without a session: %v %v, want a 302", resp, err)
	}
	after := scrape(t, s.svc)
	for k, want := range map[string]float64{
		`oidc_authservice_checks_total{decision="allow",protocol="grpc",reason="session"}`:           1,
		`oidc_authservice_checks_total{decision="redirect",protocol="grpc",reason="no_credentials"}`: 1,
		`oidc_authservice_check_duration_seconds_count{protocol="grpc"}`:                             2,
	} {
		if got := after[k] - before[k]; got != want {
			t.Errorf("%s moved by %v, want %v", k, got, want)
		}
	}
}

// rawCodec sends bytes as they are (what proto.Marshal refuses to make:
// strings that are not UTF-8) and reads answers with the proto codec.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}
func (rawCodec) Name() string { return "proto" }

// checkRequestBytes is a CheckRequest written byte by byte: method, path,
// host and headers, whatever they hold.
func checkRequestBytes(method, path, host string, headers [][2]string) []byte {
	f := func(b []byte, num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
	}
	var h []byte
	for _, a := range []struct {
		n protowire.Number
		v string
	}{{2, method}, {4, path}, {5, host}} {
		if a.v != "" {
			h = f(h, a.n, []byte(a.v))
		}
	}
	for _, kv := range headers {
		h = f(h, 3, f(f(nil, 1, []byte(kv[0])), 2, []byte(kv[1])))
	}
	return f(nil, 1, f(nil, 4, f(nil, 2, h)))
}

// The hostile-input table on the gRPC port of the running service: every
// CheckRequest no Envoy sends gets a definite 400 or 431 deny (never OK,
// never a gRPC error); a client that opens streams and never finishes them
// holds them no longer than a check may take and keeps nobody else waiting;
// a client that floods the port with streams it resets keeps nobody else
// waiting either.
func TestGRPCPortHostileInputs(t *testing.T) {
	dex := peer.StartDex(t, peer.DexOptions{})
	env := kubeflowEnv(dex)
	env["PROVIDER_TIMEOUT"] = "1s" // a check's budget: 2 × 1 s + 10 s
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	conn := grpcClient(t, svc)
	latin1 := string([]byte{'c', 'a', 'f', 0xe9})
	many := make([][2]string, 3000)
	for i := range many {
		many[i] = [2]string{fmt.Sprintf("x-h%d", i), "v"}
	}
	for _, row := range []struct {
		name   string
		msg    []byte
		status int32
	}{
		{"no attributes", checkRequestBytes("", "", "", nil), 400},
		{"no host", checkRequestBytes("GET", "/", "", nil), 400},
		{"a header value not UTF-8", checkRequestBytes("GET", "/", "kubeflow.example.com", [][2]string{{"cookie", "a=" + latin1}}), 400},
		{"a path not UTF-8", checkRequestBytes("GET", "/"+latin1, "kubeflow.example.com", nil), 400},
		{"a header line injected", checkRequestBytes("GET", "/", "kubeflow.example.com", [][2]string{{"x-a", "1\r\nkubeflow-userid: admin"}}), 400},
		{"thousands of headers", checkRequestBytes("GET", "/", "kubeflow.example.com", many), 431},
		{"a 100 KiB cookie", checkRequestBytes("GET", "/", "kubeflow.example.com", [][2]string{{"cookie", strings.Repeat("a", 100<<10)}}), 431},
		{"not protobuf", []byte{0xff, 0xff, 0xff, 0xff}, 400},
	} {
		resp := new(authv3.CheckResponse)
		err := conn.Invoke(context.Background(), authv3.Authorization_Check_FullMethodName, row.msg, resp, grpc.ForceCodecV2(rawCodec{}))
		if err != nil || resp.GetOkResponse() != nil || int32(resp.GetDeniedResponse().GetStatus().GetCode()) != row.status {
			t.Errorf("%s: %v %v, want a denied %d", row.name, resp, err, row.status)
		}
	}
	// A CheckRequest beyond what the port reads at all: a gRPC error
	// (RESOURCE_EXHAUSTED), which Envoy answers with status_on_error.
	huge := checkRequestBytes("GET", "/", "kubeflow.example.com", [][2]string{{"x-big", strings.Repeat("a", 300<<10)}})
	if err := conn.Invoke(context.Background(), authv3.Authorization_Check_FullMethodName, huge, new(authv3.CheckResponse),
		grpc.ForceCodecV2(rawCodec{})); grpcstatus.Code(err) != codes.ResourceExhausted {
		t.Errorf("a 300 KiB CheckRequest: %v, want RESOURCE_EXHAUSTED", err)
	}

	// Streams opened and never finished, more than a connection may have.
	stalled := grpcClient(t, svc)
	desc := &grpc.StreamDesc{StreamName: "Check", ClientStreams: true, ServerStreams: true}
	var ended sync.WaitGroup
	var held [300]time.Duration
	for i := range 300 {
		ended.Go(func() {
			// The client opens a stream once the connection has room
			// for it (the server allows 250 at once).
			st, err := stalled.NewStream(context.Background(), desc, authv3.Authorization_Check_FullMethodName)
			if err != nil {
				return
			}
			opened := time.Now()
			var m authv3.CheckResponse
			st.RecvMsg(&m) // ends when the server ends the stream
			held[i] = time.Since(opened)
		})
	}
	time.Sleep(time.Second)
	// Meanwhile another client is answered at once.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err := authv3.NewAuthorizationClient(conn).Check(ctx, envoyCheck("GET", "/api/x", map[string]string{"accept": "application/json"}))
	cancel()
	if err != nil {
		t.Errorf("a check while 300 streams stall: %v", err)
	}

	// A flood of streams reset at once, beside other clients.
	flooder := grpcClient(t, svc)
	stop := make(chan struct{})
	var flood sync.WaitGroup
	for range 16 {
		flood.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithCancel(context.Background())
				go cancel()
				authv3.NewAuthorizationClient(flooder).Check(ctx, envoyCheck("GET", "/", nil))
			}
		})
	}
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := authv3.NewAuthorizationClient(conn).Check(ctx, envoyCheck("GET", "/api/x", map[string]string{"accept": "application/json"}))
		cancel()
		if err != nil {
			t.Errorf("check %d during the flood: %v", i, err)
			break
		}
	}
	close(stop)
	flood.Wait()

	done := make(chan struct{})
	go func() { ended.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(40 * time.Second):
		stalled.Close()
		t.Fatal("streams opened and never finished are still held after 40 s")
	}
	for i, d := range held {
		if d > 15*time.Second {
			t.Fatalf("stalled stream %d held for %v, more than a check's 12 s budget", i, d)
		}
	}
}
