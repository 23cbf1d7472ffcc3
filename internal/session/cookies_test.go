package session

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestOwnCookies(t *testing.T) {
	c := NewCookies(CookieOptions{Name: "authservice_session", HTTPOnly: true, HostPrefix: true})
	own := []string{"authservice_session", "__Host-authservice_session", "authservice_session_1", "__Host-authservice_session_7",
		"authservice_state_AAAAAAAAAAAAAAAAAAAAAA", "__Host-authservice_state_x", "authservice_state_"}
	other := []string{"authservice_session_0", "authservice_session_8", "authservice_session_01", "authservice_session_x",
		"authservice_sessionx", "__Host-other", "_xsrf", "", "authservice_statex"}
	for _, n := range own {
		if !c.Own(n) {
			t.Errorf("Own(%q) = false", n)
		}
	}
	for _, n := range other {
		if c.Own(n) {
			t.Errorf("Own(%q) = true", n)
		}
	}
}

func TestWithoutOwn(t *testing.T) {
	c := NewCookies(CookieOptions{Name: "authservice_session", HTTPOnly: true, HostPrefix: true})
	cases := []struct {
		lines   []string
		want    string
		changed bool
	}{
		{nil, "", false},
		{[]string{"a=1; b=2"}, "", false},
		{[]string{"a=1; authservice_session=x; b=\"q v\""}, "a=1; b=\"q v\"", true},
		{[]string{"authservice_session=x", "a=1", "__Host-authservice_session_1=y; c=3"}, "a=1; c=3", true},
		{[]string{"authservice_session=x; authservice_state_s=y"}, "", true},
		{[]string{" authservice_session =x;a=1;;b"}, "a=1; b", true},
		// The others in one run: returned as they stand.
		{[]string{"authservice_session=x; a=1; b=2"}, "a=1; b=2", true},
		{[]string{"a=1; b=2; __Host-authservice_session=x; authservice_session_1=y"}, "a=1; b=2", true},
		// Not one run, or not written "; ": joined anew.
		{[]string{"a=1; authservice_session=x; b=2"}, "a=1; b=2", true},
		{[]string{"a=1;b=2; authservice_session=x"}, "a=1; b=2", true},
		{[]string{"a=1 ; b=2; authservice_session=x"}, "a=1; b=2", true},
		{[]string{"a=1", "b=2; authservice_session=x"}, "a=1; b=2", true},
	}
	for _, cs := range cases {
		got, changed := c.WithoutOwn(http.Header{"Cookie": cs.lines})
		if got != cs.want || changed != cs.changed {
			t.Errorf("%q: %q %v, want %q %v", cs.lines, got, changed, cs.want, cs.changed)
		}
	}
	// Nothing of ours, only ours, or ours first or last: no allocation.
	for _, line := range []string{"_xsrf=2|abc|def; theme=dark; " + strings.Repeat("x", 100) + "=1", "authservice_session=x",
		"authservice_session=x; _ga=GA1.1.1; theme=dark", "_ga=GA1.1.1; theme=dark; __Host-authservice_session=x"} {
		h := http.Header{"Cookie": {line}}
		if n := testing.AllocsPerRun(100, func() { c.WithoutOwn(h) }); n != 0 {
			t.Errorf("WithoutOwn allocated %v times for %q", n, line)
		}
	}
}

// withoutOwnJoined is WithoutOwn as it was first written, which always joins
// the other cookies anew: the reference the one-run shortcut must agree with.
func withoutOwnJoined(c *Cookies, lines []string) (string, bool) {
	var kept []string
	own := false
	for _, line := range lines {
		for _, part := range strings.Split(line, ";") {
			part = strings.Trim(part, " \t")
			if part == "" {
				continue
			}
			name, _, _ := strings.Cut(part, "=")
			if c.Own(strings.TrimRight(name, " \t")) {
				own = true
				continue
			}
			kept = append(kept, part)
		}
	}
	if !own {
		return "", false
	}
	return strings.Join(kept, "; "), true
}

// FuzzWithoutOwn: the upstream's Cookie header is the others joined with
// "; ", whichever way WithoutOwn gets there, and never holds one of ours.
func FuzzWithoutOwn(f *testing.F) {
	ck := NewCookies(CookieOptions{Name: "authservice_session", HTTPOnly: true, HostPrefix: true})
	for _, s := range []string{"a=1; authservice_session=x; b=2", "authservice_session=x; a=1; b=2", "a=1;b=2; authservice_session=x",
		" authservice_session =x;a=1;;b", "a=1; b=2", "__Host-authservice_state_s=1; authservice_session_3=2"} {
		f.Add(s, "c=3")
	}
	f.Fuzz(func(t *testing.T, line1, line2 string) {
		lines := []string{line1}
		if line2 != "" {
			lines = append(lines, line2)
		}
		got, changed := ck.WithoutOwn(http.Header{"Cookie": lines})
		want, wantChanged := withoutOwnJoined(ck, lines)
		if got != want || changed != wantChanged {
			t.Fatalf("%q: %q %v, want %q %v", lines, got, changed, want, wantChanged)
		}
	})
}

