package integration

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// tokenCLI runs `oidc-authservice token` against one Dex with one cache
// folder, playing the user when the command asks for a login, and keeps
// every token it sees so that the test can check none reached stderr.
type tokenCLI struct {
	t        *testing.T
	bin      string
	dex      *peer.Dex
	cacheDir string
	secrets  []string // tokens seen: ID tokens printed, refresh tokens cached
	stderrs  []string
}

func newTokenCLI(t *testing.T, dex *peer.Dex) *tokenCLI {
	return &tokenCLI{t: t, bin: peer.Binary(t), dex: dex, cacheDir: filepath.Join(t.TempDir(), "cache")}
}

// run runs the command; login says whether the test must play the user
// (device grant), and the run fails the test when the command's wish
// differs. It returns stdout and stderr.
func (c *tokenCLI) run(login bool, env []string, args ...string) (string, string, error) {
	c.t.Helper()
	args = append([]string{"--issuer", c.dex.Issuer, "--cache-dir", c.cacheDir, "--no-browser", "--timeout", "60s"}, args...)
	cmd := peer.StartToken(c.t, c.bin, env, args...)
	if login {
		u, err := cmd.URL(30 * time.Second)
		if err != nil {
			c.t.Fatal(err)
		}
		jar, _ := cookiejar.New(nil)
		browser := &http.Client{Jar: jar, Timeout: 20 * time.Second}
		if strings.Contains(u, "/device?") {
			page, err := peer.DexDeviceLogin(browser, u, c.dex.Opts.User, c.dex.Opts.Password)
			if err != nil {
				c.t.Fatalf("playing the user at %s: %v\n%.500s", u, err, page)
			}
		} else {
			resp, err := peer.DexLogin(browser, u, c.dex.Opts.User, c.dex.Opts.Password)
			if err != nil {
				c.t.Fatalf("playing the user at %s: %v", u, err)
			}
			resp.Body.Close()
		}
	}
	out, err := cmd.Wait(60 * time.Second)
	stderr := cmd.Stderr()
	c.stderrs = append(c.stderrs, stderr)
	asked := strings.Contains(stderr, "To log in, open this page")
	if asked != login {
		c.t.Fatalf("login prompt shown: %v, expected: %v; stderr:\n%s", asked, login, stderr)
	}
	if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
		c.t.Fatalf("stack trace on stderr:\n%s", stderr)
	}
	if tok := strings.TrimSpace(out); tok != "" && !strings.HasPrefix(tok, "{") {
		c.secrets = append(c.secrets, tok)
	}
	c.secrets = append(c.secrets, c.cachedRefreshTokens()...)
	return out, stderr, err
}

// token runs the command and returns the token it printed.
func (c *tokenCLI) token(login bool, args ...string) string {
	c.t.Helper()
	out, stderr, err := c.run(login, nil, args...)
	if err != nil {
		c.t.Fatalf("token command: %v; stderr:\n%s", err, stderr)
	}
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 || strings.Count(out, ".") != 2 {
		c.t.Fatalf("stdout is not one JWT and a newline: %q", out)
	}
	return strings.TrimSpace(out)
}

// cacheFiles are the cache's token files.
func (c *tokenCLI) cacheFiles() []string {
	files, _ := filepath.Glob(filepath.Join(c.cacheDir, "*.json"))
	return files
}

func (c *tokenCLI) cachedRefreshTokens() []string {
	var out []string
	for _, f := range c.cacheFiles() {
		b, _ := os.ReadFile(f)
		var e struct {
			RefreshToken string `json:"refresh_token"`
		}
		if json.Unmarshal(b, &e) == nil && e.RefreshToken != "" {
			out = append(out, e.RefreshToken)
		}
	}
	return out
}

