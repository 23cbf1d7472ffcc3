package identity

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestFromClaims(t *testing.T) {
	m := &Mapper{UserClaim: "email", GroupsClaim: "groups", Transformers: []Transformer{
		{Matches: regexp.MustCompile(`^(.*)@corp\.example$`), Replaces: "$1@example.com"},
	}}
	cases := []struct {
		name    string
		claims  map[string]any
		user    string
		groups  []string
		dropped int
		err     error
	}{
		{"plain", map[string]any{"email": "a@example.com", "groups": []any{"g1", "g2"}}, "a@example.com", []string{"g1", "g2"}, 0, nil},
		{"no groups claim", map[string]any{"email": "a@example.com"}, "a@example.com", nil, 0, nil},
		{"null groups", map[string]any{"email": "a@example.com", "groups": nil}, "a@example.com", nil, 0, nil},
		{"transformed", map[string]any{"email": "bob@corp.example"}, "bob@example.com", nil, 0, nil},
		{"missing user claim", map[string]any{"sub": "1"}, "", nil, 0, ErrNoUserID},
		{"null user claim", map[string]any{"email": nil}, "", nil, 0, ErrNoUserID},
		{"empty user claim", map[string]any{"email": ""}, "", nil, 0, ErrNoUserID},
		{"numeric user claim", map[string]any{"email": 42.0}, "", nil, 0, ErrBadUserID},
		{"list user claim", map[string]any{"email": []any{"a"}}, "", nil, 0, ErrBadUserID},
		{"CRLF in user id", map[string]any{"email": "a@example.com\r\nkubeflow-userid: admin"}, "", nil, 0, ErrBadUserID},
		{"very long user id", map[string]any{"email": strings.Repeat("a", 600)}, "", nil, 0, ErrBadUserID},
		{"groups is a string", map[string]any{"email": "a@x", "groups": "admins"}, "", nil, 0, ErrBadGroups},
		{"groups is an object", map[string]any{"email": "a@x", "groups": map[string]any{"a": 1}}, "", nil, 0, ErrBadGroups},
		{"group not a string", map[string]any{"email": "a@x", "groups": []any{"a", 1.0}}, "", nil, 0, ErrBadGroups},
		{"comma and CRLF in groups dropped", map[string]any{"email": "a@x", "groups": []any{"ok", "admins,root", "x\r\ny", ""}}, "a@x", []string{"ok"}, 3, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, report, err := m.FromClaims(c.claims)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err = %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.User != c.user || strings.Join(id.Groups, "|") != strings.Join(c.groups, "|") || report.Unsafe != c.dropped {
				t.Fatalf("got %+v report %+v", id, report)
			}
		})
	}
}

// The login path refuses an email user id the provider calls unverified,
// as the bearer path and kube-apiserver do, unless ALLOW_UNVERIFIED_EMAIL.
func TestUnverifiedEmail(t *testing.T) {
	m := &Mapper{UserClaim: "email", GroupsClaim: "groups"}
	for _, v := range []any{false, "false", "true", nil, 0} {
		if _, _, err := m.FromClaims(map[string]any{"email": "alice@example.com", "email_verified": v}); !errors.Is(err, ErrEmailUnverified) {
			t.Errorf("email_verified %#v: err = %v, want ErrEmailUnverified", v, err)
		}
	}
	for _, c := range []map[string]any{
		{"email": "alice@example.com", "email_verified": true},
		{"email": "alice@example.com"}, // the provider does not say
	} {
		if id, _, err := m.FromClaims(c); err != nil || id.User != "alice@example.com" {
			t.Errorf("%v: %v %v", c, id, err)
		}
	}
	allow := &Mapper{UserClaim: "email", AllowUnverifiedEmail: true}
	if _, _, err := allow.FromClaims(map[string]any{"email": "a@example.com", "email_verified": false}); err != nil {
		t.Errorf("ALLOW_UNVERIFIED_EMAIL: %v", err)
	}
	// Another user-id claim: email_verified says nothing about it.
	sub := &Mapper{UserClaim: "sub"}
	if _, _, err := sub.FromClaims(map[string]any{"sub": "42", "email_verified": false}); err != nil {
		t.Errorf("USERID_CLAIM=sub: %v", err)
	}
}
