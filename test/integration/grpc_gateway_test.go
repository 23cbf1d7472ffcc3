package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// The differential table through the gateways: one running service with a
// real Dex behind two gateways built from Istio's generated configuration,
// deploy/overlays/istio-envoyfilter (the check over HTTP) and
// deploy/overlays/istio-envoyfilter-grpc (over gRPC). Every decision row
// gives the same status, the same headers upstream (identity set, the
// client's identity headers gone, Cookie rewritten without the service's
// cookies) and the same cookies for the client, but one documented
// difference: a renewed session reaches the browser over gRPC on the allow
// itself (response_headers_to_add), with no 307 to the same URL.

// gatewayAnswer is what a client and the upstream see of one request,
// without what differs from one request to the next (cookie values,
// state, request ids).
type gatewayAnswer struct {
	Status      int
	Location    string              // path and sorted query names, or the same-URL target
	ContentType string              // of a deny
	WWWAuth     string              // scheme only
	Cookies     []string            // Set-Cookie without values, sorted
	Upstream    map[string][]string // what the upstream got (nil: not reached)
}

// volatile are the upstream headers that differ between any two requests.
var volatile = map[string]bool{"x-request-id": true, "x-forwarded-for": true, "x-envoy-external-address": true,
	"content-length": true, "accept-encoding": true}

func answerOf(t *testing.T, resp *http.Response, base string) gatewayAnswer {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := gatewayAnswer{Status: resp.StatusCode}
	if loc := resp.Header.Get("Location"); loc != "" {
		u, err := url.Parse(loc)
		if err != nil {
			t.Fatalf("Location %q: %v", loc, err)
		}
		var names []string
		for k := range u.Query() {
			names = append(names, k)
		}
		slices.Sort(names)
		a.Location = strings.TrimPrefix(u.Scheme+"://"+u.Host, "://") + u.Path + "?" + strings.Join(names, "&")
		a.Location = strings.Replace(a.Location, base, "<gateway>", 1)
	}
	if resp.StatusCode != 200 {
		a.ContentType = resp.Header.Get("Content-Type")
	}
	if w := resp.Header.Get("Www-Authenticate"); w != "" {
		a.WWWAuth, _, _ = strings.Cut(w, " ")
	}
	for _, c := range resp.Header.Values("Set-Cookie") {
		name, rest, _ := strings.Cut(c, "=")
		if strings.HasPrefix(name, "authservice_state_") {
			name = "authservice_state_<login>" // one per login started
		}
		_, attrs, _ := strings.Cut(rest, ";")
		var kept []string
		for _, at := range strings.Split(attrs, ";") {
			at = strings.TrimSpace(at)
			if k, _, _ := strings.Cut(strings.ToLower(at), "="); k == "expires" {
				continue // a date: differs by the second
			}
			if at != "" {
				kept = append(kept, at)
			}
		}
		a.Cookies = append(a.Cookies, name+"; "+strings.Join(kept, "; "))
	}
	slices.Sort(a.Cookies)
	if resp.StatusCode == 200 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		var e echo
		if json.Unmarshal(b, &e) == nil && e.Headers != nil {
			a.Upstream = map[string][]string{}
			for k, v := range e.Headers {
				if !volatile[k] {
					a.Upstream[k] = v
				}
			}
		}
	}
	return a
}

type diffRow struct {
	name    string
	method  string
	path    string
	headers map[string]string
	session string // "": none; "s": the shared session; "own": one logged in through each gateway
	check   func(t *testing.T, a gatewayAnswer)
}

