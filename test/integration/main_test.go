package integration

import (
	"os"
	"testing"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// TestMain puts the cluster DNS proxy in HTTP_PROXY before any request:
// the compositions run under their cluster names (peer.MapClusterHost).
func TestMain(m *testing.M) {
	peer.InstallClusterDNS()
	os.Exit(m.Run())
}
