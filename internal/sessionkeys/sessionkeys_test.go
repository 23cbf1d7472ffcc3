package sessionkeys_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/kubeapi"
	"github.com/oidc-authservice/oidc-authservice/internal/sessionkeys"
)

// fake is the part of an API server the store uses, in memory; the real
// kube-apiserver runs the same scenarios in test/kube.
type fake struct {
	*httptest.Server
	mu       sync.Mutex
	secrets  map[string]map[string]any // name → object
	getCode  int                       // answer GETs with this, when set
	postCode int                       // answer POSTs with this, when set
	// raceOnce: the first create answers 409 after another "replica"'s
	// Secret was stored, as when two replicas start at once.
	raceOnce bool
	dryRuns  []map[string]any
	calls    []string
}

func startFake(t *testing.T) *fake {
	f := &fake{secrets: map[string]map[string]any{}}
	f.Server = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+r.URL.RequestURI())
	status := func(code int, msg string) {
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "code": code, "message": msg})
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ey") {
		status(401, "Unauthorized")
		return
	}
	const base = "/api/v1/namespaces/kubeflow-auth/secrets"
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, base+"/"):
		if f.getCode != 0 {
			status(f.getCode, `secrets "x" is forbidden: User "system:serviceaccount:kubeflow-auth:authservice" cannot get resource "secrets"`)
			return
		}
		s, ok := f.secrets[strings.TrimPrefix(r.URL.Path, base+"/")]
		if !ok {
			status(404, "not found")
			return
		}
		json.NewEncoder(w).Encode(s)
	case r.Method == http.MethodPost && r.URL.Path == base:
		var obj map[string]any
		json.NewDecoder(r.Body).Decode(&obj)
		if r.URL.Query().Get("dryRun") == "All" {
			f.dryRuns = append(f.dryRuns, obj)
			status(f.postCode, "dry run")
			return
		}
		if f.postCode != 0 {
			status(f.postCode, `secrets is forbidden: User "system:serviceaccount:kubeflow-auth:authservice" cannot create resource "secrets"`)
			return
		}
		name := obj["metadata"].(map[string]any)["name"].(string)
		if f.raceOnce {
			f.raceOnce = false
			f.secrets[name] = map[string]any{"data": map[string]any{"SESSION_KEYS": base64.StdEncoding.EncodeToString([]byte("the-other-replicas-key"))}}
		}
		if _, ok := f.secrets[name]; ok {
			status(409, "already exists")
			return
		}
		f.secrets[name] = obj
		w.WriteHeader(201)
		json.NewEncoder(w).Encode(obj)
	default:
		status(404, "no such path")
	}
}

