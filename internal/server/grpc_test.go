package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// grpcProvider serves discovery; its key set answers after keysDelay (a
// check that verifies a token then waits for it).
func grpcProvider(t *testing.T, keysDelay time.Duration) string {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "authorization_endpoint": srv.URL + "/auth",
				"token_endpoint": srv.URL + "/token", "jwks_uri": srv.URL + "/keys", "id_token_signing_alg_values_supported": []string{"RS256"}})
		case "/keys":
			time.Sleep(keysDelay)
			w.Write([]byte(`{"keys":[]}`))
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

type grpcFixture struct {
	addr  string
	parts *Parts
	g     *grpc.Server
	hs    *health.Server
	conn  *grpc.ClientConn
}

// startGRPC runs the gRPC check server with l, as Run does.
func startGRPC(t *testing.T, l grpcLimits, issuer string) *grpcFixture {
	t.Helper()
	s := settings(t, map[string]string{"OIDC_PROVIDER": issuer, "SESSION_KEYS": base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))})
	p, err := Build(s, "test", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	g, hs := newGRPCServer(p.GRPC, l)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &grpcFixture{addr: ln.Addr().String(), parts: p, g: g, hs: hs, conn: conn}
}

func testLimits() grpcLimits {
	l := defaultGRPCLimits(time.Second)
	l.stream, l.handshake, l.idle, l.minPing = 400*time.Millisecond, 400*time.Millisecond, 600*time.Millisecond, time.Second
	return l
}

func apiCall(path string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path, Host: "kubeflow.example.com", Scheme: "http",
			Headers: map[string]string{"accept": "application/json"}}}}}
}

// check asks an API call without a session: the ordinary answer is 401.
func (f *grpcFixture) check(t *testing.T, ctx context.Context) error {
	t.Helper()
	resp, err := authv3.NewAuthorizationClient(f.conn).Check(ctx, apiCall("/api/x"))
	if err == nil && resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
		return fmt.Errorf("answer %v, want 401", resp)
	}
	return err
}

// h2 is a raw HTTP/2 client connection, for what a gRPC client would not do.
type h2 struct {
	c   net.Conn
	fr  *http2.Framer
	buf bytes.Buffer
	enc *hpack.Encoder
}

func dialH2(t *testing.T, addr string) *h2 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &h2{c: c, fr: http2.NewFramer(c, c)}
	h.enc = hpack.NewEncoder(&h.buf)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	io.WriteString(c, http2.ClientPreface)
	h.fr.WriteSettings()
	return h
}

// open starts a Check stream and sends no message.
func (h *h2) open(t *testing.T, id uint32) {
	t.Helper()
	if err := h.tryOpen(id); err != nil {
		t.Fatal(err)
	}
}

// tryOpen is open for a goroutine that is not the test's, where the server
// closing the connection is an answer, not a failure.
func (h *h2) tryOpen(id uint32) error {
	h.buf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", authv3.Authorization_Check_FullMethodName},
		{":authority", "authservice"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.buf.Bytes(), EndHeaders: true})
}

// until reads frames until f says it saw what it waits for, or d passes.
func (h *h2) until(d time.Duration, f func(http2.Frame) bool) (bool, error) {
	h.c.SetReadDeadline(time.Now().Add(d))
	for {
		fr, err := h.fr.ReadFrame()
		if err != nil {
			return false, err
		}
		if s, ok := fr.(*http2.SettingsFrame); ok && !s.IsAck() {
			h.fr.WriteSettingsAck()
		}
		if f(fr) {
			return true, nil
		}
	}
}

