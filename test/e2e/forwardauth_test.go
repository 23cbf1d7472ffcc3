//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// TestForwardAuthProxies runs the documented recipes with real nginx (and
// nginx calling the verify endpoint exactly as ingress-nginx does) and real
// Caddy: login, identity upstream, the upstream's Cookie header without the
// service's cookies, and a client that forges the headers each proxy uses to
// describe the original request.
func TestForwardAuthProxies(t *testing.T) {
	for _, proxy := range []string{"caddy", "nginx", "ingress-nginx"} {
		t.Run(proxy, func(t *testing.T) {
			dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a"})
			env := peer.KubeflowEnv(dex)
			env["SKIP_AUTH_URLS"] = "/dex,/public"
			env["FORWARD_AUTH_PROXY"] = proxy
			rules := filepath.Join(t.TempDir(), "rules.yaml")
			os.WriteFile(rules, []byte(`rules:
- name: admin-only
  pathPrefix: /admin/
  allow: {users: [nobody@example.com]}
- name: no-deletes
  pathPrefix: /data/
  methods: [DELETE]
  allow: {users: [nobody@example.com]}
`), 0o600)
			env["AUTHORIZATION_RULES_FILE"] = rules
			if proxy == "caddy" {
				env["FORWARD_AUTH_REDIRECT"] = "true" // Caddy passes the 302 on
			}
			svc := peer.StartService(t, env)
			svc.WaitReady(t, 30*time.Second)
			up := peer.StartUpstream(t)
			tg := peer.ForwardAuthTargets{
				Service:      strings.TrimPrefix(svc.CheckURL, "http://"),
				Dex:          fmt.Sprintf("127.0.0.1:%d", dex.Port),
				Upstream:     strings.TrimPrefix(up, "http://"),
				IngressNginx: proxy == "ingress-nginx",
			}
			var front string
			if proxy == "caddy" {
				front = peer.StartCaddy(t, tg)
			} else {
				front = peer.StartNginx(t, tg)
			}
			frontURL, _ := url.Parse(front)

			c := newClient()
			resp, err := peer.DexLogin(c.Client, front+"/notebook/ns/nb?format=json&a=1", "user@example.com", "12341234")
			e := readEcho(t, resp, err)
			if e.Path != "/notebook/ns/nb" || e.Query != "format=json&a=1" {
				t.Fatalf("landed on %s?%s", e.Path, e.Query)
			}
			if header(e, "kubeflow-userid") != "user@example.com" || header(e, "kubeflow-groups") != "team-a" {
				t.Fatalf("identity upstream: %v", e.Headers)
			}
			// The upstream gets the application's cookies byte for byte and
			// none of the service's.
			c.Jar.SetCookies(frontURL, []*http.Cookie{{Name: "_xsrf", Value: "2|abc|def", Path: "/"}, {Name: "theme", Value: "dark", Path: "/"}})
			resp, err = c.Get(front + "/cookies?format=json")
			e = readEcho(t, resp, err)
			if got := strings.Join(e.Headers["cookie"], "; "); strings.Contains(got, "authservice") || !strings.Contains(got, "_xsrf=2|abc|def") || !strings.Contains(got, "theme=dark") {
				t.Fatalf("upstream Cookie header %q: want the application's cookies only", got)
			}
			// Only the service's cookies: the upstream gets no Cookie at all.
			jar := c.Jar
			for _, ck := range jar.Cookies(frontURL) {
				if !strings.HasPrefix(ck.Name, "authservice") {
					jar.SetCookies(frontURL, []*http.Cookie{{Name: ck.Name, Path: "/", MaxAge: -1}})
				}
			}
			resp, err = c.Get(front + "/cookies?format=json")
			if e = readEcho(t, resp, err); strings.Join(e.Headers["cookie"], "") != "" {
				t.Fatalf("upstream Cookie header %q with only the service's cookies", e.Headers["cookie"])
			}
			// Client-sent identity headers are overwritten.
			req, _ := http.NewRequest("GET", front+"/x?format=json", nil)
			req.Header.Set("Kubeflow-Userid", "admin@example.com")
			req.Header.Set("Kubeflow-Groups", "admins")
			resp, err = c.Do(req)
			e = readEcho(t, resp, err)
			if header(e, "kubeflow-userid") != "user@example.com" || header(e, "kubeflow-groups") != "team-a" {
				t.Fatalf("client identity headers passed: %v", e.Headers)
			}
			// Without a session, nothing reaches the upstream.
			code, _ := status(t, newClient().noFollow(), front+"/x", map[string]string{"Kubeflow-Userid": "admin@example.com"})
			if code != 302 && code != 401 {
				t.Fatalf("without session: %d", code)
			}

			// Every header a forward-auth proxy may use to describe the
			// original request, forged by the client, in both kinds.
			forged := func(uri, method string) map[string]string {
				return map[string]string{
					"X-Forwarded-Uri": uri, "X-Forwarded-Host": frontURL.Host, "X-Forwarded-Method": method, "X-Forwarded-Proto": "https",
					"X-Original-Url": front + uri, "X-Original-Uri": uri, "X-Original-Method": method,
				}
			}
			anon := newClient().noFollow()
			// An anonymous request posing as a skip path.
			if code, _ := status(t, anon, front+"/notebook/x", forged("/dex/", "GET")); code != 302 && code != 401 {
				t.Fatalf("anonymous request with a forged skip path: %d", code)
			}
			if code, _ := status(t, anon, front+"/notebook/x", forged("/public/x", "OPTIONS")); code != 302 && code != 401 {
				t.Fatalf("anonymous request with a forged skip path and method: %d", code)
			}
			// A signed-in user escaping a path rule.
			signed := c.noFollow()
			if code, _ := status(t, signed, front+"/admin/x", nil); code != 403 {
				t.Fatalf("the rule on /admin/: %d", code)
			}
			if code, _ := status(t, signed, front+"/admin/x", forged("/", "GET")); code != 403 {
				t.Fatalf("a signed-in user escaped the rule on /admin/ with forged headers: %d", code)
			}
			// A forged method deciding what the rules see.
			del := func(hdr map[string]string) int {
				req, _ := http.NewRequest("DELETE", front+"/data/x", nil)
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				resp, err := signed.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			if code := del(nil); code != 403 {
				t.Fatalf("DELETE under the rule: %d", code)
			}
			if code := del(forged("/data/x", "GET")); code != 403 {
				t.Fatalf("DELETE passed as GET with forged method headers: %d", code)
			}
			// A request target with a raw "#": nginx passes it as it is in
			// X-Original-URL (and to the upstream), Caddy in the query of
			// X-Forwarded-Uri. Parsed as a URL, what follows it would be cut
			// off: /public#/../admin/x judged as the skip path /public. The
			// service refuses it (400; nginx's auth_request turns any status
			// but 2xx, 401 and 403 into 500), so it never reaches the
			// upstream, signed in or not.
			refusedBefore := badRequests(t, svc)
			for _, target := range []string{"/public#/../admin/x", "/public/?a=1#/../../admin/x", "/notebook/x?y=1#z"} {
				for _, who := range []string{"anonymous", "signed in"} {
					cookie := ""
					if who == "signed in" {
						cookie = "authservice_session=" + c.cookie(front, "authservice_session")
					}
					st, body := rawThrough(t, frontURL.Host, target, cookie)
					if st == 200 || strings.Contains(body, `"headers"`) {
						t.Fatalf("%s request for %q through %s reached the upstream: %d %.200s", who, target, proxy, st, body)
					}
				}
			}
			if n := badRequests(t, svc) - refusedBefore; proxy != "caddy" && n < 6 {
				t.Fatalf("the service refused %d of the 6 requests with a raw # as malformed (400), want all", n)
			} else if proxy == "caddy" && n < 4 {
				// Caddy encodes a # in the path (%23, judged as a path
				// character); only the two in the query reach the service raw.
				t.Fatalf("the service refused %d of the 4 requests with a raw # in the query, want all", n)
			}

			// A back-channel logout delivered through the proxy is handled
			// (here refused: a forged token), never answered 200 unread.
			resp, err = http.PostForm(front+"/authservice/oidc/backchannel-logout", url.Values{"logout_token": {"a.b.c"}})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 400 {
				t.Fatalf("back-channel logout through %s: %d, want 400 from the service", proxy, resp.StatusCode)
			}
		})
	}
}

// TestForgedForwardedHeadersFromUntrustedAddress: X-Forwarded-* from an
// address outside FORWARD_AUTH_TRUSTED_PROXIES are ignored.
func TestForgedForwardedHeadersFromUntrustedAddress(t *testing.T) {
	dex := peer.StartDex(t, peer.DexOptions{})
	env := peer.KubeflowEnv(dex)
	env["SKIP_AUTH_URLS"] = "/public"
	env["SERVER_HOSTNAME"] = "127.0.0.1"
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	from := func(src string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, n, a string) (net.Conn, error) { return d.DialContext(ctx, n, a) }}}
	}
	forged := map[string]string{"X-Original-Method": "GET", "X-Original-Url": "http://kf.example.com/public/anything"}
	if code, _ := status(t, from("127.0.0.1"), svc.CheckURL+"/authservice/verify", forged); code != 200 {
		t.Fatalf("from a trusted proxy: %d", code)
	}
	if code, _ := status(t, from("127.0.0.2"), svc.CheckURL+"/authservice/verify", forged); code != 401 {
		t.Fatalf("forged headers from 127.0.0.2 were believed: %d", code)
	}
}

