package session

import (
	"strings"
	"testing"
	"time"
)

func TestLooksSealed(t *testing.T) {
	c := NewCodec([][]byte{[]byte(strings.Repeat("k", 32))}, time.Hour, time.Now)
	sealed, err := c.Seal("authservice_session", &Session{User: "u", Expires: time.Now().Add(time.Hour).Unix(), Subject: "s"})
	if err != nil {
		t.Fatal(err)
	}
	other := NewCodec([][]byte{[]byte(strings.Repeat("o", 32))}, time.Hour, time.Now)
	foreign, _ := other.Seal("authservice_session", &Session{User: "u", Expires: 1, Groups: make([]string, 400)})
	chunks := Split(foreign + strings.Repeat("A", 4*chunkSize))
	for _, v := range []string{sealed, foreign, chunks[0]} {
		if !LooksSealed(v) {
			t.Errorf("a sealed value not recognised: %.60s", v)
		}
	}
	for _, v := range []string{
		"", "4f1d0c0b6a0e2d6b1f3a9c8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c", // GitLab's OAuth token shape (hex)
		"kX3dH7vQm2Lp9sT1wYz4bN6cR8eF0gJ5aU-_iO2qWxE",       // node-oidc-provider's opaque token (43 base64url characters)
		"glpat-xxxxxxxxxxxxxxxxxxxx", "a.b.c", "2.", "MTIz", // "123" without bars
		strings.Repeat("A", 100),
	} {
		if LooksSealed(v) {
			t.Errorf("%q taken for a sealed value", v)
		}
	}
}
