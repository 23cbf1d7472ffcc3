// Command opa-peer is Open Policy Agent's own command line (the opa binary:
// `opa-peer run --server ...`), built from the Go module proxy at the
// version test/opa/go.mod pins, for the tests of EXTERNAL_AUTHZ_FORMAT=opa.
// It is a test peer: never part of the service's module or image.
package main

import (
	"errors"
	"os"

	"github.com/open-policy-agent/opa/cmd"
)

func main() {
	err := cmd.RootCommand.Execute()
	if err == nil {
		return
	}
	var exit *cmd.ExitError
	if errors.As(err, &exit) {
		os.Exit(exit.Exit)
	}
	os.Exit(1)
}
