package identity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
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

// JSONLen is what the issued tokens' encoder (encoding/json without HTML
// escaping) writes between the quotes, for every name checkValue lets
// through: the groups' bound with UPSTREAM_TOKEN=issued relies on it.
func TestJSONLenIsTheEncodersLength(t *testing.T) {
	alphabet := []rune{'a', 'Z', '0', ' ', '<', '>', '&', '"', '\\', '/', '\'', 0x7f + 1, 'é', '\u2027', '\u2028', '\u2029', '\u202a', '€', '😀', 0xe2}
	r := rand.New(rand.NewPCG(1, 2))
	cases := []string{`"`, `\`, "\u2028", "\u2029", "<>&", "a\u2028b\u2029c"}
	for i := 0; i < 2000; i++ {
		var b strings.Builder
		for n := r.IntN(12) + 1; n > 0; n-- {
			b.WriteRune(alphabet[r.IntN(len(alphabet))])
		}
		cases = append(cases, b.String())
	}
	for _, s := range cases {
		if checkValue(s, MaxGroupName) != nil {
			continue
		}
		var buf bytes.Buffer
		e := json.NewEncoder(&buf)
		e.SetEscapeHTML(false)
		if err := e.Encode(s); err != nil {
			t.Fatal(err)
		}
		if want := buf.Len() - len("\"\"\n"); JSONLen(s) != want {
			t.Fatalf("JSONLen(%q) = %d, the encoder writes %d: %s", s, JSONLen(s), want, buf.Bytes())
		}
	}
}

// With the JSON option (UPSTREAM_TOKEN=issued) the bound counts names as
// the token carries them, and so does the user id's MaxUserID.
func TestGroupsBoundMeasuredAsJSON(t *testing.T) {
	names := []string{`a"b`, `c\d`, "e\u2028f", "<&>"}
	raw := NewGroupsPolicy(GroupsOptions{MaxBytes: 17})
	escaped := NewGroupsPolicy(GroupsOptions{MaxBytes: 17, JSON: true})
	if raw.Fingerprint() == escaped.Fingerprint() {
		t.Fatal("the same fingerprint for both measures: sessions sealed under one would not be bounded again under the other")
	}
	// 3+3+5+3 bytes and 3 commas raw: 17; escaped 4+4+8+3+3: 22.
	if out, r, err := raw.Apply(names); err != nil || len(out) != 4 || r.Bytes != 17 {
		t.Fatalf("raw: %v %+v %v", out, r, err)
	}
	var oe *OverflowError
	if _, _, err := escaped.Apply(names); !errors.As(err, &oe) || oe.Bytes != 22 || oe.MaxBytes != 17 {
		t.Fatalf("escaped: %v", err)
	}
	user := strings.Repeat(`"`, MaxUserID/2)
	if _, _, err := (&Mapper{Groups: raw}).Clean(user, nil); err != nil {
		t.Fatalf("a user id of %d bytes (%d escaped) without issued tokens: %v", len(user), JSONLen(user), err)
	}
	if _, _, err := (&Mapper{Groups: escaped}).Clean(user, nil); err != nil {
		t.Fatalf("a user id of %d bytes escaped: %v", JSONLen(user), err)
	}
	if _, _, err := (&Mapper{Groups: escaped}).Clean(user+"x", nil); !errors.Is(err, ErrBadUserID) {
		t.Fatalf("a user id of %d bytes escaped: %v", JSONLen(user+"x"), err)
	}
}
