package monitoring

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// panelTypes are the panel plugins built into Grafana that the dashboard
// may use.
var panelTypes = map[string]bool{"row": true, "timeseries": true, "stat": true, "table": true, "gauge": true, "bargauge": true}

// TestDashboard validates the Grafana dashboard: what Grafana needs to
// import it (uid, title, schema version), a data-source variable every
// panel and query uses (no data source uid of one installation), template
// variables that are defined before use, unique panel ids, panels on the
// 24-column grid without overlaps, and every panel described and queried.
func TestDashboard(t *testing.T) {
	d, raw := loadDashboard(t)
	if d.UID == "" || len(d.UID) > 40 || d.Title == "" {
		t.Errorf("uid %q (1 to 40 characters), title %q", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: data sources by uid need 36 or later", d.SchemaVersion)
	}
	if _, ok := raw["id"]; ok {
		t.Error(`"id" is set: it belongs to one Grafana installation (provisioning assigns it)`)
	}
	if inputs, _ := raw["__inputs"].([]any); len(inputs) > 0 {
		t.Error("__inputs: the sidecar imports dashboards as they are, without the import dialog that fills inputs")
	}

	// Variables: a Prometheus data-source variable, and query variables on
	// it whose query is label_values of the service's own series.
	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		if _, dup := vars[v.Name]; dup {
			t.Errorf("variable %s twice", v.Name)
		}
		vars[v.Name] = v
	}
	ds, ok := vars["datasource"]
	if !ok || ds.Type != "datasource" || string(ds.Query) != `"prometheus"` {
		t.Fatalf("no Prometheus data-source variable named datasource: %+v", ds)
	}
	isOurs := func(r *datasourceRef) bool {
		return r != nil && r.Type == "prometheus" && (r.UID == "${datasource}" || r.UID == "$datasource")
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		if !isOurs(v.Datasource) {
			t.Errorf("variable %s: data source %+v, want the datasource variable", v.Name, v.Datasource)
		}
		if !v.IncludeAll || v.AllValue != ".*" {
			t.Errorf("variable %s: needs All with allValue .* (a Prometheus without namespace or pod labels still matches)", v.Name)
		}
	}

	ids := map[int]string{}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	for _, p := range d.allPanels() {
		name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID <= 0 {
			t.Errorf("%s: id must be a positive integer", name)
		}
		if other, dup := ids[p.ID]; dup {
			t.Errorf("%s: id also used by %q", name, other)
		}
		ids[p.ID] = p.Title
		if !panelTypes[p.Type] {
			t.Errorf("%s: type %q", name, p.Type)
		}
		g := p.GridPos
		if g.W < 1 || g.H < 1 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v off the 24-column grid", name, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Errorf("%s overlaps %s at (%d,%d)", name, other, x, y)
				}
				taken[cell{x, y}] = name
			}
		}
		if p.Type == "row" {
			if len(p.Targets) > 0 {
				t.Errorf("%s: a row with queries", name)
			}
			continue
		}
		if p.Title == "" || len(p.Description) < 20 {
			t.Errorf("%s: needs a title and a description (shown as the panel's tooltip)", name)
		}
		if !isOurs(p.Datasource) {
			t.Errorf("%s: data source %+v, want the datasource variable", name, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no query", name)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: refId %q empty or repeated", name, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s %s: empty expr", name, tg.RefID)
			}
			if tg.Datasource != nil && !isOurs(tg.Datasource) {
				t.Errorf("%s %s: data source %+v", name, tg.RefID, tg.Datasource)
			}
			for _, m := range grafanaVar.FindAllStringSubmatch(tg.Expr, -1) {
				v := m[1] + m[2]
				builtin := strings.HasPrefix(v, "__") && grafanaValues[v] != ""
				if !builtin && vars[v].Name == "" {
					t.Errorf("%s %s: variable $%s is not defined", name, tg.RefID, v)
				}
			}
		}
	}
	if len(ids) < 15 {
		t.Errorf("only %d panels", len(ids))
	}
	// The parsing of every query: TestEveryQueryParses.
}

// TestDashboardConfigMap: the component ships the dashboard file as it is
// in a ConfigMap labelled for Grafana's sidecar (the rendering itself is
// test/manifests').
func TestDashboardConfigMap(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(component, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Kind               string
		ConfigMapGenerator []struct {
			Name    string
			Files   []string
			Options struct {
				DisableNameSuffixHash bool              `json:"disableNameSuffixHash"`
				Labels                map[string]string `json:"labels"`
			}
		} `json:"configMapGenerator"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	if k.Kind != "Component" || len(k.ConfigMapGenerator) != 1 {
		t.Fatalf("kustomization: %+v", k)
	}
	g := k.ConfigMapGenerator[0]
	if g.Options.Labels["grafana_dashboard"] != "1" || !g.Options.DisableNameSuffixHash {
		t.Errorf("the dashboard ConfigMap needs the label grafana_dashboard: \"1\" and a stable name: %+v", g.Options)
	}
	if len(g.Files) != 1 || !strings.HasSuffix(g.Files[0], "=dashboard.json") || !strings.HasSuffix(strings.Split(g.Files[0], "=")[0], ".json") {
		t.Errorf("files %v: one <name>.json=dashboard.json", g.Files)
	}
}
