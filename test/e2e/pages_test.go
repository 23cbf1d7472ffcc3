//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// console records what a tab's console would show (browser log entries,
// console.error calls, uncaught exceptions) and every subresource that
// failed, as DevTools would list them.
type console struct {
	mu        sync.Mutex
	problems  []string
	documents []string // every document the tab received, redirects excluded
}

func watchConsole(t *testing.T, tab context.Context) *console {
	t.Helper()
	c := &console{}
	err := chromedp.Listen(tab, func(ev any) {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch ev := ev.(type) {
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError || ev.Entry.Level == log.EntryLevelWarning {
				c.problems = append(c.problems, fmt.Sprintf("%s %s: %s (%s)", ev.Entry.Source, ev.Entry.Level, ev.Entry.Text, ev.Entry.URL))
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				c.problems = append(c.problems, fmt.Sprintf("console.%s called", ev.Type))
			}
		case *runtime.EventExceptionThrown:
			c.problems = append(c.problems, "exception: "+ev.ExceptionDetails.Text)
		case *network.EventResponseReceived:
			if ev.Type == network.ResourceTypeDocument {
				c.documents = append(c.documents, ev.Response.URL)
			} else if ev.Response.Status >= 400 {
				c.problems = append(c.problems, fmt.Sprintf("%s %s answered %d", ev.Type, ev.Response.URL, ev.Response.Status))
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// clean fails the test when the console showed anything since the last call
// but the page's own status: an error page is a 4xx document by design
// (Envoy passes only non-200 answers to the browser), which Chromium logs
// as "Failed to load resource" for the document itself.
func (c *console) clean(t *testing.T, tab context.Context, page string) {
	t.Helper()
	// Let late requests (a favicon) arrive.
	time.Sleep(500 * time.Millisecond)
	loc := get(t, tab, "location", chromedp.Location())
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.problems {
		if strings.Contains(p, "Failed to load resource: the server responded with a status of") && strings.HasSuffix(p, "("+loc+")") {
			continue
		}
		t.Errorf("%s (%s): the console shows %s", page, loc, p)
	}
	c.problems = nil
}

// reset leaves the page the tab is on (whose peers a finished subtest
// stopped) and forgets what the console showed.
func (c *console) reset(t *testing.T, tab context.Context) {
	t.Helper()
	do(t, tab, "blank page", chromedp.Navigate("about:blank"))
	if _, err := chromedp.Call(tab, network.ClearBrowserCookies, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	c.mu.Lock()
	c.problems, c.documents = nil, nil
	c.mu.Unlock()
}

func (c *console) visited(path string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.documents {
		if strings.Contains(d, path) {
			return true
		}
	}
	return false
}

// docImages are the screenshots docs/ shows.
var docImages = map[string]bool{"demo-upstream": true, "signed-out": true, "cross-site-logout": true,
	"access-denied": true, "sign-in-unavailable": true, "login-failed": true}

// shot saves a screenshot of the tab's viewport as
// test/artifacts/screenshots/<name>.png, and with UPDATE=1 the ones docs/
// shows as docs/images/<name>.png too.
func shot(t *testing.T, tab context.Context, name string, width, height int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, height)); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dirs := []string{filepath.Join(peer.RepoRoot(), "test", "artifacts", "screenshots")}
	if os.Getenv("UPDATE") != "" && docImages[name] {
		dirs = append(dirs, filepath.Join(peer.RepoRoot(), "docs", "images"))
	}
	for _, dir := range dirs {
		os.MkdirAll(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot %s: %s", name, filepath.Join(dirs[len(dirs)-1], name+".png"))
}

// make run as a new user meets it: the demo page shows every header the
// upstream received for a user with groups, both logout buttons work with
// the default (HttpOnly) session cookie, "Sign in again" goes straight to
// Dex, a logout another site starts asks first, and none of the service's
// pages shows a console error.
func TestMakeRunDemoInBrowser(t *testing.T) {
	r := peer.StartMakeRun(t, nil)
	if err := r.WaitRunning(90 * time.Second); err != nil {
		t.Fatal(err)
	}
	tab := newBrowser(t)
	con := watchConsole(t, tab)

	do(t, tab, "open the demo", chromedp.Navigate(r.Gateway+"/?hello=world"), loginForm)
	loginAtDex(t, tab, "user@example.com", "12341234")
	do(t, tab, "demo page", chromedp.WaitReady(chromedp.ID("groups")))
	user, groups := get(t, tab, "user", byID("userid")), get(t, tab, "groups", byID("groups"))
	if user != "user@example.com" || groups != "ml-engineers,kubeflow-admins" {
		t.Fatalf("the demo shows kubeflow-userid %q, kubeflow-groups %q", user, groups)
	}
	table := get(t, tab, "headers", byID("headers"))
	for _, h := range []string{"kubeflow-userid", "kubeflow-groups", "accept", "sec-fetch-mode"} {
		if !strings.Contains(table, h) {
			t.Errorf("the demo's header table lacks %s:\n%s", h, table)
		}
	}
	if strings.Contains(table, "authservice_session") {
		t.Errorf("the upstream received the session cookie:\n%s", table)
	}
	con.clean(t, tab, "demo page")
	shot(t, tab, "demo-upstream", 960, 625)

	// The dashboard < 1.10's POST, with the default HttpOnly cookie.
	do(t, tab, "old dashboard's logout", chromedp.Click(chromedp.ID("logout-old")), chromedp.WaitReady(chromedp.ID("title")))
	if title, loc := get(t, tab, "title", byID("title")), get(t, tab, "location", chromedp.Location()); title != "You have been signed out" ||
		!strings.HasSuffix(loc, "/authservice/site/after_logout") {
		t.Fatalf("after the POST logout: %q at %s", title, loc)
	}
	con.clean(t, tab, "signed-out page")
	shot(t, tab, "signed-out", 720, 420)

	// Sign in again: straight to Dex's form, no page in between.
	do(t, tab, "sign in again", chromedp.Click(chromedp.ID("login")), loginForm)
	if loc := get(t, tab, "location", chromedp.Location()); !strings.Contains(loc, "/dex/auth") || con.visited("/authservice/site/homepage") {
		t.Fatalf("Sign in again went to %s (home page visited: %v)", loc, con.visited("/authservice/site/homepage"))
	}
	loginAtDex(t, tab, "user@example.com", "12341234")
	do(t, tab, "demo page again", chromedp.WaitReady(chromedp.ID("logout-link")))
	if loc := get(t, tab, "location", chromedp.Location()); loc != r.Gateway+"/" {
		t.Errorf("signed in again at %s, want %s/", loc, r.Gateway)
	}

	// A logout another site starts (localhost is another site than
	// 127.0.0.1) is confirmed first; the confirmation's button logs out.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `<!doctype html><link rel="icon" href="data:,"><a id="evil" href="%s/authservice/logout">win a prize</a>`, r.Gateway)
	}))
	defer other.Close()
	do(t, tab, "another site's logout link", chromedp.Navigate(strings.Replace(other.URL, "127.0.0.1", "localhost", 1)),
		chromedp.Click(chromedp.ID("evil")), chromedp.WaitReady(chromedp.ID("action")))
	if title := get(t, tab, "title", byID("title")); title != "Sign out?" {
		t.Fatalf("a cross-site logout shows %q", title)
	}
	con.clean(t, tab, "cross-site logout confirmation")
	shot(t, tab, "cross-site-logout", 720, 420)
	do(t, tab, "confirm", chromedp.Click(chromedp.ID("action")), chromedp.WaitReady(chromedp.ID("login")))
	if title := get(t, tab, "title", byID("title")); title != "You have been signed out" {
		t.Fatalf("after confirming: %q", title)
	}
	con.clean(t, tab, "signed-out page")

	// The dashboard ≥ 1.10's link, then a reload of the demo logs in again.
	do(t, tab, "sign in", chromedp.Click(chromedp.ID("login")), loginForm)
	loginAtDex(t, tab, "user@example.com", "12341234")
	do(t, tab, "logout link", chromedp.WaitReady(chromedp.ID("logout-link")), chromedp.Click(chromedp.ID("logout-link")),
		chromedp.WaitReady(chromedp.ID("title")))
	do(t, tab, "the demo needs a login", chromedp.Navigate(r.Gateway+"/"), loginForm)
}

// Every other page the service renders, each reached the way a user
// reaches it, screenshotted, and without console errors.
func TestServicePagesInBrowser(t *testing.T) {
	tab := newBrowser(t)
	con := watchConsole(t, tab)

	t.Run("home page", func(t *testing.T) {
		con.reset(t, tab)
		k := peer.StartKubeflow(t, peer.EnvoyFilterLayout, nil)
		do(t, tab, "home page", chromedp.Navigate(k.Gateway+"/authservice/site/homepage"), chromedp.WaitReady(chromedp.ID("home")))
		con.clean(t, tab, "home page")
		shot(t, tab, "homepage", 720, 360)
		do(t, tab, "its button", chromedp.Click(chromedp.ID("home")), loginForm)
		do(t, tab, "not found", chromedp.Navigate(k.Gateway+"/authservice/site/nope"), chromedp.WaitReady(chromedp.ID("title")))
		if title := get(t, tab, "title", byID("title")); title != "Not found" {
			t.Errorf("an unknown page shows %q", title)
		}
		con.clean(t, tab, "not found page")
		do(t, tab, "its button", chromedp.Click(chromedp.ID("action")), loginForm)
	})

	t.Run("login failed", func(t *testing.T) {
		con.reset(t, tab)
		k := peer.StartKubeflow(t, peer.EnvoyFilterLayout, nil)
		do(t, tab, "forged callback", chromedp.Navigate(k.Gateway+"/authservice/oidc/callback?state=forged&code=x"), chromedp.WaitReady(chromedp.ID("title")))
		if title := get(t, tab, "title", byID("title")); title != "Login failed" {
			t.Errorf("a forged callback shows %q", title)
		}
		con.clean(t, tab, "login failed page")
		shot(t, tab, "login-failed", 720, 420)
		do(t, tab, "its button", chromedp.Click(chromedp.ID("action")), loginForm)
	})

	t.Run("not authorized", func(t *testing.T) {
		con.reset(t, tab)
		rules := filepath.Join(t.TempDir(), "rules.yaml")
		os.WriteFile(rules, []byte("rules:\n- name: admins-only\n  pathPrefix: /admin\n  allow:\n    groups: [admins]\n"+
			"- name: everyone\n  pathPrefix: /\n  allow:\n    authenticated: true\n"), 0o644)
		k := peer.StartKubeflow(t, peer.EnvoyFilterLayout, map[string]string{"AUTHORIZATION_RULES_FILE": rules})
		do(t, tab, "login", chromedp.Navigate(k.Gateway+"/notebooks"), loginForm)
		loginAtDex(t, tab, "user@example.com", "12341234")
		do(t, tab, "signed in", chromedp.WaitReady(chromedp.ID("userid")))
		do(t, tab, "403 page", chromedp.Navigate(k.Gateway+"/admin"), chromedp.WaitReady(chromedp.ID("identity")))
		if title := get(t, tab, "title", byID("title")); title != "Access denied" {
			t.Errorf("a user the rules refuse sees %q", title)
		}
		con.clean(t, tab, "access denied page")
		shot(t, tab, "access-denied", 720, 460)
		// "Sign in as someone else" ends the session: Dex asks who (it led
		// to AFTER_LOGOUT_URL, here /, where the same session went on).
		do(t, tab, "its button", chromedp.Click(chromedp.ID("action")), loginForm)
	})

	t.Run("login refused", func(t *testing.T) {
		con.reset(t, tab)
		// A user id claim Dex does not send: the identity cannot be used.
		k := peer.StartKubeflow(t, peer.EnvoyFilterLayout, map[string]string{"USERID_CLAIM": "nickname"})
		do(t, tab, "login", chromedp.Navigate(k.Gateway+"/notebooks"), loginForm)
		loginAtDex(t, tab, "user@example.com", "12341234")
		do(t, tab, "403 page", chromedp.WaitReady(chromedp.ID("title")))
		if title := get(t, tab, "title", byID("title")); title != "Login refused" {
			t.Errorf("a login without the user id claim shows %q", title)
		}
		con.clean(t, tab, "login refused page")
		shot(t, tab, "login-refused", 720, 400)
	})

	t.Run("too many groups", func(t *testing.T) {
		con.reset(t, tab)
		// 256 groups of 256 random characters: 66 KB of names, far more
		// than one header line of an upstream carries (and, even
		// compressed, than eight cookies hold). Nothing is cut: a 403
		// page that gives the counts and names the settings.
		groups := make([]string, 256)
		for i := range groups {
			b := make([]byte, 128)
			rand.Read(b)
			groups[i] = hex.EncodeToString(b)
		}
		dex := peer.StartDex(t, peer.DexOptions{Groups: strings.Join(groups, ",")})
		svc := peer.StartService(t, peer.KubeflowEnv(dex))
		svc.WaitReady(t, 30*time.Second)
		gw := peer.KubeflowGateway(t, peer.EnvoyFilterLayout, svc.CheckURL, svc.WebURL, dex.Port)
		do(t, tab, "login", chromedp.Navigate(gw+"/notebooks"), loginForm)
		loginAtDex(t, tab, "user@example.com", "12341234")
		do(t, tab, "the answer", chromedp.WaitReady(chromedp.ID("title")))
		if title := get(t, tab, "title", byID("title")); title != "Too many groups" {
			t.Errorf("a user whose groups do not fit sees %q", title)
		}
		if details := get(t, tab, "details", byID("details")); !strings.Contains(details, "GROUPS_FILTER") {
			t.Errorf("the page does not say what to set: %q", details)
		}
		con.clean(t, tab, "too many groups page")
		shot(t, tab, "too-many-groups", 720, 400)
	})

	t.Run("provider unreachable", func(t *testing.T) {
		con.reset(t, tab)
		// Dex down when the service starts: the login cannot begin.
		dex := peer.NewDex(t, peer.DexOptions{Groups: "team-a"})
		svc := peer.StartService(t, peer.KubeflowEnv(dex))
		gw := peer.KubeflowGateway(t, peer.EnvoyFilterLayout, svc.CheckURL, svc.WebURL, dex.Port)
		do(t, tab, "sign-in unavailable", chromedp.Navigate(gw+"/pipelines"), chromedp.WaitReady(chromedp.ID("action")))
		if title := get(t, tab, "title", byID("title")); title != "Sign-in unavailable" {
			t.Errorf("with the provider down: %q", title)
		}
		con.clean(t, tab, "sign-in unavailable page")
		shot(t, tab, "sign-in-unavailable", 720, 420)
		// Once Dex answers, the page's button leads to the login.
		dex.Start()
		svc.WaitReady(t, 30*time.Second)
		do(t, tab, "try again", chromedp.Click(chromedp.ID("action")), loginForm)
	})

	t.Run("provider unreachable for a session", func(t *testing.T) {
		con.reset(t, tab)
		k := peer.StartKubeflow(t, peer.EnvoyFilterLayout, map[string]string{"STRICT_SESSION_VALIDATION": "true",
			"STRICT_SESSION_VALIDATION_INTERVAL": "1s", "STRICT_SESSION_VALIDATION_GRACE": "1s", "CHECK_PROVIDER_BUDGET": "1s"})
		do(t, tab, "login", chromedp.Navigate(k.Gateway+"/notebooks"), loginForm)
		loginAtDex(t, tab, "user@example.com", "12341234")
		do(t, tab, "signed in", chromedp.WaitReady(chromedp.ID("userid")))
		k.Dex.Stop()
		time.Sleep(2500 * time.Millisecond)
		do(t, tab, "reload", chromedp.Reload(), chromedp.WaitReady(chromedp.ID("title")))
		failed := time.Now()
		if title := get(t, tab, "title", byID("title")); title != "Sign-in unavailable" {
			t.Errorf("a session past the grace with the provider down sees %q", title)
		}
		con.clean(t, tab, "provider unreachable page")
		// Once Dex answers, the button leads on: the restarted Dex (memory
		// storage) refuses the session's access token, so the session ends
		// and Dex asks for the login.
		k.Dex.Start()
		time.Sleep(time.Until(failed.Add(6 * time.Second))) // the service asks again 5 s after a failure
		do(t, tab, "its button", chromedp.Click(chromedp.ID("action")), loginForm)
	})

	t.Run("signed out, provider not told", func(t *testing.T) {
		con.reset(t, tab)
		k := peer.StartKubeflow(t, peer.EnvoyFilterLayout, nil)
		do(t, tab, "after logout", chromedp.Navigate(k.Gateway+"/authservice/site/after_logout?provider_logout=failed"), chromedp.WaitReady(chromedp.ID("notice")))
		con.clean(t, tab, "after logout page with a notice")
		shot(t, tab, "signed-out-provider-failed", 720, 460)
		do(t, tab, "its button", chromedp.Click(chromedp.ID("login")), loginForm)
	})
}
