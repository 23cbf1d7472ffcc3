package grpccheck_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

// outcome is what a gateway does with a check's answer, whichever the
// protocol: let the request through with header mutations, or answer the
// client.
type outcome struct {
	Status  int
	Set     map[string][]string // upstream headers set (overwriting the client's)
	Removed []string            // upstream headers removed
	Client  map[string][]string // headers to the client (deny), or added to the upstream's answer (allow)
	Body    string
}

// fromHTTP reads an HTTP check answer as Envoy's HTTP filter does with the
// widest configuration: on 200 every header of the answer is set upstream
// (x-envoy-auth-headers-to-remove removes, set-cookie goes to the client);
// otherwise every header and the body go to the client.
func fromHTTP(w *httptest.ResponseRecorder) outcome {
	o := outcome{Status: w.Code, Set: map[string][]string{}, Client: map[string][]string{}}
	for k, v := range lower(w.Header()) {
		switch {
		case k == "content-length":
		case w.Code != 200:
			o.Client[k] = v
		case k == "set-cookie":
			o.Client[k] = v
		case k == "x-envoy-auth-headers-to-remove":
			for _, l := range v {
				for _, n := range strings.Split(l, ",") {
					o.Removed = append(o.Removed, strings.TrimSpace(n))
				}
			}
		default:
			o.Set[k] = v
		}
	}
	if w.Code != 200 {
		o.Body = w.Body.String()
	}
	slices.Sort(o.Removed)
	return o
}

// fromGRPC reads a CheckResponse as Envoy's filter does (OK: headers with
// their append actions, headers_to_remove, response_headers_to_add;
// otherwise denied_response).
func fromGRPC(t *testing.T, r *authv3.CheckResponse) outcome {
	t.Helper()
	o := outcome{Set: map[string][]string{}, Client: map[string][]string{}}
	add := func(m map[string][]string, opts []*corev3.HeaderValueOption, deny bool) {
		for i, h := range opts {
			k := h.GetHeader().GetKey()
			if k != strings.ToLower(k) {
				t.Errorf("header %q not lowercase", k)
			}
			if hasAppend(h) {
				t.Errorf("header %s: the deprecated append is set", k)
			}
			switch h.AppendAction {
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
				m[k] = []string{h.Header.Value}
			case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
				if deny && len(m[k]) == 0 {
					t.Errorf("header %s (#%d): added without a first value that overwrites", k, i)
				}
				m[k] = append(m[k], h.Header.Value)
			default:
				t.Errorf("header %s: append action %v", k, h.AppendAction)
			}
		}
	}
	if ok := r.GetOkResponse(); ok != nil {
		if r.GetStatus().GetCode() != int32(codes.OK) {
			t.Errorf("ok_response with status %v", r.GetStatus())
		}
		o.Status = 200
		add(o.Set, ok.Headers, false)
		for _, h := range ok.ResponseHeadersToAdd {
			if h.AppendAction != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD || hasAppend(h) {
				t.Errorf("response header %s must be added (APPEND_IF_EXISTS_OR_ADD), not %v", h.Header.Key, h.AppendAction)
			}
			o.Client[h.Header.Key] = append(o.Client[h.Header.Key], h.Header.Value)
		}
		o.Removed = slices.Clone(ok.HeadersToRemove)
		slices.Sort(o.Removed)
		return o
	}
	d := r.GetDeniedResponse()
	if d == nil || r.GetStatus().GetCode() == int32(codes.OK) {
		t.Fatalf("neither OK nor denied: %v", r)
	}
	o.Status = int(d.GetStatus().GetCode())
	add(o.Client, d.Headers, true)
	o.Body = d.Body
	return o
}

// hasAppend reports whether the deprecated field append is set: Envoy then
// ignores append_action.
func hasAppend(h *corev3.HeaderValueOption) bool {
	m := h.ProtoReflect()
	return m.Has(m.Descriptor().Fields().ByName("append"))
}

// random masks what differs between two answers to the same request by
// design: login states, nonces, PKCE challenges, sealed values.
var random = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`(state|nonce|code_challenge)=[^&;" ]+`), "$1=…"},
	{regexp.MustCompile(`authservice_state_[A-Za-z0-9_-]+=[^;]*`), "authservice_state_…=…"},
	{regexp.MustCompile(`authservice_session=[^;]+`), "authservice_session=…"},
	{regexp.MustCompile(`Expires=[^;]+`), "Expires=…"},
}

func mask(s string) string {
	for _, r := range random {
		s = r.re.ReplaceAllString(s, r.with)
	}
	return s
}

