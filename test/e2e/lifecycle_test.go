//go:build e2e

package e2e

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// countLog counts the service log lines of this test with msg.
func countLog(t *testing.T, msg string) int {
	f, err := os.Open(filepath.Join(peer.ArtifactsDir(t), "service.log"))
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"msg":"`+msg+`"`) {
			n++
		}
	}
	return n
}

func TestRefreshOncePerExpiryUnderConcurrentLoad(t *testing.T) {
	os.Remove(filepath.Join(peer.ArtifactsDir(t), "service.log"))
	s := startGitLabSetup(t, peer.GitLabOptions{AccessTokenTTL: 2 * time.Second, IDTokenTTL: 2 * time.Second},
		map[string]string{"REFRESH_BEFORE_EXPIRY": "1s"})
	c := newClient()
	resp, err := peer.GitLabLogin(c.Client, s.gateway+"/x?format=json", "alice")
	readEcho(t, resp, err)

	// Bursts of concurrent requests carrying whatever cookie the browser
	// has, as a page loading many resources does, for several lifetimes of
	// the access token (a refresh is due 1 s after each issue).
	var bad atomic.Int64
	start := time.Now()
	for time.Since(start) < 5500*time.Millisecond {
		var wg sync.WaitGroup
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := c.noFollow().Get(s.gateway + "/burst?format=json")
				if err != nil {
					bad.Add(1)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					bad.Add(1)
				}
			}()
		}
		wg.Wait()
		time.Sleep(100 * time.Millisecond)
	}
	refreshes := countLog(t, "session refreshed")
	t.Logf("refreshes in 5.5 s with a refresh due every ~1 s: %d", refreshes)
	if bad.Load() != 0 {
		t.Fatalf("%d requests of a valid session were not allowed", bad.Load())
	}
	if refreshes < 3 || refreshes > 7 {
		t.Fatalf("%d refreshes: want about one per expiry (5), not one per request", refreshes)
	}
}

func TestStrictValidationEndsRevokedSession(t *testing.T) {
	s := startGitLabSetup(t, peer.GitLabOptions{}, map[string]string{
		"STRICT_SESSION_VALIDATION": "true", "STRICT_SESSION_VALIDATION_INTERVAL": "1s",
	})
	c := newClient()
	resp, err := peer.GitLabLogin(c.Client, s.gateway+"/x?format=json", "alice")
	readEcho(t, resp, err)
	if code, _ := status(t, c.noFollow(), s.gateway+"/x?format=json", nil); code != 200 {
		t.Fatalf("before revocation: %d", code)
	}
	if err := s.gl.Revoke("4217"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond)
	if code, _ := status(t, c.noFollow(), s.gateway+"/api/x", map[string]string{"Accept": "application/json"}); code != 401 {
		t.Fatalf("API after revocation: %d", code)
	}
	code, h := status(t, c.noFollow(), s.gateway+"/x", nil)
	if code != 302 || !strings.HasPrefix(h.Get("Location"), s.gl.Issuer+"/auth?") {
		t.Fatalf("navigation after revocation: %d %s", code, h.Get("Location"))
	}
}

func introspect(t *testing.T, g *peer.GitLab, token string) bool {
	t.Helper()
	req, _ := http.NewRequest("POST", g.Issuer+"/token/introspection", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(g.Opts.ClientID, g.Opts.ClientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct{ Active bool }
	json.NewDecoder(resp.Body).Decode(&r)
	return r.Active
}

func TestLogoutRevokesTokensAndEndsProviderSession(t *testing.T) {
	port := peer.ReservePort(t)
	gateway := fmt.Sprintf("http://127.0.0.1:%d", port)
	s := startGitLabSetupAt(t, port, peer.GitLabOptions{Profile: "full", PostLogoutURIs: []string{gateway + "/authservice/site/after_logout"}}, nil)
	c := newClient()
	resp, err := peer.GitLabLogin(c.Client, s.gateway+"/x?format=json", "alice")
	readEcho(t, resp, err)
	sess := peer.OpenSession(t, c.cookie(s.gateway, "authservice_session"))
	if sess.AccessToken == "" || sess.RefreshToken == "" || sess.IDToken == "" {
		t.Fatalf("session lacks what logout needs: %+v", sess)
	}
	if !introspect(t, s.gl, sess.AccessToken) || !introspect(t, s.gl, sess.RefreshToken) {
		t.Fatal("tokens inactive before logout")
	}
	code, h := status(t, c.noFollow(), s.gateway+"/authservice/logout", nil)
	loc, _ := url.Parse(h.Get("Location"))
	if code != 302 || !strings.HasPrefix(h.Get("Location"), s.gl.Issuer+"/session/end?") ||
		loc.Query().Get("id_token_hint") != sess.IDToken || loc.Query().Get("post_logout_redirect_uri") != gateway+"/authservice/site/after_logout" {
		t.Fatalf("logout: %d %s", code, h.Get("Location"))
	}
	if introspect(t, s.gl, sess.AccessToken) || introspect(t, s.gl, sess.RefreshToken) {
		t.Fatal("tokens still active after logout")
	}
}

func TestGitLabLogoutOffersProviderSignOut(t *testing.T) {
	s := startGitLabSetup(t, peer.GitLabOptions{}, map[string]string{"PROVIDER_SIGN_OUT_URL": "https://gitlab.example.com/users/sign_out"})
	c := newClient()
	resp, err := peer.GitLabLogin(c.Client, s.gateway+"/x?format=json", "alice")
	readEcho(t, resp, err)
	sess := peer.OpenSession(t, c.cookie(s.gateway, "authservice_session"))
	code, h := status(t, c.noFollow(), s.gateway+"/authservice/logout", nil)
	if code != 302 || h.Get("Location") != "/authservice/site/after_logout" {
		t.Fatalf("logout without end_session: %d %s", code, h.Get("Location"))
	}
	if introspect(t, s.gl, sess.RefreshToken) {
		t.Fatal("refresh token still active after logout")
	}
	resp, err = c.Get(s.gateway + "/authservice/site/after_logout")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `action="https://gitlab.example.com/users/sign_out"`) {
		t.Fatalf("after-logout page: %d %.300s", resp.StatusCode, body)
	}
}

// capture forwards back-channel logout requests to the service and keeps
// the last body, so the test can replay it.
type capture struct {
	mu   sync.Mutex
	body string
}

func (c *capture) last() string { c.mu.Lock(); defer c.mu.Unlock(); return c.body }

func TestBackchannelLogoutAcrossReplicasWithRedis(t *testing.T) {
	redisURL := peer.StartRedis(t)
	port, webA := peer.ReservePort(t), peer.FreePort(t)
	gatewayA := fmt.Sprintf("http://127.0.0.1:%d", port)
	// The provider posts logout tokens to a capturing proxy in front of
	// replica A's web server.
	cap := &capture{}
	target, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", webA))
	rp := httputil.NewSingleHostReverseProxy(target)
	capL := peer.Listen(t)
	capSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		cap.mu.Lock()
		cap.body = string(b)
		cap.mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		r.ContentLength = int64(len(b))
		rp.ServeHTTP(w, r)
	})}
	go capSrv.Serve(capL)
	t.Cleanup(func() { capSrv.Close() })
	backchannel := fmt.Sprintf("http://%s/authservice/oidc/backchannel-logout", capL.Addr())

	// UPSTREAM_TOKEN=id_token: every upstream gets the user's ID token,
	// which the bearer path accepts until the session is logged out.
	s := startGitLabSetupAt(t, port, peer.GitLabOptions{Profile: "full", BackchannelLogoutURI: backchannel},
		map[string]string{"REDIS_URL": redisURL, "WEB_SERVER_PORT": fmt.Sprint(webA), "UPSTREAM_TOKEN": "id_token"})
	// Replica B: same keys and Redis, its own gateway.
	envB := gitlabEnv(s.gl, gatewayA)
	envB["REDIS_URL"] = redisURL
	envB["UPSTREAM_TOKEN"] = "id_token"
	svcB := peer.StartService(t, envB)
	svcB.WaitReady(t, 30*time.Second)
	gatewayB := peer.KubeflowGateway(t, peer.EnvoyFilterLayout, svcB.CheckURL, svcB.WebURL, 0)

	alice, bob := newClient(), newClient()
	upstreamToken := map[*client]string{}
	for _, c := range []struct {
		cl    *client
		login string
	}{{alice, "alice"}, {bob, "bob"}} {
		resp, err := peer.GitLabLogin(c.cl.Client, s.gateway+"/x?format=json", c.login)
		e := readEcho(t, resp, err)
		upstreamToken[c.cl] = strings.TrimPrefix(header(e, "authorization"), "Bearer ")
	}
	bearer := func(gw string, c *client) int {
		code, _ := status(t, newClient().noFollow(), gw+"/api/x", map[string]string{"Authorization": "Bearer " + upstreamToken[c]})
		return code
	}
	sess := peer.OpenSession(t, alice.cookie(gatewayA, "authservice_session"))
	for _, gw := range []string{gatewayA, gatewayB} {
		for _, c := range []*client{alice, bob} {
			if code, _ := status(t, c.noFollow(), gw+"/x?format=json", nil); code != 200 {
				t.Fatalf("before logout at %s: %d", gw, code)
			}
			// The ID token an upstream got, replayed as bearer (and cached).
			if code := bearer(gw, c); code != 200 {
				t.Fatalf("the upstream's ID token as bearer before logout at %s: %d", gw, code)
			}
		}
	}

	// A forged logout token (right claims, wrong key) ends nothing.
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("logout+jwt"))
	forged, _ := jwt.Signed(signer).Claims(map[string]any{
		"iss": s.gl.Issuer, "aud": "kubeflow", "iat": time.Now().Unix(), "jti": "forged-1", "sub": sess.Subject, "sid": sess.SID,
		"events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}},
	}).Serialize()
	if code := postLogoutToken(t, fmt.Sprintf("http://127.0.0.1:%d", webA), forged); code != 400 {
		t.Fatalf("forged logout token: %d", code)
	}

	if err := s.gl.Backchannel(sess.Subject, sess.SID); err != nil {
		t.Fatal(err)
	}
	for _, gw := range []string{gatewayA, gatewayB} {
		if !eventually(3*time.Second, func() bool {
			code, _ := status(t, alice.noFollow(), gw+"/x", map[string]string{"Accept": "application/json"})
			return code == 401
		}) {
			t.Fatalf("alice's session still accepted at %s after back-channel logout", gw)
		}
		if !eventually(3*time.Second, func() bool { return bearer(gw, alice) == 401 }) {
			t.Fatalf("alice's ID token, handed upstream, still accepted as bearer at %s after back-channel logout", gw)
		}
	}
	// Replaying the real logout token is refused.
	if raw := cap.last(); raw == "" {
		t.Fatal("no logout token captured")
	} else if v, _ := url.ParseQuery(raw); postLogoutToken(t, fmt.Sprintf("http://127.0.0.1:%d", webA), v.Get("logout_token")) != 400 {
		t.Fatal("replayed logout token accepted")
	}
	// Bob's session and ID token were never touched.
	for _, gw := range []string{gatewayA, gatewayB} {
		if code, _ := status(t, bob.noFollow(), gw+"/x?format=json", nil); code != 200 {
			t.Fatalf("bob at %s: %d", gw, code)
		}
		if code := bearer(gw, bob); code != 200 {
			t.Fatalf("bob's ID token at %s: %d", gw, code)
		}
	}
}

func postLogoutToken(t *testing.T, web, token string) int {
	t.Helper()
	resp, err := http.PostForm(web+"/authservice/oidc/backchannel-logout", url.Values{"logout_token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func eventually(d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if f() {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return f()
}
