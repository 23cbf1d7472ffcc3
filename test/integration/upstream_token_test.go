package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

func pemKey(t *testing.T) []byte {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// verifyLikeIstio validates a token as a RequestAuthentication would: the
// key set fetched over HTTP, signature, iss, aud, exp (go-oidc, not our
// signing code).
func verifyLikeIstio(t *testing.T, webURL, iss, token string) map[string]any {
	t.Helper()
	ks := oidc.NewRemoteKeySet(context.Background(), webURL+"/.well-known/jwks.json")
	v := oidc.NewVerifier(iss, ks, &oidc.Config{ClientID: "kubeflow", SupportedSigningAlgs: []string{"ES256", "RS256"}})
	idt, err := v.Verify(context.Background(), token)
	if err != nil {
		t.Fatalf("issued token does not validate: %v", err)
	}
	var c map[string]any
	idt.Claims(&c)
	return c
}

// deploy/overlays/kubeflow-jwt on Kubeflow master, as Istio builds the
// gateway: the service issues the upstream token, the gateway's jwt_authn
// verifies it with the key set istiod fetched from the service and inlined
// (test/keys/upstream-token.pem here) and sets kubeflow-userid from it.
func TestIssuedUpstreamTokenAcrossKeyRotation(t *testing.T) {
	dir := t.TempDir()
	keyA, err := os.ReadFile(peer.TestKeyFile("upstream-token")) // the key istiod inlined
	if err != nil {
		t.Fatal(err)
	}
	keyB := pemKey(t)
	keys := filepath.Join(dir, "keys.pem")
	os.WriteFile(keys, keyA, 0o600)
	const iss = "http://authservice.istio-system.svc.cluster.local:8082"
	jwtLayout := peer.GatewayLayout{Layout: "master_kubeflow-jwt"}

	dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a", RedirectURIs: []string{"/oauth2/callback"}})
	env := peer.KubeflowEnv(dex)
	env["UPSTREAM_TOKEN"] = "issued"
	env["UPSTREAM_TOKEN_KEYS_FILE"] = keys
	env["UPSTREAM_TOKEN_ISSUER"] = iss
	env["REDIRECT_URL"] = "/oauth2/callback"
	env["LOGOUT_PATH"] = "/oauth2/sign_out"
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	gw := peer.KubeflowGateway(t, jwtLayout, svc.CheckURL, svc.WebURL, dex.Port)

	s := &setup{dex: dex, svc: svc, gateway: gw}
	b := newBrowser()
	e := s.login(t, b, "/x?format=json")
	if auth := e.Headers["authorization"]; len(auth) != 0 {
		t.Fatalf("the issued token reached the upstream: the RequestAuthentication removes it (forwardOriginalToken: false)")
	}
	if got := e.Headers["kubeflow-userid"]; len(got) != 1 || got[0] != "user@example.com" {
		t.Fatalf("kubeflow-userid %q: the gateway's jwt_authn sets it from the issued token's sub", got)
	}
	// Comma-joined, as Kubeflow reads it: the RequestAuthentication maps
	// groups_csv (jwt_authn would write the groups list as base64 JSON).
	if got := e.Headers["kubeflow-groups"]; len(got) != 1 || got[0] != "team-a" {
		t.Fatalf("kubeflow-groups %q, want team-a", got)
	}
	// The token the check hands the gateway.
	issued := func(checkURL string) string {
		t.Helper()
		gwURL, _ := url.Parse(gw)
		req, _ := http.NewRequest("GET", checkURL+"/y?format=json", nil)
		for _, c := range b.Jar.Cookies(gwURL) {
			req.AddCookie(c)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		auth := resp.Header.Get("Authorization")
		if resp.StatusCode != 200 || !strings.HasPrefix(auth, "Bearer ") {
			t.Fatalf("the check's allow answer: %d, Authorization %q", resp.StatusCode, auth)
		}
		return strings.TrimPrefix(auth, "Bearer ")
	}
	old := issued(svc.CheckURL)
	c := verifyLikeIstio(t, svc.WebURL, iss, old)
	if c["sub"] != "user@example.com" || c["email"] != "user@example.com" || c["groups"].([]any)[0] != "team-a" || c["groups_csv"] != "team-a" {
		t.Fatalf("claims %v", c)
	}
	if exp := int64(c["exp"].(float64)) - int64(c["iat"].(float64)); exp != 300 {
		t.Fatalf("lifetime %d s, want 300", exp)
	}
	// Cached per session: the next check hands the same token.
	if issued(svc.CheckURL) != old {
		t.Fatal("token re-signed on every request")
	}

	restart := func(pem []byte) (*peer.Service, string) {
		os.WriteFile(keys, pem, 0o600)
		svc.Stop()
		env["WEB_SERVER_PORT"] = strings.TrimPrefix(svc.WebURL, "http://127.0.0.1:")
		svc = peer.StartService(t, env)
		svc.WaitReady(t, 30*time.Second)
		return svc, peer.KubeflowGateway(t, jwtLayout, svc.CheckURL, svc.WebURL, dex.Port)
	}
	// Rotation, step 1: the new key published second, the old one still
	// signing. The gateway keeps the key set istiod inlined until istiod
	// fetches it again (PILOT_JWT_PUB_KEY_REFRESH_INTERVAL, 20 min), so
	// requests keep passing.
	svc2, gw2 := restart(append(append([]byte(nil), keyA...), keyB...))
	verifyLikeIstio(t, svc2.WebURL, iss, old) // a token in flight
	e = readEcho(t, getWith(t, b, gw2+"/z?format=json"))
	if got := e.Headers["kubeflow-userid"]; len(got) != 1 || got[0] != "user@example.com" {
		t.Fatalf("after publishing the new key: kubeflow-userid %q", got)
	}
	// Step 2 comes after istiod refetched the key set; signing with the new
	// key before that (the new key first at once) is refused at the gateway:
	// the inlined key set does not have it.
	_, gw3 := restart(append(append([]byte(nil), keyB...), keyA...))
	resp := getWith(t, b, gw3+"/w?format=json")
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("signing with a key istiod has not inlined yet: %d, want 401 from jwt_authn", resp.StatusCode)
	}
}

func getWith(t *testing.T, b *browser, u string) *http.Response {
	t.Helper()
	resp, err := b.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
