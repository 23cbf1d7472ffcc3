//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// groupsCase is one login of a user in n groups of about 40 bytes, through
// one front end, with or without the documented GROUPS_FILTER.
type groupsCase struct {
	provider string // dex (groups in the ID token) or gitlab (groups in userinfo)
	front    string // envoy (the gateway Istio's translation builds for deploy/overlays/istio-extension-provider on Kubeflow master) or nginx (forward auth, default buffers)
	n        int
	filter   bool
}

// groupsOutcome is what the user met, and what the session cost.
type groupsOutcome struct {
	status       int    // of the last answer
	page         string // the title of the service's page, when it answered with one
	groups       int    // in kubeflow-groups at the upstream
	groupsBytes  int    // kubeflow-groups' value at the upstream
	cookies      int    // session cookies the browser holds
	cookieBytes  int    // their names and values
	cookieHeader int    // the Cookie header gunicorn received with the application's own cookie (the gateway passes the check answer's, without the session cookies; nginx the verify answer's)
	body         string
}

// TestGroupsThroughFrontEnds logs in users of 10, 100, 1,000 and 5,000
// groups (Dex: in the ID token; the GitLab-shaped provider: in userinfo)
// through the Envoy-faithful gateway and through nginx forward auth with
// nginx's default buffers, each in front of a real gunicorn with its
// default limits. With the documented GROUPS_FILTER every user works
// everywhere; without it the documented limits hold (UPSTREAM_HEADER_MAX_BYTES
// for gunicorn, FORWARD_AUTH_ANSWER_MAX_BYTES for nginx) and whoever is
// past them gets the service's page naming the settings — never a 400 of
// gunicorn, a 500/502 of nginx, or groups cut without a word. The figures
// go to test/artifacts/groups-budget.md (docs/operations.md's table).
func TestGroupsThroughFrontEnds(t *testing.T) {
	gunicorn := peer.StartGunicorn(t)
	var rows []string
	for _, provider := range []string{"dex", "gitlab"} {
		for _, n := range []int{10, 100, 1000, 5000} {
			for _, filter := range []bool{false, true} {
				for _, front := range []string{"envoy", "nginx"} {
					c := groupsCase{provider: provider, front: front, n: n, filter: filter}
					name := fmt.Sprintf("%s/%d/filter=%t/%s", provider, n, filter, front)
					t.Run(name, func(t *testing.T) {
						o := loginWithGroups(t, c, gunicorn)
						rows = append(rows, fmt.Sprintf("| %s | %s | %d | %s | %s | %d | %s | %d / %s | %s |", provider, front, n, yesNo(filter),
							o.result(), o.groups, kb(o.groupsBytes), o.cookies, kb(o.cookieBytes), kb(o.cookieHeader)))
						want := expectedGroupsOutcome(c)
						if o.page != want.page || o.status != want.status {
							t.Fatalf("%s: got %d %q, want %d %q: %.400s", name, o.status, o.page, want.status, want.page, o.body)
						}
						if o.status == 200 && o.groups != want.groups {
							t.Fatalf("%s: %d groups upstream, want %d", name, o.groups, want.groups)
						}
						if o.status == 200 && c.n <= 100 && o.cookies != 1 {
							t.Fatalf("%s: the session takes %d cookies", name, o.cookies)
						}
					})
				}
			}
		}
	}
	table := "| provider | front | groups | filter | result | forwarded | kubeflow-groups | session cookies / bytes | Cookie at gunicorn |\n" +
		"|---|---|---|---|---|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n"
	os.WriteFile(filepath.Join(peer.RepoRoot(), "test", "artifacts", "groups-budget.md"), []byte(table), 0o644)
	t.Log("\n" + table)
}

// expectedGroupsOutcome is what docs/operations.md promises for a case.
func expectedGroupsOutcome(c groupsCase) groupsOutcome {
	switch {
	case c.filter:
		return groupsOutcome{status: 200, groups: len(peer.KubeflowGroups)}
	case c.n >= 1000:
		// 39 KB and more of group names: past UPSTREAM_HEADER_MAX_BYTES
		// (gunicorn's 8,190-byte header line) for every front end.
		return groupsOutcome{status: 403, page: "Too many groups"}
	case c.n == 100 && c.front == "nginx":
		// 3.9 KB of groups: within gunicorn's line, past what nginx reads
		// of the verify answer (proxy_buffer_size, 4 KB).
		return groupsOutcome{status: 403, page: "Identity too large for this gateway"}
	}
	return groupsOutcome{status: 200, groups: c.n}
}

func loginWithGroups(t *testing.T, c groupsCase, gunicorn string) groupsOutcome {
	return loginWithGroupsEnv(t, c, gunicorn, nil)
}

