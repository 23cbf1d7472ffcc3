// Package kube runs a real Kubernetes API server (bin/kube-peer: kube-apiserver
// v1.37.2 over an embedded etcd, built by `make bin/kube-peer`) for the tests
// of this module, and holds oidc-authservice to it:
//
//   - service-account tokens minted by TokenRequest, through the
//     Envoy-faithful gateway, on the JWKS path and the TokenReview path
//     (serviceaccounts_test.go);
//   - the same AuthenticationConfiguration file given to kube-apiserver and to
//     the service, a table of tokens presented to both (SelfSubjectReview and
//     the identity headers) with identical answers required
//     (differential_test.go);
//   - the same files loaded or refused alike by both (configs_test.go);
//   - every rendered kustomization under deploy/ applied with server-side
//     dry-run, Istio's CRDs installed (dryrun_test.go).
//
// The service is the binary built from the product's own module (its own
// dependency versions), run as a subprocess. The gateway (test/extauthz),
// the demo upstream and test/authnprobe are built from the product's module
// too: this module imports none of it, so the peer's dependency versions
// never move with the product's.
package kube

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// ServiceAccountIssuer is the issuer of the peer's service-account tokens,
// the default of kubeadm and kind clusters.
const ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// Options configure an API server.
type Options struct {
	// JWT is the YAML of the AuthenticationConfiguration's jwt list (its
	// items, indented as under "jwt:"), or empty. The file also enables
	// anonymous access to discovery, JWKS and health paths only.
	JWT string
	// ReadyToken, when set, is a token of a JWT issuer of the
	// configuration: the start waits until the API server accepts it,
	// because /readyz does not wait for the issuers' first key fetch.
	ReadyToken string
}

// APIServer is a running kube-peer.
type APIServer struct {
	URL      string // https://127.0.0.1:<port>
	CAPEM    []byte // the CA of the serving and client certificates
	Dir      string // certificates, keys and the authentication configuration
	AuthFile string // the AuthenticationConfiguration the API server reads
	Admin    *kubernetes.Clientset
	Config   *rest.Config // admin (system:masters) client configuration
	cmd      *exec.Cmd
	done     chan struct{}
}

// Require stops the test when a peer is missing: a failure when CI is set,
// an explicit skip otherwise.
func Require(t testing.TB, what string, err error) {
	t.Helper()
	switch {
	case err == nil:
	case os.Getenv("CI") != "":
		t.Fatalf("peer %s is required in CI and could not be started: %v", what, err)
	default:
		t.Skipf("SKIPPED: peer %s is not available here (%v)", what, err)
	}
}

// RepoRoot is the repository's root, seen from test/kube.
func RepoRoot() string {
	abs, _ := filepath.Abs(filepath.Join("..", ".."))
	return abs
}

// PeerBinary is $KUBE_PEER or bin/kube-peer.
func PeerBinary() (string, error) {
	p := os.Getenv("KUBE_PEER")
	if p == "" {
		p = filepath.Join(RepoRoot(), "bin", "kube-peer")
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s is missing: run `make bin/kube-peer` (about 6 minutes the first time)", p)
	}
	return p, nil
}

// StartAPIServer starts a kube-peer on free ports and waits until it is
// ready; the test's cleanup stops it.
func StartAPIServer(t testing.TB, o Options) *APIServer {
	t.Helper()
	a, err := launch(t, o)
	if err != nil {
		t.Fatal(err)
	}
	a.allowAnonymousDiscovery(t)
	if o.ReadyToken != "" {
		if err := a.waitAccepted(o.ReadyToken, 60*time.Second); err != nil {
			a.Stop()
			t.Fatalf("kube-apiserver never accepted a token of the configured issuer: %v", err)
		}
	}
	return a
}

// LoadsConfiguration starts a kube-peer with the jwt items and reports
// whether it accepted them (it became ready) or refused them (it exited),
// with the reason it logged; then stops it.
func LoadsConfiguration(t testing.TB, jwt string) (bool, string) {
	t.Helper()
	a, err := launch(t, Options{JWT: jwt})
	if err == nil {
		a.Stop()
		return true, ""
	}
	if !errors.Is(err, errExited) {
		t.Fatal(err)
	}
	return false, err.Error()
}

var errExited = errors.New("kube-peer exited")

