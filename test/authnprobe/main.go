// Command authnprobe authenticates bearer tokens with internal/authn exactly
// as the service does, for the kube-apiserver comparison in test/kube: it
// reads an AuthenticationConfiguration file (the argument) and tokens from
// stdin, one per line, and prints one JSON line per token with the identity
// (username, uid, groups, extra) or the reason it was refused.
//
// It lives in the product's module so that it is built with the product's
// dependency versions (CEL above all), not those of test/kube.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
)

type result struct {
	OK       bool                `json:"ok"`
	Error    string              `json:"error,omitempty"`
	Username string              `json:"username,omitempty"`
	UID      string              `json:"uid,omitempty"`
	Groups   []string            `json:"groups,omitempty"`
	Extra    map[string][]string `json:"extra,omitempty"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: authnprobe <AuthenticationConfiguration file> < tokens")
		os.Exit(2)
	}
	_, cfgs, err := authn.LoadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	a, err := authn.New(cfgs, authn.Options{Timeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 64<<10)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		id, err := a.Authenticate(ctx, in.Text())
		cancel()
		if err != nil {
			out.Encode(result{Error: err.Error()})
			continue
		}
		out.Encode(result{OK: true, Username: id.Username, UID: id.UID, Groups: id.Groups, Extra: id.Extra})
	}
}
