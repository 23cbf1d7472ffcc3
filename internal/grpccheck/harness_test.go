package grpccheck_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/grpccheck"
	"github.com/oidc-authservice/oidc-authservice/internal/server"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// env is the service as Build makes it (Kubeflow's settings against a
// provider that serves discovery), its HTTP check handler and its gRPC
// front on a loopback gRPC server.
type env struct {
	parts  *server.Parts
	s      *config.Settings
	client authv3.AuthorizationClient
	conn   *grpc.ClientConn
	logs   *observer.ObservedLogs
	codec  *session.Codec
}

// discovery serves a provider's discovery document and an empty key set.
func discovery(t testing.TB) string {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "authorization_endpoint": srv.URL + "/auth",
				"token_endpoint": srv.URL + "/token", "jwks_uri": srv.URL + "/keys", "id_token_signing_alg_values_supported": []string{"RS256"}})
		case "/keys":
			w.Write([]byte(`{"keys":[]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

var sessionKey = base64.StdEncoding.EncodeToString([]byte("grpccheck-test-key-of-32-bytes!!"))

func newEnv(t testing.TB, extra map[string]string) *env {
	t.Helper()
	vars := map[string]string{"OIDC_PROVIDER": discovery(t), "CLIENT_ID": "kubeflow-oidc-authservice", "CLIENT_SECRET": "secret",
		"SKIP_AUTH_URLS": "/dex", "OIDC_AUTH_URL": "/dex/auth", "AUTHSERVICE_URL_PREFIX": "/authservice/",
		"AFTER_LOGOUT_URL": "/", "SESSION_KEYS": sessionKey, "SESSION_KEYS_SECRET": ""}
	for k, v := range extra {
		vars[k] = v
	}
	s, err := config.Load(config.FromMap(vars))
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	p, err := server.Build(s, "test", zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if err := p.Provider.Discover(context.Background()); err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.ForceServerCodecV2(grpccheck.Codec()))
	p.GRPC.Register(g)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(l)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	secret, _ := config.ParseSecret(sessionKey)
	return &env{parts: p, s: s, client: authv3.NewAuthorizationClient(conn), conn: conn, logs: logs,
		codec: session.NewCodec([][]byte{secret}, 24*time.Hour, time.Now)}
}

// seal makes a session cookie value for user, as a login would.
func (e *env) seal(t testing.TB, user string, groups ...string) string {
	t.Helper()
	now := time.Now()
	v, err := e.codec.SealSession("authservice_session", &session.Session{ID: "id-" + user, Subject: user, User: user,
		Groups: groups, Created: now.Unix(), Expires: now.Add(time.Hour).Unix(), Active: now.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// req is a request as a gateway sees it: method, path with query, host,
// scheme and the header (lowercase names, one value each, as Envoy's
// headers map carries them).
type req struct {
	method, path, host, scheme string
	headers                    map[string]string
}

// checkRequest is what Envoy's ext_authz filter sends for r: the
// attributes, the headers map with the pseudo-headers among them.
func (r req) checkRequest() *authv3.CheckRequest {
	h := map[string]string{":method": r.method, ":path": r.path, ":authority": r.host, ":scheme": r.scheme}
	for k, v := range r.headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Id: "1", Method: r.method, Path: r.path, Host: r.host, Scheme: r.scheme,
			Protocol: "HTTP/1.1", Size: -1, Headers: h}}}}
}

// rawCheckRequest is the same with encode_raw_headers: header_map, raw
// values.
func (r req) rawCheckRequest() *authv3.CheckRequest {
	c := r.checkRequest()
	hr := c.Attributes.Request.Http
	hm := &corev3.HeaderMap{}
	for k, v := range hr.Headers {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	hr.Headers, hr.HeaderMap = nil, hm
	return c
}

// httpRequest is what Envoy's HTTP ext_authz filter sends for r to the
// HTTP check port (every header passed: the widest allowed_headers), from
// the gateway's address, which the gRPC front sees too.
func (r req) httpRequest() *http.Request {
	hr := httptest.NewRequest(r.method, r.path, nil)
	hr.Host, hr.RemoteAddr = r.host, "127.0.0.1:40000"
	for k, v := range r.headers {
		hr.Header.Set(k, v)
	}
	if r.scheme != "" && hr.Header.Get("X-Forwarded-Proto") == "" {
		hr.Header.Set("X-Forwarded-Proto", r.scheme)
	}
	return hr
}

func (e *env) grpcCheck(t testing.TB, c *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	resp, err := e.client.Check(context.Background(), c)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

func (e *env) httpCheck(r req) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	e.parts.Check.ServeHTTP(w, r.httpRequest())
	return w
}

func lower(h http.Header) map[string][]string {
	out := map[string][]string{}
	for k, v := range h {
		out[strings.ToLower(k)] = v
	}
	return out
}
