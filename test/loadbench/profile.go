package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// profile takes profiles of the service and of the bare server while the
// path's load drives each, before the measured rounds: a CPU profile, the
// allocations made meanwhile and the GC trace (GODEBUG=gctrace=1), in
// -profile's directory as <path>.<system>.*, with text summaries, and
// <path>.diff.txt: the functions whose CPU per answer differs most between
// the two (cumulative µs per answer), which says where the service's extra
// cost goes.
func (e *environment) profile(p *path) error {
	if err := os.MkdirAll(e.o.profile, 0o755); err != nil {
		return err
	}
	perAnswer := map[string]map[string]float64{}
	var names []string
	for _, s := range p.systems {
		if s.p.pprof == "" || s.proto != "" {
			continue
		}
		short := map[kind]string{kindService: "service", kindBare: "bare"}[s.kind]
		m, err := e.profileOne(p, s, filepath.Join(e.o.profile, p.key+"."+short))
		if err != nil {
			return err
		}
		perAnswer[short], names = m, append(names, short)
	}
	if len(names) == 2 {
		a, b := perAnswer[names[1]], perAnswer[names[0]]
		var keys []string
		for k := range a {
			keys = append(keys, k)
		}
		for k := range b {
			if _, ok := a[k]; !ok {
				keys = append(keys, k)
			}
		}
		abs := func(v float64) float64 { return max(v, -v) }
		slices.SortFunc(keys, func(x, y string) int {
			dx, dy := abs(b[x]-a[x]), abs(b[y]-a[y])
			switch {
			case dx > dy:
				return -1
			case dx < dy:
				return 1
			}
			return strings.Compare(x, y)
		})
		var buf bytes.Buffer
		fmt.Fprintf(&buf, "%s: cumulative CPU per answer, µs (%s vs %s)\n\n%-100s %8s %8s %8s\n", p.key, names[0], names[1], "function", names[1], names[0], "diff")
		for _, k := range keys[:min(len(keys), 80)] {
			fmt.Fprintf(&buf, "%-100.100s %8.2f %8.2f %+8.2f\n", k, a[k], b[k], b[k]-a[k])
		}
		name := filepath.Join(e.o.profile, p.key+".diff.txt")
		if err := os.WriteFile(name, buf.Bytes(), 0o644); err != nil {
			return err
		}
		fmt.Printf("profiles: %s\n", name)
	}
	return nil
}

// profileOne profiles one system under the path's load and returns the
// cumulative CPU per answer of every function, in µs.
func (e *environment) profileOne(p *path, s *system, name string) (map[string]float64, error) {
	base := "http://" + s.p.pprof + "/debug/pprof/"
	fetch := func(u, file string) error {
		resp, err := http.Get(u)
		if err != nil {
			return fmt.Errorf("profile of %s (is it built with -tags pprof?): %w", s.name, err)
		}
		defer resp.Body.Close()
		f, err := os.Create(file)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(f, resp.Body)
		return err
	}
	if err := fetch(base+"allocs", name+".allocs-before.pb.gz"); err != nil {
		return nil, err
	}
	logStart, _ := s.p.log.Seek(0, io.SeekCurrent)
	secs := int(e.o.dur.Seconds())
	done := make(chan outcome)
	go func() { done <- p.load(s, e.o.conns, e.o.dur+2*time.Second, 0).run() }()
	time.Sleep(time.Second)
	err := fetch(fmt.Sprintf("%sprofile?seconds=%d", base, secs), name+".cpu.pb.gz")
	if err == nil {
		err = fetch(base+"allocs", name+".allocs.pb.gz")
	}
	o := <-done
	if err != nil {
		return nil, err
	}
	answers := o.rps() * float64(secs) // answered while the CPU profile ran
	logs, _ := os.ReadFile(s.p.log.Name())
	var gc []string
	for _, l := range strings.Split(string(logs[min(int(logStart), len(logs)):]), "\n") {
		if strings.HasPrefix(l, "gc ") {
			gc = append(gc, l)
		}
	}
	os.WriteFile(name+".gctrace.txt", []byte(strings.Join(gc, "\n")+"\n"), 0o644)
	pprof := func(args ...string) string {
		out, _ := exec.Command("go", append([]string{"tool", "pprof"}, args...)...).CombinedOutput()
		return string(out)
	}
	summary := fmt.Sprintf("%s, %s: %.0f answers/s; %d GC cycles in %s (%.1f per 10,000 answers)\n\n", p.key, s.name, o.rps(),
		len(gc), e.o.dur+2*time.Second, float64(len(gc))*1e4/float64(max(o.requests, 1)))
	summary += pprof("-top", "-cum", "-nodecount=60", name+".cpu.pb.gz")
	for _, idx := range []string{"alloc_space", "alloc_objects"} {
		summary += "\n== allocations during the run (" + idx + ")\n" +
			pprof("-top", "-nodecount=30", "-sample_index="+idx, "-diff_base", name+".allocs-before.pb.gz", name+".allocs.pb.gz")
	}
	if err := os.WriteFile(name+".txt", []byte(summary), 0o644); err != nil {
		return nil, err
	}
	fmt.Printf("profiles: %s.{cpu,allocs}.pb.gz, %s.txt, %s.gctrace.txt\n", name, name, name)
	return perFunction(pprof("-top", "-cum", "-nodefraction=0", "-nodecount=100000", name+".cpu.pb.gz"), answers), nil
}

var topLine = regexp.MustCompile(`^\s*[\d.]+[mµn]?s?\s+[\d.]+%\s+[\d.]+%\s+([\d.]+)([mµn]?s)?\s+[\d.]+%\s+(.+)$`)

// perFunction reads pprof -top -cum output into µs per answer.
func perFunction(top string, answers float64) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(top))
	for sc.Scan() {
		m := topLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		switch m[2] {
		case "ms":
			v /= 1e3
		case "µs", "us":
			v /= 1e6
		case "ns":
			v /= 1e9
		}
		out[strings.TrimSpace(m[3])] = v / answers * 1e6
	}
	return out
}
