package check

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/oidc-authservice/oidc-authservice/internal/authorizer"
)

// recordingAuthorizer is an external authorizer of arrikto's protocol that
// answers by the path it is asked about and keeps every question.
type recordingAuthorizer struct {
	*httptest.Server
	mu    sync.Mutex
	asked []authorizer.Input
}

func startRecordingAuthorizer(t *testing.T) *recordingAuthorizer {
	r := &recordingAuthorizer{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var in authorizer.Input
		b, _ := io.ReadAll(req.Body)
		if err := json.Unmarshal(b, &in); err != nil {
			w.WriteHeader(400)
			return
		}
		r.mu.Lock()
		r.asked = append(r.asked, in)
		r.mu.Unlock()
		switch p := in.Request.Path; {
		case strings.HasPrefix(p, "/denied"):
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, "profile kubeflow-bob is not yours")
		case strings.HasPrefix(p, "/broken"):
			w.WriteHeader(http.StatusInternalServerError)
		case strings.HasPrefix(p, "/slow"):
			time.Sleep(300 * time.Millisecond)
		}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recordingAuthorizer) questions() []authorizer.Input {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]authorizer.Input(nil), r.asked...)
}

// TestExternalAuthorizer: after GROUPS_ALLOWLIST and the rules allowed, the
// external authorizer decides, for sessions, session values as bearer
// tokens and forward auth alike; it is told the verified identity and the
// request, never a token; an authorizer that cannot decide refuses with a
// 403 saying so.
func TestExternalAuthorizer(t *testing.T) {
	az := startRecordingAuthorizer(t)
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(rules, []byte("rules:\n- name: admins\n  pathPrefix: /admin\n  allow: {groups: [admins]}\n"), 0o600)
	f := newFixture(t, map[string]string{"EXTERNAL_AUTHZ_URL": az.URL + "/authorize", "EXTERNAL_AUTHZ_TIMEOUT": "100ms",
		"EXTERNAL_AUTHZ_CACHE_TTL": "0s", "AUTHORIZATION_RULES_FILE": rules})
	valid := f.cookie(t, "alice@example.com", []string{"ml"}, f.now.Add(time.Hour))
	cookie := map[string]string{"Cookie": "authservice_session=" + valid, "Accept": "application/json"}

	type answer struct {
		Error, User, Reason string
	}
	for _, c := range []struct {
		name   string
		method string
		target string
		hdr    map[string]string
		status int
		reason string // of the 403
		asked  []string
	}{
		{"allowed", "GET", "/notebook/x?y=1", cookie, 200, "", []string{"/notebook/x"}},
		{"allowed, session value as bearer", "POST", "/pipeline/apis/v1/runs", map[string]string{"Authorization": "Bearer " + valid}, 200, "", []string{"/pipeline/apis/v1/runs"}},
		{"denied: the body is the reason", "GET", "/denied/x", cookie, 403, "profile kubeflow-bob is not yours", []string{"/denied/x"}},
		{"the rules refuse first: the authorizer is not asked", "GET", "/admin/x", cookie, 403, "not allowed by rule admins", nil},
		{"a 500 refuses", "GET", "/broken", cookie, 403, "authorization service unavailable", []string{"/broken"}},
		{"a timeout refuses", "GET", "/slow", cookie, 403, "authorization service unavailable", []string{"/slow"}},
		{"both readings of the path are asked; the one as sent is refused", "GET", "/denied/..%2Fnotebook", cookie, 403,
			"profile kubeflow-bob is not yours (path as sent: /denied/../notebook)", []string{"/notebook", "/denied/../notebook"}},
		{"no credential: nothing to ask about", "GET", "/notebook/x", map[string]string{"Accept": "application/json"}, 401, "", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(az.questions())
			w := f.do(c.method, c.target, c.hdr)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d: %s", w.Code, c.status, w.Body)
			}
			var asked []string
			for _, q := range az.questions()[before:] {
				asked = append(asked, q.Request.Path)
			}
			if strings.Join(asked, " ") != strings.Join(c.asked, " ") {
				t.Errorf("asked about %q, want %q", asked, c.asked)
			}
			if c.status == 403 {
				var a answer
				json.Unmarshal(w.Body.Bytes(), &a)
				if a.Error != "forbidden" || a.User != "alice@example.com" || a.Reason != c.reason {
					t.Errorf("403 body %s, want reason %q", w.Body, c.reason)
				}
				if c.reason == "authorization service unavailable" && w.Header().Get("Retry-After") == "" {
					t.Error("no Retry-After on a refusal for want of an answer")
				}
				if w.Header().Get("Kubeflow-Userid") != "" {
					t.Error("identity headers on a refusal")
				}
			}
		})
	}

	// What the authorizer was told: the verified identity and the request,
	// the host without the port, no token anywhere.
	qs := az.questions()
	first := qs[0]
	if first.User.Name != "alice@example.com" || first.User.ID != "s" || strings.Join(first.User.Groups, ",") != "ml" ||
		first.User.Claims["sub"] != "s" || first.Request.Host != "kubeflow.example.com" || first.Request.Port != 80 ||
		first.Request.Method != "GET" || first.Timestamp == "" {
		t.Errorf("question %+v", first)
	}
	b, _ := json.Marshal(qs)
	if strings.Contains(string(b), valid[:40]) {
		t.Error("a session value reached the authorizer")
	}

	// A browser navigation refused for want of an answer gets a page.
	w := f.do("GET", "/broken", map[string]string{"Cookie": "authservice_session=" + valid, "Accept": "text/html"})
	if w.Code != 403 || !strings.Contains(w.Body.String(), "cannot be checked") {
		t.Errorf("navigation: %d %s", w.Code, w.Body)
	}

	// Forward auth asks about the original request.
	fa := verifyRequest(f, "127.0.0.1:5000", map[string]string{"X-Original-Method": "DELETE", "X-Original-Url": "https://kf.example.com:8443/denied/y",
		"Cookie": "__Host-authservice_session=" + valid})
	last := az.questions()[len(az.questions())-1]
	if fa.Code != 403 || last.Request.Host != "kf.example.com" || last.Request.Port != 8443 || last.Request.Method != "DELETE" || last.Request.Path != "/denied/y" {
		t.Errorf("forward auth: %d, asked %+v", fa.Code, last.Request)
	}

	// The gRPC front (GRPC_PORT) goes through the same decision: asked,
	// refused with the authorizer's reason, allowed.
	for _, c := range []struct {
		path, decision, reason string
		status                 int
	}{{"/denied/z", "forbidden", "authorizer", 403}, {"/broken", "forbidden", "authorizer_unavailable", 403}, {"/notebook/z", "allow", "session", 200}} {
		r := httptest.NewRequest("GET", c.path, nil)
		r.Host = "kubeflow.example.com"
		r.Header.Set("Cookie", "authservice_session="+valid)
		r.Header.Set("Accept", "application/json")
		var a Answer
		f.h.ServeGRPC(&a, r, propagation.MapCarrier{})
		last := az.questions()[len(az.questions())-1]
		if a.Status != c.status || a.Decision != c.decision || a.Reason != c.reason || last.Request.Path != c.path {
			t.Errorf("gRPC %s: %d %s/%s %s, asked about %s", c.path, a.Status, a.Decision, a.Reason, a.Body, last.Request.Path)
		}
	}
}
