package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/loadbench/results"
)

// printPath writes one table: a row per system (median [lowest–highest]
// of the rounds), then each system's ratios to bare, then the targets.
func printPath(w io.Writer, p results.PathResult) {
	fmt.Fprintf(w, "\n== %s: %s\n", p.Key, p.Title)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\treq/s\tp99 µs\tCPU µs/check\tpeak RSS MiB\tgenerator µs\t")
	for _, s := range p.Systems {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f\t%.1f\t\n", s.Name, s.Of(results.RPSOf).Format("%.0f"), s.Of(results.P99Of).Format("%.0f"),
			s.Of(results.CPUOf).Format("%.1f"), s.Of(results.PeakRSSOf).Max, s.Of(results.GenCPUOf).Median)
	}
	for i, s := range p.Systems {
		ref := p.RefOf(i)
		if ref < 0 {
			continue
		}
		fmt.Fprintf(tw, "%s / %s\t%s\t%s\t%s\t\t\t\n", s.Name, p.Systems[ref].Name, p.Ratio(i, results.RPSOf).Format("%.2f"),
			p.Ratio(i, results.P99Of).Format("%.2f"), p.Diff(i, results.CPUOf).Format("%+.1f"))
	}
	tw.Flush()
	for _, t := range p.Targets {
		mark := "✔"
		if !t.Met {
			mark = "✘ missed"
		}
		fmt.Fprintf(w, "target  %s: %s %s\n", t.Name, t.Value, mark)
	}
}

func newReport(o *options) *results.Report {
	return &results.Report{Date: time.Now().UTC().Format("2006-01-02"), Machine: machine(), GoVersion: runtime.Version(),
		Conns: o.conns, Duration: o.dur.String(), Rounds: o.rounds}
}

// machine names the CPU, cores, memory and OS this ran on.
func machine() string {
	model, cores := "unknown CPU", runtime.NumCPU()
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			kb, _ := strconv.Atoi(f[1])
			mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
		}
	}
	osName := runtime.GOOS
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				osName = strings.Trim(v, `"`)
			}
		}
	}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		osName += ", Linux " + strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("%s, %d cores%s, %s", model, cores, mem, osName)
}
