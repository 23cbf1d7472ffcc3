//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// TestTokenCommandLoopbackInBrowser: `oidc-authservice token --flow
// loopback` opens the browser ($BROWSER, here a script that hands the URL to
// headless Chromium) on Dex's authorization page; the user logs in there,
// Dex redirects to the command's http://127.0.0.1:<port>/, whose page says
// the login succeeded; the command prints an ID token that the gateway
// accepts as Authorization: Bearer with the user's identity.
func TestTokenCommandLoopbackInBrowser(t *testing.T) {
	port := peer.FreePort(t)
	redirect := fmt.Sprintf("http://127.0.0.1:%d/", port)
	dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a", PublicClientID: "kubeflow-cli", PublicRedirectURIs: []string{redirect}})
	env := peer.KubeflowEnv(dex)
	env["PROVIDER_ID_TOKEN_AUDIENCES"] = dex.Opts.ClientID + ",kubeflow-cli"
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	gw := peer.KubeflowGateway(t, peer.EnvoyFilterLayout, svc.CheckURL, svc.WebURL, dex.Port)
	tab := newBrowser(t)

	// The "browser" the command opens: a script that writes the URL down.
	dir := t.TempDir()
	opener, opened := filepath.Join(dir, "open-browser"), filepath.Join(dir, "opened-url")
	os.WriteFile(opener, []byte("#!/bin/sh\nprintf '%s' \"$1\" > "+opened+".tmp && mv "+opened+".tmp "+opened+"\n"), 0o755)
	cmd := peer.StartToken(t, peer.Binary(t), []string{"BROWSER=" + opener}, "--issuer", dex.Issuer, "--cache-dir", filepath.Join(dir, "cache"),
		"--flow", "loopback", "--listen-port", fmt.Sprint(port), "--timeout", "60s")
	printed, err := cmd.URL(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var authURL string
	for deadline := time.Now().Add(20 * time.Second); authURL == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(opened)
		authURL = string(b)
	}
	if authURL == "" || authURL != printed {
		t.Fatalf("the browser was opened on %q; the command printed %q", authURL, printed)
	}

	do(t, tab, "authorization URL", chromedp.Navigate(authURL), loginForm)
	loginAtDex(t, tab, "user@example.com", "12341234")
	do(t, tab, "command's page", chromedp.WaitReady(chromedp.CSS("h1")))
	if loc := get(t, tab, "location", chromedp.Location()); !strings.HasPrefix(loc, redirect+"?") {
		t.Fatalf("the browser ended at %s, not at the loopback redirect", loc)
	}
	if h := get(t, tab, "page title", chromedp.Text(chromedp.CSS("h1"))); h != "Logged in" {
		t.Fatalf("the command's page says %q", h)
	}

	out, err := cmd.Wait(30 * time.Second)
	if err != nil {
		t.Fatalf("%v: %s", err, cmd.Stderr())
	}
	token := strings.TrimSpace(out)
	if strings.Count(token, ".") != 2 || strings.Contains(cmd.Stderr(), token) {
		t.Fatalf("stdout %q; stderr:\n%s", out, cmd.Stderr())
	}
	req, _ := http.NewRequest("GET", gw+"/pipeline/apis/v2beta1/runs?format=json", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	e := readEcho(t, resp, err)
	if header(e, "kubeflow-userid") != "user@example.com" || header(e, "kubeflow-groups") != "team-a" {
		t.Fatalf("upstream saw %v", e.Headers)
	}

}
