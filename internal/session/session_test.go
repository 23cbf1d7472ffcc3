package session

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

var (
	keyA = []byte(strings.Repeat("a", 32))
	keyB = []byte(strings.Repeat("b", 32))
)

func clock(t time.Time) func() time.Time { return func() time.Time { return t } }

func sample(now time.Time) *Session {
	return &Session{Subject: "sub-1", User: "user@example.com", Groups: []string{"a", "b"},
		Created: now.Unix(), Expires: now.Add(time.Hour).Unix(), RefreshToken: "rt"}
}

func TestSealOpenRotationTamperExpiry(t *testing.T) {
	now := time.Now()
	old := NewCodec([][]byte{keyA}, time.Hour, clock(now))
	rotated := NewCodec([][]byte{keyB, keyA}, time.Hour, clock(now))
	onlyNew := NewCodec([][]byte{keyB}, time.Hour, clock(now))
	later := NewCodec([][]byte{keyA}, time.Hour, clock(now.Add(2*time.Hour)))

	sealedOld, err := old.SealSession("authservice_session", sample(now))
	if err != nil {
		t.Fatal(err)
	}
	sealedNew, _ := rotated.SealSession("authservice_session", sample(now))

	cases := []struct {
		name    string
		codec   *Codec
		cookie  string
		value   string
		wantErr error
	}{
		{"same key", old, "authservice_session", sealedOld, nil},
		{"old key kept after rotation", rotated, "authservice_session", sealedOld, nil},
		{"new key seals after rotation", old, "authservice_session", sealedNew, ErrForged},
		{"old key removed", onlyNew, "authservice_session", sealedOld, ErrForged},
		{"rotated codec opens its own", onlyNew, "authservice_session", sealedNew, nil},
		{"expired by the sealed expiry", later, "authservice_session", sealedOld, ErrExpired},
		{"moved to another cookie name", old, "other", sealedOld, ErrForged},
		{"tampered", old, "authservice_session", flip(sealedOld, 20), nil /* any error */},
		{"truncated", old, "authservice_session", sealedOld[:len(sealedOld)/2], nil},
		{"empty", old, "authservice_session", "", ErrMalformed},
		{"garbage", old, "authservice_session", "!!!not base64!!!", nil},
		{"oversized", old, "authservice_session", strings.Repeat("A", MaxValue+1), ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := c.codec.OpenSession(c.cookie, c.value)
			wantOK := c.wantErr == nil && !strings.Contains(c.name, "tamper") && !strings.Contains(c.name, "truncat") && c.name != "garbage"
			if wantOK {
				if err != nil || s.User != "user@example.com" || len(s.Groups) != 2 {
					t.Fatalf("open = %+v, %v", s, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("opened a bad value: %+v", s)
			}
			if c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Fatalf("err = %v, want %v", err, c.wantErr)
			}
		})
	}
}

func flip(s string, i int) string {
	b := []byte(s)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestChunking(t *testing.T) {
	now := time.Now()
	c := NewCodec([][]byte{keyA}, time.Hour, clock(now))
	big := sample(now)
	big.IDToken = strings.Repeat("x", 9000)
	sealed, err := c.SealSession("authservice_session", big)
	if err != nil {
		t.Fatal(err)
	}
	chunks := Split(sealed)
	if len(chunks) < 3 {
		t.Fatalf("expected several chunks, got %d", len(chunks))
	}
	for i, ch := range chunks {
		if len(ChunkName("authservice_session", i))+len(ch) > 4000 {
			t.Fatalf("chunk %d too large: %d", i, len(ch))
		}
	}
	h := http.Header{}
	var parts []string
	for i, ch := range chunks {
		parts = append(parts, ChunkName("authservice_session", i)+"="+ch)
	}
	h.Set("Cookie", "other=1; "+strings.Join(parts, "; "))
	got, _ := NewCookies(CookieOptions{Name: "authservice_session"}).ReadSession(h, false)
	if got != sealed {
		t.Fatal("chunks did not rejoin to the sealed value")
	}
	if s, err := c.OpenSession("authservice_session", got); err != nil || s.IDToken != big.IDToken {
		t.Fatalf("open joined: %v", err)
	}

	// A missing middle chunk, a wrong count, a stale extra first chunk.
	bad := []string{
		strings.Replace(h.Get("Cookie"), "authservice_session_1=", "x_1=", 1),
		"authservice_session=9." + chunks[0][2:],
		"authservice_session=2." + strings.Repeat("A", 10),
	}
	for i, cookie := range bad {
		h := http.Header{"Cookie": {cookie}}
		if v, _ := NewCookies(CookieOptions{Name: "authservice_session"}).ReadSession(h, false); v != "" {
			if _, err := c.OpenSession("authservice_session", v); err == nil {
				t.Errorf("bad chunk set %d opened", i)
			}
		}
	}
	if Split(strings.Repeat("A", MaxValue+1)) != nil {
		t.Error("Split accepted a value beyond the chunk limit")
	}
}

func TestCookieValue(t *testing.T) {
	h := http.Header{"Cookie": {`a=1; authservice_session="quoted"; b=2`, "c=3"}}
	cases := map[string]string{"a": "1", "authservice_session": "quoted", "b": "2", "c": "3"}
	for name, want := range cases {
		if got, ok := CookieValue(h, name); !ok || got != want {
			t.Errorf("%s = %q %v", name, got, ok)
		}
	}
	if _, ok := CookieValue(h, "authservice"); ok {
		t.Error("prefix of a name matched")
	}
	got := CookiesWithPrefix(http.Header{"Cookie": {"s_1=a; x=b; s_2=c"}}, "s_", 10)
	if len(got) != 2 || got[1].Value != "c" {
		t.Errorf("prefix = %v", got)
	}
}

func TestLoginState(t *testing.T) {
	ls, err := NewLoginState(bytes.NewReader(bytes.Repeat([]byte{7}, 64)), "https://h/p?q=1", 10)
	if err != nil {
		t.Fatal(err)
	}
	if !ValidState(ls.State) || len(ls.Nonce) < 20 || len(ls.Verifier) < 43 {
		t.Fatalf("state %+v", ls)
	}
	if ls.Challenge() == ls.Verifier || len(ls.Challenge()) != 43 {
		t.Fatal("challenge is not S256 of the verifier")
	}
	for _, s := range []string{"", "short", strings.Repeat("a", 23), "aaaaaaaaaaaaaaaaaaaa/.", "aaaaaaaaaaaaaaaaaaaa;b"} {
		if ValidState(s) {
			t.Errorf("ValidState(%q)", s)
		}
	}
	if _, err := NewLoginState(bytes.NewReader(nil), "", 0); err == nil {
		t.Fatal("no error without randomness")
	}
}

func TestDerivedKeysIndependent(t *testing.T) {
	raw := strings.Repeat("k", 32)
	a, b := DeriveKey([]byte(raw)), DeriveKey([]byte(raw+"!"))
	if string(a.Hash) == string(b.Hash) || string(a.Hash) == string(a.Block) {
		t.Fatal("derived keys are not independent")
	}
}
