package tokencli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string) Env {
	return Env{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(k string) string { return vars[k] }}
}

func TestHelpGoesToStdout(t *testing.T) {
	e := env(nil)
	if err := Run(context.Background(), []string{"--help"}, e); err != nil {
		t.Fatal(err)
	}
	out := e.Stdout.(*bytes.Buffer).String()
	for _, want := range []string{"-issuer", "-audience", "-force", "exec-credential", "device authorization grant", "client.authentication.k8s.io/v1"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	if e.Stderr.(*bytes.Buffer).Len() != 0 {
		t.Errorf("stderr: %s", e.Stderr)
	}
}

func TestParse(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		vars map[string]string
		err  string
		want func(Options) bool
	}{
		{"issuer required", nil, nil, "--issuer is required", nil},
		{"defaults", []string{"--issuer", "https://kf.example.com/dex"}, nil, "", func(o Options) bool {
			return o.ClientID == "kubeflow-cli" && o.Output == "token" && o.Flow == "auto" && o.Scopes == nil && o.MinValidity == time.Minute
		}},
		{"exec info makes exec-credential the default", []string{"--issuer", "https://i"}, map[string]string{"KUBERNETES_EXEC_INFO": "{}"}, "", func(o Options) bool {
			return o.Output == "exec-credential"
		}},
		{"explicit output wins over exec info", []string{"--issuer", "https://i", "--output", "json"}, map[string]string{"KUBERNETES_EXEC_INFO": "{}"}, "", func(o Options) bool {
			return o.Output == "json"
		}},
		{"scopes get openid", []string{"--issuer", "https://i", "--scopes", "email,groups"}, nil, "", func(o Options) bool {
			return strings.Join(o.Scopes, " ") == "openid email groups"
		}},
		{"audiences", []string{"--issuer", "https://i", "--audience", "a, b"}, nil, "", func(o Options) bool {
			return strings.Join(o.Audiences, " ") == "a b"
		}},
		{"device endpoint", []string{"--issuer", "https://gitlab.example.com", "--device-authorization-url", "https://gitlab.example.com/oauth/authorize_device"}, nil, "", func(o Options) bool {
			return o.DeviceAuthURL == "https://gitlab.example.com/oauth/authorize_device"
		}},
		{"bad device endpoint", []string{"--issuer", "https://i", "--device-authorization-url", "/oauth/authorize_device"}, nil, "--device-authorization-url", nil},
		{"bad output", []string{"--issuer", "https://i", "--output", "yaml"}, nil, "--output", nil},
		{"bad flow", []string{"--issuer", "https://i", "--flow", "implicit"}, nil, "--flow", nil},
		{"issuer with query", []string{"--issuer", "https://i/?x=1"}, nil, "--issuer", nil},
		{"issuer not http", []string{"--issuer", "ftp://i"}, nil, "--issuer", nil},
		{"unknown flag", []string{"--issuer", "https://i", "--nope"}, nil, "see oidc-authservice token --help", nil},
		{"stray argument", []string{"--issuer", "https://i", "extra"}, nil, "unexpected argument", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := parse(c.args, env(c.vars))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || !c.want(o) {
				t.Fatalf("%+v, %v", o, err)
			}
		})
	}
}

func TestExecCredentialVersion(t *testing.T) {
	e := &entry{Issuer: "https://i", ClientID: "c", IDToken: "h.p.s", Expiry: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	for _, c := range []struct{ info, version, err string }{
		{"", "client.authentication.k8s.io/v1", ""},
		{`{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":true}}`, "client.authentication.k8s.io/v1", ""},
		{`{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","spec":{}}`, "client.authentication.k8s.io/v1beta1", ""},
		{`{"apiVersion":"client.authentication.k8s.io/v1alpha1"}`, "", "set apiVersion: client.authentication.k8s.io/v1"},
		{`not json`, "", "KUBERNETES_EXEC_INFO"},
	} {
		var out bytes.Buffer
		cmd := &command{o: Options{Output: "exec-credential"}, env: Env{Stdout: &out, Getenv: func(string) string { return c.info }}}
		err := cmd.print(e)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || out.Len() != 0 {
				t.Errorf("%s: %v, %q", c.info, err, out.String())
			}
			continue
		}
		var ec execCredential
		if err != nil || json.Unmarshal(out.Bytes(), &ec) != nil {
			t.Fatalf("%s: %v: %s", c.info, err, out.String())
		}
		if ec.APIVersion != c.version || ec.Kind != "ExecCredential" || ec.Status == nil ||
			ec.Status.Token != "h.p.s" || ec.Status.ExpirationTimestamp != "2030-01-02T03:04:05Z" {
			t.Errorf("%s: %s", c.info, out.String())
		}
	}
}

