package monitoring

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

const runbookBase = "https://github.com/oidc-authservice/oidc-authservice/blob/main/docs/operations.md#"

// promtool is Debian's prometheus package's (apt-get install prometheus).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	peer.Require(t, "promtool (apt-get install prometheus)", err)
	return p
}

// TestRulesPromtool runs `promtool check rules` on the PrometheusRule's
// spec and `promtool test rules` on testdata/alerts_test.yaml, and checks
// that every alert has a unit test in which it fires.
func TestRulesPromtool(t *testing.T) {
	bin := promtool(t)
	rules, file := loadRules(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), file, 0o644); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join("testdata", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "rules.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	var unit struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(tests, &unit); err != nil {
		t.Fatal(err)
	}
	fires := map[string]bool{}
	for _, tc := range unit.Tests {
		for _, a := range tc.AlertRuleTest {
			fires[a.Alertname] = fires[a.Alertname] || len(a.ExpAlerts) > 0
		}
	}
	alerts := rules.alerts()
	if len(alerts) < 10 {
		t.Fatalf("only %d alerts", len(alerts))
	}
	for _, a := range alerts {
		if !fires[a.Alert] {
			t.Errorf("alert %s has no unit test in which it fires", a.Alert)
		}
	}
}

var heading = regexp.MustCompile(`(?m)^#{2,4} (.+)$`)

// githubAnchor is the anchor GitHub gives a Markdown heading.
func githubAnchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// TestRulesDocumented: every alert has a severity, a summary, a
// description and a runbook_url pointing to its own section of
// docs/operations.md, which says what to do; every panel of the dashboard
// is described there.
func TestRulesDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]string{}
	sections := heading.FindAllStringSubmatchIndex(string(doc), -1)
	for i, m := range sections {
		end := len(doc)
		if i+1 < len(sections) {
			end = sections[i+1][0]
		}
		anchors[githubAnchor(string(doc[m[2]:m[3]]))] = string(doc[m[1]:end])
	}
	rules, _ := loadRules(t)
	for _, a := range rules.alerts() {
		switch a.Labels["severity"] {
		case "critical", "warning", "info":
		default:
			t.Errorf("%s: severity %q", a.Alert, a.Labels["severity"])
		}
		if a.Annotations["summary"] == "" || a.Annotations["description"] == "" {
			t.Errorf("%s: summary and description needed", a.Alert)
		}
		anchor := strings.ToLower(a.Alert)
		if a.Annotations["runbook_url"] != runbookBase+anchor {
			t.Errorf("%s: runbook_url %q, want %s%s", a.Alert, a.Annotations["runbook_url"], runbookBase, anchor)
		}
		body, ok := anchors[anchor]
		if !ok {
			t.Errorf("%s: docs/operations.md has no section %q", a.Alert, a.Alert)
			continue
		}
		if !strings.Contains(body, "What to do") {
			t.Errorf("%s: its section in docs/operations.md does not say what to do", a.Alert)
		}
	}
	d, _ := loadDashboard(t)
	for _, p := range d.allPanels() {
		if p.Type != "row" && !strings.Contains(string(doc), "| "+p.Title+" |") {
			t.Errorf("panel %q is not described in docs/operations.md (a table row starting | %s |)", p.Title, p.Title)
		}
	}
}