// checkStderr: no token the test has seen was ever written on stderr.
func (c *tokenCLI) checkStderr() {
	c.t.Helper()
	for i, s := range c.stderrs {
		for _, tok := range c.secrets {
			if len(tok) > 10 && strings.Contains(s, tok) {
				c.t.Errorf("run %d wrote a token on stderr:\n%s", i+1, s)
			}
		}
	}
}

// bearer presents token at the gateway; it returns the status and, on
// 200, what the upstream saw.
func bearer(t *testing.T, gateway, token string) (int, echo) {
	t.Helper()
	req, _ := http.NewRequest("GET", gateway+"/pipeline/apis/v2beta1/runs?format=json", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Kubeflow-Userid", "forged@example.com")
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, echo{Path: string(b)}
	}
	return 200, readEcho(t, resp)
}

func expectAllowed(t *testing.T, gateway, token, what string) {
	t.Helper()
	status, e := bearer(t, gateway, token)
	if status != 200 {
		t.Fatalf("%s: gateway answered %d: %s", what, status, e.Path)
	}
	if u := e.Headers["kubeflow-userid"]; len(u) != 1 || u[0] != "user@example.com" {
		t.Fatalf("%s: upstream saw kubeflow-userid %q", what, u)
	}
	if g := e.Headers["kubeflow-groups"]; len(g) != 1 || g[0] != "team-a,team-b" {
		t.Fatalf("%s: upstream saw kubeflow-groups %q", what, g)
	}
}

