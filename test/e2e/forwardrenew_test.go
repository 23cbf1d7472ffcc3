//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
	"github.com/oidc-authservice/oidc-authservice/test/upstream"
)

// TestForwardAuthRenewalReachesTheBrowser: behind each forward-auth recipe
// as docs/forward-auth.md shows it (real nginx, nginx as ingress-nginx
// generates it, real Caddy), a session renewed at a verify answer reaches
// the browser as its new cookie, even when the application answers 404;
// another replica then serves that cookie, and its own refresh of it
// succeeds at Dex, which rotates refresh tokens and refuses a used one: the
// cookie holds the rotated refresh token. Before, the recipes passed no
// Set-Cookie of an allowed verify answer: the renewed session lived only in
// the memory of the replica that refreshed it, and the browser's cookie held
// a refresh token Dex had already rotated away.
func TestForwardAuthRenewalReachesTheBrowser(t *testing.T) {
	const ttl = 9 * time.Second // a refresh is due a third before expiry: 6 s after each issue
	for _, proxy := range []string{"nginx", "ingress-nginx", "caddy"} {
		t.Run(proxy, func(t *testing.T) {
			dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a", IDTokenTTL: ttl})
			up := statusUpstream(t)
			front := func() (string, *peer.Service) {
				env := peer.KubeflowEnv(dex)
				env["OIDC_SCOPES"] = "profile email groups offline_access"
				env["FORWARD_AUTH_PROXY"] = proxy
				if proxy == "caddy" {
					env["FORWARD_AUTH_REDIRECT"] = "true"
				}
				svc := peer.StartService(t, env)
				svc.WaitReady(t, 30*time.Second)
				tg := peer.ForwardAuthTargets{Service: strings.TrimPrefix(svc.CheckURL, "http://"), Dex: fmt.Sprintf("127.0.0.1:%d", dex.Port),
					Upstream: strings.TrimPrefix(up, "http://"), IngressNginx: proxy == "ingress-nginx"}
				if proxy == "caddy" {
					return peer.StartCaddy(t, tg), svc
				}
				return peer.StartNginx(t, tg), svc
			}
			// Two replicas with the same keys, each behind its own proxy:
			// the client's cookies (scoped by host, not port) reach both.
			a, _ := front()
			b, _ := front()

			c := newClient()
			resp, err := peer.DexLogin(c.Client, a+"/notebook/x?format=json", "user@example.com", "12341234")
			readEcho(t, resp, err)
			login := time.Now()
			first := c.cookie(a, "authservice_session")
			if first == "" {
				t.Fatal("no session cookie after the login")
			}

			// get sends a request the way a browser would (an API call or
			// a navigation), and returns the status, the session's
			// Set-Cookie lines and who the upstream was told the user is.
			get := func(u string, nav bool) (int, []string, string) {
				t.Helper()
				req, _ := http.NewRequest("GET", u, nil)
				req.Header.Set("Accept", "application/json")
				if nav {
					req.Header.Set("Accept", "text/html,application/xhtml+xml")
					req.Header.Set("Sec-Fetch-Mode", "navigate")
				}
				resp, err := c.noFollow().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				var lines []string
				for _, l := range resp.Header.Values("Set-Cookie") {
					if strings.HasPrefix(l, "authservice_session") {
						lines = append(lines, l)
					}
				}
				user := ""
				if strings.Contains(string(b), `"kubeflow-userid":["user@example.com"]`) {
					user = "user@example.com"
				}
				return resp.StatusCode, lines, user
			}

			// The refresh is due: an API call through A, which the
			// application answers 404, renews the session; the new cookie
			// reaches the browser in one Set-Cookie line.
			time.Sleep(time.Until(login.Add(ttl*2/3 + 700*time.Millisecond)))
			code, lines, user := get(a+"/missing?format=json&status=404", false)
			if code != 404 || user != "user@example.com" {
				t.Fatalf("API call when the refresh was due: %d for %q", code, user)
			}
			second := c.cookie(a, "authservice_session")
			if len(lines) != 1 || second == first || second == "" {
				t.Fatalf("the refreshed session did not reach the browser through %s: Set-Cookie %q", proxy, lines)
			}
			renewed := time.Now()

			// Replica B serves the browser's new cookie as it is: nothing
			// is due, nothing is renewed.
			code, lines, user = get(b+"/notebook/x?format=json", false)
			if code != 200 || user != "user@example.com" || len(lines) != 0 {
				t.Fatalf("replica B with the renewed cookie: %d for %q, Set-Cookie %q", code, user, lines)
			}

			// When the new tokens are due, B refreshes them at Dex with the
			// refresh token the cookie holds: only the rotated one works
			// (Dex refuses a used refresh token; then the session would be
			// kept without a new cookie until its tokens expire).
			time.Sleep(time.Until(renewed.Add(ttl*2/3 + 700*time.Millisecond)))
			code, lines, user = get(b+"/notebook/y?format=json", true)
			if code != 200 || user != "user@example.com" {
				t.Fatalf("navigation through replica B when its refresh was due: %d for %q", code, user)
			}
			third := c.cookie(b, "authservice_session")
			if len(lines) != 1 || third == second {
				t.Fatalf("replica B did not refresh the renewed session (the cookie's refresh token refused?): Set-Cookie %q", lines)
			}
			// And A, where the first refresh happened, serves the newest.
			code, _, user = get(a+"/notebook/z?format=json", false)
			if code != 200 || user != "user@example.com" {
				t.Fatalf("replica A with the cookie B renewed: %d for %q", code, user)
			}
		})
	}
}

