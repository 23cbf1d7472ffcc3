package identity

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func manyGroups(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("acme/division-%02d/team-%04d/project-x", i%7, i)
	}
	return out
}

// Before GROUPS_MAX was a setting, the 257th group and every one after it
// were dropped silently (identity.MaxGroups); now an identity beyond the
// limits is refused, with counts, unless truncation is accepted.
func TestGroupsBeyondTheLimitRefusedNotCut(t *testing.T) {
	m := &Mapper{UserClaim: "email", GroupsClaim: "groups"}
	var raw []any
	for _, g := range manyGroups(300) {
		raw = append(raw, g)
	}
	_, _, err := m.FromClaims(map[string]any{"email": "a@x", "groups": raw})
	var oe *OverflowError
	if !errors.As(err, &oe) || !errors.Is(err, ErrTooManyGroups) {
		t.Fatalf("300 groups with the default policy: err = %v, want an OverflowError", err)
	}
	if oe.Received != 300 || oe.Groups != 300 || oe.MaxGroups != DefaultMaxGroups {
		t.Fatalf("overflow %+v", oe)
	}
	if strings.Contains(err.Error(), "project-x") {
		t.Fatalf("the error lists group names: %v", err)
	}

	m.Groups = NewGroupsPolicy(GroupsOptions{Max: 100, Truncate: true})
	id, report, err := m.FromClaims(map[string]any{"email": "a@x", "groups": raw})
	if err != nil || len(id.Groups) != 100 || report.Truncated != 200 || report.Kept != 100 || id.Groups[99] != manyGroups(300)[99] {
		t.Fatalf("truncate: %d groups, %+v, %v", len(id.Groups), report, err)
	}
}

func TestGroupsPolicy(t *testing.T) {
	in := []string{"acme", "acme/ml", "acme/ml/team-1", "other/ml", "kubeflow-admins", "admins,root", "x\r\ny", ""}
	cases := []struct {
		name     string
		o        GroupsOptions
		want     string
		filtered int
		err      bool
	}{
		{"no filter", GroupsOptions{}, "acme|acme/ml|acme/ml/team-1|other/ml|kubeflow-admins", 0, false},
		{"anchored expression", GroupsOptions{Filter: regexp.MustCompile(`^acme/ml(/|$)`)}, "acme/ml|acme/ml/team-1", 3, false},
		{"unanchored expression searches", GroupsOptions{Filter: regexp.MustCompile(`ml`)}, "acme/ml|acme/ml/team-1|other/ml", 2, false},
		{"prefixes", GroupsOptions{Prefixes: []string{"kubeflow-", "acme/ml/"}}, "acme/ml/team-1|kubeflow-admins", 3, false},
		{"either keeps", GroupsOptions{Filter: regexp.MustCompile(`^acme$`), Prefixes: []string{"kubeflow-"}}, "acme|kubeflow-admins", 3, false},
		{"count bound refuses", GroupsOptions{Max: 2}, "", 0, true},
		{"count bound after the filter", GroupsOptions{Max: 2, Prefixes: []string{"acme/"}}, "acme/ml|acme/ml/team-1", 3, false},
		{"byte bound refuses", GroupsOptions{MaxBytes: 20}, "", 0, true},
		{"byte bound truncates", GroupsOptions{MaxBytes: 12, Truncate: true}, "acme|acme/ml", 0, false}, // 4+1+7 = 12
		{"byte bound exactly", GroupsOptions{MaxBytes: 12, Prefixes: []string{"acme"}}, "", 0, true},    // 3 acme groups: 27 bytes
		{"truncate keeps the first", GroupsOptions{Max: 1, Truncate: true}, "acme", 0, false},           //
		{"truncate with nothing that fits", GroupsOptions{MaxBytes: 3, Truncate: true}, "", 0, false},   // "acme" is 4
		{"filter before bounds", GroupsOptions{MaxBytes: 15, Prefixes: []string{"kubeflow-"}}, "kubeflow-admins", 4, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, r, err := NewGroupsPolicy(c.o).Apply(in)
			if c.err {
				if !errors.Is(err, ErrTooManyGroups) {
					t.Fatalf("err = %v, want ErrTooManyGroups", err)
				}
				return
			}
			if err != nil || strings.Join(got, "|") != c.want || r.Unsafe != 3 || r.Filtered != c.filtered || r.Received != len(in) {
				t.Fatalf("got %q %+v %v", got, r, err)
			}
			if r.Bytes != len(strings.Join(got, ",")) || r.Kept != len(got) {
				t.Fatalf("report %+v for %q", r, got)
			}
		})
	}
}

func TestGroupsPolicyFingerprint(t *testing.T) {
	a := NewGroupsPolicy(GroupsOptions{Filter: regexp.MustCompile(`^a`)})
	if a.Fingerprint() != NewGroupsPolicy(GroupsOptions{Filter: regexp.MustCompile(`^a`)}).Fingerprint() {
		t.Fatal("equal settings, different fingerprints")
	}
	for _, o := range []GroupsOptions{{}, {Filter: regexp.MustCompile(`^b`)}, {Filter: regexp.MustCompile(`^a`), Max: 10},
		{Filter: regexp.MustCompile(`^a`), Truncate: true}, {Prefixes: []string{"^a"}}, {Filter: regexp.MustCompile(`^a`), MaxBytes: 100}} {
		if NewGroupsPolicy(o).Fingerprint() == a.Fingerprint() {
			t.Errorf("%+v has the fingerprint of another policy", o)
		}
	}
}

// Bearer tokens and TokenReview answers arrive mapped: Clean applies the
// transformers and the same groups policy as a login.
func TestCleanAppliesThePolicy(t *testing.T) {
	m := &Mapper{Transformers: []Transformer{{Matches: regexp.MustCompile(`^(.*)@corp$`), Replaces: "$1@example.com"}},
		Groups: NewGroupsPolicy(GroupsOptions{Prefixes: []string{"gitlab:acme"}, Max: 1})}
	id, r, err := m.Clean("bob@corp", []string{"gitlab:other", "gitlab:acme", "a,b"})
	if err != nil || id.User != "bob@example.com" || strings.Join(id.Groups, ",") != "gitlab:acme" || r.Filtered != 1 || r.Unsafe != 1 {
		t.Fatalf("%+v %+v %v", id, r, err)
	}
	if _, _, err := m.Clean("bob", []string{"gitlab:acme", "gitlab:acme/ml"}); !errors.Is(err, ErrTooManyGroups) {
		t.Fatalf("beyond GROUPS_MAX: %v", err)
	}
	if _, _, err := m.Clean("a\nb", nil); !errors.Is(err, ErrBadUserID) {
		t.Fatalf("bad user: %v", err)
	}
}