// A stream that is opened and never finished is ended once its time is
// up (a client of its own may not say how long it waits), and the
// connection's other streams go on being answered.
func TestGRPCStreamNeverFinishedIsEnded(t *testing.T) {
	f := startGRPC(t, testLimits(), grpcProvider(t, 0))
	h := dialH2(t, f.addr)
	start := time.Now()
	h.open(t, 1)
	ended, err := h.until(3*time.Second, func(fr http2.Frame) bool {
		switch fr := fr.(type) {
		case *http2.MetaHeadersFrame:
			return fr.StreamID == 1 && fr.StreamEnded() && fr.PseudoValue("status") == "" &&
				(headerValue(fr, "grpc-status") == fmt.Sprint(int(codes.DeadlineExceeded)) || headerValue(fr, "grpc-status") == fmt.Sprint(int(codes.Canceled)))
		case *http2.RSTStreamFrame:
			return fr.StreamID == 1
		}
		return false
	})
	if !ended {
		t.Fatalf("the stalled stream was not ended: %v", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("ended after %v, want about the stream's 400 ms", took)
	}
	if err := f.check(t, context.Background()); err != nil {
		t.Errorf("a check after the stalled stream: %v", err)
	}
}

func headerValue(f *http2.MetaHeadersFrame, name string) string {
	for _, hf := range f.Fields {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

// A connection gets at most maxStreams streams at once (the server says so
// in its settings); the ones beyond are refused, not queued.
func TestGRPCStreamsPerConnectionAreBounded(t *testing.T) {
	l := testLimits()
	l.maxStreams, l.stream = 5, 5*time.Second
	f := startGRPC(t, l, grpcProvider(t, 0))
	h := dialH2(t, f.addr)
	var advertised uint32
	h.until(2*time.Second, func(fr http2.Frame) bool {
		if s, ok := fr.(*http2.SettingsFrame); ok && !s.IsAck() {
			advertised, _ = s.Value(http2.SettingMaxConcurrentStreams)
			return true
		}
		return false
	})
	if advertised != 5 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want 5", advertised)
	}
	for id := uint32(1); id <= 15; id += 2 { // 8 streams
		h.open(t, id)
	}
	refused := map[uint32]bool{}
	h.until(2*time.Second, func(fr http2.Frame) bool {
		if r, ok := fr.(*http2.RSTStreamFrame); ok && r.ErrCode == http2.ErrCodeRefusedStream {
			refused[r.StreamID] = true
		}
		return len(refused) == 3
	})
	if len(refused) != 3 || !refused[11] || !refused[13] || !refused[15] {
		t.Errorf("refused streams %v, want the 6th to 8th (11, 13, 15)", refused)
	}
}

// A flood of streams opened and reset at once (HTTP/2 rapid reset) does
// not keep the server from answering another client.
func TestGRPCStreamFloodLeavesOthersAnswered(t *testing.T) {
	f := startGRPC(t, testLimits(), grpcProvider(t, 0))
	h := dialH2(t, f.addr)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for id := uint32(1); id < 1<<20; id += 2 {
			select {
			case <-stop:
				return
			default:
			}
			if h.tryOpen(id) != nil || h.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				return // the server closed the flooding connection: fine too
			}
		}
	})
	wg.Go(func() { // keep reading, so the flood is not held back by flow control
		h.until(10*time.Second, func(http2.Frame) bool {
			select {
			case <-stop:
				return true
			default:
				return false
			}
		})
	})
	defer func() { close(stop); h.c.Close(); wg.Wait() }()
	time.Sleep(200 * time.Millisecond)
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := f.check(t, ctx)
		cancel()
		if err != nil {
			t.Fatalf("check %d during the flood: %v", i, err)
		}
	}
}

// Sizes: a CheckRequest beyond the message limit and a call whose own
// header block is beyond its limit are refused (a gRPC error, which Envoy
// answers with status_on_error); within them, a check is answered.
func TestGRPCSizeLimits(t *testing.T) {
	f := startGRPC(t, testLimits(), grpcProvider(t, 0))
	c := authv3.NewAuthorizationClient(f.conn)
	big := apiCall("/api/x")
	big.Attributes.Request.Http.Headers["x-big"] = strings.Repeat("a", 300<<10)
	if _, err := c.Check(context.Background(), big); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a %d KiB CheckRequest: %v, want RESOURCE_EXHAUSTED", proto.Size(big)>>10, err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-big", strings.Repeat("a", 20<<10))
	if _, err := c.Check(ctx, apiCall("/api/x")); err == nil {
		t.Error("a call with a 20 KiB header block was answered")
	}
	if err := f.check(t, context.Background()); err != nil {
		t.Errorf("an ordinary check: %v", err)
	}
}

