package authz

import (
	"strings"
	"testing"
)

func TestRules(t *testing.T) {
	p := &Policy{allowAll: true}
	err := p.parse([]byte(`rules:
- name: pipelines
  host: "*.example.com"
  pathPrefix: /pipeline
  methods: [get, post]
  allow:
    groups: [ml]
    users: [ci]
- name: admin
  pathPrefix: /admin/
  allow:
    emailDomains: [Example.com]
- name: rest
  pathPrefix: /open
  allow:
    authenticated: true
default: deny
`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		q    Request
		ok   bool
		rule string
	}{
		{Request{Host: "kf.example.com:443", Path: "/pipeline/x", Method: "GET", User: "u", Groups: []string{"ml"}}, true, ""},
		{Request{Host: "kf.example.com", Path: "/pipeline", Method: "POST", User: "ci"}, true, ""},
		{Request{Host: "kf.example.com", Path: "/pipeline/x", Method: "GET", User: "u"}, false, "pipelines"},
		{Request{Host: "kf.example.com", Path: "/pipelines", Method: "GET", User: "u", Groups: []string{"ml"}}, false, "default is deny"},
		{Request{Host: "other.org", Path: "/pipeline/x", Method: "GET", Groups: []string{"ml"}}, false, "default is deny"},
		{Request{Host: "kf.example.com", Path: "/pipeline/x", Method: "DELETE", Groups: []string{"ml"}}, false, "default is deny"},
		{Request{Path: "/admin/users", User: "a@example.COM"}, true, ""},
		{Request{Path: "/admin", User: "a@example.com.evil.org"}, false, "admin"},
		{Request{Path: "/open/x", User: "anyone"}, true, ""},
	}
	for i, c := range cases {
		ok, why := p.Decide(c.q)
		if ok != c.ok || !strings.Contains(why, c.rule) {
			t.Errorf("case %d %+v: %v %q", i, c.q, ok, why)
		}
	}
	for _, bad := range []string{"rules: [{allow: {}}]", "rules: [{pathPrefix: x, allow: {authenticated: true}}]", "default: maybe", "bogus: 1"} {
		if err := (&Policy{}).parse([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestAllowlistFirst(t *testing.T) {
	p := &Policy{groups: map[string]struct{}{"admins": {}}}
	if ok, why := p.Decide(Request{Groups: []string{"users"}}); ok || !strings.Contains(why, "GROUPS_ALLOWLIST") {
		t.Fatal(why)
	}
	if ok, _ := p.Decide(Request{Groups: []string{"admins"}}); !ok {
		t.Fatal("member refused")
	}
}
