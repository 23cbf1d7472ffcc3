// Package results holds what test/loadbench measures, as loadbench writes
// it (-json) and cmd docgen reads it: per path, the runs of each system,
// their medians and spreads, the ratios to the bare server and the targets.
package results

import (
	"fmt"
	"slices"
)

// Report is what a loadbench invocation measured; cmd docgen renders it.
type Report struct {
	Date      string // YYYY-MM-DD
	Machine   string // CPU model, cores, memory, OS
	GoVersion string
	Conns     int
	Duration  string
	Rounds    int
	Paths     []PathResult
}

// PathResult is one path: its systems (the service first) and the targets
// judged on it.
type PathResult struct {
	Key, Title, Note string
	Systems          []SystemResult
	// Ref[i] is the system that system i is compared with, -1 for none.
	// Nil: every system with the last (the bare server).
	Ref     []int `json:",omitempty"`
	Targets []Target
}

// SystemResult is one system's runs, one per round.
type SystemResult struct {
	Name string
	Runs []Run
}

// Run is one measured run.
type Run struct {
	Requests   int
	Errors     int
	FirstError string `json:",omitempty"`
	RPS        float64
	P50, P99   float64 // µs, as the generator saw them
	CPU        float64 // server CPU per answer, µs
	GenCPU     float64 // the load generator's CPU per answer, µs
	RSS        float64 // MiB after the run
	PeakRSS    float64 // MiB, the process's peak so far
}

// Target is one of the targets, judged on the medians.
type Target struct {
	Name  string
	Value string
	Met   bool
}

// Stat is a median with its spread.
type Stat struct{ Median, Min, Max float64 }

func NewStat(v []float64) Stat {
	if len(v) == 0 {
		return Stat{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: m, Min: s[0], Max: s[len(s)-1]}
}

// Of is a statistic of the runs.
func (s SystemResult) Of(f func(Run) float64) Stat {
	var v []float64
	for _, r := range s.Runs {
		v = append(v, f(r))
	}
	return NewStat(v)
}

// RefOf is the index of the system that system i is compared with (-1:
// none). Comparisons are per round: each round's runs are back to back, so
// the ratios cancel what drifts between rounds.
func (p *PathResult) RefOf(i int) int {
	if p.Ref != nil {
		return p.Ref[i]
	}
	if i == len(p.Systems)-1 {
		return -1
	}
	return len(p.Systems) - 1
}

// Ratio is the statistic of f(system)/f(reference) over the rounds.
func (p *PathResult) Ratio(i int, f func(Run) float64) Stat {
	ref := p.Systems[p.RefOf(i)].Runs
	var v []float64
	for r, run := range p.Systems[i].Runs {
		if b := f(ref[r]); b != 0 {
			v = append(v, f(run)/b)
		}
	}
	return NewStat(v)
}

// Diff is the statistic of f(system)-f(reference) over the rounds.
func (p *PathResult) Diff(i int, f func(Run) float64) Stat {
	ref := p.Systems[p.RefOf(i)].Runs
	var v []float64
	for r, run := range p.Systems[i].Runs {
		v = append(v, f(run)-f(ref[r]))
	}
	return NewStat(v)
}

func RPSOf(r Run) float64     { return r.RPS }
func P99Of(r Run) float64     { return r.P99 }
func CPUOf(r Run) float64     { return r.CPU }
func PeakRSSOf(r Run) float64 { return r.PeakRSS }

func (p *PathResult) RatioTarget(name string, min float64) Target {
	s := p.Ratio(0, RPSOf)
	return Target{Name: name, Value: ratioValue(s.Median, min), Met: s.Median >= min}
}

func (p *PathResult) P99Target(name string, max float64) Target {
	s := p.Ratio(0, P99Of)
	return Target{Name: name, Value: ratioValue(s.Median, max), Met: s.Median <= max}
}

// ratioValue writes a ratio with two decimals, or four where two would
// print the limit itself (0.9497 against 0.95).
func ratioValue(v, limit float64) string {
	if fmt.Sprintf("%.2f", v) == fmt.Sprintf("%.2f", limit) && v != limit {
		return fmt.Sprintf("%.4f×", v)
	}
	return fmt.Sprintf("%.2f×", v)
}

func (p *PathResult) CPUTarget(name string, max float64) Target {
	s := p.Diff(0, CPUOf)
	return Target{Name: name, Value: fmt.Sprintf("%+.1f µs", s.Median), Met: s.Median <= max}
}

func (p *PathResult) RSSTarget(name string, max float64) Target {
	s := p.Systems[0].Of(PeakRSSOf)
	return Target{Name: name, Value: fmt.Sprintf("%.1f MiB", s.Max), Met: s.Max <= max}
}

// Format writes the median and, in brackets, the spread.
func (s Stat) Format(format string) string {
	return fmt.Sprintf(format+" ["+format+"–"+format+"]", s.Median, s.Min, s.Max)
}

// GenCPUOf is the load generator's CPU per answer.
func GenCPUOf(r Run) float64 { return r.GenCPU }
