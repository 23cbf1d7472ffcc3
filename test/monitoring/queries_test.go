package monitoring

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// component is deploy/components/monitoring.
var component = filepath.Join("..", "..", "deploy", "components", "monitoring")

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	Datasource  *datasourceRef  `json:"datasource"`
	GridPos     gridPos         `json:"gridPos"`
	Targets     []target        `json:"targets"`
	Panels      []panel         `json:"panels"` // a collapsed row's
	FieldConfig json.RawMessage `json:"fieldConfig"`
}

type gridPos struct{ H, W, X, Y int }

type target struct {
	RefID      string         `json:"refId"`
	Expr       string         `json:"expr"`
	Datasource *datasourceRef `json:"datasource"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasourceRef  `json:"datasource"`
	AllValue   string          `json:"allValue"`
	IncludeAll bool            `json:"includeAll"`
}

func loadDashboard(t *testing.T) (*dashboard, map[string]any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(component, "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	return &d, raw
}

// allPanels lists the dashboard's panels, rows' nested panels included.
func (d *dashboard) allPanels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// rule is one rule of the PrometheusRule.
type rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

// loadRules reads the PrometheusRule and returns its spec, both parsed and
// as the YAML of a Prometheus rule file.
func loadRules(t *testing.T) (ruleGroups, []byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(component, "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pr struct {
		APIVersion string          `json:"apiVersion"`
		Kind       string          `json:"kind"`
		Spec       json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &pr); err != nil {
		t.Fatalf("prometheusrule.yaml: %v", err)
	}
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" {
		t.Fatalf("prometheusrule.yaml is a %s %s", pr.APIVersion, pr.Kind)
	}
	var g ruleGroups
	if err := json.Unmarshal(pr.Spec, &g); err != nil {
		t.Fatal(err)
	}
	file, err := yaml.JSONToYAML(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	return g, file
}

func (g ruleGroups) alerts() []rule {
	var out []rule
	for _, gr := range g.Groups {
		for _, r := range gr.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

// query is one PromQL expression of the dashboard or the rules, with where
// it comes from.
type query struct {
	Where string
	Expr  string // Grafana's variables expanded
}

// grafanaValues are what Grafana puts for the variables the queries use,
// as the tests evaluate them: every namespace and replica ("All"), rate
// windows that suit a 1 s scrape interval.
var grafanaValues = map[string]string{
	"__rate_interval": "30s", "__interval": "15s", "__range": "5m",
	"namespace": ".*", "pod": ".*",
}

var grafanaVar = regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`)

// expand replaces Grafana's variables in expr; unknown ones are reported.
func expand(expr string) (string, []string) {
	var unknown []string
	out := grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		name := strings.Trim(m, "${}")
		if v, ok := grafanaValues[name]; ok {
			return v
		}
		unknown = append(unknown, m)
		return m
	})
	return out, unknown
}

// queries lists every expression of the dashboard (panel targets and query
// variables) and of the rules.
func queries(t *testing.T) []query {
	t.Helper()
	d, _ := loadDashboard(t)
	var out []query
	add := func(where, expr string) {
		e, unknown := expand(expr)
		if len(unknown) > 0 {
			t.Errorf("%s: unknown variables %v in %q", where, unknown, expr)
		}
		out = append(out, query{Where: where, Expr: e})
	}
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			add(fmt.Sprintf("panel %q %s", p.Title, tg.RefID), tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		sel, err := labelValuesSelector(v)
		if err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
			continue
		}
		add("variable "+v.Name, sel)
	}
	rules, _ := loadRules(t)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			add("rule "+r.Alert+r.Record, r.Expr)
		}
	}
	return out
}

var labelValues = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// labelValuesSelector is the series selector of a query variable's
// label_values(selector, label).
func labelValuesSelector(v variable) (string, error) {
	var q struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &q); err != nil {
		return "", fmt.Errorf("query: %v", err)
	}
	m := labelValues.FindStringSubmatch(q.Query)
	if m == nil {
		return "", fmt.Errorf("query %q is not label_values(selector, label)", q.Query)
	}
	return m[1], nil
}

// targetLabels are added by Prometheus (and the Prometheus Operator) to
// every series of a target: the service never exports them.
var targetLabels = map[string]bool{"job": true, "instance": true, "namespace": true, "pod": true,
	"container": true, "endpoint": true, "service": true}

// used is what one expression needs of the exported series: metric names
// and, per name, the label names its matchers and groupings read.
type used map[string]map[string]bool

// uses parses expr and lists the metrics and labels it reads.
func uses(expr string) (used, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	u := used{}
	var walkErr error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch x := n.(type) {
		case *parser.VectorSelector:
			name := x.Name
			for _, m := range x.LabelMatchers {
				if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
			if name == "" {
				walkErr = fmt.Errorf("selector %s names no metric", x)
				return nil
			}
			if u[name] == nil {
				u[name] = map[string]bool{}
			}
			for _, m := range x.LabelMatchers {
				if m.Name != model.MetricNameLabel && !targetLabels[m.Name] {
					u[name][m.Name] = true
				}
			}
		case *parser.AggregateExpr:
			// by (...) reads labels of every selector below it.
			inner, err := uses(x.Expr.String())
			if err != nil {
				walkErr = err
				return nil
			}
			for name := range inner {
				if u[name] == nil {
					u[name] = map[string]bool{}
				}
				for _, l := range x.Grouping {
					if !targetLabels[l] {
						u[name][l] = true
					}
				}
			}
		}
		return nil
	})
	return u, walkErr
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestEveryQueryParses: every expression of the dashboard and of the rules
// is valid PromQL once Grafana's variables are expanded, and names only
// the service's metrics (process and Go runtime metrics of its own
// replicas included).
func TestEveryQueryParses(t *testing.T) {
	qs := queries(t)
	if len(qs) < 30 {
		t.Fatalf("only %d queries found", len(qs))
	}
	for _, q := range qs {
		u, err := uses(q.Expr)
		if err != nil {
			t.Errorf("%s: %v\n  %s", q.Where, err, q.Expr)
			continue
		}
		for name := range u {
			if !strings.HasPrefix(name, "oidc_authservice_") && !strings.HasPrefix(name, "process_") && !strings.HasPrefix(name, "go_") {
				t.Errorf("%s: %s is not a metric of the service", q.Where, name)
			}
		}
	}
}
