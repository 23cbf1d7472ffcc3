package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// groupsSetup is Kubeflow in miniature with a Dex user in the given groups.
func groupsSetup(t *testing.T, groups []string, env map[string]string) *setup {
	t.Helper()
	dex := peer.StartDex(t, peer.DexOptions{GroupList: groups})
	e := kubeflowEnv(dex)
	for k, v := range env {
		e[k] = v
	}
	svc := peer.StartService(t, e)
	svc.WaitReady(t, 30*time.Second)
	return &setup{dex: dex, svc: svc, gateway: gatewayFor(t, peer.EnvoyFilterLayout, svc, dex)}
}

// loginPage logs in and returns the final status and body (a page of the
// service, or the upstream's echo).
func loginPage(t *testing.T, s *setup) (int, string) {
	t.Helper()
	resp, err := peer.DexLogin(newBrowser().Client, s.gateway+"/notebook/?format=json", "user@example.com", "12341234")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A user in more groups than GROUPS_MAX: the login is refused with a page
// that gives the counts and the settings, counted and logged once. Before,
// the groups past the 256th were dropped silently and the user met a 403
// or a missing namespace somewhere else.
func TestTooManyGroupsRefusedAtLogin(t *testing.T) {
	s := groupsSetup(t, peer.GroupNames(300), nil)
	code, body := loginPage(t, s)
	if code != 403 || !strings.Contains(body, "Too many groups") || !strings.Contains(body, "300 groups") || !strings.Contains(body, "GROUPS_FILTER") {
		t.Fatalf("login of a user in 300 groups: %d %.600s", code, body)
	}
	if m := scrape(t, s.svc); m[`oidc_authservice_identity_limits_total{action="refused",limit="groups",source="login"}`] != 1 ||
		m[`oidc_authservice_logins_failed_total{reason="identity_too_large"}`] != 1 {
		t.Fatalf("metrics: %v", m)
	}

	// With the filter, the same user works and forwards what matters.
	s = groupsSetup(t, peer.GroupNames(300), map[string]string{"GROUPS_FILTER": peer.KubeflowGroupsFilter})
	code, body = loginPage(t, s)
	var e echo
	json.Unmarshal([]byte(body), &e)
	if code != 200 || strings.Join(e.Headers["kubeflow-groups"], "|") != strings.Join(peer.KubeflowGroups, ",") {
		t.Fatalf("filtered: %d %.300s", code, body)
	}

	// Truncation, when the operator accepts it: the first 256 groups.
	s = groupsSetup(t, peer.GroupNames(300), map[string]string{"GROUPS_OVERFLOW": "truncate", "UPSTREAM_HEADER_MAX_BYTES": "65536"})
	code, body = loginPage(t, s)
	e = echo{}
	json.Unmarshal([]byte(body), &e)
	if code != 200 || len(e.Headers["kubeflow-groups"]) != 1 || len(strings.Split(e.Headers["kubeflow-groups"][0], ",")) != 256 {
		t.Fatalf("truncated: %d %.300s", code, body)
	}
	if m := scrape(t, s.svc); m[`oidc_authservice_identity_limits_total{action="truncated",limit="groups",source="login"}`] != 1 {
		t.Fatal("truncation not counted")
	}
}

// UPSTREAM_TOKEN=id_token with a provider that puts 500 groups in the ID
// token (29 KB, Dex-like): the login is refused with a page naming the
// documented alternative, UPSTREAM_TOKEN=issued, with which the same user
// works (the issued token carries only the filtered groups). Before, the
// ID token was dropped from the session without a word and the upstream
// got no Authorization at all.
func TestOversizedIDTokenForTheUpstream(t *testing.T) {
	env := map[string]string{"GROUPS_FILTER": peer.KubeflowGroupsFilter, "UPSTREAM_TOKEN": "id_token"}
	s := groupsSetup(t, peer.GroupNames(500), env)
	code, body := loginPage(t, s)
	if code != 403 || !strings.Contains(body, "ID token too large") || !strings.Contains(body, "UPSTREAM_TOKEN=issued") {
		t.Fatalf("UPSTREAM_TOKEN=id_token, 500 groups in the ID token: %d %.600s", code, body)
	}
	if m := scrape(t, s.svc); m[`oidc_authservice_identity_limits_total{action="refused",limit="id_token",source="login"}`] != 1 {
		t.Fatal("not counted")
	}

	env["UPSTREAM_TOKEN"] = "issued"
	s = groupsSetup(t, peer.GroupNames(500), env)
	b := newBrowser()
	e := s.login(t, b, "/notebook/?format=json")
	auth := e.Headers["authorization"]
	if len(auth) != 1 || len(auth[0]) > 2048 {
		t.Fatalf("issued token: %q", auth)
	}
	c := verifyLikeIstio(t, s.svc.WebURL, "http://authservice.istio-system.svc.cluster.local:8082", strings.TrimPrefix(auth[0], "Bearer "))
	if g, _ := c["groups"].([]any); len(g) != len(peer.KubeflowGroups) {
		t.Fatalf("issued token's groups %v", c["groups"])
	}
	// The session stays in one cookie: the 29 KB ID token is not kept.
	gw, _ := url.Parse(s.gateway)
	for _, ck := range b.Jar.Cookies(gw) {
		if ck.Name == "authservice_session_1" {
			t.Fatal("the session takes two cookies")
		}
	}
	resp, err := b.Get(s.gateway + "/api/x?format=json")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("next request: %d", resp.StatusCode)
	}
	resp.Body.Close()
}
