// Command extauthz-proxy runs the Envoy-faithful gateway of package
// extauthz, for `make run` and tests that need it as a process: the gateway
// of a generated layout (-layout, test/istio/testdata/envoy) or Kubeflow
// ≤ 1.9.0's own EnvoyFilter (-mode kubeflow-envoyfilter).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/extauthz"
)

type addresses map[string]string

func (a addresses) String() string { return fmt.Sprint(map[string]string(a)) }
func (a addresses) Set(v string) error {
	host, u, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want host:port=http://127.0.0.1:port")
	}
	a[host] = u
	return nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8000", "listen address")
	layout := flag.String("layout", "master_istio-envoyfilter", "generated layout (test/istio/testdata/envoy/<layout>.json)")
	file := flag.String("config", "", "a generated configuration file (instead of -layout)")
	mode := flag.String("mode", "", "kubeflow-envoyfilter: Kubeflow ≤ 1.9.0's own EnvoyFilter instead of a layout")
	check := flag.String("check", "http://127.0.0.1:8080", "the service's check port")
	web := flag.String("web", "http://127.0.0.1:8082", "the service's pages port")
	dex := flag.String("dex", "http://127.0.0.1:5556", "Dex")
	upstream := flag.String("upstream", "http://127.0.0.1:8090", "where the clusters of the applications go")
	addrs := addresses{}
	flag.Var(addrs, "address", "host:port=URL of a cluster address, repeatable")
	flag.Parse()

	var h http.Handler
	switch *mode {
	case "kubeflow-envoyfilter":
		cfg := extauthz.KubeflowEnvoyFilter(*check)
		cfg.Upstream = *upstream
		cfg.Routes = []extauthz.Route{{Prefix: "/dex/", Upstream: *dex}, {Prefix: "/authservice/site/", Upstream: *web}}
		g, err := extauthz.New(cfg)
		if err != nil {
			log.Fatal(err)
		}
		h = g
	case "":
		m := map[string]string{
			"authservice.istio-system.svc.cluster.local:8080": *check,
			"authservice.istio-system.svc.cluster.local:8082": *web,
			"oauth2-proxy.oauth2-proxy.svc.cluster.local:80":  *check,
			"dex.auth.svc.cluster.local:5556":                 *dex,
		}
		for k, v := range addrs {
			m[k] = v
		}
		g, err := extauthz.NewEnvoy(extauthz.EnvoyOptions{Layout: *layout, File: *file, Addresses: m, Default: *upstream})
		if err != nil {
			log.Fatal(err)
		}
		h = g
	default:
		log.Fatalf("unknown -mode %q", *mode)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	what := *layout
	if *mode != "" {
		what = *mode
	}
	fmt.Printf("extauthz-proxy listening on http://%s (%s)\n", l.Addr(), what)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	srv.Shutdown(context.Background())
}
