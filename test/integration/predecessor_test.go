package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// TestPredecessorVariablesWarnedAtStart: a variable arrikto read and this
// service does not is named in the start-up log with what to use instead.
func TestPredecessorVariablesWarnedAtStart(t *testing.T) {
	dex := peer.StartDex(t, peer.DexOptions{})
	env := peer.KubeflowEnv(dex)
	env["AUTH_HEADER"] = "X-Auth-Token"
	env["CACHE_ENABLED"] = "true"
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	svc.Stop()
	b, err := os.ReadFile(filepath.Join(peer.ArtifactsDir(t), "service.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"AUTH_HEADER", "CACHE_ENABLED"} {
		found := false
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, `"variable of the predecessor ignored"`) && strings.Contains(line, `"variable":"`+name+`"`) && strings.Contains(line, `"why":"`) {
				found = true
			}
		}
		if !found {
			t.Errorf("no start-up warning names %s:\n%s", name, b)
		}
	}
}
