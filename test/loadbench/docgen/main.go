// Command docgen renders docs/performance.md from what test/loadbench
// measured (make bench, make bench-compare) and from the output of the
// in-process benchmarks, through performance.md.tmpl: the figures in the
// document are never copied by hand.
//
//	go run ./test/loadbench/docgen -bench test/artifacts/bench/bench.json \
//	    -compare test/artifacts/bench/compare.json -go test/artifacts/bench/go-bench.txt -out docs/performance.md
//
// A missing -compare or -go file leaves its section saying how to produce it.
package main

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/template"

	"github.com/oidc-authservice/oidc-authservice/test/loadbench/results"
)

//go:embed performance.md.tmpl
var tmpl string

// GoBench is one line of go test -bench output.
type GoBench struct {
	Name            string
	NsPerOp         float64
	BytesPerOp      int
	AllocsPerOp     int
	Package         string
	HasMem, Present bool
}

type data struct {
	Bench, Compare *results.Report
	Go             map[string]GoBench
	GoDate         string
}

func main() {
	bench := flag.String("bench", "test/artifacts/bench/bench.json", "results of make bench (loadbench -json)")
	compare := flag.String("compare", "test/artifacts/bench/compare.json", "results of make bench-compare (optional)")
	goBench := flag.String("go", "test/artifacts/bench/go-bench.txt", "output of the in-process benchmarks (optional)")
	out := flag.String("out", "docs/performance.md", "the document to write")
	flag.Parse()
	d := data{Go: map[string]GoBench{}}
	var err error
	if d.Bench, err = readReport(*bench, true); err != nil {
		log.Fatal(err)
	}
	if d.Compare, err = readReport(*compare, false); err != nil {
		log.Fatal(err)
	}
	if b, err := os.ReadFile(*goBench); err == nil {
		d.Go = parseGoBench(b)
		if st, err := os.Stat(*goBench); err == nil {
			d.GoDate = st.ModTime().UTC().Format("2006-01-02")
		}
	}
	t, err := template.New("performance.md").Funcs(funcs(&d)).Parse(tmpl)
	if err != nil {
		log.Fatal(err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, &d); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Println("wrote", *out)
}

func readReport(name string, required bool) (*results.Report, error) {
	b, err := os.ReadFile(name)
	if os.IsNotExist(err) && !required {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r results.Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &r, nil
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(?:\s+(\d+) B/op\s+(\d+) allocs/op)?`)

// parseGoBench reads go test -bench -benchmem output; a benchmark run
// several times keeps its fastest line.
func parseGoBench(b []byte) map[string]GoBench {
	out := map[string]GoBench{}
	pkg := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = p
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		g := GoBench{Name: m[1], Package: pkg, Present: true}
		g.NsPerOp, _ = strconv.ParseFloat(m[2], 64)
		if m[3] != "" {
			g.HasMem = true
			g.BytesPerOp, _ = strconv.Atoi(m[3])
			g.AllocsPerOp, _ = strconv.Atoi(m[4])
		}
		if old, ok := out[g.Name]; !ok || g.NsPerOp < old.NsPerOp {
			out[g.Name] = g
		}
	}
	return out
}

func funcs(d *data) template.FuncMap {
	return template.FuncMap{
		// path finds a path's results in a report (nil when it was not run).
		"path": func(r *results.Report, key string) *results.PathResult {
			if r == nil {
				return nil
			}
			for i := range r.Paths {
				if r.Paths[i].Key == key {
					return &r.Paths[i]
				}
			}
			return nil
		},
		"table": table,
		"targets": func(p *results.PathResult) string {
			if p == nil {
				return ""
			}
			var b strings.Builder
			for _, t := range p.Targets {
				mark := "met ✔"
				if !t.Met {
					mark = "**missed** ✘"
				}
				fmt.Fprintf(&b, "- %s: %s, %s\n", t.Name, t.Value, mark)
			}
			return b.String()
		},
		// gobench is one in-process benchmark as a table cell group.
		"gobench": func(name string) string {
			g, ok := d.Go[name]
			if !ok {
				return "| (not run) | | |"
			}
			return fmt.Sprintf("| %s | %d | %s |", duration(g.NsPerOp), g.AllocsPerOp, thousands(float64(g.BytesPerOp)))
		},
		"goNs": func(name string) float64 { return d.Go[name].NsPerOp },
		// gobenchtime is one in-process benchmark's time and allocations,
		// for the prose.
		"gobenchtime": func(name string) string {
			g, ok := d.Go[name]
			if !ok {
				return "(not run)"
			}
			return fmt.Sprintf("%s and %d allocations", duration(g.NsPerOp), g.AllocsPerOp)
		},
		// gotarget judges an in-process benchmark against a time (and,
		// when maxAllocs >= 0, an allocation) limit.
		"gotarget": func(label, name string, maxNs float64, maxAllocs int) string {
			g, ok := d.Go[name]
			if !ok {
				return fmt.Sprintf("- %s: not run", label)
			}
			mark := "met ✔"
			if g.NsPerOp > maxNs || (maxAllocs >= 0 && g.AllocsPerOp > maxAllocs) {
				mark = "**missed** ✘"
			}
			return fmt.Sprintf("- %s: %s, %d allocs (`%s`), %s", label, duration(g.NsPerOp), g.AllocsPerOp, name, mark)
		},
		// ratio, diff and median give single figures for the prose:
		// system i of a path against bare.
		"ratio": func(p *results.PathResult, i int) string {
			if p == nil {
				return "?"
			}
			return fmt.Sprintf("%.2f", p.Ratio(i, results.RPSOf).Median)
		},
		"cpudiff": func(p *results.PathResult, i int) string {
			if p == nil {
				return "?"
			}
			return fmt.Sprintf("%+.1f", p.Diff(i, results.CPUOf).Median)
		},
		"cpu": func(p *results.PathResult, i int) string {
			if p == nil || i >= len(p.Systems) {
				return "?"
			}
			return fmt.Sprintf("%.1f", p.Systems[i].Of(results.CPUOf).Median)
		},
		"peak": func(p *results.PathResult, i int) string {
			if p == nil {
				return "?"
			}
			return fmt.Sprintf("%.1f", p.Systems[i].Of(results.PeakRSSOf).Max)
		},
	}
}

// table renders a path as markdown: a row per system (median and, in
// brackets, the lowest and highest of the rounds), then each system against
// bare (medians of the per-round ratios and differences).
func table(p *results.PathResult) string {
	if p == nil {
		return "(not measured in this run)\n"
	}
	var b strings.Builder
	b.WriteString("| system | req/s | p99 | server CPU per check | peak RSS |\n|---|---:|---:|---:|---:|\n")
	for _, s := range p.Systems {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.1f MiB |\n", s.Name, spread(s.Of(results.RPSOf), thousands, ""),
			spread(s.Of(results.P99Of), thousands, " µs"), spread(s.Of(results.CPUOf), oneDecimal, " µs"), s.Of(results.PeakRSSOf).Max)
	}
	for i, s := range p.Systems {
		ref := p.RefOf(i)
		if ref < 0 {
			continue
		}
		fmt.Fprintf(&b, "| **%s / %s** | **%s** | %s | **%s** | |\n", s.Name, p.Systems[ref].Name,
			spread(p.Ratio(i, results.RPSOf), func(v float64) string { return fmt.Sprintf("%.2f×", v) }, ""),
			spread(p.Ratio(i, results.P99Of), func(v float64) string { return fmt.Sprintf("%.2f×", v) }, ""),
			spread(p.Diff(i, results.CPUOf), func(v float64) string { return fmt.Sprintf("%+.1f", v) }, " µs"))
	}
	return b.String()
}

func spread(s results.Stat, f func(float64) string, unit string) string {
	return fmt.Sprintf("%s%s <sub>%s–%s</sub>", f(s.Median), unit, f(s.Min), f(s.Max))
}

func oneDecimal(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// thousands writes a whole number with thin separators: 38,437.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func duration(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.1f ms", ns/1e6)
	case ns >= 1e4:
		return fmt.Sprintf("%.0f µs", ns/1e3)
	case ns >= 1e3:
		return fmt.Sprintf("%.2f µs", ns/1e3)
	}
	return fmt.Sprintf("%.0f ns", ns)
}
