//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// traceHeaders adds the trace context a gateway sends with the check to
// every request for the check port (host), as Envoy's ext_authz client
// does; set changes it between requests.
type traceHeaders struct {
	host string
	set  map[string]string
	next http.RoundTripper
}

func (h *traceHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == h.host {
		r = r.Clone(r.Context())
		for k, v := range h.set {
			r.Header.Set(k, v)
		}
	}
	return h.next.RoundTrip(r)
}

// TestTracesInJaeger: a real Jaeger v2 (its OTLP receivers and query API)
// receives the service's spans over http/protobuf and over grpc. A login
// (the check that starts it, the callback, the check that follows) sent
// with a traceparent, a check sent with Istio's B3 multi-header context and
// a logout sent with a single b3 header each produce spans in that trace,
// under that parent: the check's server span with its decision and reason,
// and under the callback the code exchange with its token, key-set and
// userinfo calls and the Redis command of the replay check; under the
// logout, the Redis publication of the revocation. No tag carries the code,
// the state, the session cookie or a token.
func TestTracesInJaeger(t *testing.T) {
	j := peer.StartJaeger(t)
	redis := peer.StartRedis(t)
	ports := map[string]int{"http/protobuf": peer.FreePort(t), "grpc": peer.FreePort(t)}
	var callbacks []string
	for _, p := range ports {
		callbacks = append(callbacks, fmt.Sprintf("http://127.0.0.1:%d/authservice/oidc/callback", p))
	}
	dex := peer.StartDex(t, peer.DexOptions{RedirectURIs: callbacks})

	for i, proto := range []string{"http/protobuf", "grpc"} {
		t.Run(proto, func(t *testing.T) {
			endpoint := j.OTLPHTTP
			if proto == "grpc" {
				endpoint = j.OTLPGRPC
			}
			service := "authservice-" + strings.ReplaceAll(proto, "/", "-")
			env := peer.KubeflowEnv(dex)
			delete(env, "OIDC_AUTH_URL") // the browser goes to Dex itself: no gateway routes /dex here
			for k, v := range map[string]string{
				"SERVER_PORT": strconv.Itoa(ports[proto]), "REDIRECT_URL": fmt.Sprintf("http://127.0.0.1:%d/authservice/oidc/callback", ports[proto]),
				"REDIS_URL": redis, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": proto,
				"OTEL_SERVICE_NAME": service, "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=e2e",
			} {
				env[k] = v
			}
			svc := peer.StartService(t, env)
			svc.WaitReady(t, 30*time.Second)

			// Trace ids per run, parents as a gateway's spans.
			login := fmt.Sprintf("4bf92f3577b34da6a3ce929d0e0e47%02d", 36+i)
			check := fmt.Sprintf("5cf92f3577b34da6a3ce929d0e0e47%02d", 36+i)
			logout := fmt.Sprintf("6df92f3577b34da6a3ce929d0e0e47%02d", 36+i)
			const loginParent, checkParent, logoutParent = "00f067aa0ba902b7", "0a1b2c3d4e5f6071", "1122334455667788"

			u, _ := url.Parse(svc.CheckURL)
			th := &traceHeaders{host: u.Host, next: http.DefaultTransport,
				set: map[string]string{"traceparent": "00-" + login + "-" + loginParent + "-01"}}
			c := newClient()
			c.Transport = th
			resp, err := peer.DexLogin(c.Client, svc.CheckURL+"/notebook/?format=json", "user@example.com", "12341234")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("kubeflow-userid") != "user@example.com" {
				t.Fatalf("login: %d at %s", resp.StatusCode, resp.Request.URL)
			}
			var code, state string
			for _, v := range c.visited {
				if v.Path == "/authservice/oidc/callback" {
					code, state = v.Query().Get("code"), v.Query().Get("state")
				}
			}
			cookie := c.cookie(svc.CheckURL, "authservice_session")
			if code == "" || cookie == "" {
				t.Fatalf("no callback or session: %v", c.visited)
			}

			th.set = map[string]string{"x-b3-traceid": check, "x-b3-spanid": checkParent, "x-b3-sampled": "1",
				"x-b3-parentspanid": "0f0f0f0f0f0f0f0f"}
			if resp, err := c.noFollow().Get(svc.CheckURL + "/pipeline/"); err != nil || resp.StatusCode != 200 {
				t.Fatalf("check with B3: %v %v", resp, err)
			}
			th.set = map[string]string{"b3": logout + "-" + logoutParent + "-1"}
			if resp, err := c.noFollow().Get(svc.CheckURL + "/authservice/logout"); err != nil || resp.StatusCode != 302 {
				t.Fatalf("logout with b3: %v %v", resp, err)
			}

			secrets := []string{code, state, cookie}
			spans := waitTrace(t, j, login, 8)
			checks := named(spans, "check")
			if len(checks) != 2 {
				t.Fatalf("login trace: %d check spans: %v", len(checks), names(spans))
			}
			for _, s := range checks {
				expect(t, s, loginParent, service)
			}
			if d := []string{checks[0].Tag("oidc_authservice.decision") + " " + checks[0].Tag("oidc_authservice.reason"),
				checks[1].Tag("oidc_authservice.decision") + " " + checks[1].Tag("oidc_authservice.reason")}; !slices.Contains(d, "redirect no_credentials") ||
				!slices.Contains(d, "allow session") {
				t.Errorf("check decisions: %v", d)
			}
			cb := one(t, spans, "login callback")
			expect(t, cb, loginParent, service)
			if cb.Tag("oidc_authservice.login") != "completed" || cb.Tag("span.kind") != "server" {
				t.Errorf("callback tags: %v", cb.Tags)
			}
			ex := one(t, spans, "code exchange")
			expect(t, ex, cb.SpanID, service)
			for _, call := range []string{"POST token", "GET jwks", "GET userinfo"} {
				s := one(t, spans, call)
				expect(t, s, ex.SpanID, service)
				if s.Tag("span.kind") != "client" || s.Tag("http.response.status_code") != "200" {
					t.Errorf("%s: %v", call, s.Tags)
				}
			}
			if !slices.ContainsFunc(spans, func(s peer.JaegerSpan) bool { return s.Tag("db.system") == "redis" && s.Parent() == cb.SpanID }) {
				t.Errorf("no Redis span under the callback: %v", names(spans))
			}

			spans = waitTrace(t, j, check, 1)
			s := one(t, spans, "check")
			expect(t, s, checkParent, service)
			if s.Tag("oidc_authservice.decision") != "allow" || s.Tag("url.path") != "/pipeline/" {
				t.Errorf("B3 check: %v", s.Tags)
			}

			spans = waitTrace(t, j, logout, 2)
			lo := one(t, spans, "logout")
			expect(t, lo, logoutParent, service)
			if !slices.ContainsFunc(spans, func(s peer.JaegerSpan) bool {
				return s.Tag("db.system") == "redis" && s.Parent() == lo.SpanID && strings.Contains(s.OperationName, "publish")
			}) {
				t.Errorf("no Redis publication under the logout: %v", names(spans))
			}
			for _, id := range []string{login, check, logout} {
				all, _ := j.Trace(id)
				for _, s := range all {
					for _, tag := range s.Tags {
						for _, secret := range secrets {
							if strings.Contains(fmt.Sprint(tag.Value), secret) {
								t.Errorf("span %s: tag %s carries a credential", s.OperationName, tag.Key)
							}
						}
					}
				}
			}
		})
	}
}

