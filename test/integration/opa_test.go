package integration

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// docsRego is the Rego policy of docs/authorization.md, exactly as written
// there.
func docsRego(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(peer.RepoRoot(), "docs", "authorization.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```rego\n")
	src, _, closed := strings.Cut(rest, "```")
	if !ok || !closed || !strings.HasPrefix(src, "package kubeflow.authz") {
		t.Fatal("docs/authorization.md has no ```rego block with package kubeflow.authz")
	}
	return src
}

// TestOPAKubeflowNamespaces: the Kubeflow namespace policy of
// docs/authorization.md, loaded into a real Open Policy Agent server
// (EXTERNAL_AUTHZ_FORMAT=opa), decides after the rules, for sessions and
// bearer tokens, through the Envoy-faithful gateway; OPA's reasons reach
// the user; an undefined result and an OPA that is gone refuse, never
// allow and never 5xx.
func TestOPAKubeflowNamespaces(t *testing.T) {
	opa := peer.StartOPA(t, map[string]string{"kubeflow.rego": docsRego(t)})
	dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a", ExtraUsers: []string{
		"admin@example.com:adminpass12:kubeflow-admins", "ml@example.com:mlpass1234:ml-team"}})
	env := peer.KubeflowEnv(dex)
	env["EXTERNAL_AUTHZ_FORMAT"] = "opa"
	env["EXTERNAL_AUTHZ_URL"] = opa.URL + "/v1/data/kubeflow/authz/decision"
	env["EXTERNAL_AUTHZ_CACHE_TTL"] = "0s"
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30e9)
	gateway := peer.KubeflowGateway(t, sentinelGateway, svc.CheckURL, svc.WebURL, dex.Port)
	s := &setup{dex: dex, svc: svc, gateway: gateway}

	user := dexIDToken(t, dex)
	admin := dexTokensAs(t, dex, "admin@example.com", "adminpass12").Extra("id_token").(string)
	ml := dexTokensAs(t, dex, "ml@example.com", "mlpass1234").Extra("id_token").(string)
	b := newBrowser()
	s.login(t, b, "/start?format=json")

	const own = "kubeflow-user-example-com"
	for _, c := range []struct {
		name, token, path string
		status            int
		reason            string
	}{
		{"own notebook", user, "/notebook/" + own + "/nb/lab", 200, ""},
		{"another user's notebook", user, "/notebook/kubeflow-bob-example-com/nb/lab", 403, "user@example.com may not use namespace kubeflow-bob-example-com"},
		{"own namespace in a web app's API", user, "/jupyter/api/namespaces/" + own + "/notebooks", 200, ""},
		{"a team namespace without the team", user, "/volumes/api/namespaces/team-ml/pvcs", 403, "user@example.com may not use namespace team-ml"},
		{"a team namespace with the team", ml, "/volumes/api/namespaces/team-ml/pvcs", 200, ""},
		{"another namespace hidden behind ..%2F", user, "/notebook/" + own + "/..%2F..%2Fnotebook/kubeflow-bob-example-com/x", 403, "may not use namespace kubeflow-bob-example-com"},
		{"the dashboard", user, "/", 200, ""},
		{"an administrator anywhere", admin, "/notebook/kubeflow-bob-example-com/nb/", 200, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := bearerGet(t, gateway, c.path, c.token)
			if a.status != c.status {
				t.Fatalf("want %d: %s", c.status, a)
			}
			if c.status == 403 {
				var body struct{ Reason string }
				json.Unmarshal(a.body, &body)
				if !strings.Contains(body.Reason, c.reason) || a.upstreamEcho() != nil {
					t.Fatalf("reason %q, want %q", body.Reason, c.reason)
				}
			}
		})
	}

	// A browser session is judged the same way.
	resp, err := b.Get(gateway + "/notebook/" + own + "/nb/?format=json")
	if err != nil {
		t.Fatal(err)
	}
	readEcho(t, resp)
	req, _ := http.NewRequest("GET", gateway+"/notebook/kubeflow-bob-example-com/nb/", nil)
	req.Header.Set("Accept", "text/html")
	resp, err = b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page := toAnswer(resp)
	if page.status != 403 || !strings.Contains(string(page.body), "may not use namespace kubeflow-bob-example-com") {
		t.Fatalf("a session into another namespace: %s", page)
	}
	m := scrape(t, svc)
	if m[`oidc_authservice_authorizer_decisions_total{result="allow"}`] < 5 || m[`oidc_authservice_authorizer_decisions_total{result="deny"}`] < 4 ||
		m[`oidc_authservice_checks_total{decision="forbidden",protocol="http",reason="authorizer"}`] < 4 {
		t.Errorf("metrics: %v", keysWith(m, "authorizer"))
	}

	// The policy path mistyped: OPA's result is undefined, which refuses.
	env["EXTERNAL_AUTHZ_URL"] = opa.URL + "/v1/data/kubeflow/authz/desicion"
	typo := peer.StartService(t, env)
	typo.WaitReady(t, 30e9)
	if a := bearerGet(t, typo.CheckURL, "/notebook/"+own+"/nb/", user); a.status != 403 || !strings.Contains(string(a.body), "no result") {
		t.Fatalf("an undefined result: %s", a)
	}

	// OPA gone: refused with a 403 that says why, never the gateway's 5xx.
	opa.Stop()
	for _, path := range []string{"/notebook/" + own + "/nb/", "/"} {
		a := bearerGet(t, gateway, path, user)
		if a.status != 403 || a.header.Get("Retry-After") == "" || !strings.Contains(string(a.body), "authorization service unavailable") {
			t.Fatalf("OPA gone, %s: %s", path, a)
		}
	}
}