func loginWithGroupsEnv(t *testing.T, c groupsCase, gunicorn string, extra map[string]string) groupsOutcome {
	t.Helper()
	groups := peer.GroupNames(c.n)
	// The front's port, named to the provider before the front starts: the
	// gateway of this process serves on the listener ReservePort keeps;
	// nginx is told a free one.
	port := peer.FreePort(t)
	if c.front == "envoy" {
		port = peer.ReservePort(t)
	}
	front := fmt.Sprintf("http://127.0.0.1:%d", port)
	var env map[string]string
	var dex *peer.Dex
	var gl *peer.GitLab
	switch c.provider {
	case "dex":
		dex = peer.StartDex(t, peer.DexOptions{GroupList: groups})
		env = peer.KubeflowEnv(dex)
	default:
		gl = peer.StartGitLab(t, peer.GitLabOptions{RedirectURIs: []string{front + "/authservice/oidc/callback"},
			Accounts: map[string]peer.GitLabAccount{"alice": {Sub: "4217", Email: "alice@example.com", Name: "Alice",
				GroupsDirect: peer.KubeflowGroups, Groups: groups}}})
		env = gitlabEnv(gl, front)
	}
	if c.filter {
		env["GROUPS_FILTER"] = peer.KubeflowGroupsFilter
	}
	for k, v := range extra {
		env[k] = v
	}
	svc := peer.StartService(t, env)
	svc.WaitReady(t, 30*time.Second)
	upstream := strings.TrimPrefix(gunicorn, "http://")
	switch c.front {
	case "envoy":
		dexPort := 0 // the GitLab-shaped provider: /dex/ routes nowhere
		if dex != nil {
			dexPort = dex.Port
		}
		peer.LayoutGatewayAt(t, peer.ExtensionProviderLayout, svc.CheckURL, svc.WebURL, dexPort, port, gunicorn)
	default:
		tg := peer.ForwardAuthTargets{Service: strings.TrimPrefix(svc.CheckURL, "http://"), Upstream: upstream, Port: port,
			Dex: strings.TrimPrefix(svc.CheckURL, "http://")}
		if dex != nil {
			tg.Dex = fmt.Sprintf("127.0.0.1:%d", dex.Port)
		}
		peer.StartNginx(t, tg)
	}

	cl := newClient()
	target := front + "/notebook/ns/nb/?format=json"
	var resp *http.Response
	var err error
	if dex != nil {
		resp, err = peer.DexLogin(cl.Client, target, "user@example.com", "12341234")
	} else {
		resp, err = peer.GitLabLogin(cl.Client, target, "alice")
	}
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	o := readOutcome(t, resp)
	frontURL, _ := url.Parse(front)
	// Only the front's own cookies: the providers' (on other ports of
	// 127.0.0.1, which a cookie jar does not tell apart) are dropped.
	for _, ck := range cl.Jar.Cookies(frontURL) {
		if !strings.Contains(ck.Name, "authservice") {
			cl.Jar.SetCookies(frontURL, []*http.Cookie{{Name: ck.Name, Path: "/", MaxAge: -1}})
		}
	}
	for _, ck := range cl.Jar.Cookies(frontURL) {
		if strings.HasPrefix(strings.TrimPrefix(ck.Name, "__Host-"), "authservice_session") {
			o.cookies++
			o.cookieBytes += len(ck.Name) + 1 + len(ck.Value)
		}
	}
	if o.status == 200 {
		// And it keeps working: an API call of the application, which
		// has set a cookie of its own (as Kubeflow's web apps set
		// XSRF-TOKEN), so that the Cookie header reaches gunicorn.
		cl.Jar.SetCookies(frontURL, []*http.Cookie{{Name: "XSRF-TOKEN", Value: strings.Repeat("x", 36), Path: "/"}})
		req, _ := http.NewRequest("GET", front+"/api/namespaces?format=json", nil)
		req.Header.Set("Accept", "application/json")
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		again := readOutcome(t, resp)
		if again.status != 200 || again.groupsBytes != o.groupsBytes {
			t.Fatalf("the next request: %d, %d bytes of groups: %.300s", again.status, again.groupsBytes, again.body)
		}
		o.cookieHeader = again.cookieHeader
	}
	checkGroupsLog(t, groups, o.page == "Too many groups")
	return o
}