// TestTokenCommandDeviceFlow: `oidc-authservice token` logs in with the
// device grant at a real Dex (the test plays the user on Dex's pages), the
// token passes the Envoy-faithful gateway with the user's identity; the next
// run renews it with the refresh token without a prompt; a revoked refresh
// token leads to a new login prompt; with Dex stopped the cached token is
// printed; with wider permissions the cache is refused; no token ever
// reaches stderr.
func TestTokenCommandDeviceFlow(t *testing.T) {
	dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a,team-b", PublicClientID: "kubeflow-cli", IDTokenTTL: time.Hour})
	env := peer.KubeflowEnv(dex)
	env["PROVIDER_ID_TOKEN_AUDIENCES"] = dex.Opts.ClientID + ",kubeflow-cli"
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	gw := peer.KubeflowGateway(t, peer.EnvoyFilterLayout, svc.CheckURL, svc.WebURL, dex.Port)
	cli := newTokenCLI(t, dex)
	defer cli.checkStderr()

	first := cli.token(true)
	expectAllowed(t, gw, first, "token from the device grant")
	files := cli.cacheFiles()
	if len(files) != 1 {
		t.Fatalf("cache files: %v", files)
	}
	for path, want := range map[string]os.FileMode{files[0]: 0o600, cli.cacheDir: 0o700} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v (%v), want %04o", path, fi.Mode().Perm(), err, want)
		}
	}

	t.Run("cached", func(t *testing.T) {
		if tok := cli.token(false); tok != first {
			t.Fatal("a second run did not print the cached token")
		}
	})

	var renewed string
	t.Run("renewed with the refresh token, no prompt", func(t *testing.T) {
		// Dex's tokens live an hour: asking for two hours of validity makes
		// the cached one due for renewal.
		renewed = cli.token(false, "--min-validity", "2h")
		if renewed == first {
			t.Fatal("the token was not renewed")
		}
		expectAllowed(t, gw, renewed, "renewed token")
		if tok := cli.token(false); tok != renewed {
			t.Fatal("the renewed token was not cached")
		}
	})

	t.Run("exec credential", func(t *testing.T) {
		for _, c := range []struct{ info, version string }{
			{"", "client.authentication.k8s.io/v1"},
			{`{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","spec":{"interactive":false}}`, "client.authentication.k8s.io/v1beta1"},
		} {
			var env []string
			args := []string{}
			if c.info != "" {
				env = []string{"KUBERNETES_EXEC_INFO=" + c.info} // makes exec-credential the default output
			} else {
				args = []string{"--output", "exec-credential"}
			}
			out, stderr, err := cli.run(false, env, args...)
			if err != nil {
				t.Fatalf("%v: %s", err, stderr)
			}
			var ec struct {
				APIVersion, Kind string
				Status           struct {
					Token               string
					ExpirationTimestamp time.Time
				}
			}
			if err := json.Unmarshal([]byte(out), &ec); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if ec.APIVersion != c.version || ec.Kind != "ExecCredential" || ec.Status.Token != renewed ||
				ec.Status.ExpirationTimestamp.Before(time.Now().Add(50*time.Minute)) {
				t.Fatalf("ExecCredential %s", out)
			}
		}
	})

	t.Run("revoked refresh token: a new login, not a stack trace", func(t *testing.T) {
		if err := dex.RevokeRefreshTokens(); err != nil {
			t.Fatal(err)
		}
		out, stderr, err := cli.run(true, nil, "--min-validity", "2h")
		if err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
		if !strings.Contains(stderr, "refused to renew the cached login (") {
			t.Fatalf("stderr does not say why it logs in again:\n%s", stderr)
		}
		fresh := strings.TrimSpace(out)
		if fresh == renewed || fresh == first {
			t.Fatal("no new token after the new login")
		}
		expectAllowed(t, gw, fresh, "token after the new login")
		renewed = fresh
	})

	dex.Stop()
	t.Run("provider stopped: the cached token", func(t *testing.T) {
		if tok := cli.token(false); tok != renewed {
			t.Fatal("not the cached token")
		}
	})

	t.Run("provider stopped, renewal due: an error that says what to do", func(t *testing.T) {
		out, stderr, err := cli.run(false, nil, "--min-validity", "2h")
		if err == nil || out != "" {
			t.Fatalf("expected a failure, got %q", out)
		}
		if !strings.Contains(stderr, "cannot reach the provider") || !strings.Contains(stderr, "Check the URL and your network") {
			t.Fatalf("stderr:\n%s", stderr)
		}
	})

	t.Run("cache readable by others: refused", func(t *testing.T) {
		for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
			os.Chmod(files[0], mode)
			out, stderr, err := cli.run(false, nil)
			if err == nil || out != "" {
				t.Fatalf("mode %04o: the cache was used", mode)
			}
			if !strings.Contains(stderr, fmt.Sprintf("has mode %04o", mode)) || !strings.Contains(stderr, "chmod 600 "+files[0]) {
				t.Fatalf("mode %04o: stderr does not say how to fix it:\n%s", mode, stderr)
			}
		}
		os.Chmod(files[0], 0o600)
		if tok := cli.token(false); tok != renewed {
			t.Fatal("after chmod 600 the cache is not used again")
		}
	})
}

// TestTokenCommandAudience: a token of the public client passes the gateway
// only when its audience is accepted — by PROVIDER_ID_TOKEN_AUDIENCES, or
// because the command asked Dex for the gateway's client as audience
// (--audience, with the gateway's client trusting kubeflow-cli as a peer).
func TestTokenCommandAudience(t *testing.T) {
	dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a,team-b", PublicClientID: "kubeflow-cli", TrustedPeers: []string{"kubeflow-cli"}})
	svc := peer.StartService(t, peer.KubeflowEnv(dex)) // audiences: CLIENT_ID only
	svc.WaitReady(t, 30*time.Second)
	gw := peer.KubeflowGateway(t, peer.EnvoyFilterLayout, svc.CheckURL, svc.WebURL, dex.Port)
	cli := newTokenCLI(t, dex)
	defer cli.checkStderr()

	own := cli.token(true)
	if status, e := bearer(t, gw, own); status != 401 {
		t.Fatalf("a token for kubeflow-cli alone: %d, want 401: %s", status, e.Path)
	}
	cross := cli.token(true, "--audience", dex.Opts.ClientID)
	expectAllowed(t, gw, cross, "token with the gateway's client as audience")
	if len(cli.cacheFiles()) != 2 {
		t.Fatalf("one cache file per audience expected: %v", cli.cacheFiles())
	}
	if tok := cli.token(false, "--audience", dex.Opts.ClientID); tok != cross {
		t.Fatal("not cached per audience")
	}
}

