package integration

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/session"
	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// fault is what the fault proxy does to a request.
type fault int

const (
	pass        fault = iota
	status500         // answer 500 without asking Dex
	invalidCode       // answer 400 invalid_grant, as a provider refusing the code
	hang              // hold the request until released or the caller gives up
	reset             // reset the TCP connection (RST)
	closeConn         // close the connection without an answer
	slow              // wait the proxy's delay, then pass
	wrongIssuer       // discovery names another issuer
)

// faultProxy stands between the service and Dex: the provider as the
// service sees it (OIDC_PROVIDER and Dex's issuer are the proxy's URL).
// Browsers reach Dex straight through the gateway's /dex/ route, as in
// Kubeflow, where the service calls Dex in-cluster; so faults hit only the
// service's calls (discovery, token, keys, userinfo).
type faultProxy struct {
	addr   string
	URL    string
	target *url.URL
	rp     *httputil.ReverseProxy

	mu      sync.Mutex
	pending net.Listener // listening since newFaultProxy, until the first Up
	srv     *http.Server
	faults  map[string]fault // by path below /dex ("/token", "/keys", ...); "" for every path
	delay   time.Duration
	hits    map[string]int
	release chan struct{}
}

// newFaultProxy listens at once, on a port of FreePort (outside the
// kernel's ephemeral range, so that no other listener or connection takes
// it while the proxy is down), and serves once Up is called.
func newFaultProxy(t *testing.T, dexPort int) *faultProxy {
	var l net.Listener
	for l == nil {
		var err error
		if l, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", peer.FreePort(t))); err != nil {
			t.Logf("fault proxy: %v; another port", err)
		}
	}
	target, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", dexPort))
	p := &faultProxy{
		addr: l.Addr().String(), URL: "http://" + l.Addr().String(), target: target, pending: l,
		faults: map[string]fault{}, hits: map[string]int{}, release: make(chan struct{}),
	}
	p.rp = &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }}
	t.Cleanup(func() { p.releaseHangs(); p.Down() })
	return p
}

