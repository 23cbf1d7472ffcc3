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

// StartKubeflow starts the whole setup; env overrides KubeflowEnv.
func StartKubeflow(t testing.TB, mode func(string) extauthz.Config, env map[string]string) *Kubeflow {
	t.Helper()
	dex := StartDex(t, DexOptions{Groups: "team-a,team-b"})
	e := KubeflowEnv(dex)
	for k, v := range env {
		e[k] = v
	}
	svc := StartService(t, e)
	svc.WaitReady(t, 30*time.Second)
	return &Kubeflow{Dex: dex, Svc: svc, Gateway: KubeflowGateway(t, mode, svc.CheckURL, svc.WebURL, dex.Port)}
}

// KubeflowGateway starts a demo upstream and a gateway in front of it.
func KubeflowGateway(t testing.TB, mode func(string) extauthz.Config, checkURL, webURL string, dexPort int) string {
	cfg := mode(checkURL)
	cfg.Upstream = StartUpstream(t)
	cfg.Routes = []extauthz.Route{
		{Prefix: "/dex/", Upstream: fmt.Sprintf("http://127.0.0.1:%d", dexPort)},
		{Prefix: "/authservice/site/", Upstream: webURL},
	}
	return Gateway(t, cfg)
}

// StartUpstream runs the demo upstream and returns its URL.
func StartUpstream(t testing.TB) string {
	port := FreePort(t)
	srv := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), Handler: upstream.Handler(""), ReadHeaderTimeout: 5 * time.Second}
	go srv.ListenAndServe()
	t.Cleanup(func() { srv.Close() })
	if err := WaitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", port), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}
