package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// serviceBinary builds cmd/oidc-authservice once per test process.
func serviceBinary(t *testing.T) string {
	t.Helper()
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "oidc-authservice-bin")
		if err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(dir, "oidc-authservice")
		cmd := exec.Command("go", "build", "-o", binaryPath, "./cmd/oidc-authservice")
		cmd.Dir = peer.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			binaryErr = errors.New(string(out))
		}
	})
	if binaryErr != nil {
		t.Fatalf("build: %v", binaryErr)
	}
	return binaryPath
}

// checkConfig runs `oidc-authservice check-config` with exactly env.
func checkConfig(t *testing.T, env map[string]string) (string, int) {
	t.Helper()
	cmd := exec.Command(serviceBinary(t), "check-config")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code
}

func TestCheckConfig(t *testing.T) {
	dex := peer.StartDex(t, peer.DexOptions{})
	with := func(over map[string]string) map[string]string {
		env := peer.KubeflowEnv(dex)
		for k, v := range over {
			if v == "" {
				delete(env, k)
			} else {
				env[k] = v
			}
		}
		return env
	}

	t.Run("kubeflow settings against a real Dex", func(t *testing.T) {
		out, code := checkConfig(t, with(nil))
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		flat := strings.Join(strings.Fields(out), " ")
		for _, want := range []string{
			"discovery:", "ok (",
			"token endpoint: " + dex.Issuer + "/token",
			"authorization endpoint: /dex/auth (OIDC_AUTH_URL",
			"redirect URL (sent as is): /authservice/oidc/callback",
			"scopes: openid profile email groups",
			"kubeflow-userid: <claim \"email\">",
			"skip paths (no login): /dex",
			"session keys: 1",
			"OpenTelemetry traces: off (no OTEL_EXPORTER_OTLP_ENDPOINT)",
			"OK.",
		} {
			if !strings.Contains(flat, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, dex.Opts.ClientSecret) || strings.Contains(out, peer.SessionKey) {
			t.Fatalf("a secret is printed:\n%s", out)
		}
	})

	// Kubeflow's Dex client secret works (Dex has it) but is public: a
	// warning, not a problem.
	t.Run("Kubeflow's published client secret", func(t *testing.T) {
		kf := peer.StartDex(t, peer.DexOptions{ClientSecret: "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok"})
		env := peer.KubeflowEnv(kf)
		out, code := checkConfig(t, env)
		if code != 0 || !strings.Contains(out, "warning: CLIENT_SECRET is published") || !strings.Contains(out, "OK, with 1 warning(s).") {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		if strings.Contains(out, "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok") {
			t.Fatal("the secret is printed")
		}
	})

	t.Run("traces", func(t *testing.T) {
		out, code := checkConfig(t, with(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
			"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1", "OTEL_SERVICE_NAME": "authservice-eu"}))
		flat := strings.Join(strings.Fields(out), " ")
		for _, want := range []string{"OTLP endpoint: http://127.0.0.1:4318/v1/traces (http/protobuf)",
			"sampler: parentbased_traceidratio 0.1", "service name: authservice-eu", "OK."} {
			if code != 0 || !strings.Contains(flat, want) {
				t.Errorf("exit %d, output lacks %q:\n%s", code, want, out)
			}
		}
		out, code = checkConfig(t, with(map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}))
		if code != 1 || !strings.Contains(out, "OTEL_EXPORTER_OTLP_PROTOCOL: http/json is not supported") {
			t.Errorf("exit %d:\n%s", code, out)
		}
	})

	// The Redis mode and what answers.
	t.Run("Redis", func(t *testing.T) {
		single := peer.StartRedis(t)
		sentinel := peer.StartSentinel(t)
		cluster := peer.StartCluster(t, 3)
		for _, c := range []struct {
			env  map[string]string
			want []string
		}{
			{map[string]string{"REDIS_URL": single}, []string{"Redis mode: single server (REDIS_URL)", "revocations shared via: Redis (ok: single server answers)"}},
			{map[string]string{"REDIS_URL": "redis://:" + peer.RedisPassword + "@/0", "REDIS_SENTINEL_MASTER_NAME": sentinel.MasterName,
				"REDIS_SENTINEL_ADDRS": strings.Join(sentinel.Addrs, ","), "REDIS_SENTINEL_PASSWORD": peer.SentinelPassword},
				[]string{`Redis mode: Sentinel: master "` + sentinel.MasterName + `" via ` + strings.Join(sentinel.Addrs, ", "),
					"revocations shared via: Redis (ok: sentinel: the master answers)"}},
			{map[string]string{"REDIS_URL": "redis://:" + peer.RedisPassword + "@", "REDIS_CLUSTER_ADDRS": cluster[0]},
				[]string{"Redis mode: Cluster: " + cluster[0], "revocations shared via: Redis (ok: cluster: 3 masters answer, state ok)"}},
		} {
			out, code := checkConfig(t, with(c.env))
			flat := strings.Join(strings.Fields(out), " ")
			for _, w := range c.want {
				if code != 0 || !strings.Contains(flat, w) {
					t.Errorf("exit %d, output lacks %q:\n%s", code, w, out)
				}
			}
			if strings.Contains(out, peer.RedisPassword) || strings.Contains(out, peer.SentinelPassword) {
				t.Errorf("a Redis password is printed:\n%s", out)
			}
		}
		// The Sentinels answer but refuse a wrong password: a problem.
		out, code := checkConfig(t, with(map[string]string{"REDIS_URL": "redis://:" + peer.RedisPassword + "@/0",
			"REDIS_SENTINEL_MASTER_NAME": sentinel.MasterName, "REDIS_SENTINEL_ADDRS": strings.Join(sentinel.Addrs, ","),
			"REDIS_SENTINEL_PASSWORD": "wrong"}))
		if code != 1 || !strings.Contains(out, "PROBLEM: Redis not reachable") {
			t.Errorf("wrong Sentinel password: exit %d\n%s", code, out)
		}
	})

	// arrikto's variables that are not settings: named, with what to use
	// instead, and not a problem; LOG_LEVEL in arrikto's spelling.
	t.Run("the predecessor's variables", func(t *testing.T) {
		out, code := checkConfig(t, with(map[string]string{"AUTH_HEADER": "X-Auth-Token", "CACHE_ENABLED": "true",
			"SESSION_STORE_REDIS_ADDR": "redis:6379", "USERID_TOKEN_HEADER": "kubeflow-token", "LOG_LEVEL": "WARN", "STORE_PATH": "/var/lib/authservice/data.db"}))
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		for _, want := range []string{
			"warning: AUTH_HEADER (a variable of the predecessor) is ignored: credentials are read from the session cookie and from Authorization: Bearer only",
			"warning: CACHE_ENABLED (a variable of the predecessor) is ignored",
			"warning: SESSION_STORE_REDIS_ADDR (a variable of the predecessor) is ignored",
			"warning: USERID_TOKEN_HEADER (a variable of the predecessor) is ignored",
			"warning: STORE_PATH (a variable of the predecessor) is ignored",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"a scope the provider does not support", map[string]string{"OIDC_SCOPES": "openid email read_api"},
			`scope "read_api" is not in the provider's scopes_supported`},
		{"provider unreachable", map[string]string{"OIDC_PROVIDER": "http://127.0.0.1:1/dex", "PROVIDER_TIMEOUT": "2s"},
			"PROBLEM: discovery failed"},
		{"wrong issuer path", map[string]string{"OIDC_PROVIDER": dex.Issuer + "/nope"},
			"PROBLEM: discovery failed"},
		{"missing client secret", map[string]string{"CLIENT_SECRET": ""},
			"CLIENT_SECRET"},
		{"invalid log level", map[string]string{"LOG_LEVEL": "loud"},
			"LOG_LEVEL"},
		{"no session keys", map[string]string{"SESSION_KEYS": ""},
			"PROBLEM: SESSION_KEYS is not set"},
		// Every key published anywhere is refused, in any encoding, with
		// what to do instead (issue 21, finding 1).
		{"the old deploy/base placeholder", map[string]string{"SESSION_KEYS": "REPLACE-ME-with-the-output-of-openssl-rand-base64-32"},
			"SESSION_KEYS: key 1 is published"},
		{"the old development key of make run", map[string]string{"SESSION_KEYS": "local-development-key-do-not-use-in-production"},
			"openssl rand -base64 32"},
		{"Kubeflow's oauth2-proxy cookie secret, second", map[string]string{"SESSION_KEYS": peer.SessionKey + ",7d16fee92f8d11b8940b081b3f8b8acb"},
			"SESSION_KEYS: key 2 is published"},
		{"issued upstream tokens without a key file", map[string]string{"UPSTREAM_TOKEN": "issued"},
			"PROBLEM: UPSTREAM_TOKEN=issued without UPSTREAM_TOKEN_KEYS_FILE"},
		{"unreachable Redis", map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0"},
			"PROBLEM: Redis not reachable"},
		// The predecessor's external authorizer is a setting now: one that
		// does not answer is a problem (every request would be refused).
		{"an external authorizer that does not answer", map[string]string{"EXTERNAL_AUTHZ_URL": "http://127.0.0.1:1/auth"},
			"PROBLEM: the external authorizer did not answer within its protocol"},
		{"an OPA authorizer URL outside the Data API", map[string]string{"EXTERNAL_AUTHZ_URL": "http://127.0.0.1:8181/", "EXTERNAL_AUTHZ_FORMAT": "opa"},
			"EXTERNAL_AUTHZ_URL: with EXTERNAL_AUTHZ_FORMAT=opa"},
		// The provider cannot be built (a CA bundle that is not PEM): the
		// bearer authenticator depending on it is reported as not checked,
		// never as working.
		{"bearer tokens behind a provider that cannot be built", map[string]string{"CA_BUNDLE": notPEM(t),
			"AUTHENTICATION_CONFIG_FILE": "/nonexistent/authn.yaml"},
			"bearer tokens: not checked"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := checkConfig(t, with(c.env))
			if code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", code, out)
			}
			if !strings.Contains(out, c.want) {
				t.Fatalf("output lacks %q:\n%s", c.want, out)
			}
			if strings.Contains(out, dex.Opts.ClientSecret) {
				t.Fatalf("the client secret is printed:\n%s", out)
			}
			if strings.Contains(out, "bearer JWTs accepted") && c.env["AUTHENTICATION_CONFIG_FILE"] != "" {
				t.Fatalf("bearer JWTs reported as accepted:\n%s", out)
			}
		})
	}
}

// With nothing set, each of the three required settings is its own
// problem (the first used to be the only line marked PROBLEM).
func TestCheckConfigEmptyEnvironment(t *testing.T) {
	out, code := checkConfig(t, nil)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{"  PROBLEM: OIDC_PROVIDER: required\n", "  PROBLEM: CLIENT_ID: required\n",
		"  PROBLEM: CLIENT_SECRET: required (or CLIENT_SECRET_FILE)\n", "3 problem(s): the service would not start."} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "required") && !strings.HasPrefix(line, "  PROBLEM: ") {
			t.Errorf("a problem not marked as one: %q", line)
		}
	}
}

func notPEM(t *testing.T) string {
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
