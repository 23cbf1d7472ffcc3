// Command extauthz-proxy runs the Envoy-faithful ext_authz gateway of
// package extauthz, for `make run` and manual tests.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/oidc-authservice/oidc-authservice/test/extauthz"
)

type routes []extauthz.Route

func (r *routes) String() string { return fmt.Sprint(*r) }
func (r *routes) Set(v string) error {
	prefix, up, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want /prefix/=http://upstream")
	}
	*r = append(*r, extauthz.Route{Prefix: prefix, Upstream: up})
	return nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8000", "listen address")
	check := flag.String("check", "http://127.0.0.1:8080", "ext_authz service URL")
	mode := flag.String("mode", "kubeflow-envoyfilter-corrected", "kubeflow-envoyfilter | kubeflow-envoyfilter-corrected | istio-provider")
	upstream := flag.String("upstream", "http://127.0.0.1:8090", "default upstream")
	var rs routes
	flag.Var(&rs, "route", "prefix=upstream, repeatable")
	flag.Parse()

	var cfg extauthz.Config
	switch *mode {
	case "kubeflow-envoyfilter":
		cfg = extauthz.KubeflowEnvoyFilter(*check)
	case "kubeflow-envoyfilter-corrected":
		cfg = extauthz.KubeflowEnvoyFilterCorrected(*check)
	case "istio-provider":
		cfg = extauthz.IstioProvider(*check)
	default:
		log.Fatalf("unknown -mode %q", *mode)
	}
	cfg.Routes, cfg.Upstream = rs, *upstream
	srv, l, err := extauthz.Serve(cfg, *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("extauthz-proxy listening on http://%s (%s)\n", l.Addr(), *mode)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	srv.Shutdown(context.Background())
}
