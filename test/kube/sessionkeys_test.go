package kube

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The installation's own session key (deploy/components/session-keys, in
// deploy/base), against the real API server: the shipped Role, RoleBinding
// and ValidatingAdmissionPolicy, rendered from deploy/ and applied as they
// are; the service as the product's binary with the pod's own token.

const keySecret = "authservice-session-keys"

// applyRendered renders the kustomization deploy/<dir> and creates the
// objects of the kinds given (for real: the policy must hold).
func applyRendered(t *testing.T, api *APIServer, dir string, kinds ...string) {
	t.Helper()
	c := api.Client(t)
	want := map[string]bool{}
	for _, k := range kinds {
		want[k] = true
	}
	n := 0
	for _, o := range kustomizeBuild(t, filepath.Join(RepoRoot(), "deploy", dir)) {
		if !want[o.GetKind()] {
			continue
		}
		if ns := o.GetNamespace(); ns != "" {
			api.Admin.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		}
		if err := c.Create(context.Background(), o, false); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("%s: create %s %s/%s: %v", dir, o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
		n++
	}
	if n < len(kinds) {
		t.Fatalf("%s renders %d objects of the kinds %v", dir, n, kinds)
	}
}

var sessionKeyKinds = []string{"ServiceAccount", "Role", "RoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}

// account is a client of the API server with a service account's own token.
type account struct {
	api   *APIServer
	token string
}

func (a account) do(t *testing.T, method, path string, body any) (int, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.api.URL+path, r)
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	if method == http.MethodPatch {
		req.Header.Set("Content-Type", "application/merge-patch+json")
	}
	resp, err := a.api.anonymousClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func secretObject(name, typ string, annotations map[string]string) map[string]any {
	md := map[string]any{"name": name}
	if len(annotations) > 0 {
		md["annotations"] = annotations
	}
	return map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": md, "type": typ,
		"data": map[string]any{"SESSION_KEYS": base64.StdEncoding.EncodeToString([]byte("x"))}}
}

// waitPolicy waits until the admission policy is in force: the API server
// loads policies asynchronously.
func waitPolicy(t *testing.T, a account, ns string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := a.do(t, http.MethodPost, "/api/v1/namespaces/"+ns+"/secrets?dryRun=All", secretObject("policy-probe", "Opaque", nil))
		if code == http.StatusForbidden && strings.Contains(body, "ValidatingAdmissionPolicy") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ValidatingAdmissionPolicy is not in force after 60 s: %d %.300s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestSessionKeyAccountCannotMakeAnotherIdentity: with the shipped RBAC and
// policy, the service's account gets and creates its one Secret and nothing
// else — no service-account token (the annotation, the type), no other
// name, no update, no read of other Secrets — in istio-system (EnvoyFilter
// layouts) and oauth2-proxy (oauth2-proxy's place). Without the policy, the
// same account could create a service-account-token Secret: the policy is
// what stops it.
func TestSessionKeyAccountCannotMakeAnotherIdentity(t *testing.T) {
	api := StartAPIServer(t, Options{})
	applyRendered(t, api, "base", sessionKeyKinds...)
	applyRendered(t, api, "overlays/kubeflow-oauth2-proxy", sessionKeyKinds...)
	serviceAccounts(t, api, "istio-system/istiod", "istio-system/istio-ingressgateway-service-account")
	api.Admin.CoreV1().Secrets("istio-system").Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "istiod-ca"},
		StringData: map[string]string{"key": "another component's secret"}}, metav1.CreateOptions{})

	for _, ns := range []string{"istio-system", "oauth2-proxy"} {
		t.Run(ns, func(t *testing.T) {
			a := account{api, mint(t, api, ns+"/authservice", nil, time.Hour)}
			waitPolicy(t, a, ns)
			secrets := "/api/v1/namespaces/" + ns + "/secrets"
			sa := map[string]string{"kubernetes.io/service-account.name": "istio-ingressgateway-service-account"}
			cases := []struct {
				name, method, path string
				body               any
				want               int
				because            string
			}{
				{"a service-account-token Secret under its own name", "POST", secrets, secretObject(keySecret, "kubernetes.io/service-account-token", sa), 403, "ValidatingAdmissionPolicy"},
				{"a service-account-token Secret under another name", "POST", secrets, secretObject("gateway-token", "kubernetes.io/service-account-token", sa), 403, "ValidatingAdmissionPolicy"},
				{"an Opaque Secret under its name, annotated with an account", "POST", secrets, secretObject(keySecret, "Opaque", sa), 403, "names a service account"},
				{"an Opaque Secret under another name", "POST", secrets, secretObject("other", "Opaque", nil), 403, "only its Secret authservice-session-keys"},
				{"a TLS Secret a Gateway could serve", "POST", secrets, map[string]any{"apiVersion": "v1", "kind": "Secret",
					"metadata": map[string]any{"name": "kubeflow-gateway-tls"}, "type": "kubernetes.io/tls",
					"data": map[string]any{"tls.crt": "", "tls.key": ""}}, 403, "ValidatingAdmissionPolicy"},
				{"a generated name", "POST", secrets, map[string]any{"apiVersion": "v1", "kind": "Secret",
					"metadata": map[string]any{"generateName": "authservice-"}, "type": "Opaque"}, 403, "ValidatingAdmissionPolicy"},
				{"a Secret in kube-system", "POST", "/api/v1/namespaces/kube-system/secrets", secretObject(keySecret, "Opaque", nil), 403, "cannot create resource"},
				{"another component's Secret", "GET", secrets + "/istiod-ca", nil, 403, "cannot get resource"},
				{"every Secret", "GET", secrets, nil, 403, "cannot list resource"},
			}
			for _, c := range cases {
				code, body := a.do(t, c.method, c.path, c.body)
				if code != c.want || !strings.Contains(body, c.because) {
					t.Errorf("%s: HTTP %d %.300s, want %d (%s)", c.name, code, body, c.want, c.because)
				}
			}
			// What it may do: create its Secret once, read it; never change it.
			if code, body := a.do(t, "POST", secrets, secretObject(keySecret, "Opaque", nil)); code != 201 {
				t.Fatalf("its own Secret: HTTP %d %.300s", code, body)
			}
			if code, _ := a.do(t, "GET", secrets+"/"+keySecret, nil); code != 200 {
				t.Fatalf("reading its own Secret: HTTP %d", code)
			}
			for _, m := range []string{"PUT", "PATCH", "DELETE"} {
				body := any(map[string]any{"metadata": map[string]any{"annotations": sa}})
				if m == "PUT" {
					body = secretObject(keySecret, "kubernetes.io/service-account-token", sa)
				}
				if code, resp := a.do(t, m, secrets+"/"+keySecret, body); code != 403 {
					t.Errorf("%s its own Secret: HTTP %d %.300s", m, code, resp)
				}
			}
		})
	}

	// Without the policy, RBAC alone would let the account create a
	// service-account-token Secret (a dry run: nothing is stored).
	if err := api.Admin.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(context.Background(), "oidc-authservice-session-keys", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	a := account{api, mint(t, api, "istio-system/authservice", nil, time.Hour)}
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := a.do(t, "POST", "/api/v1/namespaces/istio-system/secrets?dryRun=All",
			secretObject("gateway-token", "kubernetes.io/service-account-token", map[string]string{"kubernetes.io/service-account.name": "istio-ingressgateway-service-account"}))
		if code == 201 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("without the policy binding: HTTP %d %.300s, want the dry run admitted", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// serviceInPod is the environment of the service in a pod of ServiceAccount
// "namespace/name": its token, CA and namespace in dir, the API server.
func serviceInPod(t *testing.T, api *APIServer, sa string) map[string]string {
	t.Helper()
	dir := serviceCredentials(t, api, sa)
	ns, _, _ := strings.Cut(sa, "/")
	os.WriteFile(filepath.Join(dir, "namespace"), []byte(ns), 0o600)
	env := inCluster(api, dir)
	delete(env, "KUBERNETES_AUTHN_ENABLED")
	env["SESSION_KEYS"] = "" // none given
	return env
}

// TestSessionKeyWithoutPermissionsSaysWhatToApply: a pod whose account has
// no Role refuses to start, and says what to apply; so does check-config.
// With the Role but without the policy, the service refuses to start too.
func TestSessionKeyWithoutPermissionsSaysWhatToApply(t *testing.T) {
	api := StartAPIServer(t, Options{})
	serviceAccounts(t, api, "istio-system/authservice")
	env := serviceInPod(t, api, "istio-system/authservice")

	s := LaunchService(t, env)
	if code := s.WaitExit(t, 60*time.Second); code == 0 {
		t.Fatalf("exit status 0 without permissions")
	}
	log := s.Log()
	for _, want := range []string{"system:serviceaccount:istio-system:authservice may not get Secret istio-system/authservice-session-keys",
		"HTTP 403", "deploy/components/session-keys", "Role and RoleBinding authservice-session-keys in namespace istio-system",
		"get on secrets/authservice-session-keys, create on secrets", "ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding oidc-authservice-session-keys",
		"Or set SESSION_KEYS (openssl rand -base64 32"} {
		if !strings.Contains(log, want) {
			t.Errorf("the error lacks %q:\n%s", want, tail(log, 3000))
		}
	}
	out, code := checkConfig(t, env)
	if code != 1 || !strings.Contains(out, "PROBLEM: session keys (Secret istio-system/authservice-session-keys)") || !strings.Contains(out, "deploy/components/session-keys") {
		t.Errorf("check-config: exit %d\n%s", code, out)
	}

	// The Role without the policy: the account could create a
	// service-account token, and the service will not run so.
	applyRendered(t, api, "base", "Role", "RoleBinding")
	s = LaunchService(t, env)
	if code := s.WaitExit(t, 60*time.Second); code == 0 {
		t.Fatalf("exit status 0 without the admission policy")
	}
	for _, want := range []string{"can create a service-account-token Secret in namespace istio-system",
		"Apply the ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding oidc-authservice-session-keys of deploy/components/session-keys"} {
		if !strings.Contains(s.Log(), want) {
			t.Errorf("the error lacks %q:\n%s", want, tail(s.Log(), 3000))
		}
	}
	out, code = checkConfig(t, env)
	if code != 1 || !strings.Contains(out, "PROBLEM: the account is not confined to its own Secret") {
		t.Errorf("check-config without the policy: exit %d\n%s", code, out)
	}
	// With the policy: check-config is content, and creates nothing.
	applyRendered(t, api, "base", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
	waitPolicy(t, account{api, mint(t, api, "istio-system/authservice", nil, time.Hour)}, "istio-system")
	out, code = checkConfig(t, env)
	if code != 0 || !strings.Contains(out, "Secret istio-system/authservice-session-keys is absent: the first replica to start creates it with a random key (permitted)") ||
		!strings.Contains(out, "its own only (authservice-session-keys, Opaque)") {
		t.Errorf("check-config with the component: exit %d\n%s", code, out)
	}
	if _, err := api.Admin.CoreV1().Secrets("istio-system").Get(context.Background(), keySecret, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("check-config created the Secret: %v", err)
	}
}

// checkConfig runs oidc-authservice check-config with env (a stub provider).
func checkConfig(t *testing.T, env map[string]string) (string, int) {
	t.Helper()
	cmd := exec.Command(productBinary(t, "oidc-authservice"), "check-config")
	all := map[string]string{"OIDC_PROVIDER": stubProvider(t), "CLIENT_ID": "kubeflow-oidc-authservice", "CLIENT_SECRET": "secret",
		"ACCEPT_PROVIDER_ID_TOKENS": "false", "PATH": os.Getenv("PATH")}
	for k, v := range env {
		all[k] = v
	}
	for k, v := range all {
		if v != "" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	out, _ := cmd.CombinedOutput()
	return string(out), cmd.ProcessState.ExitCode()
}

// dexRunner starts the Dex runner (test/dex, built by make bin/dex-runner)
// with a static client whose redirect URI is relative, as Kubeflow's Dex,
// and returns its port.
func dexRunner(t *testing.T, clientSecret string) int {
	t.Helper()
	bin := os.Getenv("DEX_RUNNER")
	if bin == "" {
		bin = filepath.Join(RepoRoot(), "bin", "dex-runner")
	}
	if _, err := os.Stat(bin); err != nil {
		Require(t, "dex (bin/dex-runner)", fmt.Errorf("%s is missing: run `make bin/dex-runner`", bin))
	}
	var port int
	err := retryPorts(t, "dex", func() error {
		port = FreePort(t)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		cmd := exec.Command(bin, "-addr", addr, "-issuer", "http://"+addr+"/dex", "-client-secret", clientSecret,
			"-redirect-uri", "/authservice/oidc/callback")
		log, _ := os.CreateTemp(ArtifactsDir(t), "dex-*.log")
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			Require(t, "dex (bin/dex-runner)", err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-done; log.Close() })
		// "dex-runner ready" comes once it listens (before, what answers on
		// the port could be another process).
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			b, _ := os.ReadFile(log.Name())
			if strings.Contains(string(b), "dex-runner ready") {
				break
			}
			select {
			case <-done:
				if portTaken(string(b)) {
					return fmt.Errorf("%w (log: %s)", errPortTaken, log.Name())
				}
				return fmt.Errorf("dex-runner exited (log: %s)", log.Name())
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("dex-runner not ready after 60 s (log: %s)", log.Name())
			}
		}
		return waitHTTP("http://"+addr+"/dex/.well-known/openid-configuration", 60*time.Second, done)
	})
	if err != nil {
		t.Fatal(err)
	}
	return port
}

var formAction = regexp.MustCompile(`(?is)<form[^>]*action="([^"]*)"`)

// login signs user@example.com in through gateway with a browser's
// cookies (kept in c's jar): the service's redirect to Dex behind the
// gateway, Dex's form, the callback.
func login(t *testing.T, c *http.Client, gateway string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, gateway+"/notebook/", nil)
	req.Header.Set("Accept", "text/html")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := formAction.FindSubmatch(body)
	if m == nil {
		t.Fatalf("no login form at %s (HTTP %d): %.300s", resp.Request.URL, resp.StatusCode, body)
	}
	action, _ := resp.Request.URL.Parse(strings.ReplaceAll(string(m[1]), "&amp;", "&"))
	resp, err = c.PostForm(action.String(), url.Values{"login": {"user@example.com"}, "password": {"12341234"}})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Request.URL.Path, "/notebook/") {
		t.Fatalf("login ended at %s with HTTP %d", resp.Request.URL, resp.StatusCode)
	}
}