// Up serves on the proxy's port (again: listening anew).
func (p *faultProxy) Up(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil {
		return
	}
	l, err := p.pending, error(nil)
	p.pending = nil
	for i := 0; l == nil && i < 50; i++ {
		if l, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("fault proxy cannot listen on %s again: %v", p.addr, err)
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	go p.srv.Serve(l)
}

// Down closes the listener and every connection: connection refused.
func (p *faultProxy) Down() {
	p.mu.Lock()
	srv := p.srv
	p.srv = nil
	if p.pending != nil {
		p.pending.Close()
		p.pending = nil
	}
	p.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

func (p *faultProxy) Set(path string, f fault) {
	p.mu.Lock()
	p.faults[path] = f
	p.mu.Unlock()
}

func (p *faultProxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Clear removes every fault and lets held requests go on.
func (p *faultProxy) Clear() {
	p.mu.Lock()
	p.faults = map[string]fault{}
	p.mu.Unlock()
	p.releaseHangs()
}

func (p *faultProxy) releaseHangs() {
	p.mu.Lock()
	close(p.release)
	p.release = make(chan struct{})
	p.mu.Unlock()
}

// Hits counts requests by path below /dex; "" counts them all.
func (p *faultProxy) Hits(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if path == "" {
		n := 0
		for _, v := range p.hits {
			n += v
		}
		return n
	}
	return p.hits[path]
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/dex")
	p.mu.Lock()
	p.hits[path]++
	f, ok := p.faults[path]
	if !ok {
		f = p.faults[""]
	}
	release, delay := p.release, p.delay
	p.mu.Unlock()

	switch f {
	case status500:
		http.Error(w, "upstream exploded", http.StatusInternalServerError)
		return
	case invalidCode:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_grant","error_description":"Invalid or expired code parameter."}`)
		return
	case hang:
		select {
		case <-r.Context().Done():
			return
		case <-release:
		}
	case reset, closeConn:
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok && f == reset {
			tc.SetLinger(0) // close with RST
		}
		conn.Close()
		return
	case slow:
		select {
		case <-r.Context().Done():
			return
		case <-time.After(delay):
		}
	case wrongIssuer:
		resp, err := http.Get(p.target.String() + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		var doc map[string]any
		err = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		doc["issuer"] = "http://evil.example/dex"
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(doc)
		return
	}
	p.rp.ServeHTTP(w, r)
}

// faultyDex is a real Dex whose issuer is the fault proxy's URL.
type faultyDex struct {
	dex   *peer.Dex
	proxy *faultProxy
}

// startFaultyDex starts Dex behind a fault proxy (both up).
func startFaultyDex(t *testing.T) *faultyDex {
	t.Helper()
	dex := peer.NewDex(t, peer.DexOptions{Groups: "team-a,team-b"})
	p := newFaultProxy(t, dex.Port)
	dex.Issuer = p.URL + "/dex" // Dex listens on its own port, its issuer is the proxy
	p.Up(t)
	dex.Start()
	return &faultyDex{dex: dex, proxy: p}
}

// serviceLog reads what the service logged since a mark.
type serviceLog struct {
	path string
	off  int64
}

// newServiceLog must be called with the test that starts the service: the
// log is test/artifacts/<that test>/service.log, appended to across runs.
func newServiceLog(t *testing.T) *serviceLog {
	l := &serviceLog{path: filepath.Join(peer.ArtifactsDir(t), "service.log")}
	l.mark()
	return l
}

func (l *serviceLog) mark() {
	if fi, err := os.Stat(l.path); err == nil {
		l.off = fi.Size()
	}
}

func (l *serviceLog) since() string {
	f, err := os.Open(l.path)
	if err != nil {
		return ""
	}
	defer f.Close()
	f.Seek(l.off, io.SeekStart)
	b, _ := io.ReadAll(f)
	return string(b)
}

// wait polls the log for a line holding every substring.
func (l *serviceLog) wait(timeout time.Duration, subs ...string) bool {
	deadline := time.Now().Add(timeout)
	for {
		for _, line := range strings.Split(l.since(), "\n") {
			all := true
			for _, s := range subs {
				all = all && strings.Contains(line, s)
			}
			if all {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const msgProviderDown = "The identity provider cannot be reached right now"

var tryAgain = regexp.MustCompile(`id="action" href="([^"]*)"`)

// getWithin does one GET with a client that gives up after limit.
func getWithin(t *testing.T, jar http.CookieJar, limit time.Duration, u string, headers ...string) *answer {
	t.Helper()
	c := noFollowWith(jar)
	c.Timeout = limit
	req := mustReq("GET", u)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: no answer within %s: %v", u, limit, err)
	}
	return toAnswer(resp)
}

func asUser(t *testing.T, a *answer, user, groups string) {
	t.Helper()
	e := a.upstreamEcho()
	if e == nil {
		t.Fatalf("not let through to the upstream: %s", a)
	}
	if got := e.Headers["kubeflow-userid"]; len(got) != 1 || got[0] != user {
		t.Fatalf("upstream saw kubeflow-userid %q, want %q", got, user)
	}
	if got := e.Headers["kubeflow-groups"]; len(got) != 1 || got[0] != groups {
		t.Fatalf("upstream saw kubeflow-groups %q, want %q", got, groups)
	}
}

// TestProviderFaultDownAtStart: the provider cannot be reached when the
// service starts (connection refused, then a discovery document for another
// issuer). As docs/architecture.md says: the process runs, /readyz answers
// 503, existing sessions keep working, a login attempt gets a 401 page
// saying the provider cannot be reached (never Envoy's bare error), API
// calls get 401; when the provider is back, discovery is retried with
// backoff and logins work without a restart.
func TestProviderFaultDownAtStart(t *testing.T) {
	f := startFaultyDex(t)
	f.proxy.Down()
	logs := newServiceLog(t)
	env := peer.KubeflowEnv(f.dex)
	env["PROVIDER_TIMEOUT"] = "2s"
	svc := peer.StartService(t, env)
	gw := peer.KubeflowGateway(t, sentinelGateway, svc.CheckURL, svc.WebURL, f.dex.Port)

	if !logs.wait(5*time.Second, "provider discovery failed; retrying", "connection refused") {
		t.Fatalf("no discovery attempt refused by the provider in the log:\n%s", logs.since())
	}
	notReady := func(when string) {
		t.Helper()
		for _, p := range []string{"/readyz", "/", "/anything"} {
			a := getWithin(t, nil, 5*time.Second, svc.ProbeURL+p)
			if a.status != 503 || !strings.Contains(string(a.body), "discovery") {
				t.Fatalf("%s: probe %s answered %s, want 503", when, p, a)
			}
		}
		if a := getWithin(t, nil, 5*time.Second, svc.ProbeURL+"/healthz"); a.status != 200 {
			t.Fatalf("%s: /healthz %s, want 200 (the process is alive)", when, a)
		}
		a := getWithin(t, nil, 5*time.Second, gw+"/notebook/ns/lab?x=1")
		if a.status != 401 || !strings.Contains(string(a.body), msgProviderDown) {
			t.Fatalf("%s: login attempt: %s, want the 401 provider page", when, a)
		}
		if a.header.Get("Retry-After") == "" {
			t.Errorf("%s: no Retry-After on the provider page", when)
		}
		if m := tryAgain.FindSubmatch(a.body); m == nil || html.UnescapeString(string(m[1])) != "/notebook/ns/lab?x=1" {
			t.Errorf("%s: the page's retry link is %q, want the requested page", when, m)
		}
		a = getWithin(t, nil, 5*time.Second, gw+"/api/workgroup/env-info", "X-Requested-With", "XMLHttpRequest")
		if a.status != 401 || !strings.Contains(a.header.Get("Content-Type"), "json") {
			t.Fatalf("%s: API call: %s, want 401 JSON", when, a)
		}
	}
	notReady("provider refusing connections")

	// A session from before (sealed with SESSION_KEYS, as after a restart
	// or on another replica) needs no provider.
	now := time.Now()
	sealed := sealAs(t, peer.SessionKey, "authservice_session", &session.Session{ID: "before-restart", Subject: "42", User: "early@example.com", Groups: []string{"g1"},
		Created: now.Unix(), Expires: now.Add(time.Hour).Unix()})
	a := getWithin(t, nil, 5*time.Second, gw+"/x?format=json", "Cookie", "authservice_session="+sealed)
	asUser(t, a, "early@example.com", "g1")

	// The provider answers, but its discovery names another issuer: still
	// not ready, still no login.
	f.proxy.Set("/.well-known/openid-configuration", wrongIssuer)
	f.proxy.Up(t)
	logs.mark()
	if !logs.wait(15*time.Second, "provider discovery failed; retrying", "evil.example") {
		t.Fatalf("discovery with another issuer not retried and refused:\n%s", logs.since())
	}
	notReady("provider naming another issuer")

	// The provider is back: ready without a restart, and logins work.
	f.proxy.Clear()
	svc.WaitReady(t, 40*time.Second)
	if !logs.wait(time.Second, "provider discovered") {
		t.Errorf("no 'provider discovered' line:\n%s", logs.since())
	}
	s := &setup{dex: f.dex, svc: svc, gateway: gw}
	e := s.login(t, newBrowser(), "/after?format=json")
	if e.Path != "/after" || e.Headers["kubeflow-userid"][0] != legitUser {
		t.Fatalf("login after the provider came back: %+v", e)
	}
}

// TestProviderFaultDuringCallback: the provider fails while the service
// completes a login (token endpoint 500, hanging past PROVIDER_TIMEOUT,
// resetting or closing the connection, refusing the code; keys and
// userinfo failing). Per docs/architecture.md every one is a 401 page from
// the callback (a 5xx would reach the user as Envoy's bare 403), answered
// within PROVIDER_TIMEOUT, with a log line; no session is issued; the page
// links back to the page the user asked for, and that retry logs in once
// the provider is well.
func TestProviderFaultDuringCallback(t *testing.T) {
	f := startFaultyDex(t)
	logs := newServiceLog(t)
	env := peer.KubeflowEnv(f.dex)
	env["PROVIDER_TIMEOUT"] = "2s"
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	gw := peer.KubeflowGateway(t, sentinelGateway, svc.CheckURL, svc.WebURL, f.dex.Port)
	gwURL, _ := url.Parse(gw)

	const loginFailed = "The login could not be completed."
	cases := []struct {
		name, path string
		fault      fault
		page, log  string
	}{
		// First: the service has not fetched Dex's keys yet.
		{"keys endpoint 500 at the first login", "/keys", status500, loginFailed, "login failed: ID token invalid"},
		{"token endpoint 500", "/token", status500, msgProviderDown, "login failed: provider unavailable"},
		{"token endpoint hangs past PROVIDER_TIMEOUT", "/token", hang, msgProviderDown, "login failed: provider unavailable"},
		{"token endpoint resets the connection", "/token", reset, msgProviderDown, "login failed: provider unavailable"},
		{"token endpoint closes the connection", "/token", closeConn, msgProviderDown, "login failed: provider unavailable"},
		{"token endpoint refuses the code", "/token", invalidCode, loginFailed, "login failed: code rejected by the provider"},
		{"userinfo 500", "/userinfo", status500, msgProviderDown, "login failed: provider unavailable"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer f.proxy.Clear()
			logs.mark()
			f.proxy.Set(c.path, c.fault)
			before := f.proxy.Hits(c.path)
			deep := fmt.Sprintf("/fault/%d?format=json&case=%s", i, url.QueryEscape(c.name))
			b := newBrowser()
			resp, err := peer.DexLogin(b.Client, gw+deep, legitUser, "12341234")
			if err != nil {
				t.Fatalf("the login did not get an answer (hang?): %v", err)
			}
			a := toAnswer(resp)
			if resp.Request.URL.Path != callbackPath {
				t.Fatalf("the login ended at %s, not at the callback: %s", resp.Request.URL, a)
			}
			if a.status == checkFailed || a.status >= 500 {
				t.Fatalf("the callback failed (5xx, reset or timeout): %s", a)
			}
			if a.status != 401 || !strings.Contains(string(a.body), c.page) {
				t.Fatalf("want the 401 page %q, got %s", c.page, a)
			}
			if f.proxy.Hits(c.path) == before {
				t.Fatalf("the fault was not exercised: no request to %s", c.path)
			}
			for _, ck := range b.Jar.Cookies(gwURL) {
				if strings.HasPrefix(ck.Name, "authservice_session") {
					t.Fatalf("a session cookie was issued: %s", ck.Name)
				}
			}
			if !logs.wait(2*time.Second, c.log) {
				t.Errorf("no log line %q:\n%s", c.log, logs.since())
			}
			m := tryAgain.FindSubmatch(a.body)
			if m == nil {
				t.Fatalf("the page has no retry link: %s", a.body)
			}
			retry := html.UnescapeString(string(m[1]))
			if retry != deep {
				t.Errorf("retry link %q, want the requested page %q", retry, deep)
			}

			f.proxy.Clear()
			resp, err = peer.DexLogin(b.Client, gw+retry, legitUser, "12341234")
			if err != nil {
				t.Fatalf("retry: %v", err)
			}
			e := readEcho(t, resp)
			if e.Path != fmt.Sprintf("/fault/%d", i) || e.Headers["kubeflow-userid"][0] != legitUser {
				t.Fatalf("retry landed on %s as %q", e.Path, e.Headers["kubeflow-userid"])
			}
		})
	}

	slowLogin := func(t *testing.T, delay time.Duration) {
		defer f.proxy.Clear()
		f.proxy.SetDelay(delay)
		f.proxy.Set("/token", slow)
		f.proxy.Set("/userinfo", slow)
		s := &setup{dex: f.dex, svc: svc, gateway: gw}
		e := s.login(t, newBrowser(), "/slow?format=json")
		if e.Path != "/slow" || e.Headers["kubeflow-userid"][0] != legitUser {
			t.Fatalf("slow provider login: %+v", e)
		}
	}
	t.Run("slow token and userinfo, together within PROVIDER_TIMEOUT", func(t *testing.T) {
		slowLogin(t, 600*time.Millisecond)
	})
	t.Run("slow token and userinfo, each within PROVIDER_TIMEOUT", func(t *testing.T) {
		slowLogin(t, 1200*time.Millisecond)
	})
}

// TestProviderFaultSlowProviderHotPath: while every call to the provider
// hangs, requests of existing sessions are answered at once (the check
// does not call the provider on the hot path), starting a login needs no
// provider call either; with STRICT_SESSION_VALIDATION a check waits at
// most CHECK_PROVIDER_BUDGET, keeps the session within
// STRICT_SESSION_VALIDATION_GRACE, then answers a 401 page (not a 5xx, the
// cookie kept) and resumes when the provider answers again.
func TestProviderFaultSlowProviderHotPath(t *testing.T) {
	f := startFaultyDex(t)
	env := peer.KubeflowEnv(f.dex)
	env["PROVIDER_TIMEOUT"] = "5s"
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	gw := peer.KubeflowGateway(t, sentinelGateway, svc.CheckURL, svc.WebURL, f.dex.Port)

	strictEnv := peer.KubeflowEnv(f.dex)
	strictEnv["PROVIDER_TIMEOUT"] = "5s"
	strictEnv["STRICT_SESSION_VALIDATION"] = "true"
	strictEnv["STRICT_SESSION_VALIDATION_INTERVAL"] = "1s"
	strictEnv["STRICT_SESSION_VALIDATION_GRACE"] = "4s"
	strictEnv["CHECK_PROVIDER_BUDGET"] = "1s"
	strict := peer.StartService(t, strictEnv)
	strict.WaitReady(t, 30*time.Second)
	strictGW := peer.KubeflowGateway(t, sentinelGateway, strict.CheckURL, strict.WebURL, f.dex.Port)

	b := newBrowser()
	(&setup{dex: f.dex, svc: svc, gateway: gw}).login(t, b, "/x?format=json")
	bs := newBrowser()
	(&setup{dex: f.dex, svc: strict, gateway: strictGW}).login(t, bs, "/x?format=json")

	const limit = 8 * time.Second // generous: the provider hangs for as long as the test runs

	t.Run("strict validation: budget, grace, then a 401 page, then recovery", func(t *testing.T) {
		defer f.proxy.Clear()
		time.Sleep(1100 * time.Millisecond) // validation due (interval 1 s)
		f.proxy.Set("", hang)
		before := f.proxy.Hits("/userinfo")
		a := getWithin(t, bs.Jar, limit, strictGW+"/v?format=json")
		asUser(t, a, legitUser, legitGroups)
		if f.proxy.Hits("/userinfo") == before {
			t.Fatal("strict validation did not ask the provider: the test proves nothing")
		}
		// Past the grace period the session is refused for now.
		var refused *answer
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			a := getWithin(t, bs.Jar, limit, strictGW+"/v?format=json")
			if a.status == 200 {
				asUser(t, a, legitUser, legitGroups)
				continue
			}
			refused = a
			break
		}
		if refused == nil {
			t.Fatal("session still accepted long after the grace period with the provider hanging")
		}
		if refused.status != 401 || !strings.Contains(string(refused.body), msgProviderDown) {
			t.Fatalf("past the grace period: %s, want the 401 provider page", refused)
		}
		if refused.cookieCleared("authservice_session") {
			t.Fatal("the session cookie was cleared: the session should resume when the provider answers")
		}
		// The provider answers again: after a successful validation the
		// same cookie works again.
		hits := f.proxy.Hits("/userinfo")
		f.proxy.Clear()
		for deadline := time.Now().Add(20 * time.Second); f.proxy.Hits("/userinfo") == hits; time.Sleep(500 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the session was never validated again after the provider came back")
			}
			if a := getWithin(t, bs.Jar, limit, strictGW+"/v?format=json"); a.status != 200 && a.status != 401 {
				t.Fatalf("while recovering: %s", a)
			}
		}
		asUser(t, getWithin(t, bs.Jar, limit, strictGW+"/v?format=json"), legitUser, legitGroups)
	})

	t.Run("strict validation: past the grace period refused until the provider answers", func(t *testing.T) {
		defer f.proxy.Clear()
		b2 := newBrowser()
		(&setup{dex: f.dex, svc: strict, gateway: strictGW}).login(t, b2, "/x?format=json")
		time.Sleep(1100 * time.Millisecond)
		f.proxy.Set("", hang)
		refused := false
		for deadline := time.Now().Add(20 * time.Second); !refused && time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			refused = getWithin(t, b2.Jar, limit, strictGW+"/v?format=json").status == 401
		}
		if !refused {
			t.Fatal("never refused past the grace period")
		}
		for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
			if a := getWithin(t, b2.Jar, limit, strictGW+"/v?format=json"); a.status != 401 {
				t.Fatalf("past the grace period, provider still hanging: %s, want 401 until it answers", a)
			}
		}
	})

	t.Run("existing sessions answer while every provider call hangs", func(t *testing.T) {
		defer f.proxy.Clear()
		f.proxy.Set("", hang)
		before := f.proxy.Hits("")
		for i := 0; i < 20; i++ {
			asUser(t, getWithin(t, b.Jar, limit, fmt.Sprintf("%s/seq/%d?format=json", gw, i)), legitUser, legitGroups)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := noFollowWith(b.Jar)
				c.Timeout = limit
				resp, err := c.Get(fmt.Sprintf("%s/par/%d?format=json", gw, i))
				if err != nil {
					errs <- err
					return
				}
				a := toAnswer(resp)
				if e := a.upstreamEcho(); e == nil || e.Headers["kubeflow-userid"][0] != legitUser {
					errs <- fmt.Errorf("request %d: %s", i, a)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		// Starting a login needs no provider call (discovery is cached).
		if a := getWithin(t, nil, limit, gw+"/new"); !toLogin.ok(a) {
			t.Errorf("login start while the provider hangs: %s", a)
		}
		if a := getWithin(t, nil, limit, gw+"/api/x", "X-Requested-With", "XMLHttpRequest"); a.status != 401 {
			t.Errorf("API call without session while the provider hangs: %s", a)
		}
		if n := f.proxy.Hits("") - before; n != 0 {
			t.Errorf("the check called the provider %d times on the hot path", n)
		}
	})
}

// TestProviderFaultKeyRotation: Dex keeps its signing keys in memory, so
// restarting it (same issuer, same port) is a key rotation without overlap.
// Existing sessions keep working; a login afterwards, whose ID token is
// signed with the new key, succeeds (the service fetches the new key set);
// a Dex ID token of the new key is accepted as a bearer token at once.
func TestProviderFaultKeyRotation(t *testing.T) {
	f := startFaultyDex(t)
	env := peer.KubeflowEnv(f.dex)
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	gw := peer.KubeflowGateway(t, sentinelGateway, svc.CheckURL, svc.WebURL, f.dex.Port)
	s := &setup{dex: f.dex, svc: svc, gateway: gw}

	b := newBrowser()
	s.login(t, b, "/x?format=json")
	bearer := func(token string) *answer {
		return getWithin(t, nil, 10*time.Second, gw+"/api/v1/x?format=json", "Authorization", "Bearer "+token)
	}
	old := dexIDToken(t, f.dex)
	asUser(t, bearer(old), legitUser, legitGroups)

	kidsBefore := dexKids(t, f.dex.Port)
	keyFetches := f.proxy.Hits("/keys")
	f.dex.Stop()
	f.dex.Start()
	kidsAfter := dexKids(t, f.dex.Port)
	for k := range kidsAfter {
		if kidsBefore[k] {
			t.Fatalf("Dex kept key %s across the restart: no rotation to test", k)
		}
	}

	asUser(t, getWithin(t, b.Jar, 10*time.Second, gw+"/still?format=json"), legitUser, legitGroups)
	e := s.login(t, newBrowser(), "/rotated?format=json")
	if e.Path != "/rotated" || e.Headers["kubeflow-userid"][0] != legitUser {
		t.Fatalf("login after the rotation: %+v", e)
	}
	if f.proxy.Hits("/keys") == keyFetches {
		t.Fatal("the login was verified without fetching the new key set")
	}

	// Right away, with no wait for the refetch interval: a kid that arrives
	// within the interval waits for the next allowed fetch inside the
	// check's budget instead of being refused.
	fresh := dexIDToken(t, f.dex)
	asUser(t, bearer(fresh), legitUser, legitGroups)
	if a := bearer(old); a.status == 200 {
		t.Log("NOTE: a token of the retired key is still accepted (verified-token cache) until it expires")
	}
	// A token of a key Dex never published, under the new kid, is refused.
	var hdr struct{ Kid string }
	hb, _ := base64.RawURLEncoding.DecodeString(strings.Split(fresh, ".")[0])
	json.Unmarshal(hb, &hdr)
	forged := peer.SignWith(t, peer.ForeignKey(), hdr.Kid, map[string]any{"iss": f.dex.Issuer, "aud": f.dex.Opts.ClientID,
		"sub": "x", "email": "admin@example.com", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()})
	if a := bearer(forged); a.status != 401 {
		t.Fatalf("token of a foreign key under Dex's new kid: %s", a)
	}
}

// dexKids lists the key ids Dex publishes (asked directly, not through the
// proxy).
func dexKids(t *testing.T, port int) map[string]bool {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/dex/keys", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, k := range set.Keys {
		out[k.Kid] = true
	}
	if len(out) == 0 {
		t.Fatal(errors.New("Dex publishes no keys"))
	}
	return out
}