// TestTokenCommandExpiredToken: a token that has really expired is renewed
// with the refresh token without the user, once for parallel runs. (The loopback flow, whose token
// is fresh when it arrives: the device grant's polling takes longer than
// these tokens live.)
func TestTokenCommandExpiredToken(t *testing.T) {
	port := peer.FreePort(t)
	dex := peer.StartDex(t, peer.DexOptions{PublicClientID: "kubeflow-cli", IDTokenTTL: 3 * time.Second,
		PublicRedirectURIs: []string{fmt.Sprintf("http://127.0.0.1:%d/", port)}})
	cli := newTokenCLI(t, dex)
	defer cli.checkStderr()
	loopback := []string{"--flow", "loopback", "--listen-port", fmt.Sprint(port), "--min-validity", "0s"}
	out, stderr, err := cli.run(true, nil, append(loopback, "--output", "json")...)
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	var first struct {
		IDToken string    `json:"id_token"`
		Expiry  time.Time `json:"expiry"`
	}
	if err := json.Unmarshal([]byte(out), &first); err != nil || first.IDToken == "" {
		t.Fatalf("json output %q: %v", out, err)
	}
	cli.secrets = append(cli.secrets, first.IDToken)
	time.Sleep(time.Until(first.Expiry) + time.Second)

	// Three runs at once, as kubectl may start them: the cache lock lets
	// one renew and the others print its token (without the lock, Dex's
	// refresh token rotation would refuse the late ones and ask for logins).
	args := append([]string{"--issuer", dex.Issuer, "--cache-dir", cli.cacheDir, "--no-browser", "--timeout", "60s"}, loopback...)
	var runs []*peer.TokenCommand
	for i := 0; i < 3; i++ {
		runs = append(runs, peer.StartToken(t, cli.bin, nil, args...))
	}
	var second string
	for i, r := range runs {
		out, err := r.Wait(60 * time.Second)
		cli.stderrs = append(cli.stderrs, r.Stderr())
		if err != nil || strings.Contains(r.Stderr(), "To log in") {
			t.Fatalf("parallel run %d: %v:\n%s", i, err, r.Stderr())
		}
		if i == 0 {
			second = strings.TrimSpace(out)
		} else if strings.TrimSpace(out) != second {
			t.Fatalf("parallel runs printed different tokens: the token was renewed more than once")
		}
	}
	cli.secrets = append(cli.secrets, second)
	cli.secrets = append(cli.secrets, cli.cachedRefreshTokens()...)
	if second == first.IDToken || strings.Count(second, ".") != 2 {
		t.Fatal("the expired token was printed")
	}
}