// rawThrough sends a GET with the request target exactly as given (Go's
// client would drop a fragment) and returns the status and body.
func rawThrough(t *testing.T, addr, target, cookie string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	req := "GET " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nAccept: application/json\r\n"
	if cookie != "" {
		req += "Cookie: " + cookie + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"Connection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer for %q: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(b)
}

// badRequests is the service's count of checks answered 400 for a
// malformed request.
func badRequests(t *testing.T, svc *peer.Service) int {
	t.Helper()
	resp, err := http.Get(svc.ProbeURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, `oidc_authservice_checks_total{decision="deny",protocol="http",reason="bad_request"} `) {
			n, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			return int(n)
		}
	}
	return 0
}

// TestForwardAuthUpstreamAuthorization: what an upstream behind each
// forward-auth recipe receives in Authorization, with an upstream that
// records every header and a second client replaying what it recorded.
// A client's bearer token the service accepted and a session value sent as
// a bearer (alone or next to the cookie) never reach the upstream; the
// application's own Authorization and a skip path's pass unchanged; with
// UPSTREAM_TOKEN=id_token (and ACCEPT_PROVIDER_ID_TOKENS=false, as
// docs/forward-auth.md asks behind a forward-auth proxy) the upstream gets
// the ID token in the client's header's place, and nobody who replays it is
// let through. A header the answer empties (a user without groups, a skip
// path) is removed, not left as the client sent it.
func TestForwardAuthUpstreamAuthorization(t *testing.T) {
	for _, proxy := range []string{"caddy", "nginx", "ingress-nginx"} {
		t.Run(proxy, func(t *testing.T) {
			dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a", ExtraUsers: []string{"nogroups@example.com:12341234"}})
			up := peer.StartUpstream(t)
			start := func(env map[string]string) string {
				e := peer.KubeflowEnv(dex)
				e["SKIP_AUTH_URLS"] = "/dex,/public"
				e["FORWARD_AUTH_PROXY"] = proxy
				if proxy == "caddy" {
					e["FORWARD_AUTH_REDIRECT"] = "true"
				}
				for k, v := range env {
					e[k] = v
				}
				svc := peer.StartService(t, e)
				svc.WaitReady(t, 30*time.Second)
				tg := peer.ForwardAuthTargets{Service: strings.TrimPrefix(svc.CheckURL, "http://"), Dex: fmt.Sprintf("127.0.0.1:%d", dex.Port),
					Upstream: strings.TrimPrefix(up, "http://"), IngressNginx: proxy == "ingress-nginx"}
				if proxy == "caddy" {
					return peer.StartCaddy(t, tg)
				}
				return peer.StartNginx(t, tg)
			}
			get := func(c *http.Client, u string, hdr map[string]string) (int, echo) {
				t.Helper()
				req, _ := http.NewRequest("GET", u, nil)
				req.Header.Set("Accept", "application/json")
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var e echo
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode == 200 {
					if err := json.Unmarshal(b, &e); err != nil {
						t.Fatalf("not the upstream's answer at %s: %.300s", u, b)
					}
				}
				return resp.StatusCode, e
			}
			// noAuthorization: the upstream got no Authorization header at
			// all (not even an empty one).
			noAuthorization := func(what string, e echo) {
				t.Helper()
				if v, ok := e.Headers["authorization"]; ok {
					t.Errorf("%s: the upstream got Authorization %q", what, v)
				}
			}
			// replay sends every header an upstream recorded, from a client
			// of its own: never let through as the user.
			replay := func(front string, e echo, who string) {
				t.Helper()
				hdr := map[string]string{}
				for k, v := range e.Headers {
					switch k {
					case "host", "content-length", "connection", "accept-encoding", "user-agent":
						continue
					}
					hdr[k] = strings.Join(v, ", ")
				}
				code, got := get(newClient().noFollow(), front+"/notebook/replayed?format=json", hdr)
				if code == 200 && header(got, "kubeflow-userid") == who {
					t.Errorf("replaying what the upstream received (%v) was let through as %s", e.Headers, who)
				}
			}

			// UPSTREAM_TOKEN=id_token, as docs/forward-auth.md sets it up.
			hand := start(map[string]string{"UPSTREAM_TOKEN": "id_token", "ACCEPT_PROVIDER_ID_TOKENS": "false"})
			c := newClient()
			resp, err := peer.DexLogin(c.Client, hand+"/notebook/x?format=json", "user@example.com", "12341234")
			e := readEcho(t, resp, err)
			idToken, ok := strings.CutPrefix(header(e, "authorization"), "Bearer ")
			if claims := jwtClaims(t, idToken); !ok || claims["iss"] != dex.Issuer || claims["email"] != "user@example.com" {
				t.Fatalf("UPSTREAM_TOKEN=id_token: the upstream got Authorization %q, want the user's ID token", header(e, "authorization"))
			}
			replay(hand, e, "user@example.com")
			for _, a := range []string{"Basic dTpw", "Bearer " + c.cookie(hand, "authservice_session")} {
				if _, e := get(c.Client, hand+"/notebook/x", map[string]string{"Authorization": a}); header(e, "authorization") != "Bearer "+idToken {
					t.Errorf("UPSTREAM_TOKEN=id_token, the client's Authorization %.20q: the upstream got %q", a, header(e, "authorization"))
				}
			}
			if code, _ := get(newClient().noFollow(), hand+"/notebook/x", map[string]string{"Authorization": "Bearer " + idToken}); code == 200 {
				t.Errorf("the ID token handed upstream was accepted as a bearer token behind %s", proxy)
			}

			// The defaults: no token for the upstream; the client's bearer
			// token (here a Dex ID token, which the service accepts) is
			// removed.
			def := start(nil)
			c = newClient()
			resp, err = peer.DexLogin(c.Client, def+"/notebook/x?format=json", "user@example.com", "12341234")
			e = readEcho(t, resp, err)
			noAuthorization("a session cookie", e)
			sess := c.cookie(def, "authservice_session")
			for what, cl := range map[string]*http.Client{"alone": newClient().Client, "next to the session cookie": c.Client} {
				for name, a := range map[string]string{"a client's bearer token the service accepted": "Bearer " + idToken, "a session value as a bearer": "Bearer " + sess} {
					code, e := get(cl, def+"/notebook/x", map[string]string{"Authorization": a})
					if code != 200 || header(e, "kubeflow-userid") != "user@example.com" {
						t.Fatalf("%s, %s: %d %v", name, what, code, e.Headers)
					}
					noAuthorization(name+", "+what, e)
					replay(def, e, "user@example.com")
				}
			}
			if _, e := get(c.Client, def+"/notebook/x", map[string]string{"Authorization": "Basic dTpw"}); header(e, "authorization") != "Basic dTpw" {
				t.Errorf("a session cookie with the application's own Authorization: the upstream got %q", e.Headers["authorization"])
			}
			// A skip path: the client's Authorization as it is (Dex's token
			// endpoint reads client credentials from it); forged identity
			// headers removed.
			code, e := get(newClient().Client, def+"/public/x", map[string]string{"Authorization": "Basic Y2xpZW50OnNlY3JldA==", "Kubeflow-Userid": "admin@example.com", "Kubeflow-Groups": "admins"})
			if code != 200 || header(e, "authorization") != "Basic Y2xpZW50OnNlY3JldA==" {
				t.Errorf("skip path: %d, the upstream got Authorization %q", code, e.Headers["authorization"])
			}
			if v, ok := e.Headers["kubeflow-userid"]; ok {
				t.Errorf("skip path: the upstream got kubeflow-userid %q", v)
			}
			if v, ok := e.Headers["kubeflow-groups"]; ok {
				t.Errorf("skip path: the upstream got kubeflow-groups %q", v)
			}
			// A user without groups cannot name groups of its own.
			ng := newClient()
			resp, err = peer.DexLogin(ng.Client, def+"/notebook/x?format=json", "nogroups@example.com", "12341234")
			readEcho(t, resp, err)
			code, e = get(ng.Client, def+"/notebook/x", map[string]string{"Kubeflow-Groups": "admins", "Authorization": "Bearer " + ng.cookie(def, "authservice_session")})
			if code != 200 || header(e, "kubeflow-userid") != "nogroups@example.com" {
				t.Fatalf("user without groups: %d %v", code, e.Headers)
			}
			if v, ok := e.Headers["kubeflow-groups"]; ok {
				t.Errorf("user without groups: the upstream got kubeflow-groups %q", v)
			}
			noAuthorization("user without groups, session value as a bearer", e)
		})
	}
}

// jwtClaims reads a JWT's claims without verifying it (the service and the
// gateway verify; this only says what the upstream was handed).
func jwtClaims(t *testing.T, raw string) map[string]any {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var claims map[string]any
	json.Unmarshal(b, &claims)
	return claims
}
