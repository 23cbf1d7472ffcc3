package integration

import (
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/oidc-authservice/oidc-authservice/test/extauthz"
	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// kubeflowFilterOverHTTP2 is our EnvoyFilter's layout with the check
// cluster speaking HTTP/2 with prior knowledge, as Istio configures it for a
// Service port named http2.
var kubeflowFilterOverHTTP2 = peer.EnvoyFilterLayout.With(extauthz.CheckOverHTTP2())

// A gateway that speaks HTTP/2 cleartext to the check port gets the same
// answers as one that speaks HTTP/1.1: the login from a deep link through
// Dex, the identity on every later request, the 401 of an API call without
// a session and the logout.
func TestCheckOverCleartextHTTP2(t *testing.T) {
	s := newSetup(t, kubeflowFilterOverHTTP2, nil)
	b := newBrowser()
	e := s.login(t, b, "/notebook/ns/nb/lab?format=json")
	if e.Path != "/notebook/ns/nb/lab" || len(e.Headers["kubeflow-userid"]) != 1 || e.Headers["kubeflow-userid"][0] != "user@example.com" {
		t.Fatalf("login over h2c: landed on %s with %v", e.Path, e.Headers["kubeflow-userid"])
	}
	resp, err := b.Get(s.gateway + "/pipeline/apis?format=json")
	if err != nil {
		t.Fatal(err)
	}
	if e := readEcho(t, resp); len(e.Headers["kubeflow-groups"]) != 1 || e.Headers["kubeflow-groups"][0] != "team-a,team-b" {
		t.Fatalf("second request over h2c: groups %v", e.Headers["kubeflow-groups"])
	}
	req, _ := http.NewRequest("GET", s.gateway+"/pipeline/apis", nil)
	req.Header.Set("Accept", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("API call without a session over h2c: %d %s", resp.StatusCode, body)
	}
	req, _ = http.NewRequest("POST", s.gateway+"/authservice/logout", nil)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err = noFollowWith(b.Jar).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		t.Fatalf("logout over h2c: %d", resp.StatusCode)
	}
	gw, _ := url.Parse(s.gateway)
	resp, err = noFollowWith(b.Jar).Get(s.gateway + "/pipeline/apis?format=json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 302 {
		t.Fatalf("after logout over h2c: %d with cookies %q, want a new login", resp.StatusCode, cookieHeader(b, gw))
	}
}

// HTTP/2 is spoken only to a client that starts with its preface: an
// HTTP/1.1 request asking to upgrade is answered in HTTP/1.1.
func TestCheckPortRefusesUpgradeToH2C(t *testing.T) {
	s := newSetup(t, peer.EnvoyFilterLayout, nil)
	u, _ := url.Parse(s.svc.CheckURL)
	a := raw(t, u.Host, rawGet("/pipeline/apis", "kubeflow.example.com", "Accept: application/json",
		"Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA", "Connection: Upgrade, HTTP2-Settings"))
	if a.status == http.StatusSwitchingProtocols || a.status != 401 {
		t.Fatalf("Upgrade: h2c: %s, want an HTTP/1.1 401", a)
	}
}
