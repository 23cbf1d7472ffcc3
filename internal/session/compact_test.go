package session

import (
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/groupnames"
)

func fullSession(now time.Time, groups int) *Session {
	return &Session{ID: "Q2FzZS1pZC0xMjM0NTY3OA", Subject: "CgR1c2VyEgVsb2NhbA", Issuer: "https://dex.example.com/dex",
		User: "user@example.com", Groups: groupnames.List(groups), SID: "sid", Created: now.Unix(), Expires: now.Add(time.Hour).Unix(),
		Active: now.Unix(), Renewed: now.Unix(), RefreshToken: "ChlyZWZyZXNoLXRva2VuLWdvbGRlbhIZb3BhcXVl",
		AccessToken: "opaque-access-token-0123456789", TokenExpiry: now.Add(time.Hour).Unix(), Email: "user@example.com", GroupsPolicy: "abcdef012345"}
}

func TestCompactRoundTrip(t *testing.T) {
	now := time.Now()
	c := NewCodec([][]byte{keyA}, time.Hour, clock(now))
	for _, n := range []int{0, 1, 10, 100, 1000} {
		s := fullSession(now, n)
		if n == 0 {
			s.Groups = nil
		}
		v, err := c.SealSession("authservice_session", s)
		if err != nil {
			t.Fatal(err)
		}
		if v[0] != '~' || strings.ContainsAny(v, ".=;, \"") {
			t.Fatalf("%d groups: not a compact value: %.40s", n, v)
		}
		got, err := c.OpenSession("authservice_session", v)
		if err != nil {
			t.Fatalf("%d groups: %v", n, err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("%d groups: opened %+v, sealed %+v", n, got, s)
		}
	}
}

// A session sealed by an earlier release (securecookie's format) opens,
// whatever the new format: upgrading logs nobody out.
func TestSessionsSealedBeforeStillOpen(t *testing.T) {
	b, err := os.ReadFile("testdata/session-v1.txt")
	if err != nil {
		t.Fatal(err)
	}
	c := NewCodec([][]byte{keyA}, 100*365*24*time.Hour, clock(time.Unix(1_800_000_100, 0)))
	s, err := c.OpenSession("authservice_session", strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if s.User != "user@example.com" || strings.Join(s.Groups, ",") != "team-a,team-b" || s.RefreshToken != "ChlyZWZyZXNoLXRva2VuLWdvbGRlbhIZb3BhcXVl" ||
		s.IDToken != "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln" || s.GroupsPolicy != "" || s.Expires != 1_800_086_400 {
		t.Fatalf("opened %+v", s)
	}
	// And it is carried on in the new format when re-sealed.
	v, _ := c.SealSession("authservice_session", s)
	if again, err := c.OpenSession("authservice_session", v); err != nil || !reflect.DeepEqual(again, s) {
		t.Fatalf("re-sealed: %+v %v", again, err)
	}
}

// plainOf decrypts a compact value with keyA: its flags, identity part (as
// sealed) and tokens part.
func plainOf(t *testing.T, v string) (byte, []byte, []byte) {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(v[1:])
	if err != nil {
		t.Fatal(err)
	}
	s := newSealer(DeriveKey(keyA))
	plain := append([]byte(nil), raw[v2Header:len(raw)-32]...)
	cipher.NewCTR(s.block, raw[v2Time:v2Header]).XORKeyStream(plain, plain)
	n, w := binary.Uvarint(plain[1:])
	return plain[0], plain[1+w : 1+w+int(n)], plain[1+w+int(n):]
}

// Only the identity is compressed; the provider's tokens are sealed as
// they are, so nothing a group name (which others may choose) shares with
// a token changes the sealed length: the CRIME/BREACH condition — secret
// and attacker-chosen text in one compressed stream, the length observable
// — never arises.
func TestTokensAreNeverCompressed(t *testing.T) {
	now := time.Now()
	c := NewCodec([][]byte{keyA}, time.Hour, clock(now))
	s := fullSession(now, 100)
	v, _ := c.SealSession("authservice_session", s)
	flags, id, tok := plainOf(t, v)
	if flags != flagCompressed {
		t.Fatalf("100 groups not compressed (flags %d)", flags)
	}
	want, _ := json.Marshal(sessionTokens{AccessToken: s.AccessToken, RefreshToken: s.RefreshToken})
	if string(tok) != string(want) {
		t.Fatalf("tokens part %q, want %q", tok, want)
	}
	if strings.Contains(string(id), s.RefreshToken) || len(id) >= len(strings.Join(s.Groups, ",")) {
		t.Fatalf("identity part of %d bytes", len(id))
	}
	// A token that repeats a group name seals to the same length as one
	// that shares nothing with the groups.
	lengths := map[int]bool{}
	for _, at := range []string{s.Groups[42], strings.Repeat("Z", len(s.Groups[42])), s.Groups[7][:len(s.Groups[42])]} {
		s.AccessToken = at
		v, _ := c.SealSession("authservice_session", s)
		lengths[len(v)] = true
	}
	if len(lengths) != 1 {
		t.Fatalf("sealed lengths depend on the token's content: %v", lengths)
	}

	// A small identity is sealed as it is.
	if flags, _, _ := plainOf(t, mustSeal(t, c, fullSession(now, 2))); flags != 0 {
		t.Fatalf("a small identity was compressed")
	}
}

func mustSeal(t *testing.T, c *Codec, s *Session) string {
	t.Helper()
	v, err := c.SealSession("authservice_session", s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestCompactRefusals(t *testing.T) {
	now := time.Now()
	c := NewCodec([][]byte{keyA}, time.Hour, clock(now))
	s := fullSession(now, 50)
	good := mustSeal(t, c, s)
	other := mustSeal(t, NewCodec([][]byte{keyB}, time.Hour, clock(now)), s)
	stale, _ := c.keys[0].sealSessionWith("authservice_session", s, now.Add(-2*time.Hour).Unix()-301, make([]byte, 16))
	for _, tc := range []struct {
		name, cookie, value string
		want                error
	}{
		{"another key", "authservice_session", other, ErrForged},
		{"another name", "authservice_sessionx", good, ErrForged},
		{"sealed before SESSION_MAX_AGE+5m", "authservice_session", stale, ErrMalformed},
		{"one bit flipped", "authservice_session", flip(good, 100), ErrForged},
		{"truncated", "authservice_session", good[:len(good)-4], ErrForged},
		{"marker only", "authservice_session", "~", ErrForged},
		{"not base64", "authservice_session", "~!!" + good[3:], ErrMalformed},
		{"a version-1 value with the marker", "authservice_session", "~" + mustSealV1(t, c, s), nil},
	} {
		if got, err := c.OpenSession(tc.cookie, tc.value); err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %+v %v, want %v", tc.name, got, err, tc.want)
		}
	}
	// Login states stay in securecookie's format: a compact value is no
	// login state.
	var ls LoginState
	if err := c.Open("authservice_session", good, &ls); err == nil {
		t.Fatal("a compact session opened as a login state")
	}
}

func mustSealV1(t *testing.T, c *Codec, s *Session) string {
	v, err := c.Seal("authservice_session", s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// The compact format with compression against securecookie's: what a
// session of n groups of about 40 bytes costs in cookie bytes.
func TestCompactIsSmaller(t *testing.T) {
	now := time.Now()
	c := NewCodec([][]byte{keyA}, time.Hour, clock(now))
	for _, n := range []int{10, 100, 1000} {
		s := fullSession(now, n)
		v1, v2 := mustSealV1(t, c, s), mustSeal(t, c, s)
		t.Logf("%4d groups: securecookie %6d bytes (%d cookies), compact %6d bytes (%d cookies)", n, len(v1), len(Split(v1)), len(v2), len(Split(v2)))
		if len(v2) >= len(v1) {
			t.Errorf("%d groups: compact %d ≥ securecookie %d", n, len(v2), len(v1))
		}
	}
	if v := mustSeal(t, c, fullSession(now, 100)); len(Split(v)) != 1 {
		t.Errorf("100 groups of 40 bytes take %d cookies", len(Split(v)))
	}
}

func BenchmarkOpenSession(b *testing.B) {
	now := time.Now()
	c := NewCodec([][]byte{keyA}, time.Hour, clock(now))
	for _, n := range []int{2, 10, 100, 1000} {
		v, _ := c.SealSession("authservice_session", fullSession(now, n))
		b.Run(fmt.Sprintf("groups=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.OpenSession("authservice_session", v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	v1, _ := c.Seal("authservice_session", fullSession(now, 10))
	b.Run("securecookie/groups=10", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.OpenSession("authservice_session", v1); err != nil {
				b.Fatal(err)
			}
		}
	})
}