// launch starts the peer and waits for /readyz; it returns an error
// wrapping errExited, with the API server's complaint, when the process
// ends first. When it ends because one of its ports was taken, it is
// started again on others.
func launch(t testing.TB, o Options) (*APIServer, error) {
	t.Helper()
	var a *APIServer
	err := retryPorts(t, "kube-apiserver", func() (err error) {
		a, err = launchOnce(t, o)
		return err
	})
	return a, err
}

func launchOnce(t testing.TB, o Options) (*APIServer, error) {
	t.Helper()
	bin, err := PeerBinary()
	Require(t, "kube-apiserver (bin/kube-peer)", err)
	dir := t.TempDir()
	pki := newPKI(t, dir)
	a := &APIServer{Dir: dir, CAPEM: pki.caPEM, AuthFile: filepath.Join(dir, "authentication.yaml"), done: make(chan struct{})}
	if err := os.WriteFile(a.AuthFile, []byte(AuthenticationConfiguration(o.JWT)), 0o600); err != nil {
		t.Fatal(err)
	}
	port, etcdPort := FreePort(t), FreePort(t)
	a.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
	args := []string{"-etcd-dir", filepath.Join(dir, "etcd"), "-etcd-port", strconv.Itoa(etcdPort), "-etcd-peer-port", strconv.Itoa(FreePort(t)), "--",
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--tls-cert-file=" + pki.serverCert, "--tls-private-key-file=" + pki.serverKey, "--client-ca-file=" + pki.caFile,
		"--service-account-issuer=" + ServiceAccountIssuer,
		"--service-account-key-file=" + pki.saPub, "--service-account-signing-key-file=" + pki.saKey,
		"--authentication-config=" + a.AuthFile, "--authorization-mode=RBAC",
		"--endpoint-reconciler-type=none", "--service-cluster-ip-range=10.96.0.0/16",
		"--enable-priority-and-fairness=false", "--profiling=false",
		// On by default since 1.30; named so that the tests of
		// components/session-keys never pass without it.
		"--enable-admission-plugins=ValidatingAdmissionPolicy",
	}
	a.cmd = exec.Command(bin, args...)
	logFile, err := os.CreateTemp(ArtifactsDir(t), "kube-apiserver-*.log")
	if err != nil {
		t.Fatal(err)
	}
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	// The peer dies with the test process, even one killed by a timeout.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		logFile.Close()
		Require(t, "kube-apiserver (bin/kube-peer)", err)
	}
	go func() { a.cmd.Wait(); logFile.Close(); close(a.done) }()
	t.Cleanup(a.Stop)

	a.Config = &rest.Config{Host: a.URL, TLSClientConfig: rest.TLSClientConfig{CertData: pki.adminCert, KeyData: pki.adminKey, CAData: pki.caPEM},
		QPS: 200, Burst: 400, Timeout: 30 * time.Second}
	if a.Admin, err = kubernetes.NewForConfig(a.Config); err != nil {
		t.Fatal(err)
	}
	if err := a.waitReady(90 * time.Second); err != nil {
		a.Stop()
		if b, _ := os.ReadFile(logFile.Name()); errors.Is(err, errExited) && portTaken(string(b)) {
			return nil, fmt.Errorf("%w (log: %s)", errPortTaken, logFile.Name())
		}
		if errors.Is(err, errExited) {
			return nil, fmt.Errorf("%w: %s", errExited, complaint(logFile.Name()))
		}
		return nil, fmt.Errorf("kube-apiserver did not become ready (log: %s): %v", logFile.Name(), err)
	}
	return a, nil
}

// complaint is the error kube-apiserver gave when it refused to start.
func complaint(logPath string) string {
	b, _ := os.ReadFile(logPath)
	log := string(b)
	if i := strings.Index(log, "command failed"); i >= 0 {
		log = log[i:]
		if j := strings.Index(log, "\n{"); j > 0 {
			log = log[:j]
		}
		return strings.TrimSpace(log)
	}
	return "see " + logPath
}

// AuthenticationConfiguration is the file the peer reads: anonymous access
// limited to discovery, keys and health, and the jwt items given.
func AuthenticationConfiguration(jwt string) string {
	var b strings.Builder
	b.WriteString(`apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
anonymous:
  enabled: true
  conditions:
  - path: /.well-known/openid-configuration
  - path: /openid/v1/jwks
  - path: /readyz
  - path: /livez
`)
	if strings.TrimSpace(jwt) != "" {
		b.WriteString("jwt:\n")
		b.WriteString(jwt)
	}
	return b.String()
}

