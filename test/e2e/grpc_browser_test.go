//go:build e2e

package e2e

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// checksByProtocol reads the service's oidc_authservice_checks_total summed
// per protocol label.
func checksByProtocol(t *testing.T, svc *peer.Service) map[string]float64 {
	t.Helper()
	resp, err := http.Get(svc.ProbeURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "oidc_authservice_checks_total{") {
			continue
		}
		_, rest, _ := strings.Cut(line, `protocol="`)
		proto, _, _ := strings.Cut(rest, `"`)
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[proto] += v
		}
	}
	return out
}

// A browser logs in, reloads and logs out through the gRPC gateway of
// Kubeflow master with deploy/overlays/kubeflow-istio-install-grpc (the
// mesh's oauth2-proxy provider as envoyExtAuthzGrpc to the service's port
// grpc, test/istio's generated configuration): every check of the way goes
// over gRPC, none over HTTP.
func TestBrowserThroughTheGRPCGateway(t *testing.T) {
	dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a,team-b"})
	svc := peer.StartService(t, peer.KubeflowEnv(dex))
	svc.WaitReady(t, 30*time.Second)
	gw := peer.ServiceGateway(t, peer.GatewayLayout{Layout: "master-grpc_kubeflow-oauth2-proxy-headers"}, svc, dex.Port, peer.StartUpstream(t))
	tab := newBrowser(t)

	do(t, tab, "open deep link", chromedp.Navigate(gw+"/notebook/kubeflow-user/nb/lab?file=a%20b.ipynb&x=1"), loginForm)
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

	do(t, tab, "logout link", chromedp.Click(chromedp.ID("logout-link")), loginForm)
	do(t, tab, "next navigation asks for login", chromedp.Navigate(gw+"/after-logout"), loginForm)
	if loc := get(t, tab, "location", chromedp.Location()); !strings.Contains(loc, "/dex/") {
		t.Fatalf("after logout, navigation went to %s without a login", loc)
	}

	n := checksByProtocol(t, svc)
	if n["grpc"] < 5 || n["http"] != 0 {
		t.Errorf("checks by protocol %v: want every check over gRPC (login, callback, landing, reload, logout, after)", n)
	}
}
