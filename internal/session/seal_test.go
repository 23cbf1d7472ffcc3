package session

import (
	"encoding/base64"
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
