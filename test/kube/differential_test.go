package kube

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// entries are the jwt items of the one AuthenticationConfiguration file
// both kube-apiserver and the service read: the GitLab user + CI job
// configuration of CONTRACT.md §3 as written, and variations of every
// mapping and validation feature. %[1]s is the issuers' base URL, %[2]s
// their CA (indented).
const entries = `- issuer:
    url: %[1]s/gitlab
    certificateAuthority: |
%[2]s
    audiences: ["gitlab-application-id", "https://kubeflow.example.com"]
    audienceMatchPolicy: MatchAny
  claimMappings:
    username:
      expression: 'has(claims.preferred_username) ? "gitlab:" + claims.preferred_username : "gitlab-ci:" + claims.sub'
    uid:
      expression: 'has(claims.preferred_username) ? "gitlab:" + claims.preferred_username : "gitlab-ci:" + claims.sub'
    groups:
      claim: groups_direct
      prefix: "gitlab:"
- issuer:
    url: %[1]s/mapped
    certificateAuthority: |
%[2]s
    audiences: ["mapped-app"]
  claimValidationRules:
  - claim: tenant
    requiredValue: acme
  claimMappings:
    username:
      claim: sub
      prefix: "oidc:"
    groups:
      claim: roles
      prefix: "role:"
    uid:
      claim: uid
- issuer:
    url: %[1]s/email
    certificateAuthority: |
%[2]s
    audiences: ["email-app"]
  claimMappings:
    username:
      claim: email
      prefix: ""
    groups:
      expression: 'has(claims.groups) ? claims.groups : []'
- issuer:
    url: %[1]s/rules
    certificateAuthority: |
%[2]s
    audiences: ["rules-app", "rules-app-2"]
    audienceMatchPolicy: MatchAny
  claimValidationRules:
  - expression: 'claims.exp - claims.iat <= 7200'
    message: token lifetime over two hours
  - expression: '!has(claims.ref_protected) || claims.ref_protected == "true"'
    message: unprotected ref
  claimMappings:
    username:
      expression: 'claims.sub'
    uid:
      expression: 'claims.?uid.orValue("")'
    groups:
      expression: 'dyn(claims.?teams.orValue([])).map(t, "team:" + t)'
    extra:
    - key: example.com/project
      valueExpression: 'claims.?project.orValue("")'
    - key: example.com/teams
      valueExpression: 'claims.?teams.orValue([])'
    - key: example.com/lower
      valueExpression: 'claims.sub.lowerAscii()'
  userValidationRules:
  - expression: '!user.username.startsWith("system:")'
    message: no system users
  - expression: 'user.groups.all(g, g != "team:banned")'
    message: banned team
- issuer:
    url: %[1]s/cel
    certificateAuthority: |
%[2]s
    audiences: ["cel-app"]
  claimMappings:
    username:
      expression: 'claims.name'
    uid:
      expression: 'claims.u'
    groups:
      expression: 'claims.g'
    extra:
    - key: example.com/e
      valueExpression: 'has(claims.e) ? claims.e : ""'
- issuer:
    url: %[1]s/escaped
    certificateAuthority: |
%[2]s
    audiences: ["escaped-app"]
  claimMappings:
    username:
      expression: 'claims.example__dot__com__slash__user'
    groups:
      expression: 'has(claims.org) ? claims.org.team__dash__names : []'
- issuer:
    url: %[1]s/solo
    certificateAuthority: |
%[2]s
    audiences: ["solo-app"]
  claimMappings:
    username:
      claim: sub
      prefix: ""
`

// row is one token of the table.
type row struct {
	name string
	// token builds the token; is signs.
	token func(is *Issuers) string
	// stricter, when set, is why the service deliberately refuses (or
	// maps differently) what kube-apiserver accepts: the row is then
	// checked to differ exactly so, and docs/machine-identities.md lists it.
	stricter string
}

