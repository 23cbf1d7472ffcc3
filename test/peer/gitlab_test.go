package peer

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// TestGitLabShape checks the provider behaves as CONTRACT.md §3 says GitLab
// does, with go-oidc and x/oauth2 as the relying party.
func TestGitLabShape(t *testing.T) {
	redirect := "http://127.0.0.1:1/cb"
	g := StartGitLab(t, GitLabOptions{RedirectURIs: []string{redirect}})
	ctx := context.Background()
	op, err := oidc.NewProvider(ctx, g.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	var md struct {
		EndSession string `json:"end_session_endpoint"`
		Revocation string `json:"revocation_endpoint"`
	}
	op.Claims(&md)
	if md.EndSession != "" || md.Revocation == "" {
		t.Fatalf("discovery: end_session %q revocation %q", md.EndSession, md.Revocation)
	}
	conf := oauth2.Config{ClientID: "kubeflow", ClientSecret: "kubeflow-secret", Endpoint: op.Endpoint(), RedirectURL: redirect,
		Scopes: []string{"openid", "profile", "email"}}
	jar, _ := cookiejar.New(nil)
	var code string
	c := &http.Client{Jar: jar, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if r.URL.Host == "127.0.0.1:1" {
			code = r.URL.Query().Get("code")
			return http.ErrUseLastResponse
		}
		return nil
	}}
	verifier := oauth2.GenerateVerifier()
	resp, err := GitLabLogin(c, conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier), oidc.Nonce("n")), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if code == "" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("no code; ended at %s (%d): %.500s", resp.Request.URL, resp.StatusCode, b)
	}
	resp.Body.Close()
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	idt, err := op.Verifier(&oidc.Config{ClientID: "kubeflow"}).Verify(ctx, tok.Extra("id_token").(string))
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	idt.Claims(&claims)
	if claims["sub"] != "4217" || claims["email"] != "alice@example.com" || claims["groups"] != nil || claims["groups_direct"] == nil {
		t.Fatalf("ID token claims %v", claims)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token")
	}
	ui, err := op.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatal(err)
	}
	var uc map[string]any
	ui.Claims(&uc)
	if g, ok := uc["groups"].([]any); !ok || len(g) != 2 {
		t.Fatalf("userinfo groups %v", uc["groups"])
	}
	// A groups scope is refused, as GitLab does.
	code = ""
	bad := conf
	bad.Scopes = append(bad.Scopes, "groups")
	resp, _ = c.Get(bad.AuthCodeURL("st2"))
	if resp != nil {
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != 302 || !contains(loc, "error=invalid_scope") {
			t.Fatalf("groups scope: %d %s", resp.StatusCode, loc)
		}
	}
	// Revoking the application: userinfo refuses the token, refresh fails.
	if err := g.Revoke("4217"); err != nil {
		t.Fatal(err)
	}
	if _, err := op.UserInfo(ctx, oauth2.StaticTokenSource(tok)); err == nil {
		t.Fatal("userinfo accepted a revoked token")
	}
	tok.Expiry = tok.Expiry.Add(-100000e9)
	if _, err := conf.TokenSource(ctx, tok).Token(); err == nil {
		t.Fatal("refresh accepted a revoked grant")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
