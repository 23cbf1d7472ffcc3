package integration

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// make run's script (deploy/local/run.sh) with one part's port taken: it
// names the part, the line of its log that says why, the folder of the
// run's logs and the setting that fixes it, exits non-zero, and never says
// it is running.
func TestMakeRunNamesThePartThatFails(t *testing.T) {
	for _, c := range []struct{ setting, part, log string }{
		{"DEX_PORT", "make run: Dex did not start", "dex.log"},
		{"UPSTREAM_PORT", "make run: the demo upstream did not start", "upstream.log"},
		{"SERVER_PORT", "make run: the service (oidc-authservice) did not start", "service.log"},
		{"GATEWAY_PORT", "make run: the gateway (extauthz-proxy) did not start", "gateway.log"},
	} {
		t.Run(c.setting, func(t *testing.T) {
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer taken.Close()
			port := taken.Addr().(*net.TCPAddr).Port
			r := peer.StartMakeRun(t, map[string]string{c.setting: strconv.Itoa(port)})
			code, err := r.Exit(90 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			out := r.Output()
			if code == 0 || strings.Contains(out, "is running") {
				t.Fatalf("exit status %d with %s=%d taken:\n%s", code, c.setting, port, out)
			}
			for _, want := range []string{
				c.part + ": it exited with status 1.",
				"127.0.0.1:" + strconv.Itoa(port) + ": bind: address already in use", // the part's log line
				"Port " + strconv.Itoa(port) + " is taken by another program",
				"Fix: stop that program, or give ", c.setting + "=",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("the message lacks %q:\n%s", want, out)
				}
			}
			// The log line quoted is in the part's log, in a folder of this run
			// that the message names.
			m := regexp.MustCompile(`Logs of this run: (\S+)`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no log folder named:\n%s", out)
			}
			b, err := os.ReadFile(filepath.Join(m[1], c.log))
			if err != nil || !strings.Contains(string(b), "bind: address already in use") {
				t.Errorf("%s in %s: %v %q", c.log, m[1], err, b)
			}
		})
	}
}

// make run comes up (each part answered before it says so), its terminal
// shows readable log lines and no discovery retry, and a login through the
// gateway reaches the demo upstream with the user's id and groups.
func TestMakeRunComesUpAndALoginWorks(t *testing.T) {
	r := peer.StartMakeRun(t, nil)
	if err := r.WaitRunning(90 * time.Second); err != nil {
		t.Fatal(err)
	}
	b := newBrowser()
	resp, err := peer.DexLogin(b.Client, r.Gateway+"/notebook/ns/nb?format=json", "user@example.com", "12341234")
	if err != nil {
		t.Fatal(err)
	}
	e := readEcho(t, resp)
	if e.Path != "/notebook/ns/nb" || header(e, "kubeflow-userid") != "user@example.com" || header(e, "kubeflow-groups") != "ml-engineers,kubeflow-admins" {
		t.Fatalf("the upstream received %s with kubeflow-userid %q, kubeflow-groups %q", e.Path, header(e, "kubeflow-userid"), header(e, "kubeflow-groups"))
	}

	out := r.Output()
	m := regexp.MustCompile(`log in (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no log folder named:\n%s", out)
	}
	for _, f := range []string{"dex.log", "upstream.log", "service.log", "gateway.log"} {
		if _, err := os.Stat(filepath.Join(m[1], f)); err != nil {
			t.Errorf("the run's folder lacks %s: %v", f, err)
		}
	}
	svcLog, _ := os.ReadFile(filepath.Join(m[1], "service.log"))
	for _, text := range []string{out, string(svcLog)} {
		if strings.Contains(text, "discovery failed") {
			t.Errorf("the service started before Dex answered:\n%s", text)
		}
	}
	// A console line, not JSON, and not a screenful: the login line, with
	// the gateway's request id (a UUID, as Envoy makes it), Dex's sub and
	// the session's bytes, takes 213.
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "{") || len(line) > 256 {
			t.Errorf("a line of make run's terminal is not for a person (%d bytes): %.300s", len(line), line)
		}
	}
	for _, want := range []string{"INFO\tstarting", "\tOIDC_PROVIDER=http://127.0.0.1:", "\tCLIENT_SECRET=[redacted]", "(groups: ml-engineers,kubeflow-admins)"} {
		if !strings.Contains(out, want) {
			t.Errorf("make run's terminal lacks %q:\n%s", want, out)
		}
	}
}

func header(e echo, name string) string {
	if v := e.Headers[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}
