package kube

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSameConfigurationsAsKubeAPIServer: a file loads in the service exactly
// when kube-apiserver loads it. Each row is one jwt item given to both; the
// API server refuses a bad file by not starting, the service (its
// internal/authn, test/authnprobe) by an error naming the entry.
func TestSameConfigurationsAsKubeAPIServer(t *testing.T) {
	is := StartIssuers(t)
	ca := indent(string(is.CAPEM), "      ")
	item := func(issuer, body string) string {
		return fmt.Sprintf("- issuer:\n    url: %s/%s\n    certificateAuthority: |\n%s\n%s", is.Base, issuer, ca, body)
	}
	user := "  claimMappings:\n    username:\n      claim: sub\n      prefix: \"\"\n"
	rows := []struct {
		name, jwt string
		loads     bool
	}{
		{"the GitLab seed configuration", fmt.Sprintf(entries, is.Base, ca), true},
		{"two audiences without a match policy", item("a", "    audiences: [x, y]\n"+user), false},
		{"audienceMatchPolicy MatchAll", item("a", "    audiences: [x, y]\n    audienceMatchPolicy: MatchAll\n"+user), false},
		{"one audience with MatchAny", item("a", "    audiences: [x]\n    audienceMatchPolicy: MatchAny\n"+user), true},
		{"an audience twice", item("a", "    audiences: [x, x]\n    audienceMatchPolicy: MatchAny\n"+user), false},
		{"no audience", item("a", "    audiences: []\n"+user), false},
		{"discoveryURL equal to url", item("a", "    discoveryURL: "+is.Base+"/a\n    audiences: [x]\n"+user), false},
		{"username claim without prefix", item("a", "    audiences: [x]\n  claimMappings:\n    username:\n      claim: sub\n"), false},
		{"username claim and expression", item("a", "    audiences: [x]\n  claimMappings:\n    username:\n      claim: sub\n      prefix: \"\"\n      expression: claims.sub\n"), false},
		{"prefix with an expression", item("a", "    audiences: [x]\n  claimMappings:\n    username:\n      expression: claims.sub\n      prefix: \"p:\"\n"), false},
		{"no username mapping", item("a", "    audiences: [x]\n  claimMappings:\n    groups:\n      claim: g\n      prefix: \"\"\n"), false},
		{"expression with a syntax error", item("a", "    audiences: [x]\n  claimMappings:\n    username:\n      expression: 'claims.sub +'\n"), false},
		{"expression with an unknown function", item("a", "    audiences: [x]\n  claimMappings:\n    username:\n      expression: 'claims.sub.nope()'\n"), false},
		{"username expression typed int (fails per token, not at load)", item("a", "    audiences: [x]\n  claimMappings:\n    username:\n      expression: 'size(claims.sub)'\n"), true},
		{"iterating a claim without dyn()", item("a", "    audiences: [x]\n"+user+"    groups:\n      expression: 'claims.g.map(x, x)'\n"), false},
		{"iterating a claim with dyn()", item("a", "    audiences: [x]\n"+user+"    groups:\n      expression: 'dyn(claims.g).map(x, x)'\n"), true},
		{"claim rule typed any", item("a", "    audiences: [x]\n  claimValidationRules:\n  - expression: claims.admin\n"+user), false},
		{"claim rule typed bool", item("a", "    audiences: [x]\n  claimValidationRules:\n  - expression: claims.admin == true\n"+user), true},
		{"claim rule with claim and message", item("a", "    audiences: [x]\n  claimValidationRules:\n  - claim: tenant\n    requiredValue: acme\n    message: m\n"+user), false},
		{"claim rule twice", item("a", "    audiences: [x]\n  claimValidationRules:\n  - claim: tenant\n    requiredValue: a\n  - claim: tenant\n    requiredValue: b\n"+user), false},
		{"user rule on an unknown field", item("a", "    audiences: [x]\n"+user+"  userValidationRules:\n  - expression: user.nickname == 'x'\n"), false},
		{"user rule with a wrong type", item("a", "    audiences: [x]\n"+user+"  userValidationRules:\n  - expression: user.groups == 'x'\n"), false},
		{"user rule on known fields", item("a", "    audiences: [x]\n"+user+"  userValidationRules:\n  - expression: \"!user.username.startsWith('system:') && user.uid == '' && size(user.groups) < 10 && !('a/b' in user.extra)\"\n"), true},
		{"email username without email_verified", item("a", "    audiences: [x]\n  claimMappings:\n    username:\n      expression: claims.email\n"), false},
		{"email username checking email_verified", item("a", "    audiences: [x]\n  claimMappings:\n    username:\n      expression: 'claims.?email_verified.orValue(true) == true ? claims.email : \"\"'\n"), true},
		{"email username, email_verified in a claim rule", item("a", "    audiences: [x]\n  claimValidationRules:\n  - expression: claims.email_verified == true\n  claimMappings:\n    username:\n      expression: claims.email\n"), true},
		{"extra key without a domain", item("a", "    audiences: [x]\n"+user+"    extra:\n    - key: team\n      valueExpression: claims.t\n"), false},
		{"extra key in upper case", item("a", "    audiences: [x]\n"+user+"    extra:\n    - key: example.com/Team\n      valueExpression: claims.t\n"), false},
		{"extra key of kubernetes.io", item("a", "    audiences: [x]\n"+user+"    extra:\n    - key: authentication.kubernetes.io/x\n      valueExpression: claims.t\n"), false},
		{"extra key twice", item("a", "    audiences: [x]\n"+user+"    extra:\n    - key: example.com/t\n      valueExpression: claims.t\n    - key: example.com/t\n      valueExpression: claims.u\n"), false},
		{"extra without a value expression", item("a", "    audiences: [x]\n"+user+"    extra:\n    - key: example.com/t\n"), false},
		{"two entries for one issuer", item("a", "    audiences: [x]\n"+user) + item("a", "    audiences: [y]\n"+user), false},
	}
	probe := productBinary(t, "authnprobe")
	alike := 0
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			kubeLoads, why := LoadsConfiguration(t, r.jwt)
			file := filepath.Join(t.TempDir(), "authn.yaml")
			os.WriteFile(file, []byte(AuthenticationConfiguration(r.jwt)), 0o600)
			out, err := exec.Command(probe, file).CombinedOutput()
			svcLoads := err == nil
			if kubeLoads != r.loads {
				t.Errorf("kube-apiserver loads: %v, the row says %v (%s)", kubeLoads, r.loads, why)
			}
			if svcLoads == kubeLoads {
				alike++
			} else {
				t.Errorf("the service loads: %v, kube-apiserver: %v\n  kube-apiserver: %s\n  service: %s", svcLoads, kubeLoads, why, strings.TrimSpace(string(out)))
			}
		})
	}
	fmt.Printf("configuration table: %d files, %d loaded or refused alike by kube-apiserver and the service\n", len(rows), alike)
}
