package authn

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The discovery token goes to the discovery document's host only: not to a
// jwks_uri on another host, nor along a redirect elsewhere (both chosen by
// whoever answers the discovery request).
func TestDiscoveryTokenOnlyToTheDiscoveryHost(t *testing.T) {
	seen := map[string]string{}
	record := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen[name] = r.Header.Get("Authorization") })
	}
	other := httptest.NewServer(record("other"))
	defer other.Close()
	mux := http.NewServeMux()
	mux.Handle("/.well-known/openid-configuration", record("discovery"))
	mux.Handle("/redirect", http.RedirectHandler(other.URL+"/keys", http.StatusFound))
	issuer := httptest.NewServer(mux)
	defer issuer.Close()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("sa-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := httpClient(Issuer{URL: issuer.URL, DiscoveryTokenFile: file}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{issuer.URL + "/.well-known/openid-configuration", other.URL + "/keys", issuer.URL + "/redirect"} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if seen["discovery"] != "Bearer sa-token" {
		t.Errorf("discovery request: Authorization %q, want the token", seen["discovery"])
	}
	if seen["other"] != "" {
		t.Errorf("another host got Authorization %q", seen["other"])
	}
}