// TestUnsafeCacheFailsBeforeAnyNetwork: a cache file readable by others
// stops the command with the fix, before it talks to the provider (the
// issuer here does not exist), and without printing the token anywhere.
func TestUnsafeCacheFailsBeforeAnyNetwork(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tokens")
	o := Options{Issuer: "https://issuer.invalid", ClientID: DefaultClientID, CacheDir: dir}
	c, err := openCache(o)
	if err != nil {
		t.Fatal(err)
	}
	c.save(&entry{Issuer: o.Issuer, ClientID: o.ClientID, IDToken: "cached.id.token", Expiry: time.Now().Add(time.Hour)})
	os.Chmod(c.path, 0o644)
	for _, args := range [][]string{nil, {"--force"}} {
		e := env(nil)
		err = Run(context.Background(), append([]string{"--issuer", o.Issuer, "--cache-dir", dir}, args...), e)
		if args != nil {
			// --force does not read the file, but a login with an
			// unreachable provider fails without touching it either.
			if err == nil {
				t.Fatal("--force with an unreachable provider succeeded")
			}
			continue
		}
		if !errors.Is(err, ErrUnsafeCache) || strings.Contains(err.Error(), "cached.id.token") {
			t.Fatalf("%v", err)
		}
		if out := e.Stdout.(*bytes.Buffer).String() + e.Stderr.(*bytes.Buffer).String(); strings.Contains(out, "cached.id.token") {
			t.Fatalf("token written: %s", out)
		}
	}
}

// TestCachedTokenNeedsNoProvider: a valid cached token is printed without
// any call to the provider (the issuer does not resolve), and nothing goes
// to stderr.
func TestCachedTokenNeedsNoProvider(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tokens")
	o := Options{Issuer: "https://issuer.invalid", ClientID: DefaultClientID, CacheDir: dir}
	c, _ := openCache(o)
	c.save(&entry{Issuer: o.Issuer, ClientID: o.ClientID, IDToken: "cached.id.token", Expiry: time.Now().Add(time.Hour)})
	e := env(nil)
	if err := Run(context.Background(), []string{"--issuer", o.Issuer, "--cache-dir", dir}, e); err != nil {
		t.Fatal(err)
	}
	if got := e.Stdout.(*bytes.Buffer).String(); got != "cached.id.token\n" {
		t.Fatalf("stdout %q", got)
	}
	if e.Stderr.(*bytes.Buffer).Len() != 0 {
		t.Fatalf("stderr %q", e.Stderr)
	}
	// Within --min-validity of its expiry it is not used: renewal needs
	// the provider, which here fails with a message saying what to do.
	e = env(nil)
	err := Run(context.Background(), []string{"--issuer", o.Issuer, "--cache-dir", dir, "--min-validity", "2h", "--request-timeout", "5s"}, e)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the provider") {
		t.Fatalf("%v", err)
	}
}

func TestRebase(t *testing.T) {
	for _, c := range []struct{ u, want string }{
		{"http://dex.auth.svc.cluster.local:5556/dex/token", "https://kf.example.com/dex/token"},
		{"http://dex.auth.svc.cluster.local:5556/dex", "https://kf.example.com/dex"},
		{"http://dex.auth.svc.cluster.local:5556/dexter/token", "http://dex.auth.svc.cluster.local:5556/dexter/token"},
		{"https://elsewhere/keys", "https://elsewhere/keys"},
	} {
		if got := rebase(c.u, "http://dex.auth.svc.cluster.local:5556/dex", "https://kf.example.com/dex/"); got != c.want {
			t.Errorf("rebase(%s) = %s, want %s", c.u, got, c.want)
		}
	}
}

func TestDefaultScopes(t *testing.T) {
	dex := []string{"openid", "email", "groups", "profile", "offline_access"}
	gitlab := []string{"api", "read_user", "openid", "profile", "email"}
	if got := strings.Join(defaultScopes(dex), " "); got != "openid profile email groups offline_access" {
		t.Errorf("Dex: %s", got)
	}
	if got := strings.Join(defaultScopes(gitlab), " "); got != "openid profile email" {
		t.Errorf("GitLab (refuses groups, has no offline_access): %s", got)
	}
}