// statusUpstream runs the demo upstream, answering with the status the
// query's status parameter names (default 200), and returns its URL.
func statusUpstream(t *testing.T) string {
	t.Helper()
	l := peer.Listen(t)
	echo := upstream.Handler("")
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n, err := strconv.Atoi(r.URL.Query().Get("status")); err == nil && n >= 200 && n < 600 {
				w = &statusWriter{ResponseWriter: w, status: n}
			}
			echo.ServeHTTP(w, r)
		})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}

// statusWriter answers with its status whatever the handler writes.
type statusWriter struct {
	http.ResponseWriter
	status int
	done   bool
}

func (w *statusWriter) WriteHeader(int) {
	if !w.done {
		w.done = true
		w.ResponseWriter.WriteHeader(w.status)
	}
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.WriteHeader(0)
	return w.ResponseWriter.Write(b)
}

// TestForwardAuthRenewalBeyondNginxBuffer: behind real nginx with its
// default buffers and docs/forward-auth.md's recipe, a user whose groups
// grew at the provider after the login (the GitLab-shaped provider puts
// groups_direct into the ID token, which UPSTREAM_TOKEN=id_token hands
// upstream) reaches the refresh: the verify answer that would carry the
// renewed session no longer fits nginx's 4 KB buffer, so the session ends
// and the browser's navigation lands on the service's page naming
// FORWARD_AUTH_ANSWER_MAX_BYTES (through the recipe's error_page and the
// start endpoint), its cookie cleared. Before, the verify answer went out
// and nginx answered its bare 500 ("upstream sent too big header") on
// every request.
func TestForwardAuthRenewalBeyondNginxBuffer(t *testing.T) {
	const ttl = 9 * time.Second // the refresh is due a third before the ID token expires
	up := statusUpstream(t)
	port := peer.FreePort(t)
	front := fmt.Sprintf("http://127.0.0.1:%d", port)
	gl := peer.StartGitLab(t, peer.GitLabOptions{RedirectURIs: []string{front + "/authservice/oidc/callback"}, IDTokenTTL: ttl})
	env := gitlabEnv(gl, front)
	env["FORWARD_AUTH_PROXY"] = "nginx"
	env["UPSTREAM_TOKEN"] = "id_token"
	env["ACCEPT_PROVIDER_ID_TOKENS"] = "false"
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	peer.StartNginx(t, peer.ForwardAuthTargets{Service: strings.TrimPrefix(svc.CheckURL, "http://"), Upstream: strings.TrimPrefix(up, "http://"),
		Dex: strings.TrimPrefix(svc.CheckURL, "http://"), Port: port})

	c := newClient()
	resp, err := peer.GitLabLogin(c.Client, front+"/notebook/x?format=json", "alice")
	e := readEcho(t, resp, err)
	login := time.Now()
	if n := len(header(e, "authorization")); n < 100 || n > 1500 {
		t.Fatalf("the upstream's Authorization at the login: %d bytes", n)
	}
	// The provider's own cookies (another port of 127.0.0.1, which a
	// cookie jar does not tell apart) stay with the provider.
	frontURL, _ := url.Parse(front)
	for _, ck := range c.Jar.Cookies(frontURL) {
		if !strings.Contains(ck.Name, "authservice") {
			c.Jar.SetCookies(frontURL, []*http.Cookie{{Name: ck.Name, Path: "/", MaxAge: -1}})
		}
	}
	if c.cookie(front, "authservice_session") == "" {
		t.Fatal("no session cookie after the login")
	}

	// An administrator adds the user to 25 groups at the provider.
	var groups []string
	for i := range 25 {
		groups = append(groups, fmt.Sprintf("acme/team-with-a-rather-long-name-%02d", i))
	}
	if err := gl.SetGroupsDirect("alice", groups); err != nil {
		t.Fatal(err)
	}

	// The refresh is due: a navigation.
	time.Sleep(time.Until(login.Add(ttl*2/3 + 700*time.Millisecond)))
	req, _ := http.NewRequest("GET", front+"/notebook/y", nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(body), "Identity too large for this gateway") ||
		!strings.Contains(string(body), "FORWARD_AUTH_ANSWER_MAX_BYTES") || resp.Request.URL.Path != "/authservice/start" {
		t.Fatalf("navigation when the refresh was due: %d at %s: %.600s", resp.StatusCode, resp.Request.URL, body)
	}
	if v := c.cookie(front, "authservice_session"); v != "" {
		t.Fatalf("the session cookie is still there: %.40s…", v)
	}
	log, _ := os.ReadFile(filepath.Join(peer.ArtifactsDir(t), "service.log"))
	if !strings.Contains(string(log), "session ended: its renewed form cannot be carried") || !strings.Contains(string(log), `"part":"forward_auth_answer"`) {
		t.Fatalf("no log line of the ended session in service.log")
	}
	// Signing in again is judged by the same bound: the provider's ID
	// token now carries the 25 groups, so the login gets the page too.
	resp, err = peer.GitLabLogin(c.Client, front+"/notebook/x", "alice")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(body), "Identity too large for this gateway") {
		t.Fatalf("signing in again: %d at %s: %.400s", resp.StatusCode, resp.Request.URL, body)
	}
}