func (o outcome) masked() outcome {
	m := func(in map[string][]string) map[string][]string {
		out := map[string][]string{}
		for k, vs := range in {
			for _, v := range vs {
				out[k] = append(out[k], mask(v))
			}
			slices.Sort(out[k])
		}
		return out
	}
	o.Set, o.Client, o.Body = m(o.Set), m(o.Client), mask(o.Body)
	return o
}

// Every row of the decision, asked over HTTP and over gRPC (with Envoy's
// headers map and with header_map's raw values), gives the same answer:
// status, upstream headers set and removed, headers and cookies for the
// client, body. (test/extauthz runs the same through the gateways.)
func TestSameDecisionOverHTTPAndGRPC(t *testing.T) {
	e := newEnv(t, nil)
	// A session of its own for each row: a logout ends the one it gets.
	n := 0
	session := func() string {
		n++
		return e.seal(t, fmt.Sprintf("user%d@example.com", n), "team-a", "team-b")
	}
	alice := session()
	nav := func(path string, h ...string) req {
		r := req{method: "GET", path: path, host: "kubeflow.example.com", scheme: "http", headers: map[string]string{
			"accept": "text/html,application/xhtml+xml", "sec-fetch-mode": "navigate", "sec-fetch-site": "none",
			"x-request-id": "rid-1", "user-agent": "Mozilla/5.0", "x-forwarded-proto": "http"}}
		for i := 0; i+1 < len(h); i += 2 {
			r.headers[h[i]] = h[i+1]
		}
		return r
	}
	xhr := func(method, path string, h ...string) req {
		r := nav(path, h...)
		r.method = method
		r.headers["accept"] = "application/json"
		r.headers["x-requested-with"] = "XMLHttpRequest"
		r.headers["sec-fetch-mode"] = "cors"
		return r
	}
	rows := []struct {
		name string
		r    req
		want int
	}{
		{"session", nav("/notebook/ns/nb/lab", "cookie", "authservice_session="+alice), 200},
		{"session among other cookies", nav("/jupyter/", "cookie", "_ga=GA1; authservice_session="+alice+"; theme=dark"), 200},
		{"client-sent identity", nav("/jupyter/", "cookie", "authservice_session="+alice, "kubeflow-userid", "mallory@example.com",
			"kubeflow-groups", "admins", "kubeflow_userid", "mallory@example.com"), 200},
		{"session over https", func() req {
			r := nav("/jupyter/", "cookie", "__Host-authservice_session="+alice)
			r.scheme, r.headers["x-forwarded-proto"] = "https", "https"
			return r
		}(), 200},
		{"session value as bearer", xhr("GET", "/pipeline/apis/v2beta1/runs", "authorization", "Bearer "+alice), 200},
		{"navigation without session", nav("/jupyter/?ns=a&x=1"), 302},
		{"API call without session", xhr("GET", "/api/workgroup/env-info"), 401},
		{"POST without session", xhr("POST", "/jupyter/api/notebooks"), 401},
		{"forged session", nav("/jupyter/", "cookie", "authservice_session=Zm9yZ2Vk"), 302},
		{"invalid bearer JWT", xhr("GET", "/api/x", "authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"), 401},
		{"skip path", nav("/dex/auth?client_id=x", "kubeflow-userid", "mallory@example.com", "cookie", "authservice_session="+alice), 200},
		{"service's own page", nav("/authservice/site/homepage"), 200},
		{"OPTIONS without session", xhr("OPTIONS", "/api/x"), 401},
		{"malformed path", nav("/a%00b"), 400},
		{"logout GET", nav("/authservice/logout", "cookie", "authservice_session="+session()), 302},
		{"logout POST (old dashboard)", xhr("POST", "/authservice/logout", "authorization", "Bearer "+session()), 201},
		{"logout from another site", nav("/authservice/logout", "cookie", "authservice_session="+alice, "sec-fetch-site", "cross-site"), 403},
		{"callback without state", nav("/authservice/oidc/callback?code=x"), 400},
		{"callback POST", xhr("POST", "/authservice/oidc/callback"), 405},
		{"start, signed in", nav("/authservice/start?rd=/jupyter/", "cookie", "authservice_session="+session()), 302},
		{"forward-auth verify without its headers, from a trusted proxy", nav("/authservice/verify", "cookie", "authservice_session="+session()), 400},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			h := fromHTTP(e.httpCheck(row.r)).masked()
			for _, proto := range []struct {
				name string
				c    *authv3.CheckRequest
			}{{"headers", row.r.checkRequest()}, {"header_map", row.r.rawCheckRequest()}} {
				g := fromGRPC(t, e.grpcCheck(t, proto.c)).masked()
				if h.Status != row.want {
					t.Errorf("HTTP: status %d, want %d", h.Status, row.want)
				}
				if !reflect.DeepEqual(h, g) {
					t.Errorf("gRPC (%s) differs from HTTP:\nHTTP %+v\ngRPC %+v", proto.name, h, g)
				}
			}
		})
	}
}