// claimsOf is the claims of a token of issuer name: iss, a one-hour exp,
// iat and nbf of now, then kv (a nil value deletes the claim).
func claimsOf(is *Issuers, name string, kv ...any) map[string]any {
	now := time.Now().Unix()
	c := map[string]any{"iss": is.URL(name), "iat": now, "nbf": now, "exp": now + 3600}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
			continue
		}
		c[kv[i].(string)] = kv[i+1]
	}
	return c
}

func signed(name string, kv ...any) func(*Issuers) string {
	return func(is *Issuers) string { return is.Sign(claimsOf(is, name, kv...)) }
}

var (
	gitlabUser = []any{"aud", "gitlab-application-id", "sub", "4217", "preferred_username", "alice", "nickname", "alice",
		"email", "alice@example.com", "email_verified", true, "groups_direct", []string{"acme", "acme/ml"}}
	gitlabJob = []any{"aud", "https://kubeflow.example.com", "sub", "project_path:foo/bar:ref_type:branch:ref:main",
		"namespace_path", "foo", "project_path", "foo/bar", "user_login", "alice", "user_email", "alice@example.com",
		"ref", "main", "ref_type", "branch", "ref_protected", "true", "pipeline_id", "1234", "job_id", "5678"}
	mappedOK = []any{"aud", "mapped-app", "sub", "s-1", "roles", []string{"admin", "dev"}, "uid", "u-1", "tenant", "acme"}
	rulesOK  = []any{"aud", "rules-app", "sub", "Alice", "teams", []string{"ml", "data"}, "project", "p1", "uid", "u-9"}
	celOK    = []any{"aud", "cel-app", "name", "carol", "u", "c-1", "g", []string{"a", "b"}}
)

// with is base with more claims (later pairs win).
func with(base []any, kv ...any) []any { return append(slices.Clone(base), kv...) }