// who asks gateway for a page with c's cookies and returns the user the
// upstream was given, or "" when the answer is not the upstream's (no
// session: a redirect to the login).
func who(t *testing.T, c *http.Client, gateway string) string {
	t.Helper()
	nc := &http.Client{Jar: c.Jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := nc.Get(gateway + "/notebook/?format=json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct{ Headers map[string][]string }
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&e) != nil {
		return ""
	}
	return strings.Join(e.Headers["kubeflow-userid"], ",")
}

// TestSessionKeySharedBySimultaneousReplicasAndKeptAcrossRollingRestart:
// the shipped component applied, two replicas started at the same moment
// without SESSION_KEYS end with one Secret and the same key (a session made
// through one opens at the other); replacing them one by one, as a rolling
// update does, keeps the key and the session; the Secret is never changed.
func TestSessionKeySharedBySimultaneousReplicasAndKeptAcrossRollingRestart(t *testing.T) {
	api := StartAPIServer(t, Options{})
	applyRendered(t, api, "base", sessionKeyKinds...)
	waitPolicy(t, account{api, mint(t, api, "istio-system/authservice", nil, time.Hour)}, "istio-system")

	b := make([]byte, 18)
	rand.Read(b)
	clientSecret := base64.RawURLEncoding.EncodeToString(b)
	dexPort := dexRunner(t, clientSecret)
	env := serviceInPod(t, api, "istio-system/authservice")
	for k, v := range map[string]string{"OIDC_PROVIDER": fmt.Sprintf("http://127.0.0.1:%d/dex", dexPort), "OIDC_AUTH_URL": "/dex/auth",
		"CLIENT_SECRET": clientSecret, "REDIRECT_URL": "/authservice/oidc/callback", "SKIP_AUTH_URLS": "/dex",
		"OIDC_SCOPES": "profile email groups", "LOG_LEVEL": "info"} {
		env[k] = v
	}
	replica := func() *Service { return LaunchService(t, env) }
	ready := func(s *Service) *Service {
		s.WaitReady(t)
		s.StartGateway(t, "-dex", fmt.Sprintf("http://127.0.0.1:%d", dexPort))
		return s
	}

	// Two replicas at once (a second round would only read: the Secret
	// exists after the first).
	var a, bb *Service
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a = replica() }()
	go func() { defer wg.Done(); bb = replica() }()
	wg.Wait()
	ready(a)
	ready(bb)
	created := strings.Count(a.Log()+bb.Log(), `"created":true`)
	read := strings.Count(a.Log()+bb.Log(), `"created":false`)
	if created != 1 || read != 1 {
		t.Fatalf("replicas started at once: %d created the Secret, %d read it; want 1 and 1\n%s\n%s", created, read, tail(a.Log(), 1500), tail(bb.Log(), 1500))
	}
	sec, err := api.Admin.CoreV1().Secrets("istio-system").Get(context.Background(), keySecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if key, err := base64.StdEncoding.DecodeString(string(sec.Data["SESSION_KEYS"])); err != nil || len(key) != 32 || sec.Type != corev1.SecretTypeOpaque {
		t.Fatalf("the Secret: type %s, SESSION_KEYS not base64 of 32 bytes (%v)", sec.Type, err)
	}
	for _, l := range []string{a.Log(), bb.Log()} {
		if strings.Contains(l, string(sec.Data["SESSION_KEYS"])) {
			t.Fatal("a replica logged the key")
		}
	}

	// A session made through one replica opens at the other.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	login(t, browser, a.Gateway)
	if u := who(t, browser, bb.Gateway); u != "user@example.com" {
		t.Fatalf("the session made through replica A at replica B: %q", u)
	}
	// A stranger's cookie jar has nothing: the check is real.
	other, _ := cookiejar.New(nil)
	if u := who(t, &http.Client{Jar: other}, bb.Gateway); u != "" {
		t.Fatalf("without a session: %q", u)
	}

	// Rolling restart: A is replaced by C, then B by D; the session sealed
	// before opens at each new replica, while the other still runs.
	a.Stop()
	c := ready(replica())
	if u := who(t, browser, c.Gateway); u != "user@example.com" {
		t.Fatalf("after A's replacement, at C: %q", u)
	}
	bb.Stop()
	d := ready(replica())
	for name, s := range map[string]*Service{"C": c, "D": d} {
		if u := who(t, browser, s.Gateway); u != "user@example.com" {
			t.Fatalf("after the rolling restart, at %s: %q", name, u)
		}
	}
	if strings.Count(c.Log()+d.Log(), `"created":true`) != 0 {
		t.Fatal("a restarted replica created the Secret again")
	}
	again, err := api.Admin.CoreV1().Secrets("istio-system").Get(context.Background(), keySecret, metav1.GetOptions{})
	if err != nil || again.ResourceVersion != sec.ResourceVersion {
		t.Fatalf("the Secret changed: %v (resourceVersion %s → %s)", err, sec.ResourceVersion, again.ResourceVersion)
	}
	t.Logf("one Secret %s/%s (resourceVersion %s) for 4 replicas; the session of replica A opened at B, C and D", "istio-system", keySecret, sec.ResourceVersion)
}
