package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
)

func groupSettings(t *testing.T, env map[string]string) *config.Settings {
	t.Helper()
	base := map[string]string{"OIDC_PROVIDER": "http://127.0.0.1:1/dex", "CLIENT_ID": "c", "CLIENT_SECRET": strings.Repeat("s", 24),
		"SESSION_KEYS": strings.Repeat("k", 32), "SESSION_KEYS_SECRET": ""}
	for k, v := range env {
		base[k] = v
	}
	s, err := config.Load(config.FromMap(base))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A GROUPS_FILTER that removes a group the allowlist or a rule names would
// lock its members out without a word: the service does not start.
func TestFilterThatRemovesAnAllowedGroupIsRefused(t *testing.T) {
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(rules, []byte("rules:\n- name: ml\n  pathPrefix: /ml/\n  allow: {groups: [acme/ml, acme/data]}\n"), 0o600)
	_, err := Build(groupSettings(t, map[string]string{"GROUPS_FILTER": "^acme/ml(/|$)", "GROUPS_ALLOWLIST": "acme/ml,kubeflow-admins",
		"AUTHORIZATION_RULES_FILE": rules}), "test", zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), `"kubeflow-admins" of GROUPS_ALLOWLIST`) || !strings.Contains(err.Error(), `"acme/data" of rule ml`) ||
		strings.Contains(err.Error(), `"acme/ml"`) {
		t.Fatalf("err = %v", err)
	}
	if _, err := Build(groupSettings(t, map[string]string{"GROUPS_FILTER": "^acme/ml(/|$)", "GROUPS_FILTER_PREFIXES": "kubeflow-,acme/data",
		"GROUPS_ALLOWLIST": "acme/ml,kubeflow-admins", "AUTHORIZATION_RULES_FILE": rules}), "test", zap.NewNop()); err != nil {
		t.Fatalf("a filter that keeps every named group: %v", err)
	}
}

// With UPSTREAM_TOKEN=issued the groups travel in the token too (twice: the
// list and groups_csv): their
// bound leaves room for its other claims, so the Authorization line fits
// UPSTREAM_HEADER_MAX_BYTES whatever the user id.
func TestIssuedTokensFitTheHeaderLine(t *testing.T) {
	p := &Parts{}
	s := groupSettings(t, map[string]string{"UPSTREAM_TOKEN": "issued"})
	var err error
	if p.Upstream, err = p.upstreamIssuer(s, time.Now); err != nil {
		t.Fatal(err)
	}
	g, err := p.groupsPolicy(s)
	if err != nil {
		t.Fatal(err)
	}
	// The groups travel twice (the list and groups_csv): about 2 KB of
	// names with the defaults.
	t.Logf("groups bound with issued tokens: %d bytes", g.MaxBytes())
	if g.MaxBytes() >= s.Identity.GroupsHeaderMaxBytes() || g.MaxBytes() < 2000 {
		t.Fatalf("groups bound %d with issued tokens", g.MaxBytes())
	}
	// The most groups the bound lets through, for the longest user id.
	var groups []string
	for n := 0; n+41 <= g.MaxBytes(); n += 41 {
		groups = append(groups, strings.Repeat("g", 40))
	}
	tok, _, err := p.Upstream.Sign(strings.Repeat("u", 511)+"@", groups)
	if err != nil {
		t.Fatal(err)
	}
	if line := len("Authorization: Bearer \r\n") + len(tok); line > s.Identity.UpstreamHeaderMaxBytes {
		t.Fatalf("issued token's header line %d > %d", line, s.Identity.UpstreamHeaderMaxBytes)
	}
}
