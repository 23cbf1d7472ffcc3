package urlpath

import (
	"strings"
	"testing"
)

func TestCanonical(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"/", "/", true},
		{"/pipeline/admin/x", "/pipeline/admin/x", true},
		{"/pipeline//admin/x", "/pipeline/admin/x", true},
		{"//pipeline///admin//x//", "/pipeline/admin/x/", true},
		{"/pipeline/foo/..%2Fadmin/x", "/pipeline/admin/x", true},
		{"/pipeline/foo%2F..%2Fadmin/x", "/pipeline/admin/x", true},
		{"/pipeline/foo%2f%2e%2e%2fadmin/x", "/pipeline/admin/x", true},
		{"/pipeline/./admin/./x", "/pipeline/admin/x", true},
		{"/pipeline/foo\\..\\admin/x", "/pipeline/admin/x", true},
		{"/pipeline/foo%5C..%5Cadmin/x", "/pipeline/admin/x", true},
		{"/pipeline/admin;x=1/x", "/pipeline/admin/x", true},
		{"/pipeline/foo;/../admin/x", "/pipeline/admin/x", true},
		{"/../../etc/passwd", "/etc/passwd", true},
		{"/a/b/..", "/a/", true},
		{"/a/b/.", "/a/b/", true},
		{"/a/..", "/", true},
		{"/%61dmin", "/admin", true},
		{"/dex/../api/x", "/api/x", true},
		{"/a%252Fb", "/a%2Fb", true}, // decoded once, as an upstream would
		{"", "", false},
		{"relative", "", false},
		{"/a%2", "", false},
		{"/a%zz", "", false},
		{"/a%00b", "", false},
		{"/a%0d%0aSet-Cookie:x", "", false},
		{"/a\x7f", "", false},
	}
	for _, c := range cases {
		got, ok := Canonical(c.in)
		if ok != c.ok || got != c.want {
			t.Errorf("Canonical(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// FuzzCanonical: a canonical path starts with "/", has no empty, "." or
// ".." segment, and (without a '%' left by double encoding) is a fixed point.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"/", "/a//b", "/a/%2e%2e/b", "/a\\b", "/a;b/c", "/%", "/a%252Fb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, ok := Canonical(in)
		if !ok {
			return
		}
		if c[0] != '/' {
			t.Fatalf("%q → %q: not absolute", in, c)
		}
		if c != "/" && (strings.Contains(c, "//") || strings.Contains(c+"/", "/./") || strings.Contains(c+"/", "/../")) {
			t.Fatalf("%q → %q: empty or dot segment left", in, c)
		}
		if !strings.Contains(c, "%") {
			if again, ok := Canonical(c); !ok || again != c {
				t.Fatalf("%q → %q → %q, %v: not a fixed point", in, c, again, ok)
			}
		}
	})
}

func TestUnder(t *testing.T) {
	cases := []struct {
		p, prefix string
		want      bool
	}{
		{"/dex", "/dex", true},
		{"/dex/auth", "/dex", true},
		{"/dexterity", "/dex", false},
		{"/api", "/api/", true},
		{"/api/x", "/api/", true},
		{"/apis", "/api/", false},
		{"/", "/", true},
		{"/x", "/", true},
	}
	for _, c := range cases {
		if got := Under(c.p, c.prefix); got != c.want {
			t.Errorf("Under(%q, %q) = %v", c.p, c.prefix, got)
		}
	}
}

func BenchmarkCanonicalPlain(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Canonical("/pipeline/apis/v2beta1/runs")
	}
}