// waitTrace polls Jaeger until the trace has at least n spans (the service
// exports every 2 s).
func waitTrace(t *testing.T, j *peer.Jaeger, id string, n int) []peer.JaegerSpan {
	t.Helper()
	var spans []peer.JaegerSpan
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		if spans, err = j.Trace(id); err == nil && len(spans) >= n {
			time.Sleep(500 * time.Millisecond) // the rest of the batch
			spans, err = j.Trace(id)
			break
		}
	}
	if err != nil || len(spans) < n {
		t.Fatalf("trace %s: %d spans (%v), want at least %d: %v", id, len(spans), err, n, names(spans))
	}
	return spans
}

// expect: the span is in the service's process, under parent.
func expect(t *testing.T, s peer.JaegerSpan, parent, service string) {
	t.Helper()
	if s.Parent() != parent || s.Service != service {
		t.Errorf("%s: parent %s (want %s), service %q (want %q)", s.OperationName, s.Parent(), parent, s.Service, service)
	}
}

func named(spans []peer.JaegerSpan, name string) []peer.JaegerSpan {
	var out []peer.JaegerSpan
	for _, s := range spans {
		if s.OperationName == name {
			out = append(out, s)
		}
	}
	return out
}

func one(t *testing.T, spans []peer.JaegerSpan, name string) peer.JaegerSpan {
	t.Helper()
	n := named(spans, name)
	if len(n) != 1 {
		t.Fatalf("%d spans %q: %v", len(n), name, names(spans))
	}
	return n[0]
}

func names(spans []peer.JaegerSpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.OperationName+"<"+s.Parent()+">")
	}
	return out
}
