//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

func TestForwardAuthProxies(t *testing.T) {
	for _, proxy := range []string{"caddy", "nginx"} {
		t.Run(proxy, func(t *testing.T) {
			dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a"})
			env := peer.KubeflowEnv(dex)
			if proxy == "caddy" {
				env["FORWARD_AUTH_REDIRECT"] = "true" // Caddy passes the 302 on
			}
			svc := peer.StartService(t, env)
			svc.WaitReady(t, 30*time.Second)
			up := peer.StartUpstream(t)
			tg := peer.ForwardAuthTargets{
				Service:  strings.TrimPrefix(svc.CheckURL, "http://"),
				Dex:      fmt.Sprintf("127.0.0.1:%d", dex.Port),
				Upstream: strings.TrimPrefix(up, "http://"),
			}
			var front string
			if proxy == "caddy" {
				front = peer.StartCaddy(t, tg)
			} else {
				front = peer.StartNginx(t, tg)
			}

			c := newClient()
			resp, err := peer.DexLogin(c.Client, front+"/notebook/ns/nb?format=json&a=1", "user@example.com", "12341234")
			e := readEcho(t, resp, err)
			if e.Path != "/notebook/ns/nb" || e.Query != "format=json&a=1" {
				t.Fatalf("landed on %s?%s", e.Path, e.Query)
			}
			if header(e, "kubeflow-userid") != "user@example.com" || header(e, "kubeflow-groups") != "team-a" {
				t.Fatalf("identity upstream: %v", e.Headers)
			}
			// Client-sent identity headers are overwritten.
			req, _ := http.NewRequest("GET", front+"/x?format=json", nil)
			req.Header.Set("Kubeflow-Userid", "admin@example.com")
			req.Header.Set("Kubeflow-Groups", "admins")
			resp, err = c.Do(req)
			e = readEcho(t, resp, err)
			if header(e, "kubeflow-userid") != "user@example.com" || header(e, "kubeflow-groups") != "team-a" {
				t.Fatalf("client identity headers passed: %v", e.Headers)
			}
			// Without a session, nothing reaches the upstream.
			code, _ := status(t, newClient().noFollow(), front+"/x", map[string]string{"Kubeflow-Userid": "admin@example.com"})
			if code != 302 && code != 401 {
				t.Fatalf("without session: %d", code)
			}
		})
	}
}

// TestForgedForwardedHeadersFromUntrustedAddress: X-Forwarded-* from an
// address outside FORWARD_AUTH_TRUSTED_PROXIES are ignored.
func TestForgedForwardedHeadersFromUntrustedAddress(t *testing.T) {
	dex := peer.StartDex(t, peer.DexOptions{})
	env := peer.KubeflowEnv(dex)
	env["SKIP_AUTH_URLS"] = "/public"
	env["SERVER_HOSTNAME"] = "127.0.0.1"
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	from := func(src string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, n, a string) (net.Conn, error) { return d.DialContext(ctx, n, a) }}}
	}
	forged := map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Host": "kf.example.com", "X-Forwarded-Uri": "/public/anything"}
	if code, _ := status(t, from("127.0.0.1"), svc.CheckURL+"/authservice/verify", forged); code != 200 {
		t.Fatalf("from a trusted proxy: %d", code)
	}
	if code, _ := status(t, from("127.0.0.2"), svc.CheckURL+"/authservice/verify", forged); code != 401 {
		t.Fatalf("forged headers from 127.0.0.2 were believed: %d", code)
	}
}
