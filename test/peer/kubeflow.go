package peer

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/extauthz"
	"github.com/oidc-authservice/oidc-authservice/test/upstream"
)

// SessionKey is the SESSION_KEYS value of the test setups: random for each
// test process, as no key of this repository may work anywhere (the
// service refuses published ones).
var SessionKey = RandomKey()

// Kubeflow is Kubeflow in miniature: Dex, the service with Kubeflow's
// params.env, a demo upstream, and a gateway that routes /dex/ to Dex and
// /authservice/site/ to the service's web server, everything else to the
// upstream, after the ext_authz check.
type Kubeflow struct {
	Dex     *Dex
	Svc     *Service
	Gateway string
}

// KubeflowEnv is Kubeflow's params.env for a Dex.
func KubeflowEnv(dex *Dex) map[string]string {
	return map[string]string{
		"OIDC_PROVIDER":          dex.Issuer,
		"OIDC_AUTH_URL":          "/dex/auth",
		"CLIENT_ID":              dex.Opts.ClientID,
		"CLIENT_SECRET":          dex.Opts.ClientSecret,
		"REDIRECT_URL":           "/authservice/oidc/callback",
		"OIDC_SCOPES":            "profile email groups",
		"AUTHSERVICE_URL_PREFIX": "/authservice/",
		"SKIP_AUTH_URLS":         "/dex",
		"AFTER_LOGOUT_URL":       "/",
		"USERID_HEADER":          "kubeflow-userid",
		"USERID_PREFIX":          "",
		"USERID_CLAIM":           "email",
		"SESSION_KEYS":           SessionKey,
	}
}

// GatewayLayout is the gateway a setup runs behind: the Envoy
// configuration Istio's translation generated for a layout we ship
// (test/istio/testdata/envoy/<Layout>.json), with the variations a test
// names (Edits); or, with Plain, Kubeflow ≤ 1.9.0's own EnvoyFilter as the
// Istio of those releases applied it (ext_authz first, nothing else).
type GatewayLayout struct {
	Layout string
	Edits  []extauthz.Edit
	Plain  func(checkURL string) extauthz.Config
}

// EnvoyFilterLayout is deploy/overlays/istio-envoyfilter (with the
// web-route component) on Kubeflow master's Istio: every request checked,
// /dex/ routed to Dex, /authservice/ to the pages, the rest to the
// dashboard.
var EnvoyFilterLayout = GatewayLayout{Layout: "master_istio-envoyfilter"}

// ExtensionProviderLayout is deploy/overlays/istio-extension-provider with
// its provider in master's mesh configuration (CUSTOM, all but /dex/*).
var ExtensionProviderLayout = GatewayLayout{Layout: "master_istio-extension-provider"}

// With returns the layout with more variations.
func (l GatewayLayout) With(edits ...extauthz.Edit) GatewayLayout {
	l.Edits = append(append([]extauthz.Edit(nil), l.Edits...), edits...)
	return l
}

// ServiceAddresses are the cluster addresses of the service in the
// layouts we ship (its check port and its pages), of Dex, and of the
// service where Kubeflow's oauth2-proxy was (the one-line swaps).
func ServiceAddresses(checkURL, webURL string, dexPort int) map[string]string {
	m := map[string]string{
		"authservice.istio-system.svc.cluster.local:8080": checkURL,
		"authservice.istio-system.svc.cluster.local:8082": webURL,
		"oauth2-proxy.oauth2-proxy.svc.cluster.local:80":  checkURL,
	}
	if dexPort != 0 { // 0: no Dex (another provider)
		m["dex.auth.svc.cluster.local:5556"] = fmt.Sprintf("http://127.0.0.1:%d", dexPort)
	}
	return m
}

// GRPCAddresses are the cluster addresses of the service's gRPC check port
// (GRPC_PORT, the Service's port grpc 9000) in the gRPC layouts: our
// overlays, and the oauth2-proxy Service of kubeflow-istio-install-grpc.
func GRPCAddresses(grpcAddr string) map[string]string {
	return map[string]string{
		"authservice.istio-system.svc.cluster.local:9000":  "http://" + grpcAddr,
		"oauth2-proxy.oauth2-proxy.svc.cluster.local:9000": "http://" + grpcAddr,
	}
}

// ServiceGateway is the gateway of a layout in front of upstream up,
// checking with svc over HTTP or gRPC as the layout says.
func ServiceGateway(t testing.TB, gw GatewayLayout, svc *Service, dexPort int, up string) string {
	t.Helper()
	addrs := ServiceAddresses(svc.CheckURL, svc.WebURL, dexPort)
	if svc.GRPCAddr != "" {
		for k, v := range GRPCAddresses(svc.GRPCAddr) {
			addrs[k] = v
		}
	}
	g, err := extauthz.NewEnvoy(extauthz.EnvoyOptions{Layout: gw.Layout, Edits: gw.Edits, Default: up, Addresses: addrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return GatewayHandlerAt(t, g, 0)
}

// StartKubeflow starts the whole setup; env overrides KubeflowEnv.
func StartKubeflow(t testing.TB, gw GatewayLayout, env map[string]string) *Kubeflow {
	t.Helper()
	dex := StartDex(t, DexOptions{Groups: "team-a,team-b"})
	e := KubeflowEnv(dex)
	for k, v := range env {
		e[k] = v
	}
	svc := StartService(t, e)
	svc.WaitReady(t, 30*time.Second)
	return &Kubeflow{Dex: dex, Svc: svc, Gateway: KubeflowGateway(t, gw, svc.CheckURL, svc.WebURL, dex.Port)}
}

// KubeflowGateway starts a demo upstream and the gateway of a layout in
// front of it, on a port the kernel picks when it listens (a FreePort taken
// before the upstream starts could be the upstream's too).
func KubeflowGateway(t testing.TB, gw GatewayLayout, checkURL, webURL string, dexPort int) string {
	return KubeflowGatewayAt(t, gw, checkURL, webURL, dexPort, 0)
}

// KubeflowGatewayAt is KubeflowGateway on a given port (0: any).
func KubeflowGatewayAt(t testing.TB, gw GatewayLayout, checkURL, webURL string, dexPort, port int) string {
	t.Helper()
	return LayoutGatewayAt(t, gw, checkURL, webURL, dexPort, port, StartUpstream(t))
}

// LayoutGatewayAt is the gateway of a layout on a given port in front of a
// given upstream (the cluster the layout's catch-all route names: Kubeflow's
// dashboard).
func LayoutGatewayAt(t testing.TB, gw GatewayLayout, checkURL, webURL string, dexPort, port int, up string) string {
	t.Helper()
	if gw.Plain != nil {
		cfg := gw.Plain(checkURL)
		cfg.Upstream = up
		cfg.Routes = []extauthz.Route{
			{Prefix: "/dex/", Upstream: fmt.Sprintf("http://127.0.0.1:%d", dexPort)},
			{Prefix: "/authservice/site/", Upstream: webURL},
		}
		return GatewayAt(t, cfg, port)
	}
	g, err := extauthz.NewEnvoy(extauthz.EnvoyOptions{Layout: gw.Layout, Edits: gw.Edits, Default: up,
		Addresses: ServiceAddresses(checkURL, webURL, dexPort)})
	if err != nil {
		t.Fatal(err)
	}
	return GatewayHandlerAt(t, g, port)
}

// StartUpstream runs the demo upstream on a port the kernel picks and
// returns its URL.
func StartUpstream(t testing.TB) string {
	l := Listen(t)
	srv := &http.Server{Handler: upstream.Handler(""), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}
