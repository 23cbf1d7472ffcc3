package tokenreview

import (
	"strings"
	"testing"
	"time"
)

// FuzzAdmissible: whatever a client sends as a bearer token, deciding
// whether it may go to the API server neither panics nor admits a token
// without the cluster's issuer.
func FuzzAdmissible(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMuZGVmYXVsdC5zdmMuY2x1c3Rlci5sb2NhbCJ9.c2ln")
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.")
	f.Add("a.b.c")
	f.Add("")
	a := &Authenticator{opts: Options{Now: time.Now}, issuers: []string{"https://kubernetes.default.svc.cluster.local"}}
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := a.admissible(raw)
		if err == nil && (c.Iss != "https://kubernetes.default.svc.cluster.local" || strings.Count(raw, ".") != 2) {
			t.Fatalf("admitted %q (iss %q)", raw, c.Iss)
		}
	})
}
