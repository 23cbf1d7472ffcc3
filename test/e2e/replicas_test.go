//go:build e2e

package e2e

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// replica is one service process with its own gateway. Cookies are scoped
// by host, not port, so one client's cookies reach every gateway: as if a
// load balancer sent each request to another replica.
type replica struct {
	svc     *peer.Service
	gateway string
}

func startReplica(t *testing.T, dex *peer.Dex, keys string) *replica {
	t.Helper()
	env := peer.KubeflowEnv(dex)
	env["SESSION_KEYS"] = keys
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	return &replica{svc: svc, gateway: peer.KubeflowGateway(t, peer.EnvoyFilterLayout, svc.CheckURL, svc.WebURL, dex.Port)}
}

func TestReplicasShareSessionsAndRotateKeys(t *testing.T) {
	oldKey, newKey := peer.RandomKey(), peer.RandomKey()
	dex := peer.StartDex(t, peer.DexOptions{})
	a, b := startReplica(t, dex, oldKey), startReplica(t, dex, oldKey)

	// A login started on A completes on B: the callback goes to B.
	c := newClient()
	bURL, _ := url.Parse(b.gateway)
	c.rewrite = func(u *url.URL) {
		if u.Path == "/authservice/oidc/callback" {
			u.Host = bURL.Host
		}
	}
	resp, err := peer.DexLogin(c.Client, a.gateway+"/started-on-a?format=json", "user@example.com", "12341234")
	e := readEcho(t, resp, err)
	if e.Path != "/started-on-a" || header(e, "kubeflow-userid") != "user@example.com" || !strings.HasPrefix(resp.Request.URL.String(), b.gateway) {
		t.Fatalf("login across replicas: %s %v", resp.Request.URL, e.Headers)
	}
	c.rewrite = nil
	oldSession := c.cookie(a.gateway, "authservice_session")

	// A session sealed by one replica is accepted by the other, alternating.
	for i := 0; i < 4; i++ {
		r := []*replica{a, b}[i%2]
		resp, err := c.noFollow().Get(r.gateway + "/alternate?format=json")
		if e := readEcho(t, resp, err); header(e, "kubeflow-userid") != "user@example.com" {
			t.Fatalf("request %d: %v", i, e.Headers)
		}
	}

	// Rolling restart with the new key first and the old one kept.
	rotated := newKey + "," + oldKey
	a.svc.Stop()
	a = startReplica(t, dex, rotated)
	b.svc.Stop()
	b = startReplica(t, dex, rotated)
	for _, r := range []*replica{a, b} {
		resp, err := c.noFollow().Get(r.gateway + "/after-rotation?format=json")
		if e := readEcho(t, resp, err); header(e, "kubeflow-userid") != "user@example.com" {
			t.Fatalf("old session after rotation: %v", e.Headers)
		}
	}
	// New logins are sealed with the new key and work on both.
	c2 := newClient()
	resp, err = peer.DexLogin(c2.Client, a.gateway+"/new?format=json", "user@example.com", "12341234")
	readEcho(t, resp, err)
	resp, err = c2.noFollow().Get(b.gateway + "/new?format=json")
	readEcho(t, resp, err)

	// The old key removed: old sessions get a fresh login, not an error.
	a.svc.Stop()
	a = startReplica(t, dex, newKey)
	code, h := status(t, c.noFollow(), a.gateway+"/after-removal", nil)
	if code != 302 || !strings.HasPrefix(h.Get("Location"), "/dex/auth?") {
		t.Fatalf("old session after key removal: %d %s", code, h.Get("Location"))
	}
	if !strings.Contains(strings.Join(h.Values("Set-Cookie"), ";"), "authservice_session=;") {
		t.Fatalf("stale cookie not cleared: %v", h.Values("Set-Cookie"))
	}
	if oldSession == c2.cookie(a.gateway, "authservice_session") {
		t.Fatal("new login reused the old cookie")
	}
	resp, err = c2.noFollow().Get(a.gateway + "/new?format=json")
	if e := readEcho(t, resp, err); header(e, "kubeflow-userid") != "user@example.com" {
		t.Fatalf("new-key session after removal: %v", e.Headers)
	}
}
