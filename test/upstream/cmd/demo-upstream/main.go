// Command demo-upstream serves package upstream's demo application.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/upstream"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "listen address")
	prefix := flag.String("prefix", "/authservice/", "the auth service's URL prefix, for the logout links")
	flag.Parse()
	// Listen first: "listening" is printed only once it is true (make run
	// waits for the line).
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("demo-upstream listening on http://%s\n", l.Addr())
	srv := &http.Server{Handler: upstream.Handler(*prefix), ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.Serve(l))
}