func (a *APIServer) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-a.done:
			return fmt.Errorf("%w: %v", errExited, a.cmd.ProcessState)
		default:
		}
		body, err := a.Admin.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			return nil
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s: %v", timeout, last)
}

// allowAnonymousDiscovery binds system:service-account-issuer-discovery to
// system:unauthenticated, so that the issuer's discovery and JWKS are
// readable without a token, as a JWKS-path deployment needs.
func (a *APIServer) allowAnonymousDiscovery(t testing.TB) {
	t.Helper()
	a.Apply(t, `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: service-account-issuer-discovery-anonymous
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:service-account-issuer-discovery
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: system:unauthenticated
`)
}

func (a *APIServer) waitAccepted(token string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		r, err := a.WhoAmI(token)
		if err != nil {
			return err
		}
		if r.Authenticated {
			return nil
		}
		last = r.Status
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("last answer: %s", last)
}

// Stop ends the peer (SIGTERM, then SIGKILL after 10 s); safe to call twice.
func (a *APIServer) Stop() {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	select {
	case <-a.done:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
	}
}

// UserInfo is the identity the API server found in a token.
type UserInfo struct {
	Authenticated bool
	Status        string // HTTP status and message when not authenticated
	Username      string
	UID           string
	Groups        []string
	Extra         map[string][]string
}

// WhoAmI presents token to the API server in a SelfSubjectReview, what
// `kubectl auth whoami` does. Any authenticated user may create one.
func (a *APIServer) WhoAmI(token string) (UserInfo, error) {
	body := []byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
	req, _ := http.NewRequest(http.MethodPost, a.URL+"/apis/authentication.k8s.io/v1/selfsubjectreviews", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := a.anonymousClient().Do(req)
	if err != nil {
		return UserInfo{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return UserInfo{Status: fmt.Sprintf("HTTP %d: %.200s", resp.StatusCode, b)}, nil
	}
	var r struct {
		Status struct {
			UserInfo struct {
				Username string              `json:"username"`
				UID      string              `json:"uid"`
				Groups   []string            `json:"groups"`
				Extra    map[string][]string `json:"extra"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return UserInfo{}, fmt.Errorf("SelfSubjectReview answer: %v: %.200s", err, b)
	}
	u := r.Status.UserInfo
	return UserInfo{Authenticated: true, Username: u.Username, UID: u.UID, Groups: u.Groups, Extra: u.Extra}, nil
}

// anonymousClient trusts the peer's CA and presents no certificate.
func (a *APIServer) anonymousClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(a.CAPEM)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// ArtifactsDir is test/artifacts/<test name>, where logs are left for
// diagnosing failures (git ignores it).
func ArtifactsDir(t testing.TB) string {
	dir := filepath.Join(RepoRoot(), "test", "artifacts", strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("no artifacts folder: %v", err)
	}
	return dir
}

// pki is the peer's certificates and keys, written to files.
type pki struct {
	caPEM                         []byte
	caFile, serverCert, serverKey string
	saKey, saPub                  string
	adminCert, adminKey           []byte
	caCert                        *x509.Certificate
	caPriv                        *ecdsa.PrivateKey
}

func newPKI(t testing.TB, dir string) *pki {
	t.Helper()
	p := &pki{}
	var err error
	p.caPriv, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kube-peer CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &p.caPriv.PublicKey, p.caPriv)
	if err != nil {
		t.Fatal(err)
	}
	p.caCert, _ = x509.ParseCertificate(caDER)
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})

	leaf := func(serial int64, tmpl *x509.Certificate) (certPEM, keyPEM []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caPriv)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	}
	serverCert, serverKey := leaf(2, &x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	p.adminCert, p.adminKey = leaf(3, &x509.Certificate{Subject: pkix.Name{CommonName: "test-admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	saPub, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	p.caFile = write("ca.crt", p.caPEM)
	p.serverCert = write("server.crt", serverCert)
	p.serverKey = write("server.key", serverKey)
	p.saKey = write("sa.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}))
	p.saPub = write("sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}))
	return p
}
