//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
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
	port := peer.FreePort(t)
	echo := upstream.Handler("")
	srv := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n, err := strconv.Atoi(r.URL.Query().Get("status")); err == nil && n >= 200 && n < 600 {
				w = &statusWriter{ResponseWriter: w, status: n}
			}
			echo.ServeHTTP(w, r)
		})}
	go srv.ListenAndServe()
	t.Cleanup(func() { srv.Close() })
	u := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := peer.WaitHTTP(u+"/", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return u
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
