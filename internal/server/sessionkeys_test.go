package server

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
)

func settings(t *testing.T, env map[string]string) *config.Settings {
	t.Helper()
	all := map[string]string{"OIDC_PROVIDER": "http://127.0.0.1:1/dex", "CLIENT_ID": "c", "CLIENT_SECRET": "s",
		"KUBERNETES_SERVICE_ACCOUNT_DIR": t.TempDir()}
	for k, v := range env {
		all[k] = v
	}
	s, err := config.Load(config.FromMap(all))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// In a pod without a token and without SESSION_KEYS, the service does not
// fall back to keys of its own per replica: it refuses to start and says
// what to apply.
func TestInAPodWithoutTokenNorKeysTheErrorSaysWhatToApply(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "1")
	_, err := sessionKeys(context.Background(), settings(t, nil), zap.NewNop())
	if err == nil {
		t.Fatal("started without keys")
	}
	for _, want := range []string{"SESSION_KEYS is not set", "Secret authservice-session-keys", "deploy/components/session-keys",
		"automountServiceAccountToken: true", "openssl rand -base64 32"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}
	// With keys given and no token, there is nothing to read nor to check.
	s := settings(t, map[string]string{"SESSION_KEYS": base64.StdEncoding.EncodeToString([]byte(t.Name()[:32]))})
	if got, err := sessionKeys(context.Background(), s, zap.NewNop()); err != nil || got != s {
		t.Fatalf("keys given: %v", err)
	}
	// SESSION_KEYS_SECRET empty: off; random keys with the warning of Build.
	s = settings(t, map[string]string{"SESSION_KEYS_SECRET": ""})
	if got, err := sessionKeys(context.Background(), s, zap.NewNop()); err != nil || got != s || !got.Sessions.Generated {
		t.Fatalf("off: %v", err)
	}
}

// Outside a pod nothing changes: random keys, warned about.
func TestOutsideAPodKeysAreRandom(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	s := settings(t, nil)
	got, err := sessionKeys(context.Background(), s, zap.NewNop())
	if err != nil || got != s || !s.Sessions.Generated {
		t.Fatalf("%v", err)
	}
	p, err := Build(s, "test", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) == 0 || !strings.Contains(p.Warnings[0], "random key") {
		t.Fatalf("warnings %q", p.Warnings)
	}
}
