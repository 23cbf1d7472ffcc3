package server

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/identity"
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
// list and groups_csv), as JSON writes them: their bound, measured so,
// leaves room for its other claims, so the Authorization line fits
// UPSTREAM_HEADER_MAX_BYTES whatever the user id and the names, and only
// just (the bound is exact). Names full of <, > and & (which json.Marshal
// writes in 6 bytes each), " and \ (2 bytes) and U+2028 (6) fill it; one
// byte more is refused, or with GROUPS_OVERFLOW=truncate the last group is
// left out.
func TestIssuedTokensFitTheHeaderLine(t *testing.T) {
	for _, c := range []struct {
		overflow string
		groups   int // 0: GROUPS_MAX, the most quotes and commas
	}{{"refuse", 0}, {"truncate", 0}, {"refuse", 9}, {"truncate", 9}} {
		t.Run(fmt.Sprintf("%s/%d", c.overflow, c.groups), func(t *testing.T) {
			p := &Parts{}
			s := groupSettings(t, map[string]string{"UPSTREAM_TOKEN": "issued", "GROUPS_OVERFLOW": c.overflow, "USERID_PREFIX": "oidc:"})
			var err error
			if p.Upstream, err = p.upstreamIssuer(s, time.Now); err != nil {
				t.Fatal(err)
			}
			g, err := p.groupsPolicy(s)
			if err != nil {
				t.Fatal(err)
			}
			// The groups travel twice (the list and groups_csv): about 2
			// KB of names with the defaults.
			t.Logf("groups bound with issued tokens: %d bytes", g.MaxBytes())
			if g.MaxBytes() >= s.Identity.GroupsHeaderMaxBytes() || g.MaxBytes() < 2000 {
				t.Fatalf("groups bound %d with issued tokens", g.MaxBytes())
			}
			mapper := &identity.Mapper{UserClaim: "email", GroupsClaim: "groups", Groups: g}
			n := c.groups
			if n == 0 {
				n = s.Identity.GroupsMax
			}
			// The longest user id the mapper lets through, JSON-escaped: 512
			// bytes in sub and in email.
			user := strings.Repeat(`"`, 254) + `\x@`
			if got := identity.JSONLen(user); got != identity.MaxUserID {
				t.Fatalf("user id of %d bytes escaped", got)
			}
			if _, _, err := mapper.Clean(user+"x", nil); !errors.Is(err, identity.ErrBadUserID) {
				t.Fatalf("a user id of 513 bytes JSON-escaped: %v", err)
			}
			line := func(id identity.Identity) int {
				tok, _, err := p.Upstream.Sign(s.Identity.UserPrefix+id.User, id.Groups)
				if err != nil {
					t.Fatal(err)
				}
				claims := jwtClaims(t, tok)
				if got := claims["groups_csv"]; got != strings.Join(id.Groups, ",") {
					t.Fatalf("groups_csv %.80q", got)
				}
				return len("Authorization: Bearer \r\n") + len(tok)
			}

			names := hostileNames(g.MaxBytes(), n)
			id, _, err := mapper.Clean(user, names)
			if err != nil || len(id.Groups) != n {
				t.Fatalf("%d names of %d bytes JSON-escaped (the bound): %d kept, %v", n, g.MaxBytes(), len(id.Groups), err)
			}
			max := s.Identity.UpstreamHeaderMaxBytes
			got := line(id)
			t.Logf("%d groups of %d bytes (%d raw, %d JSON-escaped): header line %d of %d bytes", n, g.MaxBytes(),
				len(strings.Join(names, ",")), g.MaxBytes(), got, max)
			if got > max {
				t.Fatalf("issued token's header line %d > %d", got, max)
			}
			// Exact: with GROUPS_MAX groups nothing is left over but the
			// base64 rounding (3 bytes in 4 characters).
			if n == s.Identity.GroupsMax && got < max-3 {
				t.Errorf("issued token's header line %d: the bound leaves %d bytes unused", got, max-got)
			}

			// One byte more.
			names[n-1] += "<"
			id, _, err = mapper.Clean(user, names)
			var oe *identity.OverflowError
			switch c.overflow {
			case "refuse":
				if !errors.As(err, &oe) || oe.Bytes != g.MaxBytes()+1 {
					t.Fatalf("one byte over the bound: %v", err)
				}
			case "truncate":
				if err != nil || len(id.Groups) != n-1 {
					t.Fatalf("one byte over the bound, truncated: %d groups kept, %v", len(id.Groups), err)
				}
				if got := line(id); got > max {
					t.Fatalf("issued token's header line %d > %d", got, max)
				}
			}
		})
	}
}

// hostileNames are n distinct group names, full of what JSON escapes or
// json.Marshal would (<, >, &, ", \, U+2028, U+2029), whose comma-joined
// value takes exactly total bytes JSON-escaped.
func hostileNames(total, n int) []string {
	pieces := []string{"<", ">", "&", `"`, `\`, "\u2028", "\u2029"}
	left := total - (n - 1) // bytes of names
	names := make([]string, n)
	for i := range names {
		want := left / (n - i)
		name := strconv.Itoa(i)
		for k := i; ; k++ {
			pc := pieces[k%len(pieces)]
			if identity.JSONLen(name+pc) > want {
				break
			}
			name += pc
		}
		for identity.JSONLen(name) < want {
			name += "&"
		}
		names[i] = name
		left -= identity.JSONLen(name)
	}
	return names
}

// jwtClaims reads a token's payload.
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	var c map[string]any
	if err != nil || json.Unmarshal(b, &c) != nil {
		t.Fatalf("payload unreadable: %v", err)
	}
	return c
}
