package integration

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// dexIDToken logs in at Dex directly as a client would and returns the ID
// token.
func dexIDToken(t *testing.T, dex *peer.Dex) string {
	t.Helper()
	return dexTokens(t, dex).Extra("id_token").(string)
}

// dexTokens logs in at Dex directly as a client would and returns what the
// token endpoint answered.
func dexTokens(t *testing.T, dex *peer.Dex) *oauth2.Token {
	t.Helper()
	return dexTokensAs(t, dex, dex.Opts.User, dex.Opts.Password)
}

// dexTokensAs is dexTokens for another of Dex's users.
func dexTokensAs(t *testing.T, dex *peer.Dex, user, password string) *oauth2.Token {
	t.Helper()
	ctx := context.Background()
	op, err := oidc.NewProvider(ctx, dex.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	conf := oauth2.Config{ClientID: dex.Opts.ClientID, ClientSecret: dex.Opts.ClientSecret, Endpoint: op.Endpoint(),
		RedirectURL: "/authservice/oidc/callback", Scopes: []string{"openid", "email", "profile", "groups"}}
	jar, _ := cookiejar.New(nil)
	var code string
	c := &http.Client{Jar: jar, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if r.URL.Path == "/authservice/oidc/callback" {
			code = r.URL.Query().Get("code")
			return http.ErrUseLastResponse
		}
		return nil
	}}
	v := oauth2.GenerateVerifier()
	resp, err := peer.DexLogin(c, conf.AuthCodeURL("s", oauth2.S256ChallengeOption(v)), user, password)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
