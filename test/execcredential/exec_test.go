package execcredential

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// apiServer is an HTTPS server in the shape of the Kubernetes API for one
// call (GET /api/v1/namespaces/<name>) that accepts only a bearer ID token
// of Dex for kubeflow-cli, verified with go-oidc, and records who called.
type apiServer struct {
	*httptest.Server
	verifier *oidc.IDTokenVerifier
	mu       sync.Mutex
	tokens   []string
}

func newAPIServer(t *testing.T, dex *peer.Dex) *apiServer {
	op, err := oidc.NewProvider(context.Background(), dex.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	s := &apiServer{verifier: op.Verifier(&oidc.Config{ClientID: "kubeflow-cli"})}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *apiServer) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	idt, err := s.verifier.Verify(r.Context(), raw)
	if !ok || err != nil {
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status: metav1.StatusFailure, Reason: metav1.StatusReasonUnauthorized, Code: 401, Message: "Unauthorized"})
		return
	}
	var claims struct {
		Email string `json:"email"`
	}
	idt.Claims(&claims)
	s.mu.Lock()
	s.tokens = append(s.tokens, raw)
	s.mu.Unlock()
	name := strings.TrimPrefix(r.URL.Path, "/api/v1/namespaces/")
	json.NewEncoder(w).Encode(corev1.Namespace{TypeMeta: metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"caller": claims.Email}}})
}

func (s *apiServer) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tokens...)
}

// config is a rest.Config for the server; exec, when set, is its
// credential plugin.
func (s *apiServer) config(exec *clientcmdapi.ExecConfig) *rest.Config {
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	return &rest.Config{Host: s.URL, TLSClientConfig: rest.TLSClientConfig{CAData: ca}, ExecProvider: exec, Timeout: 60 * time.Second}
}

// TestExecCredentialWithClientGo: client-go's exec authenticator runs
// `oidc-authservice token` and authenticates with the ID token it prints,
// for both ExecCredential versions client-go speaks (the command answers in
// the version of KUBERNETES_EXEC_INFO). The login happened before, in a run
// whose user the test played (the device grant); the plugin runs from the
// cache, as kubectl's later calls do.
func TestExecCredentialWithClientGo(t *testing.T) {
	dex := peer.StartDex(t, peer.DexOptions{PublicClientID: "kubeflow-cli", IDTokenTTL: time.Hour})
	api := newAPIServer(t, dex)
	bin := peer.Binary(t)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	args := []string{"token", "--issuer", dex.Issuer, "--cache-dir", cacheDir, "--no-browser"}

	login := peer.StartToken(t, bin, nil, args[1:]...)
	u, err := login.URL(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	if page, err := peer.DexDeviceLogin(&http.Client{Jar: jar, Timeout: 20 * time.Second}, u, "user@example.com", "12341234"); err != nil {
		t.Fatalf("%v: %.300s", err, page)
	}
	out, err := login.Wait(60 * time.Second)
	if err != nil {
		t.Fatalf("%v: %s", err, login.Stderr())
	}
	token := strings.TrimSpace(out)

	ctx := context.Background()
	anonymous, err := kubernetes.NewForConfig(api.config(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anonymous.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("without the plugin: %v, want Unauthorized", err)
	}

	for _, c := range []struct {
		name, version string
		extra         []string
	}{
		{"v1, output chosen by KUBERNETES_EXEC_INFO", "client.authentication.k8s.io/v1", nil},
		{"v1beta1", "client.authentication.k8s.io/v1beta1", nil},
		{"v1 with --output exec-credential", "client.authentication.k8s.io/v1", []string{"--output", "exec-credential"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(api.seen())
			cs, err := kubernetes.NewForConfig(api.config(&clientcmdapi.ExecConfig{
				APIVersion:      c.version,
				Command:         bin,
				Args:            append(append([]string{}, args...), c.extra...),
				InteractiveMode: clientcmdapi.IfAvailableExecInteractiveMode,
			}))
			if err != nil {
				t.Fatal(err)
			}
			ns, err := cs.CoreV1().Namespaces().Get(ctx, "kubeflow-user", metav1.GetOptions{})
			if err != nil {
				t.Fatalf("client-go with the exec plugin: %v", err)
			}
			if ns.Name != "kubeflow-user" || ns.Annotations["caller"] != "user@example.com" {
				t.Fatalf("answer %+v", ns)
			}
			seen := api.seen()
			if len(seen) != before+1 || seen[len(seen)-1] != token {
				t.Fatalf("the server did not see the cached token from the plugin")
			}
		})
	}
}