func table() []row {
	var foreign, _ = rsa.GenerateKey(rand.Reader, 2048)
	rows := []row{
		// The seed: GitLab users and CI jobs (CONTRACT.md §3).
		{name: "gitlab user", token: signed("gitlab", gitlabUser...)},
		{name: "gitlab CI job", token: signed("gitlab", gitlabJob...)},
		{name: "gitlab user, ES256", token: func(is *Issuers) string { return is.SignES256(claimsOf(is, "gitlab", gitlabUser...)) }},
		{name: "aud list with the application id", token: signed("gitlab", with(gitlabUser, "aud", []string{"gitlab-application-id", "other"})...)},
		{name: "aud list with the CI audience", token: signed("gitlab", with(gitlabJob, "aud", []string{"x", "https://kubeflow.example.com"})...)},
		{name: "aud of neither (MatchAny)", token: signed("gitlab", with(gitlabUser, "aud", "another-app")...)},
		{name: "aud list of neither", token: signed("gitlab", with(gitlabUser, "aud", []string{"a", "b"})...)},
		{name: "no aud", token: signed("gitlab", with(gitlabUser, "aud", nil)...)},
		{name: "expired", token: signed("gitlab", with(gitlabUser, "exp", time.Now().Add(-time.Minute).Unix())...)},
		{name: "expired a second ago", token: signed("gitlab", with(gitlabUser, "exp", time.Now().Add(-2*time.Second).Unix())...)},
		{name: "no exp", token: signed("gitlab", with(gitlabUser, "exp", nil)...)},
		{name: "exp not a number", token: signed("gitlab", with(gitlabUser, "exp", "tomorrow")...)},
		{name: "not yet valid (nbf in an hour)", token: signed("gitlab", with(gitlabUser, "nbf", time.Now().Add(time.Hour).Unix())...)},
		{name: "nbf two minutes ahead (clock skew)", token: signed("gitlab", with(gitlabUser, "nbf", time.Now().Add(2*time.Minute).Unix())...)},
		{name: "iat in the future", token: signed("gitlab", with(gitlabUser, "iat", time.Now().Add(time.Hour).Unix())...)},
		{name: "no iat, no nbf", token: signed("gitlab", with(gitlabUser, "iat", nil, "nbf", nil)...)},
		{name: "gitlab claims under another configured issuer", token: signed("mapped", gitlabUser...)},
		{name: "unknown iss", token: func(is *Issuers) string {
			return is.Sign(claimsOf(is, "gitlab", with(gitlabUser, "iss", "https://gitlab.evil.example")...))
		}},
		{name: "foreign key, known kid", token: func(is *Issuers) string { return SignRS256(foreign, "rsa-1", claimsOf(is, "gitlab", gitlabUser...)) }},
		{name: "foreign key, unknown kid", token: func(is *Issuers) string { return SignRS256(foreign, "rsa-9", claimsOf(is, "gitlab", gitlabUser...)) }},
		{name: "alg none", token: func(is *Issuers) string { return Unsigned(claimsOf(is, "gitlab", gitlabUser...)) }},
		{name: "signature cut", token: func(is *Issuers) string { t := is.Sign(claimsOf(is, "gitlab", gitlabUser...)); return t[:len(t)-4] }},
		{name: "user without preferred_username (CEL falls to the CI form)", token: signed("gitlab", with(gitlabUser, "preferred_username", nil)...)},
		{name: "preferred_username a number", token: signed("gitlab", with(gitlabUser, "preferred_username", 42)...)},
		{name: "preferred_username empty", token: signed("gitlab", with(gitlabUser, "preferred_username", "")...)},
		{name: "preferred_username unicode", token: signed("gitlab", with(gitlabUser, "preferred_username", "élodie")...)},
		{name: "CI job without sub", token: signed("gitlab", with(gitlabJob, "sub", nil)...)},
		{name: "groups_direct a string", token: signed("gitlab", with(gitlabUser, "groups_direct", "acme")...)},
		{name: "groups_direct with a number", token: signed("gitlab", with(gitlabUser, "groups_direct", []any{"acme", 1})...)},
		{name: "groups_direct null", token: signed("gitlab", with(gitlabUser, "groups_direct", []string(nil))...)},
		{name: "groups_direct empty", token: signed("gitlab", with(gitlabUser, "groups_direct", []string{})...)},
		{name: "groups_direct an object", token: signed("gitlab", with(gitlabUser, "groups_direct", map[string]any{"a": 1})...)},
		{name: "groups_direct with an empty name", token: signed("gitlab", with(gitlabUser, "groups_direct", []string{"acme", ""})...)},
		{name: "groups_direct 40 groups", token: signed("gitlab", with(gitlabUser, "groups_direct", manyGroups(40))...)},
		{name: "group name with a comma", token: signed("gitlab", with(gitlabUser, "groups_direct", []string{"acme", "a,b"})...),
			stricter: "a group whose name holds a comma cannot travel in the comma-joined kubeflow-groups header: it is left out (logged)"},
		{name: "jti present", token: signed("gitlab", with(gitlabUser, "jti", "abc-123")...)},

		// claim + prefix mappings, uid claim, required claim.
		{name: "mapped: all claims", token: signed("mapped", mappedOK...)},
		{name: "mapped: required claim wrong", token: signed("mapped", with(mappedOK, "tenant", "other")...)},
		{name: "mapped: required claim missing", token: signed("mapped", with(mappedOK, "tenant", nil)...)},
		{name: "mapped: required claim a number", token: signed("mapped", with(mappedOK, "tenant", 1)...)},
		{name: "mapped: uid missing", token: signed("mapped", with(mappedOK, "uid", nil)...)},
		{name: "mapped: uid a number", token: signed("mapped", with(mappedOK, "uid", 7)...)},
		{name: "mapped: sub a number", token: signed("mapped", with(mappedOK, "sub", 7)...)},
		{name: "mapped: sub empty", token: signed("mapped", with(mappedOK, "sub", "")...)},
		{name: "mapped: roles a string", token: signed("mapped", with(mappedOK, "roles", "admin")...)},
		{name: "mapped: roles missing", token: signed("mapped", with(mappedOK, "roles", nil)...)},

		// username from email: email_verified.
		{name: "email: verified", token: signed("email", "aud", "email-app", "email", "dana@example.com", "email_verified", true, "groups", []string{"g1"})},
		{name: "email: not verified", token: signed("email", "aud", "email-app", "email", "dana@example.com", "email_verified", false)},
		{name: "email: email_verified absent", token: signed("email", "aud", "email-app", "email", "dana@example.com")},
		{name: "email: email_verified a string", token: signed("email", "aud", "email-app", "email", "dana@example.com", "email_verified", "true")},
		{name: "email: no email", token: signed("email", "aud", "email-app", "sub", "x")},
		{name: "email: groups expression with a string claim", token: signed("email", "aud", "email-app", "email", "dana@example.com", "groups", "solo")},

		// CEL claim rules, user rules, optional claims, extra, string library.
		{name: "rules: all pass", token: signed("rules", rulesOK...)},
		{name: "rules: second audience", token: signed("rules", with(rulesOK, "aud", "rules-app-2")...)},
		{name: "rules: lifetime over two hours", token: signed("rules", with(rulesOK, "exp", time.Now().Add(3*time.Hour).Unix())...)},
		{name: "rules: unprotected ref", token: signed("rules", with(rulesOK, "ref_protected", "false")...)},
		{name: "rules: protected ref", token: signed("rules", with(rulesOK, "ref_protected", "true")...)},
		{name: "rules: system user refused by a user rule", token: signed("rules", with(rulesOK, "sub", "system:admin")...)},
		{name: "rules: banned team refused by a user rule", token: signed("rules", with(rulesOK, "teams", []string{"ml", "banned"})...)},
		{name: "rules: teams a string (map over a string errors)", token: signed("rules", with(rulesOK, "teams", "ml")...)},
		{name: "rules: no teams, no project, no uid (optional claims)", token: signed("rules", with(rulesOK, "teams", nil, "project", nil, "uid", nil)...)},
		{name: "rules: empty project drops the extra key", token: signed("rules", with(rulesOK, "project", "")...)},
		{name: "rules: no iat (rule errors)", token: signed("rules", with(rulesOK, "iat", nil)...)},
		{name: "rules: sub a number", token: signed("rules", with(rulesOK, "sub", 5)...)},

		// Expressions of any result type, and expressions that error.
		{name: "cel: all well-typed", token: signed("cel", celOK...)},
		{name: "cel: groups a string", token: signed("cel", with(celOK, "g", "single")...)},
		{name: "cel: groups an empty string", token: signed("cel", with(celOK, "g", "")...)},
		{name: "cel: groups null", token: signed("cel", with(celOK, "g", []string(nil))...)},
		{name: "cel: groups with an empty element", token: signed("cel", with(celOK, "g", []string{"a", ""})...)},
		{name: "cel: groups empty list", token: signed("cel", with(celOK, "g", []string{})...)},
		{name: "cel: groups a number", token: signed("cel", with(celOK, "g", 42)...)},
		{name: "cel: groups a list of numbers", token: signed("cel", with(celOK, "g", []int{1})...)},
		{name: "cel: groups an object", token: signed("cel", with(celOK, "g", map[string]any{"x": 1})...)},
		{name: "cel: groups claim missing (no such key)", token: signed("cel", with(celOK, "g", nil)...)},
		{name: "cel: uid a number", token: signed("cel", with(celOK, "u", 5)...)},
		{name: "cel: uid missing", token: signed("cel", with(celOK, "u", nil)...)},
		{name: "cel: username a number", token: signed("cel", with(celOK, "name", 5)...)},
		{name: "cel: username empty", token: signed("cel", with(celOK, "name", "")...)},
		{name: "cel: username a list", token: signed("cel", with(celOK, "name", []string{"a"})...)},
		{name: "cel: extra a string", token: signed("cel", with(celOK, "e", "x")...)},
		{name: "cel: extra an empty string", token: signed("cel", with(celOK, "e", "")...)},
		{name: "cel: extra with empty elements", token: signed("cel", with(celOK, "e", []string{"", "x"})...)},
		{name: "cel: extra a number", token: signed("cel", with(celOK, "e", 3)...)},

		// Escaped claim names (__dot__, __slash__, __dash__).
		{name: "escaped: dotted claim name", token: signed("escaped", "aud", "escaped-app", "example.com/user", "erin", "org", map[string]any{"team-names": []string{"t1"}})},
		{name: "escaped: dotted claim missing", token: signed("escaped", "aud", "escaped-app", "user", "erin")},

		// One audience, no match policy.
		{name: "solo: aud string", token: signed("solo", "aud", "solo-app", "sub", "frank")},
		{name: "solo: aud list with others", token: signed("solo", "aud", []string{"x", "solo-app"}, "sub", "frank")},
		{name: "solo: another aud", token: signed("solo", "aud", "x", "sub", "frank")},
	}
	return rows
}

