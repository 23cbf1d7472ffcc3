package peer

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The compositions run with the cluster's names: the service's
// OIDC_PROVIDER is Kubeflow's http://dex.auth.svc.cluster.local:5556/dex, Dex
// names its tokens so, and the gateway's jwt_authn verifies them with the
// key istiod inlined (test/keys). ClusterDNS is what cluster DNS is on a
// cluster: an HTTP proxy (the service's HTTP_PROXY) that sends requests for
// cluster hosts to the local peers.

// TestKeyFile is the path of a fixed test key (test/keys/<name>.pem).
func TestKeyFile(name string) string {
	return filepath.Join(RepoRoot(), "test", "keys", name+".pem")
}

// TestKey loads a fixed test key and its kid (the first 12 bytes of the
// SHA-256 of its PKIX public key, base64url, as test/istio publishes it).
func TestKey(t testing.TB, name string) (*rsa.PrivateKey, string) {
	t.Helper()
	b, err := os.ReadFile(TestKeyFile(name))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM block", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	rk := k.(*rsa.PrivateKey)
	der, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	sum := sha256.Sum256(der)
	return rk, base64.RawURLEncoding.EncodeToString(sum[:12])
}

// StartClusterIssuer is StartIssuerAs with the fixed key of the cluster's
// service-account issuer (test/keys/serviceaccount.pem), the key the
// generated gateway configuration holds for Kubeflow's m2m issuers.
func StartClusterIssuer(t testing.TB, name string) *Issuer {
	t.Helper()
	key, kid := TestKey(t, "serviceaccount")
	is := &Issuer{keys: []*rsa.PrivateKey{key}, kids: []string{kid}}
	is.srv = httptest.NewServer(http.HandlerFunc(is.serve))
	is.URL, is.Name = is.srv.URL, name
	t.Cleanup(is.srv.Close)
	return is
}

var (
	clusterMu    sync.Mutex
	clusterHosts = map[string]string{}
	clusterDNS   string
)

// InstallClusterDNS starts the process's cluster DNS proxy and puts it in
// HTTP_PROXY, for the services a test runs in process and the test's own
// clients (Go reads HTTP_PROXY once per process: call it from TestMain,
// before any request). Loopback addresses are never proxied.
func InstallClusterDNS() {
	clusterMu.Lock()
	defer clusterMu.Unlock()
	if clusterDNS != "" {
		return
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.URL.Host
		if _, _, err := net.SplitHostPort(host); err != nil {
			host += ":80"
		}
		clusterMu.Lock()
		base, ok := clusterHosts[host]
		clusterMu.Unlock()
		if !ok || r.Method == http.MethodConnect || !r.URL.IsAbs() {
			http.Error(w, "no such cluster address: "+host, http.StatusBadGateway)
			return
		}
		forward(w, r, base)
	}))
	clusterDNS = srv.URL
	for _, k := range []string{"HTTP_PROXY", "http_proxy"} {
		os.Setenv(k, srv.URL)
	}
	for _, k := range []string{"NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy"} {
		os.Unsetenv(k)
	}
}

// MapClusterHost makes the cluster address host:port reach base
// (http://127.0.0.1:port) through the process's cluster DNS until the test
// ends.
func MapClusterHost(t testing.TB, hostport, base string) {
	t.Helper()
	clusterMu.Lock()
	defer clusterMu.Unlock()
	if clusterDNS == "" {
		t.Fatal("peer.InstallClusterDNS was not called from TestMain")
	}
	clusterHosts[hostport] = base
	t.Cleanup(func() {
		clusterMu.Lock()
		delete(clusterHosts, hostport)
		clusterMu.Unlock()
	})
}

func forward(w http.ResponseWriter, r *http.Request, base string) {
	target, _ := url.Parse(base)
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = target.Scheme, target.Host
	out.Host = r.URL.Host
	for _, h := range []string{"Proxy-Connection", "Proxy-Authorization"} {
		out.Header.Del(h)
	}
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		if !strings.EqualFold(k, "Connection") {
			w.Header()[k] = vs
		}
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}
