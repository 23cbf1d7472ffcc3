package upstreamtoken

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The issued token carries the groups as a list (for authorization
// policies on claims) and comma-joined in groups_csv: a gateway that copies
// a claim to a header gets "a,b" from it, where Envoy would write the list
// as base64 JSON.
func TestSignGroupsClaims(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := newKey(k)
	if err != nil {
		t.Fatal(err)
	}
	is, err := New([]Key{key}, "http://issuer", "kubeflow", 5*time.Minute, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	for groups, want := range map[string]string{"a,b": "a,b", "": ""} {
		var gs []string
		if groups != "" {
			gs = strings.Split(groups, ",")
		}
		tok, _, err := is.Sign("user@example.com", gs)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
		var c map[string]any
		json.Unmarshal(b, &c)
		if c["groups_csv"] != want || c["groups"] == nil {
			t.Errorf("groups %q: claims %v", groups, c)
		}
	}
}