func manyGroups(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("group-%02d", i)
	}
	return out
}

// identity is one side's answer for a row.
type identity struct {
	OK       bool
	Why      string
	Username string
	UID      string
	Groups   []string
	Extra    map[string][]string
}

func (i identity) String() string {
	if !i.OK {
		return "refused"
	}
	return fmt.Sprintf("%q uid=%q groups=%q extra=%v", i.Username, i.UID, i.Groups, i.Extra)
}

// TestSameAnswersAsKubeAPIServer presents every token of the table to
// kube-apiserver (SelfSubjectReview, what `kubectl auth whoami` calls) and to
// the service (through the gateway: status and identity headers; and through
// internal/authn built from the product's module: uid and extra), both
// reading the same AuthenticationConfiguration file. Accept/refuse,
// username, uid, groups and extra must be identical on every row but the
// documented stricter ones.
func TestSameAnswersAsKubeAPIServer(t *testing.T) {
	is := StartIssuers(t)
	jwt := fmt.Sprintf(entries, is.Base, indent(string(is.CAPEM), "      "))
	// Every issuer is initialised asynchronously: wait for one token each.
	ready := []string{is.Sign(claimsOf(is, "gitlab", gitlabUser...))}
	api := StartAPIServer(t, Options{JWT: jwt, ReadyToken: ready[0]})
	for _, r := range table() {
		if strings.Contains(r.name, "all") || r.name == "email: verified" || r.name == "solo: aud string" || r.name == "escaped: dotted claim name" {
			if err := api.waitAccepted(r.token(is), 30*time.Second); err != nil {
				t.Fatalf("issuer of %q not ready: %v", r.name, err)
			}
		}
	}
	svc := StartService(t, map[string]string{"AUTHENTICATION_CONFIG_FILE": api.AuthFile})

	rows := table()
	tokens := make([]string, len(rows))
	for i, r := range rows {
		tokens[i] = r.token(is)
	}
	probe := probeAll(t, api.AuthFile, tokens)

	var mu sync.Mutex
	same, stricter := 0, 0
	var report []string
	for i, r := range rows {
		kube, err := api.WhoAmI(tokens[i])
		if err != nil {
			t.Fatal(err)
		}
		k := identity{OK: kube.Authenticated, Why: kube.Status, Username: kube.Username, UID: kube.UID, Groups: withoutAuthenticated(kube.Groups), Extra: withoutCredentialID(kube.Extra)}
		p := probe[i]
		gw := svc.Call(t, tokens[i], "/pipeline/apis/v2beta1/runs")
		var diffs []string
		if p.OK != k.OK {
			diffs = append(diffs, fmt.Sprintf("kube-apiserver %s (%s), service %s (%s)", yes(k.OK), k.Why, yes(p.OK), p.Why))
		}
		if gw.UpstreamReached != p.OK {
			diffs = append(diffs, fmt.Sprintf("gateway answered %d but internal/authn %s", gw.Status, yes(p.OK)))
		}
		if k.OK && p.OK {
			if k.Username != p.Username {
				diffs = append(diffs, fmt.Sprintf("username %q vs %q", k.Username, p.Username))
			}
			if k.UID != p.UID {
				diffs = append(diffs, fmt.Sprintf("uid %q vs %q", k.UID, p.UID))
			}
			if !slices.Equal(k.Groups, p.Groups) {
				diffs = append(diffs, fmt.Sprintf("groups %q vs %q", k.Groups, p.Groups))
			}
			if !extraEqual(k.Extra, p.Extra) {
				diffs = append(diffs, fmt.Sprintf("extra %v vs %v", k.Extra, p.Extra))
			}
		}
		if gw.UpstreamReached && (gw.User != p.Username || gw.Groups != strings.Join(p.Groups, ",")) {
			diffs = append(diffs, fmt.Sprintf("headers %q / %q, identity %q / %q", gw.User, gw.Groups, p.Username, strings.Join(p.Groups, ",")))
		}
		if !gw.UpstreamReached && gw.Status != 401 {
			diffs = append(diffs, fmt.Sprintf("refusal answered %d, want 401", gw.Status))
		}
		mu.Lock()
		switch {
		case r.stricter != "":
			if len(diffs) == 0 {
				t.Errorf("row %q is documented as stricter but both agree (%s): update the table and docs", r.name, k)
			}
			stricter++
			report = append(report, fmt.Sprintf("  %-60s kube-apiserver %s; service stricter: %s", r.name, k, r.stricter))
		case len(diffs) > 0:
			t.Errorf("row %q: %s", r.name, strings.Join(diffs, "; "))
			report = append(report, fmt.Sprintf("  %-60s DIFFERS: %s", r.name, strings.Join(diffs, "; ")))
		default:
			same++
			report = append(report, fmt.Sprintf("  %-60s both %s", r.name, k))
		}
		mu.Unlock()
	}
	if len(rows) < 60 {
		t.Errorf("only %d rows; the table needs at least 60", len(rows))
	}
	t.Logf("differential table vs kube-apiserver %s:\n%s", kubeVersion(t), strings.Join(report, "\n"))
	fmt.Printf("differential table: %d tokens, %d identical answers, %d where the service is deliberately stricter, %d differences\n",
		len(rows), same, stricter, len(rows)-same-stricter)
}