// A connection that does not complete the HTTP/2 handshake is closed; so
// is one without streams for the idle time; a client that pings more often
// than allowed is sent away (GOAWAY ENHANCE_YOUR_CALM).
func TestGRPCConnectionTimeouts(t *testing.T) {
	f := startGRPC(t, testLimits(), grpcProvider(t, 0))
	t.Run("no handshake", func(t *testing.T) {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = io.Copy(io.Discard, c)
		if err != nil || time.Since(start) > 2*time.Second {
			t.Errorf("a silent connection was not closed by the server within 2 s: %v after %v", err, time.Since(start))
		}
	})
	t.Run("idle", func(t *testing.T) {
		h := dialH2(t, f.addr)
		gone, err := h.until(3*time.Second, func(fr http2.Frame) bool { _, ok := fr.(*http2.GoAwayFrame); return ok })
		if !gone {
			t.Errorf("an idle connection got no GOAWAY: %v", err)
		}
	})
	t.Run("ping flood", func(t *testing.T) {
		h := dialH2(t, f.addr)
		go func() {
			for i := range 50 {
				if h.fr.WritePing(false, [8]byte{byte(i)}) != nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
		var code http2.ErrCode
		h.until(3*time.Second, func(fr http2.Frame) bool {
			if g, ok := fr.(*http2.GoAwayFrame); ok {
				code = g.ErrCode
				return true
			}
			return false
		})
		if code != http2.ErrCodeEnhanceYourCalm {
			t.Errorf("GOAWAY code %v, want ENHANCE_YOUR_CALM", code)
		}
	})
}

// Health: NOT_SERVING until provider discovery succeeded, SERVING after,
// NOT_SERVING once shutting down; the check in flight when the server
// stops is answered, a new connection is not accepted.
func TestGRPCHealthAndGracefulStop(t *testing.T) {
	issuer := grpcProvider(t, 700*time.Millisecond)
	f := startGRPC(t, testLimits(), issuer)
	hc := healthpb.NewHealthClient(f.conn)
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		r, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("%q before discovery: %v %v, want NOT_SERVING", svc, r, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go discover(ctx, f.parts.Provider, f.hs)
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
		if err == nil && r.Status == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not SERVING 5 s after discovery could succeed: %v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A check that waits for the provider's key set (a bearer token of
	// the provider, whose key is fetched): in flight when the server stops.
	token := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","kid":"k1"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"iss":%q,"aud":"c","sub":"x","exp":%d}`, issuer, time.Now().Add(time.Hour).Unix()))) + ".c2ln"
	req := apiCall("/api/x")
	req.Attributes.Request.Http.Headers["authorization"] = "Bearer " + token
	answered := make(chan error, 1)
	go func() {
		resp, err := authv3.NewAuthorizationClient(f.conn).Check(context.Background(), req)
		if err == nil && resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
			err = fmt.Errorf("answer %v, want 401 (no such key)", resp)
		}
		answered <- err
	}()
	time.Sleep(200 * time.Millisecond) // the check waits for the key set
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer stopCancel()
	stopped := make(chan struct{})
	go func() { stopGRPC(stopCtx, f.g, f.hs, zap.NewNop()); close(stopped) }()
	if err := <-answered; err != nil {
		t.Errorf("the check in flight during shutdown: %v", err)
	}
	<-stopped
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
	defer ccancel()
	if _, err := authv3.NewAuthorizationClient(conn).Check(cctx, apiCall("/api/x")); status.Code(err) != codes.Unavailable &&
		!errors.Is(err, context.DeadlineExceeded) && status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("a check after the stop: %v, want unavailable", err)
	}
}
