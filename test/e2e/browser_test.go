//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// newBrowser starts headless Chromium with a fresh profile. The returned
// context is one tab; newTab opens another in the same browser (same
// cookies).
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		bin, err = exec.LookPath("chromium-browser")
	}
	peer.Require(t, "chromium (apt-get install chromium)", err)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	// Start the browser now, so a missing or broken Chromium is reported as such.
	peer.Require(t, "chromium", chromedp.Do(ctx))
	return ctx
}

// do runs steps with a timeout; on failure it leaves a screenshot in the
// test's artifacts folder and names the service log.
func do(t *testing.T, tab context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		fail(t, tab, what, err)
	}
}

// get runs one action that returns a string.
func get(t *testing.T, tab context.Context, what string, a chromedp.Action[string]) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		fail(t, tab, what, err)
	}
	return v
}

func fail(t *testing.T, tab context.Context, what string, err error) {
	t.Helper()
	sctx, scancel := context.WithTimeout(tab, 5*time.Second)
	defer scancel()
	if shot, serr := chromedp.Run(sctx, chromedp.FullScreenshot(100)); serr == nil {
		path := filepath.Join(peer.ArtifactsDir(t), strings.ReplaceAll(what, " ", "_")+".png")
		os.WriteFile(path, shot, 0o644)
		t.Logf("screenshot: %s", path)
	}
	t.Fatalf("%s: %v (service log: %s)", what, err, filepath.Join(peer.ArtifactsDir(t), "service.log"))
}

// loginAtDex fills Dex's real login form.
func loginAtDex(t *testing.T, tab context.Context, user, password string) {
	t.Helper()
	// Values are set through the DOM, not typed: typing needs the tab to
	// have focus, which only one of several tabs has.
	do(t, tab, "Dex login form",
		chromedp.WaitReady(chromedp.CSS(`input[name="login"]`)),
		chromedp.SetValue(chromedp.CSS(`input[name="login"]`), user),
		chromedp.SetValue(chromedp.CSS(`input[name="password"]`), password),
		chromedp.Submit(chromedp.CSS(`input[name="password"]`)))
}

var loginForm = chromedp.WaitReady(chromedp.CSS(`input[name="login"]`))

func byID(id string) chromedp.Action[string] { return chromedp.Text(chromedp.ID(id)) }

func TestBrowserLoginReloadTabsAndLogout(t *testing.T) {
	k := peer.StartKubeflow(t, peer.EnvoyFilterLayout, nil)
	tab := newBrowser(t)

	do(t, tab, "open deep link", chromedp.Navigate(k.Gateway+"/notebook/kubeflow-user/nb/lab?file=a%20b.ipynb&x=1"), loginForm)
	if loc := get(t, tab, "location", chromedp.Location()); !strings.Contains(loc, "/dex/auth") {
		t.Fatalf("login page at %s", loc)
	}
	loginAtDex(t, tab, "user@example.com", "12341234")
	do(t, tab, "landed", chromedp.WaitReady(chromedp.ID("userid")))
	user, path := get(t, tab, "user", byID("userid")), get(t, tab, "path", byID("path"))
	if user != "user@example.com" || path != "/notebook/kubeflow-user/nb/lab?file=a%20b.ipynb&x=1" {
		t.Fatalf("after login: user %q path %q", user, path)
	}

	do(t, tab, "reload", chromedp.Reload(), chromedp.WaitReady(chromedp.ID("userid")))
	if user := get(t, tab, "user after reload", byID("userid")); user != "user@example.com" {
		t.Fatalf("after reload: %q", user)
	}

	// Logout as the dashboard ≥ 1.10 does it: a navigation to the logout
	// URL. AFTER_LOGOUT_URL is "/", which now needs a new login.
	do(t, tab, "logout link", chromedp.Click(chromedp.ID("logout-link")), loginForm)
	do(t, tab, "next navigation asks for login", chromedp.Navigate(k.Gateway+"/after-logout"), loginForm)
	if loc := get(t, tab, "location", chromedp.Location()); !strings.Contains(loc, "/dex/") {
		t.Fatalf("after logout, navigation went to %s without a login", loc)
	}
}

// TestBrowserSecondLoginDuringLogin has two logins of one browser in
// flight at once, as two tabs would: the first stops at Dex's login page,
// the second completes, then the first completes from its own page. Each
// lands on its own deep link (the predecessor's single state cookie failed
// this with "CSRF check failed"). chromedp 0.23 cannot drive a second tab
// here (every action in it hangs), so the second tab is the same tab's
// history, with the same cookies.
func TestBrowserSecondLoginDuringLogin(t *testing.T) {
	k := peer.StartKubeflow(t, peer.EnvoyFilterLayout, nil)
	tab := newBrowser(t)
	do(t, tab, "first login to Dex", chromedp.Navigate(k.Gateway+"/tab-a?q=1"), loginForm)
	firstLoginPage := get(t, tab, "first login page", chromedp.Location())
	do(t, tab, "second login to Dex", chromedp.Navigate(k.Gateway+"/tab-b?q=2"), loginForm)
	loginAtDex(t, tab, "user@example.com", "12341234")
	do(t, tab, "second landed", chromedp.WaitReady(chromedp.ID("path")))
	pathB := get(t, tab, "second path", byID("path"))
	do(t, tab, "back to the first login page", chromedp.Navigate(firstLoginPage), loginForm)
	loginAtDex(t, tab, "user@example.com", "12341234")
	do(t, tab, "first landed", chromedp.WaitReady(chromedp.ID("path")))
	pathA, user := get(t, tab, "first path", byID("path")), get(t, tab, "user", byID("userid"))
	if pathA != "/tab-a?q=1" || pathB != "/tab-b?q=2" || user != "user@example.com" {
		t.Fatalf("first %q, second %q, user %q", pathA, pathB, user)
	}
}

func TestBrowserOldDashboardLogout(t *testing.T) {
	k := peer.StartKubeflow(t, peer.EnvoyFilterLayout, map[string]string{
		"SESSION_HTTP_ONLY": "false", "AFTER_LOGOUT_URL": "/authservice/site/after_logout",
	})
	tab := newBrowser(t)
	do(t, tab, "to login", chromedp.Navigate(k.Gateway+"/dashboard"), loginForm)
	loginAtDex(t, tab, "user@example.com", "12341234")
	do(t, tab, "old logout button", chromedp.WaitReady(chromedp.ID("logout-old")), chromedp.Click(chromedp.ID("logout-old")),
		chromedp.WaitReady(chromedp.ID("title")))
	title, loc := get(t, tab, "title", byID("title")), get(t, tab, "location", chromedp.Location())
	if !strings.Contains(title, "signed out") || !strings.HasSuffix(loc, "/authservice/site/after_logout") {
		t.Fatalf("after old logout: %q at %s", title, loc)
	}
	do(t, tab, "next navigation logs in again", chromedp.Navigate(k.Gateway+"/dashboard"), loginForm)
}