func yes(ok bool) string {
	if ok {
		return "accepts"
	}
	return "refuses"
}

// withoutAuthenticated drops the system:authenticated group every
// authenticated kube-apiserver user gets: the configuration does not map it.
func withoutAuthenticated(groups []string) []string {
	var out []string
	for _, g := range groups {
		if g != "system:authenticated" {
			out = append(out, g)
		}
	}
	return out
}

// withoutCredentialID drops authentication.kubernetes.io/credential-id,
// which kube-apiserver derives from jti for its audit log; the service has
// no use for it (documented).
func withoutCredentialID(extra map[string][]string) map[string][]string {
	out := map[string][]string{}
	for k, v := range extra {
		if k != "authentication.kubernetes.io/credential-id" {
			out[k] = v
		}
	}
	return out
}

func extraEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// probeAll authenticates tokens with internal/authn, built from the
// product's module (test/authnprobe), under the configuration file.
func probeAll(t *testing.T, file string, tokens []string) []identity {
	t.Helper()
	bin := productBinary(t, "authnprobe")
	cmd := exec.Command(bin, file)
	cmd.Stdin = strings.NewReader(strings.Join(tokens, "\n") + "\n")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("authnprobe: %v: %s", err, stderr.String())
	}
	var ids []identity
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r struct {
			OK       bool
			Error    string
			Username string
			UID      string
			Groups   []string
			Extra    map[string][]string
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r.Extra == nil {
			r.Extra = map[string][]string{}
		}
		ids = append(ids, identity{OK: r.OK, Why: r.Error, Username: r.Username, UID: r.UID, Groups: r.Groups, Extra: r.Extra})
	}
	if len(ids) != len(tokens) {
		t.Fatalf("authnprobe answered %d of %d tokens", len(ids), len(tokens))
	}
	return ids
}

// kubeVersion is the version the peer reports.
func kubeVersion(t *testing.T) string {
	bin, err := PeerBinary()
	if err != nil {
		return "?"
	}
	out, _ := exec.Command(bin, "version").Output()
	return strings.TrimSpace(string(out))
}