// TestTokenCommandLoopback: the code flow with PKCE on the loopback redirect
// (--flow loopback), the test playing the browser over HTTP; a request to
// the redirect with another state changes nothing.
func TestTokenCommandLoopback(t *testing.T) {
	port := peer.FreePort(t)
	redirect := fmt.Sprintf("http://127.0.0.1:%d/", port)
	dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a,team-b", PublicClientID: "kubeflow-cli", PublicRedirectURIs: []string{redirect}})
	env := peer.KubeflowEnv(dex)
	env["PROVIDER_ID_TOKEN_AUDIENCES"] = "kubeflow-cli"
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	gw := peer.KubeflowGateway(t, peer.EnvoyFilterLayout, svc.CheckURL, svc.WebURL, dex.Port)

	cmd := peer.StartToken(t, peer.Binary(t), nil, "--issuer", dex.Issuer, "--cache-dir", t.TempDir(), "--no-browser",
		"--flow", "loopback", "--listen-port", fmt.Sprint(port), "--timeout", "60s")
	authURL, err := cmd.URL(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"code_challenge_method=S256", "code_challenge=", "state=", "nonce=", "redirect_uri=" + url.QueryEscape(redirect)} {
		if !strings.Contains(authURL, want) {
			t.Errorf("authorization URL lacks %s: %s", want, authURL)
		}
	}
	resp, err := http.Get(redirect + "?state=forged&code=forged")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("redirect with a forged state: HTTP %d", resp.StatusCode)
	}
	jar, _ := cookiejar.New(nil)
	resp, err = peer.DexLogin(&http.Client{Jar: jar, Timeout: 20 * time.Second}, authURL, dex.Opts.User, dex.Opts.Password)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "Logged in") {
		t.Fatalf("the browser ended at %s with HTTP %d: %s", resp.Request.URL, resp.StatusCode, page)
	}
	out, err := cmd.Wait(30 * time.Second)
	if err != nil {
		t.Fatalf("%v: %s", err, cmd.Stderr())
	}
	tok := strings.TrimSpace(out)
	if strings.Contains(cmd.Stderr(), tok) {
		t.Fatal("the token is on stderr")
	}
	expectAllowed(t, gw, tok, "token from the loopback flow")
}

// TestTokenCommandProviderURL: Kubeflow's Dex names its tokens with the
// in-cluster issuer http://dex.auth.svc.cluster.local:5556/dex, which a
// laptop cannot reach; with --provider-url the command reaches Dex at the
// gateway's URL instead (here Dex's own port), rewrites the endpoints,
// chooses the loopback flow (Dex's device pages would send the browser to
// the in-cluster host) and verifies the token against the in-cluster
// issuer. Without --provider-url, the error says which flags to pass.
func TestTokenCommandProviderURL(t *testing.T) {
	const inCluster = "http://dex.auth.svc.cluster.local:5556/dex"
	port := peer.FreePort(t)
	dex := peer.StartDex(t, peer.DexOptions{Issuer: inCluster, PublicClientID: "kubeflow-cli",
		PublicRedirectURIs: []string{fmt.Sprintf("http://127.0.0.1:%d/", port)}})
	bin := peer.Binary(t)

	cmd := peer.StartToken(t, bin, nil, "--issuer", dex.URL, "--cache-dir", t.TempDir(), "--no-browser")
	if _, err := cmd.Wait(30 * time.Second); err == nil {
		t.Fatal("a discovery naming another issuer was accepted")
	}
	if want := "pass --issuer " + inCluster + " --provider-url " + dex.URL; !strings.Contains(cmd.Stderr(), want) {
		t.Fatalf("stderr does not say %q:\n%s", want, cmd.Stderr())
	}

	cmd = peer.StartToken(t, bin, nil, "--issuer", inCluster, "--provider-url", dex.URL, "--cache-dir", t.TempDir(),
		"--no-browser", "--listen-port", fmt.Sprint(port), "--timeout", "60s")
	authURL, err := cmd.URL(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(authURL, dex.URL+"/auth?") {
		t.Fatalf("the login URL is not under --provider-url: %s", authURL)
	}
	jar, _ := cookiejar.New(nil)
	resp, err := peer.DexLogin(&http.Client{Jar: jar, Timeout: 20 * time.Second}, authURL, dex.Opts.User, dex.Opts.Password)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	out, err := cmd.Wait(30 * time.Second)
	if err != nil {
		t.Fatalf("%v: %s", err, cmd.Stderr())
	}
	parts := strings.Split(strings.TrimSpace(out), ".")
	if len(parts) != 3 {
		t.Fatalf("stdout %q", out)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct{ Iss, Email string }
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Iss != inCluster || claims.Email != dex.Opts.User {
		t.Fatalf("claims %s (%v)", payload, err)
	}
}
