package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/loadbench/results"
)

// h2load measures one run with nghttp2's h2load: HTTP/1.1 over conns
// connections, or h2c (prior knowledge) over conns/8 connections of 8
// streams each, as Envoy multiplexes checks on an http2 cluster. Answers
// are checked by status only: h2load counts them, and every one must be
// 2xx.
func (p *path) h2load(s *system, conns int, d time.Duration) results.Run {
	log := filepath.Join(os.TempDir(), fmt.Sprintf("loadbench-h2load-%d.log", os.Getpid()))
	defer os.Remove(log)
	args := []string{"-D", strconv.Itoa(int(d.Seconds())), "--log-file=" + log}
	if s.proto == "h1" {
		args = append(args, "--h1", "-c", strconv.Itoa(conns), "-m", "1")
	} else {
		args = append(args, "-c", strconv.Itoa(max(conns/8, 1)), "-m", "8")
	}
	for _, f := range p.fixed {
		if !strings.HasPrefix(f, "Content-Length") {
			args = append(args, "-H", f)
		}
	}
	if p.header != "" {
		args = append(args, "-H", p.header+": "+p.values(&system{server: s.server})[0])
	}
	args = append(args, "-H", ":authority: kubeflow.example.com", "http://"+s.addr+p.target)
	c0 := s.p.cpu()
	ru0 := childCPU()
	out, err := exec.Command("h2load", args...).CombinedOutput()
	cpu := s.p.cpu() - c0
	gen := childCPU() - ru0
	rss, peak := s.p.memory()
	run := results.Run{RSS: rss, PeakRSS: peak}
	if err != nil {
		run.Errors, run.FirstError = 1, fmt.Sprintf("h2load: %v: %s", err, lastLines(out, 3))
		return run
	}
	m := regexp.MustCompile(`finished in ([\d.]+)s, ([\d.]+) req/s`).FindSubmatch(out)
	st := regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`).FindSubmatch(out)
	req := regexp.MustCompile(`requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored`).FindSubmatch(out)
	if m == nil || st == nil || req == nil {
		run.Errors, run.FirstError = 1, "h2load: unexpected output: "+lastLines(out, 5)
		return run
	}
	run.RPS, _ = strconv.ParseFloat(string(m[2]), 64)
	ok2xx, _ := strconv.Atoi(string(st[1]))
	failed, _ := strconv.Atoi(string(req[2]))
	errored, _ := strconv.Atoi(string(req[3]))
	lat := readH2loadLog(log)
	run.Requests = len(lat)
	if n := len(lat) - ok2xx + failed + errored; n > 0 {
		run.Errors, run.FirstError = n, fmt.Sprintf("h2load: %d of %d answers not 2xx or failed", n, len(lat))
	}
	if len(lat) > 0 {
		run.P50, run.P99 = float64(lat[len(lat)/2]), float64(lat[len(lat)*99/100])
	}
	run.CPU, run.GenCPU = perCheck(cpu, run.Requests), perCheck(gen, run.Requests)
	return run
}

// readH2loadLog reads the response times (µs) of h2load's per-request log:
// start time, status, response time, tab-separated.
func readH2loadLog(name string) []uint32 {
	f, err := os.Open(name)
	if err != nil {
		return nil
	}
	defer f.Close()
	var lat []uint32
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		v, err := strconv.ParseUint(fields[2], 10, 32)
		if err == nil {
			lat = append(lat, uint32(v))
		}
	}
	slices.Sort(lat)
	return lat
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], " | ")
}
