package integration

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// scrape reads /metrics into "name{labels}" → value.
func scrape(t *testing.T, svc *peer.Service) map[string]float64 {
	t.Helper()
	resp, err := http.Get(svc.ProbeURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsMoveWithChecksAndLogins(t *testing.T) {
	os.Remove(filepath.Join(peer.ArtifactsDir(t), "service.log")) // from an earlier run
	s := newSetup(t, peer.EnvoyFilterLayout, map[string]string{"ACCESS_LOG": "true", "ACCESS_LOG_SAMPLE_RATE": "1"})
	before := scrape(t, s.svc)
	if before[`oidc_authservice_build_info{goversion="`+goVersion(before)+`",version="dev"}`] != 1 {
		t.Fatalf("no build_info: %v", keysWith(before, "build_info"))
	}

	// An XHR without a session: deny, no credentials.
	req, _ := http.NewRequest("GET", s.gateway+"/api/workgroup/env-info", nil)
	req.Header.Set("X-Requested-With", "XMLHttpRequest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// A login through Dex (redirect, callback, then allow), a second
	// request on the session (cache hit), and a forged cookie.
	b := newBrowser()
	s.login(t, b, "/notebook/ns?format=json")
	resp, err = b.Get(s.gateway + "/again?format=json")
	if err != nil {
		t.Fatal(err)
	}
	readEcho(t, resp)
	req, _ = http.NewRequest("GET", s.gateway+"/api/x", nil)
	req.Header.Set("Cookie", "authservice_session=forged-value")
	req.Header.Set("Accept", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	after := scrape(t, s.svc)
	delta := func(k string) float64 { return after[k] - before[k] }
	for k, want := range map[string]float64{
		`oidc_authservice_checks_total{decision="deny",protocol="http",reason="no_credentials"}`:     1,
		`oidc_authservice_checks_total{decision="redirect",protocol="http",reason="no_credentials"}`: 1,
		`oidc_authservice_checks_total{decision="allow",protocol="http",reason="session"}`:           2,
		`oidc_authservice_checks_total{decision="deny",protocol="http",reason="invalid_session"}`:    1,
		`oidc_authservice_logins_started_total`:                                                      1,
		`oidc_authservice_logins_completed_total`:                                                    1,
		`oidc_authservice_cache_lookups_total{cache="session",result="hit"}`:                         1,
		`oidc_authservice_cache_lookups_total{cache="session",result="miss"}`:                        2, // the first allow, the forged cookie
		`oidc_authservice_provider_requests_total{endpoint="token",result="2xx"}`:                    1,
	} {
		if got := delta(k); got != want {
			t.Errorf("%s moved by %v, want %v", k, got, want)
		}
	}
	var checks float64
	for k := range after {
		if strings.HasPrefix(k, "oidc_authservice_checks_total{") {
			checks += delta(k)
		}
	}
	if got := delta(`oidc_authservice_check_duration_seconds_count{protocol="http"}`); got != checks || checks < 5 {
		t.Errorf("check latency observed %v times for %v checks", got, checks)
	}
	// Dex's /dex/* is a skip path: the login form went through the gateway.
	if delta(`oidc_authservice_checks_total{decision="allow",protocol="http",reason="skip_path"}`) < 1 {
		t.Error("skip-path allows not counted")
	}
	if after[`oidc_authservice_provider_requests_total{endpoint="discovery",result="2xx"}`] < 1 ||
		after[`oidc_authservice_provider_requests_total{endpoint="jwks",result="2xx"}`] < 1 {
		t.Errorf("discovery and key fetches not counted: %v", keysWith(after, "provider_requests_total"))
	}
	// No user id, host, path or token in any label.
	for k := range after {
		for _, leak := range []string{"user@example.com", "/notebook", "127.0.0.1", "forged-value"} {
			if strings.Contains(k, leak) {
				t.Errorf("metric %s carries %q", k, leak)
			}
		}
	}

	// One access-log line per check, with the user on allows and never the
	// query string.
	lines := accessLines(t)
	var allowed, denied int
	for _, l := range lines {
		if l["path"] == "/again" && l["decision"] == "allow" && l["user"] == "user@example.com" {
			allowed++
		}
		if l["path"] == "/api/x" && l["decision"] == "deny" && l["reason"] == "invalid_session" {
			denied++
		}
		if strings.Contains(l["path"], "format=") {
			t.Errorf("access log carries a query string: %v", l)
		}
	}
	if allowed != 1 || denied != 1 {
		t.Fatalf("access log: %d allow lines for /again, %d deny lines for /api/x; %d lines", allowed, denied, len(lines))
	}
}

func TestAccessLogSamplingKeepsDenials(t *testing.T) {
	os.Remove(filepath.Join(peer.ArtifactsDir(t), "service.log"))
	s := newSetup(t, peer.EnvoyFilterLayout, map[string]string{"ACCESS_LOG": "true", "ACCESS_LOG_SAMPLE_RATE": "0"})
	b := newBrowser()
	s.login(t, b, "/sampled?format=json")
	for range 5 {
		resp, err := b.Get(s.gateway + "/sampled?format=json")
		if err != nil {
			t.Fatal(err)
		}
		readEcho(t, resp)
	}
	req, _ := http.NewRequest("GET", s.gateway+"/api/denied", nil)
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var allows, denials int
	for _, l := range accessLines(t) {
		switch l["decision"] {
		case "allow":
			allows++
		case "deny":
			denials++
		}
	}
	if allows != 0 || denials != 1 {
		t.Fatalf("rate 0: %d allow lines (want 0), %d deny lines (want 1)", allows, denials)
	}
	m := scrape(t, s.svc)
	if got := m["oidc_authservice_access_log_lines_total"]; got < 2 { // the redirect and the denial
		t.Fatalf("access_log_lines_total %v", got)
	}
}

// accessLines are the access-log entries the service wrote to this test's
// log file.
func accessLines(t *testing.T) []map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(peer.ArtifactsDir(t), "service.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	var out []map[string]string
	for _, line := range strings.Split(string(b), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != "access" {
			continue
		}
		s := map[string]string{}
		for k, v := range m {
			if str, ok := v.(string); ok {
				s[k] = str
			}
		}
		out = append(out, s)
	}
	return out
}

func goVersion(m map[string]float64) string {
	for k := range m {
		if i := strings.Index(k, `build_info{goversion="`); i >= 0 {
			rest := k[i+len(`build_info{goversion="`):]
			return rest[:strings.IndexByte(rest, '"')]
		}
	}
	return ""
}

func keysWith(m map[string]float64, sub string) []string {
	var out []string
	for k := range m {
		if strings.Contains(k, sub) {
			out = append(out, k)
		}
	}
	return out
}
