package provider

import (
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// The login URL built from parts is, byte for byte, the one oauth2 writes,
// for every shape of configuration and for values query escaping changes.
func TestAuthURLIsOAuth2s(t *testing.T) {
	configs := []oauth2.Config{
		{ClientID: "kubeflow-oidc-authservice", RedirectURL: "/authservice/oidc/callback", Scopes: []string{"openid", "profile", "email", "groups"},
			Endpoint: oauth2.Endpoint{AuthURL: "/dex/auth"}},
		{ClientID: "a b&c=d", RedirectURL: "https://kf.example.com/authservice/oidc/callback?x=1&y=2",
			Endpoint: oauth2.Endpoint{AuthURL: "https://gitlab.example.com/oauth/authorize?prompt=login"}},
		{ClientID: "c", Endpoint: oauth2.Endpoint{AuthURL: "https://idp.example.com/authorize"}},
		{ClientID: "xOidcAuthserviceState0", Endpoint: oauth2.Endpoint{AuthURL: "https://idp.example.com/a"}}, // no template
	}
	values := [][3]string{
		{"JbYrR77vQLIIGHGY7IGV5g", "9WhE8HZuHXgrkhqVBt-Wtg", "hg8MAggVfZx0J3OuCRLDJqyJsTQqwFv2TRWwoXjqg1s"},
		{"a b", "n&o", "c=d/e"},
		{"", "", ""},
	}
	for i, cfg := range configs {
		a := newAuthURL(cfg)
		if (a.parts == nil) != (i == 3) {
			t.Errorf("config %d: template %v", i, a.parts)
		}
		for _, v := range values {
			want := cfg.AuthCodeURL(v[0], oidc.Nonce(v[1]), oauth2.SetAuthURLParam("code_challenge", v[2]),
				oauth2.SetAuthURLParam("code_challenge_method", "S256"))
			if got := a.url(v[0], v[1], v[2]); got != want {
				t.Errorf("config %d, %q:\n got %s\nwant %s", i, v, got, want)
			}
		}
	}
}

func BenchmarkAuthURL(b *testing.B) {
	a := newAuthURL(oauth2.Config{ClientID: "kubeflow-oidc-authservice", RedirectURL: "/authservice/oidc/callback",
		Scopes: []string{"openid", "profile", "email", "groups"}, Endpoint: oauth2.Endpoint{AuthURL: "/dex/auth"}})
	b.ReportAllocs()
	for b.Loop() {
		a.url("JbYrR77vQLIIGHGY7IGV5g", "9WhE8HZuHXgrkhqVBt-Wtg", "hg8MAggVfZx0J3OuCRLDJqyJsTQqwFv2TRWwoXjqg1s")
	}
}