func TestGatewaysHTTPAndGRPCDecideAlike(t *testing.T) {
	// Dex keeps one refresh token per user and client: a login replaces
	// the previous one's. The sessions of the renewal and logout rows are
	// users of their own.
	dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a,team-b", IDTokenTTL: 15 * time.Second, ExtraUsers: []string{
		"renew-http@example.com:12341234:team-a;team-b", "renew-grpc@example.com:12341234:team-a;team-b",
		"logout-http@example.com:12341234:team-a;team-b", "logout-grpc@example.com:12341234:team-a;team-b"}})
	env := kubeflowEnv(dex)
	env["OIDC_SCOPES"] = "profile email groups offline_access"
	// Kubeflow's mesh passes no Set-Cookie on an HTTP allow: a renewal goes
	// back with a 307 over HTTP; over gRPC it never needs to.
	env["SESSION_RENEW_REDIRECT"] = "true"
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	up := peer.StartUpstream(t)
	gws := map[string]string{
		"http": peer.ServiceGateway(t, peer.EnvoyFilterLayout, svc, dex.Port, up),
		"grpc": peer.ServiceGateway(t, peer.GatewayLayout{Layout: "master_istio-envoyfilter-grpc"}, svc, dex.Port, up),
	}
	protos := []string{"http", "grpc"}
	login := func(proto, user string) string {
		b := newBrowser()
		resp, err := peer.DexLogin(b.Client, gws[proto]+"/login-landing?format=json", user, "12341234")
		if err != nil {
			t.Fatal(err)
		}
		e := readEcho(t, resp)
		if got := e.Headers["kubeflow-userid"]; len(got) != 1 || got[0] != user {
			t.Fatalf("login through the %s gateway: kubeflow-userid %q", proto, got)
		}
		u, _ := url.Parse(gws[proto])
		return cookieHeader(b, u)
	}
	noFollow := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	send := func(proto, method, path, cookie string, h map[string]string) *http.Response {
		req, err := http.NewRequest(method, gws[proto]+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range h {
			req.Header.Set(k, v)
		}
		if cookie != "" {
			req.Header.Set("Cookie", "_ga=GA1.2; "+cookie+"; theme=dark")
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	// Sessions for the renewal row, logged in first (their tokens are due
	// first), one through each gateway; the shared session of the table.
	renewal := map[string]string{"http": login("http", "renew-http@example.com"), "grpc": login("grpc", "renew-grpc@example.com")}
	shared := login("grpc", "user@example.com")
	idToken := dexIDToken(t, dex)

	hostile := map[string]string{"Kubeflow-Userid": "admin@example.com", "Kubeflow-Groups": "admins"}
	withHostile := func(h map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range hostile {
			out[k] = v
		}
		for k, v := range h {
			out[k] = v
		}
		return out
	}
	wantUser := func(t *testing.T, a gatewayAnswer, user string) {
		t.Helper()
		if a.Status != 200 || a.Upstream == nil {
			t.Fatalf("not allowed: %+v", a)
		}
		if !slices.Equal(a.Upstream["kubeflow-userid"], []string{user}) || !slices.Equal(a.Upstream["kubeflow-groups"], []string{"team-a,team-b"}) {
			t.Errorf("identity upstream: %q %q", a.Upstream["kubeflow-userid"], a.Upstream["kubeflow-groups"])
		}
	}
	wantIdentity := func(t *testing.T, a gatewayAnswer) { t.Helper(); wantUser(t, a, "user@example.com") }
	rows := []diffRow{
		{name: "session allow, hostile identity headers, the service's cookies among others", method: "GET", path: "/notebook/ns/nb/lab?format=json&x=1",
			headers: withHostile(map[string]string{"Accept": "text/html"}), session: "s", check: func(t *testing.T, a gatewayAnswer) {
				wantIdentity(t, a)
				if !slices.Equal(a.Upstream["cookie"], []string{"_ga=GA1.2; theme=dark"}) {
					t.Errorf("Cookie upstream %q, want the others' only", a.Upstream["cookie"])
				}
			}},
		{name: "session allow, API call", method: "POST", path: "/pipeline/apis/v2beta1/runs?format=json",
			headers: map[string]string{"Accept": "application/json", "Sec-Fetch-Site": "same-origin"}, session: "s", check: wantIdentity},
		{name: "anonymous navigation", method: "GET", path: "/jupyter/?ns=a",
			headers: withHostile(map[string]string{"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}), check: func(t *testing.T, a gatewayAnswer) {
				if a.Status != 302 || !strings.Contains(a.Location, "/dex/auth?") || len(a.Cookies) == 0 || a.Upstream != nil {
					t.Errorf("want a 302 to Dex with the login state's cookie: %+v", a)
				}
			}},
		{name: "anonymous API call", method: "GET", path: "/pipeline/apis/v2beta1/runs",
			headers: withHostile(map[string]string{"Accept": "application/json", "X-Requested-With": "XMLHttpRequest"}), check: func(t *testing.T, a gatewayAnswer) {
				if a.Status != 401 || a.Upstream != nil {
					t.Errorf("want a 401: %+v", a)
				}
			}},
		{name: "forbidden: a logout started by another site", method: "GET", path: "/authservice/logout",
			headers: map[string]string{"Sec-Fetch-Site": "cross-site", "Accept": "text/html"}, session: "s", check: func(t *testing.T, a gatewayAnswer) {
				if a.Status != 403 || a.Upstream != nil {
					t.Errorf("want a 403: %+v", a)
				}
			}},
		{name: "bearer token", method: "GET", path: "/pipeline/apis/v2beta1/runs?format=json",
			headers: withHostile(map[string]string{"Authorization": "Bearer " + idToken, "Accept": "application/json"}), check: func(t *testing.T, a gatewayAnswer) {
				if a.Status == 200 {
					wantIdentity(t, a)
					if a.Upstream["authorization"] != nil {
						t.Errorf("the token reached the upstream")
					}
				}
			}},
		{name: "forged bearer token", method: "GET", path: "/pipeline/apis/v2beta1/runs?format=json",
			headers: withHostile(map[string]string{"Authorization": "Bearer " + idToken[:len(idToken)-4] + "AAAA", "Accept": "application/json"}), check: func(t *testing.T, a gatewayAnswer) {
				if a.Status != 401 || a.Upstream != nil {
					t.Errorf("want a 401: %+v", a)
				}
			}},
		{name: "garbage session cookie", method: "GET", path: "/notebook/?format=json",
			headers: withHostile(map[string]string{"Accept": "text/html", "Cookie": "authservice_session=garbage; _ga=1"}), check: func(t *testing.T, a gatewayAnswer) {
				if a.Status == 200 {
					t.Errorf("a garbage cookie was let in: %+v", a)
				}
			}},
		{name: "logout", method: "POST", path: "/authservice/logout",
			headers: map[string]string{"Sec-Fetch-Site": "same-origin", "Accept": "text/html"}, session: "own", check: func(t *testing.T, a gatewayAnswer) {
				if a.Status >= 400 || len(a.Cookies) == 0 || a.Upstream != nil {
					t.Errorf("want the logout's answer clearing the cookies: %+v", a)
				}
			}},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			got := map[string]gatewayAnswer{}
			for _, p := range protos {
				cookie := ""
				switch r.session {
				case "s":
					cookie = shared
				case "own":
					cookie = login(p, "logout-"+p+"@example.com")
				}
				got[p] = answerOf(t, send(p, r.method, r.path, cookie, r.headers), gws[p])
				r.check(t, got[p])
			}
			if !reflect.DeepEqual(got["http"], got["grpc"]) {
				t.Errorf("the gateways differ:\nhttp %+v\ngrpc %+v", got["http"], got["grpc"])
			}
		})
	}
	// The logout ended the sessions it named: the next request with them
	// is anonymous through either gateway (the shared one is still in).
	if a := answerOf(t, send("grpc", "GET", "/x?format=json", shared, nil), gws["grpc"]); a.Status != 200 {
		t.Errorf("the shared session after the others' logouts: %+v", a)
	}

	// Renewal: once the session's ID token is due for a refresh, the HTTP
	// gateway's allow cannot carry the new cookie: a 307 to the same URL
	// does (SESSION_RENEW_REDIRECT); over gRPC the allow itself carries it,
	// with the identity upstream, and no 307.
	t.Run("renewal", func(t *testing.T) {
		renewed := map[string]gatewayAnswer{}
		deadline := time.Now().Add(60 * time.Second)
		for len(renewed) < 2 && time.Now().Before(deadline) {
			for _, p := range protos {
				if _, ok := renewed[p]; ok {
					continue
				}
				a := answerOf(t, send(p, "GET", "/renew/?format=json", renewal[p], map[string]string{"Accept": "text/html"}), gws[p])
				if a.Status != 200 || len(a.Cookies) > 0 {
					renewed[p] = a
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		h, g := renewed["http"], renewed["grpc"]
		if h.Status != http.StatusTemporaryRedirect || h.Location != "/renew/?format" || len(h.Cookies) == 0 {
			t.Errorf("over HTTP: %+v, want a 307 to the same URL with the renewed cookie", h)
		}
		if g.Status != 200 || len(g.Cookies) == 0 {
			t.Fatalf("over gRPC: %+v, want the allow with the renewed cookie (no 307)", g)
		}
		wantUser(t, g, "renew-grpc@example.com")
		if !reflect.DeepEqual(h.Cookies, g.Cookies) {
			t.Errorf("renewed cookies differ: http %q, grpc %q", h.Cookies, g.Cookies)
		}
	})
}