func readOutcome(t *testing.T, resp *http.Response) groupsOutcome {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	o := groupsOutcome{status: resp.StatusCode, body: string(b)}
	if resp.StatusCode != 200 {
		if _, title, ok := strings.Cut(o.body, `<h1 id="title">`); ok {
			o.page, _, _ = strings.Cut(title, "<")
		}
		return o
	}
	var e struct {
		Headers map[string][]string `json:"headers"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("not gunicorn's answer at %s: %.300s", resp.Request.URL, b)
	}
	if g := e.Headers["kubeflow-groups"]; len(g) == 1 {
		o.groupsBytes = len(g[0])
		if g[0] != "" {
			o.groups = len(strings.Split(g[0], ","))
		}
	}
	if ck := e.Headers["cookie"]; len(ck) > 0 {
		o.cookieHeader = len(strings.Join(ck, "; "))
	}
	return o
}

// checkGroupsLog: the service logs counts, never the list of groups.
func checkGroupsLog(t *testing.T, groups []string, refused bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(peer.ArtifactsDir(t), "service.log"))
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	for _, g := range groups[len(peer.KubeflowGroups):min(len(groups), 50)] {
		if strings.Contains(log, g) {
			t.Fatalf("the service's log names the group %q", g)
		}
	}
	if want := fmt.Sprintf(`"groups_received":%d`, len(groups)); refused && !strings.Contains(log, want) {
		t.Fatalf("no log line with %s", want)
	}
}

func (o groupsOutcome) result() string {
	if o.status == 200 {
		return "works"
	}
	if o.page != "" {
		return fmt.Sprintf("%d page: %s", o.status, o.page)
	}
	return fmt.Sprint(o.status)
}

func kb(n int) string {
	switch {
	case n == 0:
		return "—"
	case n < 1000:
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f KB", float64(n)/1000)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// TestGroupsWithLimitsRaised: what sessions of 1,000 and 5,000 groups
// would cost with the limits raised as far as they go, behind the gateway
// and an upstream without header limits (not gunicorn): 1,000 groups of 40
// bytes take 4 cookies; 5,000 do not fit the 8 cookies a session may ever
// take, and the page says so.
func TestGroupsWithLimitsRaised(t *testing.T) {
	upstream := peer.StartUpstream(t)
	var rows []string
	for _, n := range []int{1000, 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := groupsCase{provider: "dex", front: "envoy", n: n}
			o := loginWithGroupsEnv(t, c, upstream, map[string]string{"GROUPS_MAX": "100000", "UPSTREAM_HEADER_MAX_BYTES": "1048576", "SESSION_MAX_COOKIES": "8"})
			rows = append(rows, fmt.Sprintf("| %d | %s | %d | %s | %d / %s | %s |", n, o.result(), o.groups, kb(o.groupsBytes), o.cookies, kb(o.cookieBytes), kb(o.cookieHeader)))
			switch {
			case n == 1000 && (o.status != 200 || o.groups != 1000 || o.cookies > 4):
				t.Fatalf("1,000 groups with the limits raised: %d %q, %d groups, %d cookies", o.status, o.page, o.groups, o.cookies)
			case n == 5000 && (o.status != 403 || o.page != "Session too large"):
				t.Fatalf("5,000 groups with the limits raised: %d %q", o.status, o.page)
			}
		})
	}
	table := "| groups | result | forwarded | kubeflow-groups | session cookies / bytes | Cookie at the upstream |\n|---|---|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n"
	os.WriteFile(filepath.Join(peer.RepoRoot(), "test", "artifacts", "groups-budget-raised.md"), []byte(table), 0o644)
	t.Log("\n" + table)
}

// A provider that puts hundreds of groups into its ID token (GitLab's
// groups_direct here): the session keeps it only for logout's
// id_token_hint, and does not fit its cookies with it, so the login keeps
// the session without it (a log line, a count) and the logout still ends
// the provider's session: the end-session endpoint with client_id only (no
// return address, which the provider could not check without the hint).
func TestIDTokenKeptOnlyForLogoutDroppedWhenTooLarge(t *testing.T) {
	port := peer.ReservePort(t)
	gateway := fmt.Sprintf("http://127.0.0.1:%d", port)
	s := startGitLabSetupAt(t, port, peer.GitLabOptions{Profile: "full", PostLogoutURIs: []string{gateway + "/authservice/site/after_logout"},
		Accounts: map[string]peer.GitLabAccount{"alice": {Sub: "4217", Email: "alice@example.com", Name: "Alice",
			GroupsDirect: peer.GroupNames(300), Groups: peer.KubeflowGroups}}}, nil)
	c := newClient()
	resp, err := peer.GitLabLogin(c.Client, s.gateway+"/x?format=json", "alice")
	e := readEcho(t, resp, err)
	if header(e, "kubeflow-groups") != strings.Join(peer.KubeflowGroups, ",") {
		t.Fatalf("groups %v", e.Headers["kubeflow-groups"])
	}
	sess := peer.OpenSession(t, c.cookie(s.gateway, "authservice_session"))
	if sess.IDToken != "" || sess.RefreshToken == "" || sess.AccessToken == "" {
		t.Fatalf("session: ID token %d bytes, refresh %t, access %t", len(sess.IDToken), sess.RefreshToken != "", sess.AccessToken != "")
	}
	b, _ := os.ReadFile(filepath.Join(peer.ArtifactsDir(t), "service.log"))
	if !strings.Contains(string(b), `"part":"session"`) || !strings.Contains(string(b), "kept without it") {
		t.Fatal("the dropped ID token is not logged")
	}
	code, h := status(t, c.noFollow(), s.gateway+"/authservice/logout", nil)
	loc, _ := url.Parse(h.Get("Location"))
	if code != 302 || !strings.HasPrefix(h.Get("Location"), s.gl.Issuer+"/session/end?") || loc.Query().Get("client_id") == "" ||
		loc.Query().Has("id_token_hint") || loc.Query().Has("post_logout_redirect_uri") {
		t.Fatalf("logout: %d %s", code, h.Get("Location"))
	}
}
