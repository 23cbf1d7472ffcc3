package extauthz

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// recorder is an upstream that reports what it received.
func recorder(t *testing.T) (*httptest.Server, *http.Header) {
	got := &http.Header{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*got = r.Header.Clone()
		got.Set("X-Seen-Host", r.Host)
		w.Write([]byte("upstream"))
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func gateway(t *testing.T, cfg Config) *httptest.Server {
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv
}

func TestCheckRequestCarriesOnlyAllowedHeaders(t *testing.T) {
	var seen *http.Request
	var body []byte
	check := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Clone(r.Context())
		body, _ = io.ReadAll(r.Body)
		w.WriteHeader(200)
	}))
	defer check.Close()
	up, _ := recorder(t)
	cfg := KubeflowEnvoyFilter(check.URL)
	cfg.Upstream = up.URL
	gw := gateway(t, cfg)

	req, _ := http.NewRequest("POST", gw.URL+"/a/b?x=1&y=%2F", strings.NewReader("secret body"))
	req.Host = "kubeflow.example.com"
	req.Header.Set("Cookie", "authservice_session=v")
	req.Header.Set("Authorization", "Bearer t")
	req.Header.Set("Accept", "text/html")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Requested-With", "XMLHttpRequest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if seen.Method != "POST" || seen.URL.RequestURI() != "/a/b?x=1&y=%2F" || seen.Host != "kubeflow.example.com" || len(body) != 0 {
		t.Fatalf("check saw %s %s host %s body %q", seen.Method, seen.URL.RequestURI(), seen.Host, body)
	}
	if seen.Header.Get("Cookie") == "" || seen.Header.Get("Authorization") == "" {
		t.Fatal("allowed headers missing")
	}
	for _, h := range []string{"Accept", "X-Forwarded-Proto", "X-Requested-With"} {
		if seen.Header.Get(h) != "" {
			t.Errorf("%s reached the check", h)
		}
	}
}

func TestAllowSetsAndStripsUpstreamHeaders(t *testing.T) {
	check := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Kubeflow-Userid", "user@example.com")
		w.Header().Set("Kubeflow-Groups", "a,b")
		w.Header().Set("X-Unlisted", "no")
		w.Header().Add("Set-Cookie", "s=1")
		if r.URL.Path == "/skip" {
			w.Header().Set("X-Envoy-Auth-Headers-To-Remove", "kubeflow-userid, kubeflow-groups")
			w.Header().Del("Kubeflow-Userid")
			w.Header().Del("Kubeflow-Groups")
		}
		w.WriteHeader(200)
	}))
	defer check.Close()
	up, got := recorder(t)
	both := KubeflowEnvoyFilter(check.URL)
	both.AllowedUpstreamHeaders = []string{"kubeflow-userid", "kubeflow-groups"}
	both.AllowedClientHeadersOnSuccess = []string{"set-cookie"}

	cases := []struct {
		name, path, user, groups, setCookie string
		cfg                                 Config
	}{
		{"envoyfilter: userid set, groups passes as sent", "/x", "user@example.com", "client-groups", "", KubeflowEnvoyFilter(check.URL)},
		{"both set, set-cookie on success", "/x", "user@example.com", "a,b", "s=1", both},
		{"headers-to-remove strips client identity", "/skip", "", "", "s=1", both},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Upstream = up.URL
			gw := gateway(t, c.cfg)
			req, _ := http.NewRequest("GET", gw.URL+c.path, nil)
			req.Header.Set("Kubeflow-Userid", "admin@evil")
			req.Header.Set("Kubeflow-Groups", "client-groups")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got.Get("Kubeflow-Userid") != c.user || got.Get("Kubeflow-Groups") != c.groups || got.Get("X-Unlisted") != "" {
				t.Fatalf("upstream saw userid %q groups %q unlisted %q", got.Get("Kubeflow-Userid"), got.Get("Kubeflow-Groups"), got.Get("X-Unlisted"))
			}
			if resp.Header.Get("Set-Cookie") != c.setCookie {
				t.Fatalf("client got Set-Cookie %q", resp.Header.Get("Set-Cookie"))
			}
		})
	}
}

func TestDenyPassesThrough(t *testing.T) {
	for _, status := range []int{201, 302, 401, 403, 429} {
		check := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", "/login")
			w.Header().Add("Set-Cookie", "a=1")
			w.Header().Add("Set-Cookie", "b=2")
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Other", "x")
			w.WriteHeader(status)
			w.Write([]byte(`{"afterLogoutURL":"/"}`))
		}))
		up, _ := recorder(t)
		for _, mode := range []string{"envoyfilter", "istio"} {
			cfg := KubeflowEnvoyFilter(check.URL)
			if mode == "istio" {
				// Kubeflow's headersToDownstreamOnDeny.
				cfg.AllowedClientHeaders = []string{"content-type", "set-cookie"}
			}
			cfg.Upstream = up.URL
			gw := gateway(t, cfg)
			c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := c.Get(gw.URL + "/x")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != status || string(b) != `{"afterLogoutURL":"/"}` || len(resp.Header.Values("Set-Cookie")) != 2 || resp.Header.Get("Location") != "/login" {
				t.Fatalf("%s %d: got %d %q %v", mode, status, resp.StatusCode, b, resp.Header)
			}
			if (mode == "istio") != (resp.Header.Get("X-Other") == "") {
				t.Fatalf("%s: X-Other %q", mode, resp.Header.Get("X-Other"))
			}
		}
		check.Close()
	}
}

func TestErrorsBecomeStatusOnError(t *testing.T) {
	up, _ := recorder(t)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { time.Sleep(300 * time.Millisecond) }))
	defer slow.Close()
	five := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
		w.Write([]byte("down"))
	}))
	defer five.Close()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := "http://" + l.Addr().String()
	l.Close()

	for name, url := range map[string]string{"timeout": slow.URL, "5xx": five.URL, "refused": refused} {
		cfg := Config{CheckURL: url, Upstream: up.URL, Timeout: 100 * time.Millisecond}
		resp, err := http.Get(gateway(t, cfg).URL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 403 || len(b) != 0 {
			t.Errorf("%s: %d %q", name, resp.StatusCode, b)
		}
		cfg.FailureModeAllow = true
		resp, _ = http.Get(gateway(t, cfg).URL + "/x")
		if resp.StatusCode != 200 {
			t.Errorf("%s with failure_mode_allow: %d", name, resp.StatusCode)
		}
		resp.Body.Close()
	}
}

func TestRoutes(t *testing.T) {
	calls := 0
	check := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls++; w.WriteHeader(200) }))
	defer check.Close()
	up, _ := recorder(t)
	dex := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(r.URL.Path) }))
	defer dex.Close()
	cfg := KubeflowEnvoyFilter(check.URL)
	cfg.Upstream = up.URL
	cfg.Routes = []Route{{Prefix: "/dex/", Upstream: dex.URL}}
	gw := gateway(t, cfg)
	resp, _ := http.Get(gw.URL + "/dex/auth")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The EnvoyFilter checks every request, Dex's pages too (the service
	// lets them through with SKIP_AUTH_URLS).
	if resp.StatusCode != 200 || !strings.Contains(string(b), "/dex/auth") || calls != 1 {
		t.Fatalf("dex route: %d %s calls %d", resp.StatusCode, b, calls)
	}
	resp, _ = http.Get(gw.URL + "/app")
	resp.Body.Close()
	if resp.StatusCode != 200 || calls != 2 {
		t.Fatalf("default route: %d calls %d", resp.StatusCode, calls)
	}
}
