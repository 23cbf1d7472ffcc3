package session

import (
	"encoding/base64"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/securecookie"
)

// securecookieOf is the library's own codec for a secret, with its own JSON
// serializer: the reference the sealer is held to.
func securecookieOf(secret []byte) *securecookie.SecureCookie {
	k := DeriveKey(secret)
	sc := securecookie.New(k.Hash, k.Block)
	sc.SetSerializer(securecookie.JSONEncoder{})
	sc.MaxLength(0)
	return sc
}

var sealCases = []struct {
	name string
	v    any
}{
	{"authservice_session", &Session{ID: "i", Subject: "s", User: "user@example.com", Groups: []string{"a", "b"}, Created: 1, Expires: 2,
		IDToken: strings.Repeat("t", 5000)}},
	{"authservice_state_JbYrR77vQLIIGHGY7IGV5g", &LoginState{State: "JbYrR77vQLIIGHGY7IGV5g", Verifier: "v", Nonce: "n",
		URL: "https://kf.example.com/a?b=<c>&d='e'\u2028", Created: 3}},
}

// What the sealer writes is what securecookie writes, byte for byte, for
// the same IV and second.
func TestSealIsSecurecookiesFormat(t *testing.T) {
	sc := securecookieOf(keyA)
	s := newSealer(DeriveKey(keyA))
	for _, c := range sealCases {
		ref, err := sc.Encode(c.name, c.v)
		if err != nil {
			t.Fatal(err)
		}
		outer, err := base64.URLEncoding.DecodeString(ref)
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.SplitN(string(outer), "|", 3)
		ts, _ := strconv.ParseInt(parts[0], 10, 64)
		ct, err := base64.URLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.sealWith(c.name, c.v, ts, ct[:16])
		if err != nil {
			t.Fatal(err)
		}
		if got != ref {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, ref)
		}
	}
}

// securecookie opens what Seal seals, with the first key or in a list of
// keys; and Open opens what securecookie sealed before this sealer existed.
func TestSealOpensWithSecurecookie(t *testing.T) {
	c := NewCodec([][]byte{keyA, keyB}, time.Hour, time.Now)
	for _, cs := range sealCases {
		v, err := c.Seal(cs.name, cs.v)
		if err != nil {
			t.Fatal(err)
		}
		var s Session
		var ls LoginState
		dst := any(&s)
		if _, ok := cs.v.(*LoginState); ok {
			dst = &ls
		}
		if err := securecookie.DecodeMulti(cs.name, v, dst, securecookieOf(keyB), securecookieOf(keyA)); err != nil {
			t.Fatalf("%s: securecookie cannot open it: %v", cs.name, err)
		}
		if err := securecookie.DecodeMulti(cs.name+"x", v, dst, securecookieOf(keyA)); err == nil {
			t.Fatalf("%s: opened under another name", cs.name)
		}
		old, _ := securecookieOf(keyA).Encode(cs.name, cs.v)
		if err := c.Open(cs.name, old, dst); err != nil {
			t.Fatalf("%s: a value securecookie sealed does not open: %v", cs.name, err)
		}
	}
	if l, ok := sealCases[1].v.(*LoginState); ok {
		v, _ := c.Seal(sealCases[1].name, l)
		var got LoginState
		if err := c.Open(sealCases[1].name, v, &got); err != nil || got != *l {
			t.Fatalf("round trip: %+v %v", got, err)
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	c := NewCodec([][]byte{keyA}, time.Hour, time.Now)
	ls := &LoginState{State: "JbYrR77vQLIIGHGY7IGV5g", Verifier: "hg8MAggVfZx0J3OuCRLDJqyJsTQqwFv2TRWwoXjqg1s", Nonce: "9WhE8HZuHXgrkhqVBt-Wtg",
		URL: "https://kubeflow.example.com/jupyter/", Created: time.Now().Unix()}
	b.Run("sealer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.Seal("authservice_state_"+ls.State, ls)
		}
	})
	b.Run("securecookie", func(b *testing.B) {
		sc := securecookieOf(keyA)
		b.ReportAllocs()
		for b.Loop() {
			sc.Encode("authservice_state_"+ls.State, ls)
		}
	})
}

// Open refuses what securecookie refuses, for the same reasons: another
// key or name is a forgery, an old seal or a broken value is malformed.
func TestOpenRefusesAsSecurecookie(t *testing.T) {
	c := NewCodec([][]byte{keyA}, time.Hour, time.Now)
	s := sample(time.Now())
	good, _ := c.Seal("authservice_session", s) // version 1: sessions sealed before the compact format
	other, _ := NewCodec([][]byte{keyB}, time.Hour, time.Now).Seal("authservice_session", s)
	old := securecookieOf(keyA)
	old.MaxAge(3600 + 300)
	raw, _ := base64.URLEncoding.DecodeString(good)
	parts := strings.SplitN(string(raw), "|", 3)
	ct, _ := base64.URLEncoding.DecodeString(parts[1])
	stale, _ := c.keys[0].sealWith("authservice_session", s, time.Now().Add(-2*time.Hour).Unix()-301, ct[:16])
	for _, tc := range []struct {
		name, cookie, value string
		want                error
	}{
		{"another key", "authservice_session", other, ErrForged},
		{"another name", "authservice_state_x", good, ErrForged},
		{"sealed before SESSION_MAX_AGE+5m", "authservice_session", stale, ErrMalformed},
		{"not base64", "authservice_session", "!!" + good, ErrMalformed},
		{"two parts", "authservice_session", base64.URLEncoding.EncodeToString([]byte("1|x")), ErrForged},
		{"truncated", "authservice_session", good[:len(good)-8], nil},
	} {
		var got Session
		err := c.Open(tc.cookie, tc.value, &got)
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if securecookie.DecodeMulti(tc.cookie, tc.value, &got, old) == nil {
			t.Errorf("%s: securecookie opens it", tc.name)
		}
	}
	// A MAC may contain '|': only the first two separate the parts.
	for range 200 {
		v, _ := c.Seal("authservice_session", s)
		if _, err := c.OpenSession("authservice_session", v); err != nil {
			t.Fatalf("%s: %v", v, err)
		}
	}
}

// FuzzOpenAsSecurecookie: Open accepts exactly what securecookie accepts, and reads the
// same session from it.
func FuzzOpenAsSecurecookie(f *testing.F) {
	c := NewCodec([][]byte{keyA, keyB}, time.Hour, time.Now)
	ref := []securecookie.Codec{securecookieOf(keyA), securecookieOf(keyB)}
	for _, r := range ref {
		r.(*securecookie.SecureCookie).MaxAge(3600 + 300)
	}
	good, _ := c.Seal("authservice_session", sample(time.Now()))
	f.Add("authservice_session", good)
	f.Add("authservice_session", good[:40])
	f.Add("x", base64.URLEncoding.EncodeToString([]byte("1|AAAA|")))
	f.Fuzz(func(t *testing.T, name, value string) {
		if value == "" || len(value) > MaxValue {
			return
		}
		var got, want Session
		err := c.Open(name, value, &got)
		wantErr := securecookie.DecodeMulti(name, value, &want, ref...)
		if (err == nil) != (wantErr == nil) || err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q %q: %v %+v, securecookie %v %+v", name, value, err, got, wantErr, want)
		}
	})
}