// A plain-named cookie is read only where the __Host- form cannot be in
// use; the __Host- form always.
func TestReadSessionForms(t *testing.T) {
	plain := http.Header{"Cookie": {"authservice_session=plain"}}
	host := http.Header{"Cookie": {"__Host-authservice_session=host; authservice_session=plain"}}
	for _, tc := range []struct {
		name   string
		o      CookieOptions
		secure bool
		in     http.Header
		want   string
	}{
		{"https prefix on: plain refused", CookieOptions{Name: "authservice_session", HTTPOnly: true, HostPrefix: true}, true, plain, ""},
		{"https prefix on: host read", CookieOptions{Name: "authservice_session", HTTPOnly: true, HostPrefix: true}, true, host, "host"},
		{"http: plain read", CookieOptions{Name: "authservice_session", HTTPOnly: true, HostPrefix: true}, false, plain, "plain"},
		{"http: host still first", CookieOptions{Name: "authservice_session", HTTPOnly: true, HostPrefix: true}, false, host, "host"},
		{"domain set: plain read", CookieOptions{Name: "authservice_session", HTTPOnly: true, HostPrefix: true, Domain: "example.com"}, true, plain, "plain"},
		{"readable by scripts: plain read", CookieOptions{Name: "authservice_session", HostPrefix: true}, true, plain, "plain"},
		{"migration window", CookieOptions{Name: "authservice_session", HTTPOnly: true, HostPrefix: true, AcceptPlain: true}, true, plain, "plain"},
	} {
		if got, _ := NewCookies(tc.o).ReadSession(tc.in, tc.secure); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	// Login states: never the plain form where __Host- is in use, even in
	// the migration window.
	c := NewCookies(CookieOptions{Name: "authservice_session", HTTPOnly: true, HostPrefix: true, AcceptPlain: true})
	in := http.Header{"Cookie": {"authservice_state_S=planted"}}
	if v, ok := c.ReadState(in, true, "S"); ok {
		t.Errorf("plain login state read over https: %q", v)
	}
	if v, ok := c.ReadState(in, false, "S"); !ok || v != "planted" {
		t.Errorf("plain login state over http: %q %v", v, ok)
	}
	if got := c.PendingStates(in, true, 10); len(got) != 0 {
		t.Errorf("plain login states listed over https: %v", got)
	}
}

func BenchmarkWithoutOwn(b *testing.B) {
	c := NewCookies(CookieOptions{Name: "authservice_session", HTTPOnly: true, HostPrefix: true})
	only := http.Header{"Cookie": {"__Host-authservice_session=" + strings.Repeat("A", 600)}}
	mixed := http.Header{"Cookie": {"_xsrf=2|abc|def; __Host-authservice_session=" + strings.Repeat("A", 600) + "; theme=dark"}}
	none := http.Header{"Cookie": {"_xsrf=2|abc|def; theme=dark"}}
	for name, h := range map[string]http.Header{"session only": only, "session and others": mixed, "none of ours": none} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.WithoutOwn(h)
			}
		})
	}
}

// The Set-Cookie lines written directly are http.Cookie's, byte for byte.
func TestCookieStringIsNetHTTPs(t *testing.T) {
	for _, name := range []string{"authservice_state_JbYrR77vQLIIGHGY7IGV5g", "__Host-authservice_session", "a"} {
		for _, value := range []string{"MTc5NjQ0NTI2OHxkZmZwcFdC-_U0zTj=", "~AAAAAGlXq5Dv-_x", "2.~AAAA", "x", "", "a b", "a,b", "\"q\""} {
			for _, maxAge := range []int{-1, 0, 1, 600, 86400} {
				for _, secure := range []bool{false, true} {
					for _, same := range []http.SameSite{0, http.SameSiteDefaultMode, http.SameSiteLaxMode, http.SameSiteStrictMode, http.SameSiteNoneMode} {
						for _, domain := range []string{"", "example.com"} {
							ck := &http.Cookie{Name: name, Value: value, Path: "/", Domain: domain, MaxAge: maxAge, Secure: secure, HttpOnly: !secure, SameSite: same}
							if got, want := cookieString(ck), ck.String(); got != want {
								t.Errorf("%+v:\n got %s\nwant %s", ck, got, want)
							}
						}
					}
				}
			}
		}
	}
}

// Clearing a session deletes the session cookie in the form in use and
// each chunk the request carries, in every form it carries it, and nothing
// else, however many other cookies the request has.
func TestClearSessionDeletesWhatWasSent(t *testing.T) {
	c := NewCookies(CookieOptions{Name: "authservice_session", HTTPOnly: true, HostPrefix: true, SameSite: http.SameSiteLaxMode})
	var others []string
	for i := range 200 {
		others = append(others, "c"+strconv.Itoa(i)+"=v")
	}
	in := http.Header{"Cookie": {strings.Join(others, "; ") + "; __Host-authservice_session_2=x; authservice_session_3=y; " +
		"authservice_session_9=z; authservice_session_01=z; __Host-authservice_sessionx=z"}}
	out := http.Header{}
	c.ClearSession(out, in, true)
	var names []string
	for _, line := range out.Values("Set-Cookie") {
		if !strings.Contains(line, "Max-Age=0") {
			t.Errorf("not a deletion: %s", line)
		}
		n, _, _ := strings.Cut(line, "=")
		names = append(names, n)
	}
	want := []string{"__Host-authservice_session", "__Host-authservice_session_2", "__Host-authservice_session_3", "authservice_session_3"}
	if !slices.Equal(names, want) {
		t.Fatalf("deleted %q, want %q", names, want)
	}
}

// BenchmarkClearSession: a forged session cookie among 200 others (what an
// anonymous client can send on every request).
func BenchmarkClearSession(b *testing.B) {
	c := NewCookies(CookieOptions{Name: "authservice_session", HTTPOnly: true, HostPrefix: true})
	var others []string
	for i := range 200 {
		others = append(others, "c"+strconv.Itoa(i)+"=v")
	}
	in := http.Header{"Cookie": {strings.Join(others, "; ") + "; __Host-authservice_session=forged"}}
	b.ReportAllocs()
	for b.Loop() {
		c.ClearSession(http.Header{}, in, true)
	}
}
