//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// gitlabEnv is the configuration docs/gitlab.md gives a GitLab user.
func gitlabEnv(g *peer.GitLab, gateway string) map[string]string {
	return map[string]string{
		"OIDC_PROVIDER":          g.Issuer,
		"CLIENT_ID":              g.Opts.ClientID,
		"CLIENT_SECRET":          g.Opts.ClientSecret,
		"REDIRECT_URL":           gateway + "/authservice/oidc/callback",
		"OIDC_SCOPES":            "openid profile email",
		"AUTHSERVICE_URL_PREFIX": "/authservice/",
		"USERID_CLAIM":           "email",
		"GROUPS_CLAIM":           "groups",
		"AFTER_LOGOUT_URL":       "/authservice/site/after_logout",
		"SESSION_KEYS":           peer.SessionKey,
	}
}

type gitlabSetup struct {
	gl      *peer.GitLab
	svc     *peer.Service
	gateway string
}

func startGitLabSetup(t *testing.T, o peer.GitLabOptions, env map[string]string) *gitlabSetup {
	t.Helper()
	return startGitLabSetupAt(t, peer.ReservePort(t), o, env)
}

// startGitLabSetupAt: the gateway on port, one of peer.ReservePort.
func startGitLabSetupAt(t *testing.T, port int, o peer.GitLabOptions, env map[string]string) *gitlabSetup {
	t.Helper()
	gateway := fmt.Sprintf("http://127.0.0.1:%d", port)
	o.RedirectURIs = []string{gateway + "/authservice/oidc/callback"}
	g := peer.StartGitLab(t, o)
	e := gitlabEnv(g, gateway)
	for k, v := range env {
		e[k] = v
	}
	svc := peer.StartService(t, e)
	svc.WaitReady(t, 30*time.Second)
	peer.KubeflowGatewayAt(t, peer.EnvoyFilterLayout, svc.CheckURL, svc.WebURL, 0, port)
	return &gitlabSetup{gl: g, svc: svc, gateway: gateway}
}

func TestGitLabShapedProvider(t *testing.T) {
	// Short lifetimes instead of GitLab's 120 s ID tokens and 2 h access
	// tokens: the session must outlive both.
	s := startGitLabSetup(t, peer.GitLabOptions{IDTokenTTL: 2 * time.Second, AccessTokenTTL: 3 * time.Second},
		map[string]string{"REFRESH_BEFORE_EXPIRY": "1s"})
	c := newClient()
	resp, err := peer.GitLabLogin(c.Client, s.gateway+"/pipeline/runs?format=json&ns=a", "alice")
	e := readEcho(t, resp, err)
	if header(e, "kubeflow-userid") != "alice@example.com" || header(e, "kubeflow-groups") != "acme,acme/ml" {
		t.Fatalf("identity %v", e.Headers)
	}
	if e.Path != "/pipeline/runs" || e.Query != "format=json&ns=a" {
		t.Fatalf("landed on %s?%s", e.Path, e.Query)
	}
	first := c.cookie(s.gateway, "authservice_session")

	// Past the ID token's and the access token's lifetimes.
	time.Sleep(4 * time.Second)
	for i := 0; i < 3; i++ {
		resp, err := c.noFollow().Get(s.gateway + "/later?format=json")
		e = readEcho(t, resp, err)
		if header(e, "kubeflow-userid") != "alice@example.com" || header(e, "kubeflow-groups") != "acme,acme/ml" {
			t.Fatalf("after expiry: %v", e.Headers)
		}
	}
	if c.cookie(s.gateway, "authservice_session") == first {
		t.Fatal("the session was not refreshed (same cookie after the access token expired)")
	}
}

func TestGitLabRejectsGroupsScope(t *testing.T) {
	s := startGitLabSetup(t, peer.GitLabOptions{}, map[string]string{"OIDC_SCOPES": "profile email groups"})
	c := newClient()
	resp, err := c.Get(s.gateway + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The provider answers invalid_scope; the callback shows a 401 page.
	if resp.StatusCode != 401 {
		t.Fatalf("with a groups scope: %d at %s", resp.StatusCode, resp.Request.URL)
	}
}

// An account that registered a colleague's address without verifying it
// (email_verified: false) cannot log in as that colleague with
// USERID_CLAIM=email: a 403 page, no session. ALLOW_UNVERIFIED_EMAIL lets
// it in, for providers that never verify addresses.
func TestUnverifiedEmailRefusedAtLogin(t *testing.T) {
	s := startGitLabSetup(t, peer.GitLabOptions{}, nil)
	c := newClient()
	resp, err := peer.GitLabLogin(c.Client, s.gateway+"/x?format=json", "mallory")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || c.cookie(s.gateway, "authservice_session") != "" {
		t.Fatalf("unverified address: HTTP %d at %s, session %q", resp.StatusCode, resp.Request.URL, c.cookie(s.gateway, "authservice_session"))
	}

	s = startGitLabSetup(t, peer.GitLabOptions{}, map[string]string{"ALLOW_UNVERIFIED_EMAIL": "true"})
	c = newClient()
	resp, err = peer.GitLabLogin(c.Client, s.gateway+"/x?format=json", "mallory")
	if e := readEcho(t, resp, err); header(e, "kubeflow-userid") != "alice@example.com" {
		t.Fatalf("with ALLOW_UNVERIFIED_EMAIL: %v", e.Headers)
	}
}