// The allow answer's metadata names the user, the groups and why; a deny
// names the decision and why.
func TestDynamicMetadata(t *testing.T) {
	e := newEnv(t, map[string]string{"USERID_PREFIX": "oidc:"})
	alice := e.seal(t, "alice@example.com", "team-a", "team-b")
	r := req{method: "GET", path: "/jupyter/", host: "kubeflow.example.com", scheme: "http",
		headers: map[string]string{"cookie": "authservice_session=" + alice}}
	m := e.grpcCheck(t, r.checkRequest()).GetDynamicMetadata().AsMap()
	want := map[string]any{"decision": "allow", "reason": "session", "user_id": "oidc:alice@example.com", "groups": []any{"team-a", "team-b"}}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("allow: metadata %v, want %v", m, want)
	}
	r.headers = map[string]string{"accept": "application/json"}
	m = e.grpcCheck(t, r.checkRequest()).GetDynamicMetadata().AsMap()
	if want := map[string]any{"decision": "deny", "reason": "no_credentials"}; !reflect.DeepEqual(m, want) {
		t.Errorf("deny: metadata %v, want %v", m, want)
	}
	r.path = "/authservice/logout"
	m = e.grpcCheck(t, r.checkRequest()).GetDynamicMetadata().AsMap()
	if m["reason"] != "logout" || m["decision"] != "redirect" {
		t.Errorf("logout: metadata %v, want decision redirect, reason logout", m)
	}
}

// The HTTP answer's headers, recorded, as the reference for the rows above:
// a check of the recorder itself.
var _ http.ResponseWriter = httptest.NewRecorder()

// A renewed session (here: idle timeout) reaches the browser on the allow
// answer itself, in response_headers_to_add, even with
// SESSION_RENEW_REDIRECT, whose 307 only the HTTP check port answers.
func TestRenewalWithoutRedirect(t *testing.T) {
	e := newEnv(t, map[string]string{"SESSION_IDLE_TIMEOUT": "10m", "SESSION_RENEW_REDIRECT": "true"})
	now := time.Now()
	// Two sessions due for renewal: the redirect is taken once per renewal.
	due := func(id string) req {
		sealed, err := e.codec.SealSession("authservice_session", &session.Session{ID: id, Subject: "s", User: "alice@example.com",
			Groups: []string{"team-a"}, Created: now.Add(-time.Hour).Unix(), Expires: now.Add(time.Hour).Unix(), Active: now.Add(-2 * time.Minute).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return req{method: "GET", path: "/jupyter/?ns=a", host: "kubeflow.example.com", scheme: "http",
			headers: map[string]string{"cookie": "authservice_session=" + sealed, "accept": "text/html"}}
	}
	if w := e.httpCheck(due("over-http")); w.Code != http.StatusTemporaryRedirect {
		t.Fatalf("HTTP: %d, want SESSION_RENEW_REDIRECT's 307 (the row this test compares with)", w.Code)
	}
	r := due("over-grpc")
	resp := e.grpcCheck(t, r.checkRequest())
	ok := resp.GetOkResponse()
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK || ok == nil {
		t.Fatalf("gRPC: %v, want OK (no redirect)", resp)
	}
	var user string
	for _, h := range ok.Headers {
		if h.Header.Key == "kubeflow-userid" {
			user = h.Header.Value
		}
	}
	if user != "alice@example.com" {
		t.Errorf("gRPC: upstream kubeflow-userid %q, want alice@example.com", user)
	}
	var renewed string
	for _, h := range ok.ResponseHeadersToAdd {
		if c, err := http.ParseSetCookie(h.Header.Value); h.Header.Key == "set-cookie" && err == nil && c.Name == "authservice_session" {
			renewed = c.Value
		}
	}
	s, err := e.codec.OpenSession("authservice_session", renewed)
	if err != nil || s.Active <= now.Add(-time.Minute).Unix() {
		t.Fatalf("gRPC: response_headers_to_add %v carries no renewed session (%+v, %v)", ok.ResponseHeadersToAdd, s, err)
	}
	// The renewed cookie is allowed with no cookie to add.
	r.headers["cookie"] = "authservice_session=" + renewed
	if resp := e.grpcCheck(t, r.checkRequest()); resp.GetOkResponse() == nil || len(resp.GetOkResponse().ResponseHeadersToAdd) != 0 {
		t.Errorf("gRPC with the renewed cookie: %v, want OK with nothing to add", resp)
	}
}