func store(t *testing.T, f *fake) *sessionkeys.Store {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.Certificate().Raw}), 0o600)
	claims, _ := json.Marshal(map[string]any{"iss": "https://kubernetes.default.svc.cluster.local",
		"kubernetes.io": map[string]any{"namespace": "kubeflow-auth", "serviceaccount": map[string]any{"name": "authservice"}}})
	token := "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(claims) + ".c2ln"
	os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600)
	api, err := kubeapi.New(kubeapi.Options{APIServer: f.URL, CAFile: filepath.Join(dir, "ca.crt"), TokenFile: filepath.Join(dir, "token"), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	id, err := api.Whoami()
	if err != nil || id.Username() != "system:serviceaccount:kubeflow-auth:authservice" {
		t.Fatalf("whoami: %+v %v", id, err)
	}
	return &sessionkeys.Store{API: api, Namespace: id.Namespace, Name: "authservice-session-keys", Account: id.Username()}
}

func TestObtainCreatesOnceThenReads(t *testing.T) {
	f := startFake(t)
	s := store(t, f)
	ctx := context.Background()
	first, err := s.Obtain(ctx)
	if err != nil || !first.Created {
		t.Fatalf("first start: %+v %v", first, err)
	}
	if b, err := base64.StdEncoding.DecodeString(first.Text); err != nil || len(b) != 32 {
		t.Fatalf("the key is not base64 of 32 random bytes: %v", err)
	}
	obj := f.secrets["authservice-session-keys"]
	if obj["type"] != "Opaque" || obj["metadata"].(map[string]any)["annotations"] == nil {
		t.Fatalf("created %v", obj)
	}
	again, err := s.Obtain(ctx)
	if err != nil || again.Created || again.Text != first.Text {
		t.Fatalf("restart: created %v, same key %v, %v", again.Created, again.Text == first.Text, err)
	}
}

func TestObtainLosingTheRaceReadsTheWinner(t *testing.T) {
	f := startFake(t)
	f.raceOnce = true
	k, err := store(t, f).Obtain(context.Background())
	if err != nil || k.Created || k.Text != "the-other-replicas-key" {
		t.Fatalf("got %+v, %v; want the other replica's key", k, err)
	}
	if got := strings.Join(f.calls, "; "); !strings.Contains(got, "POST") || !strings.HasSuffix(got, "GET /api/v1/namespaces/kubeflow-auth/secrets/authservice-session-keys") {
		t.Fatalf("calls: %s", got)
	}
}

func TestWithoutRBACTheErrorSaysWhatToApply(t *testing.T) {
	for _, c := range []struct{ name, verb string }{{"get", "get"}, {"create", "create"}} {
		t.Run(c.name, func(t *testing.T) {
			f := startFake(t)
			if c.verb == "get" {
				f.getCode = 403
			} else {
				f.postCode = 403
			}
			_, err := store(t, f).Obtain(context.Background())
			if !errors.Is(err, sessionkeys.ErrForbidden) {
				t.Fatalf("err = %v", err)
			}
			for _, want := range []string{"system:serviceaccount:kubeflow-auth:authservice may not " + c.verb + " Secret kubeflow-auth/authservice-session-keys",
				"HTTP 403", "deploy/components/session-keys", "Role and RoleBinding authservice-session-keys in namespace kubeflow-auth",
				"ValidatingAdmissionPolicy", "SESSION_KEYS (openssl rand -base64 32"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the error lacks %q:\n%v", want, err)
				}
			}
		})
	}
}

func TestUnavailableIsRetried(t *testing.T) {
	f := startFake(t)
	s := store(t, f)
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err := sessionkeys.Retry(ctx, s.Obtain)
	if !errors.Is(err, sessionkeys.ErrUnavailable) {
		t.Fatalf("err = %v", err)
	}
}

func TestGuarded(t *testing.T) {
	cases := []struct {
		name string
		code int
		want error // nil: guarded
	}{
		{"refused (RBAC or the policy)", 403, nil},
		{"admitted", 201, sessionkeys.ErrUnguarded},
		{"admitted, the name exists", 409, sessionkeys.ErrUnguarded},
		{"the API server fails", 503, sessionkeys.ErrUnavailable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := startFake(t)
			f.postCode = c.code
			err := store(t, f).Guarded(context.Background())
			if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if c.want == sessionkeys.ErrUnguarded && !strings.Contains(err.Error(), "ValidatingAdmissionPolicy") {
				t.Fatalf("the error does not say what to apply: %v", err)
			}
			if len(f.secrets) != 0 {
				t.Fatal("a probe stored a Secret")
			}
			if c.code == 403 {
				if len(f.dryRuns) != 2 || f.dryRuns[0]["type"] != "kubernetes.io/service-account-token" ||
					f.dryRuns[1]["metadata"].(map[string]any)["name"] == "authservice-session-keys" {
					t.Fatalf("probes: %v", f.dryRuns)
				}
			}
		})
	}
	// An unexpected answer (422: the probe itself is invalid) cannot tell.
	f := startFake(t)
	f.postCode = 422
	if err := store(t, f).Guarded(context.Background()); err == nil || errors.Is(err, sessionkeys.ErrUnguarded) {
		t.Fatalf("422: err = %v", err)
	}
}

func TestAnEmptySecretSaysWhatToDo(t *testing.T) {
	f := startFake(t)
	f.secrets["authservice-session-keys"] = map[string]any{"data": map[string]any{}}
	_, err := store(t, f).Obtain(context.Background())
	if err == nil || !strings.Contains(err.Error(), "has no SESSION_KEYS") {
		t.Fatalf("err = %v", err)
	}
}
