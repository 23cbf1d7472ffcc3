package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/oidc-authservice/oidc-authservice/test/extauthz"
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

func TestIssuedUpstreamTokenAcrossKeyRotation(t *testing.T) {
	dir := t.TempDir()
	keyA, keyB := pemKey(t), pemKey(t)
	keys := filepath.Join(dir, "keys.pem")
	os.WriteFile(keys, keyA, 0o600)
	const iss = "http://authservice.istio-system.svc.cluster.local:8082"

	dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a"})
	env := peer.KubeflowEnv(dex)
	env["UPSTREAM_TOKEN"] = "issued"
	env["UPSTREAM_TOKEN_KEYS_FILE"] = keys
	env["UPSTREAM_TOKEN_ISSUER"] = iss
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	gw := peer.KubeflowGateway(t, extauthz.IstioProvider, svc.CheckURL, svc.WebURL, dex.Port)

	s := &setup{dex: dex, svc: svc, gateway: gw}
	b := newBrowser()
	e := s.login(t, b, "/x?format=json")
	auth := e.Headers["authorization"]
	if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") {
		t.Fatalf("upstream Authorization %q", auth)
	}
	old := strings.TrimPrefix(auth[0], "Bearer ")
	c := verifyLikeIstio(t, svc.WebURL, iss, old)
	if c["sub"] != "user@example.com" || c["email"] != "user@example.com" || c["groups"].([]any)[0] != "team-a" {
		t.Fatalf("claims %v", c)
	}
	if exp := int64(c["exp"].(float64)) - int64(c["iat"].(float64)); exp != 300 {
		t.Fatalf("lifetime %d s, want 300", exp)
	}
	// Cached per session: the next request carries the same token.
	resp, err := b.Get(gw + "/y?format=json")
	if err != nil {
		t.Fatal(err)
	}
	if e := readEcho(t, resp); e.Headers["authorization"][0] != auth[0] {
		t.Fatal("token re-signed on every request")
	}

	// Rotation: the new key first, the old one kept, across a restart.
	os.WriteFile(keys, append(keyB, keyA...), 0o600)
	svc.Stop()
	env["WEB_SERVER_PORT"] = strings.TrimPrefix(svc.WebURL, "http://127.0.0.1:")
	svc2 := peer.StartService(t, env)
	svc2.WaitReady(t, 30*time.Second)
	verifyLikeIstio(t, svc2.WebURL, iss, old) // a token in flight, signed with the old key
	gw2 := peer.KubeflowGateway(t, extauthz.IstioProvider, svc2.CheckURL, svc2.WebURL, dex.Port)
	resp, err = b.Get(gw2 + "/z?format=json")
	if err != nil {
		t.Fatal(err)
	}
	e = readEcho(t, resp)
	fresh := strings.TrimPrefix(e.Headers["authorization"][0], "Bearer ")
	verifyLikeIstio(t, svc2.WebURL, iss, fresh)
	if fresh == old {
		t.Fatal("no new token after the restart")
	}
}
