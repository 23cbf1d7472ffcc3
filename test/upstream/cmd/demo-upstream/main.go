// Command demo-upstream serves package upstream's demo application.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/upstream"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "listen address")
	prefix := flag.String("prefix", "/authservice/", "the auth service's URL prefix, for the logout links")
	flag.Parse()
	fmt.Printf("demo-upstream listening on http://%s\n", *listen)
	srv := &http.Server{Addr: *listen, Handler: upstream.Handler(*prefix), ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
