package authorizer

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// peer is an HTTP authorization service answering with answer, counting
// the calls and keeping the last body it received.
type peer struct {
	*httptest.Server
	calls atomic.Int32
	mu    sync.Mutex
	last  []byte
}

func newPeer(t *testing.T, answer http.HandlerFunc) *peer {
	p := &peer{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		p.last = b
		p.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *peer) body() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

func status(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

func newAuthorizer(t *testing.T, o Options) *Authorizer {
	t.Helper()
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var alice = Input{Timestamp: "2026-01-01T00:00:00Z",
	User:    User{Name: "alice@example.com", ID: "4217", Groups: []string{"acme", "acme/ml"}, Claims: map[string]any{"email": "alice@example.com"}},
	Request: Request{Host: "kubeflow.example.com", Port: 443, Path: "/pipeline/x", Method: "GET"}}

func TestArriktoProtocol(t *testing.T) {
	for _, c := range []struct {
		name    string
		answer  http.HandlerFunc
		allowed bool
		reason  string
		err     bool
	}{
		{"200 allows", status(200, "anything"), true, "", false},
		{"204 allows", status(204, ""), true, "", false},
		{"403 denies with the body as the reason", status(403, "namespace kubeflow-bob is not yours"), false, "namespace kubeflow-bob is not yours", false},
		{"401 denies", status(401, ""), false, "denied by the external authorizer (HTTP 401)", false},
		{"reason bounded, control characters removed", status(403, "bad\r\nKubeflow-Userid: admin\x00"+strings.Repeat("x", 400)), false, "", false},
		{"500 is an error", status(500, "boom"), false, "", true},
		{"404 is an error", status(404, ""), false, "", true},
		{"302 is an error (not followed)", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:1/allow", http.StatusFound)
		}, false, "", true},
		{"a body larger than MaxBody is an error, even with 200", status(200, strings.Repeat("a", MaxBody+1)), false, "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newPeer(t, c.answer)
			a := newAuthorizer(t, Options{URL: p.URL + "/auth"})
			d, err := a.Decide(context.Background(), alice)
			if c.err {
				if !errors.Is(err, ErrUnavailable) || d.Allowed {
					t.Fatalf("want ErrUnavailable and no allow, got %+v, %v", d, err)
				}
				return
			}
			if err != nil || d.Allowed != c.allowed {
				t.Fatalf("got %+v, %v; want allowed=%v", d, err, c.allowed)
			}
			if c.reason != "" && d.Reason != c.reason {
				t.Errorf("reason %q, want %q", d.Reason, c.reason)
			}
			if strings.ContainsAny(d.Reason, "\r\n\x00") || len(d.Reason) > MaxReason+len("…") {
				t.Errorf("reason not sanitized: %q", d.Reason)
			}
			if !c.allowed && d.Reason == "" {
				t.Error("a deny without a reason")
			}
			if p.calls.Load() != 1 {
				t.Errorf("%d calls", p.calls.Load())
			}
		})
	}
}

func TestArriktoRequestBody(t *testing.T) {
	p := newPeer(t, status(200, ""))
	a := newAuthorizer(t, Options{URL: p.URL})
	if _, err := a.Decide(context.Background(), alice); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(p.body(), &got); err != nil {
		t.Fatal(err)
	}
	want := `{"request":{"host":"kubeflow.example.com","method":"GET","path":"/pipeline/x","port":443},"timestamp":"2026-01-01T00:00:00Z",` +
		`"user":{"claims":{"email":"alice@example.com"},"extra":null,"groups":["acme","acme/ml"],"id":"4217","name":"alice@example.com"}}`
	if b, _ := json.Marshal(got); string(b) != want {
		t.Errorf("body\n%s\nwant\n%s", b, want)
	}
}

func TestOPAProtocol(t *testing.T) {
	for _, c := range []struct {
		name    string
		answer  string
		status  int
		allowed bool
		reason  string
		err     bool
	}{
		{"result true", `{"result": true}`, 200, true, "", false},
		{"result false", `{"result": false}`, 200, false, "denied by the policy", false},
		{"result allow object", `{"result": {"allow": true, "reason": "fine"}}`, 200, true, "", false},
		{"result deny object with reason", `{"result": {"allow": false, "reason": "not in namespace kubeflow-bob"}}`, 200, false, "not in namespace kubeflow-bob", false},
		{"result object without allow", `{"result": {"reason": "x"}}`, 200, false, "the policy's result has no allow", false},
		{"allow not a boolean", `{"result": {"allow": "true"}}`, 200, false, "", true},
		{"missing result (undefined)", `{}`, 200, false, "the policy has no result for this request (undefined)", false},
		{"result a string", `{"result": "yes"}`, 200, false, "", true},
		{"result a number", `{"result": 1}`, 200, false, "", true},
		{"result null", `{"result": null}`, 200, false, "", true},
		{"not JSON", `allow`, 200, false, "", true},
		{"a JSON list", `[true]`, 200, false, "", true},
		{"400 from OPA", `{"code":"invalid_parameter"}`, 400, false, "", true},
		{"500 from OPA", `{"code":"internal_error"}`, 500, false, "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newPeer(t, status(c.status, c.answer))
			a := newAuthorizer(t, Options{URL: p.URL + "/v1/data/kubeflow/authz", Format: FormatOPA})
			d, err := a.Decide(context.Background(), alice)
			if c.err {
				if !errors.Is(err, ErrUnavailable) || d.Allowed {
					t.Fatalf("want ErrUnavailable and no allow, got %+v, %v", d, err)
				}
				return
			}
			if err != nil || d.Allowed != c.allowed || d.Reason != c.reason {
				t.Fatalf("got %+v, %v; want allowed=%v reason %q", d, err, c.allowed, c.reason)
			}
			var in struct {
				Input Input `json:"input"`
			}
			if err := json.Unmarshal(p.body(), &in); err != nil || in.Input.User.Name != "alice@example.com" || in.Input.Request.Path != "/pipeline/x" {
				t.Errorf("OPA got %s", p.body())
			}
		})
	}
}

func TestOPAURLMustBeTheDataAPI(t *testing.T) {
	for _, u := range []string{"http://opa:8181/", "http://opa:8181/v1/policies/x", "http://opa:8181/v0/data/x"} {
		if _, err := New(Options{URL: u, Format: FormatOPA}); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
	for _, u := range []string{"ftp://x/", "http:///x", "http://user:pw@x/", "/relative"} {
		if _, err := New(Options{URL: u}); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
}

func TestTimeoutDenies(t *testing.T) {
	release := make(chan struct{})
	p := newPeer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	a := newAuthorizer(t, Options{URL: p.URL, Timeout: 100 * time.Millisecond})
	d, err := a.Decide(context.Background(), alice)
	if !errors.Is(err, ErrTimeout) || d.Allowed {
		t.Fatalf("got %+v, %v", d, err)
	}
}

func TestSaturationAnsweredAtOnce(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	p := newPeer(t, func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
	})
	a := newAuthorizer(t, Options{URL: p.URL, MaxConcurrent: 1, Timeout: 10 * time.Second})
	go a.Decide(context.Background(), alice)
	<-started
	other := alice
	other.Request.Path = "/other"
	d, err := a.Decide(context.Background(), other)
	close(release)
	if !errors.Is(err, ErrSaturated) || d.Allowed {
		t.Fatalf("got %+v, %v", d, err)
	}
	if n := p.calls.Load(); n != 1 {
		t.Errorf("%d calls reached the authorizer, want 1", n)
	}
}

func TestIdenticalQuestionsShareOneCall(t *testing.T) {
	release := make(chan struct{})
	p := newPeer(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	a := newAuthorizer(t, Options{URL: p.URL, MaxConcurrent: 1})
	var wg sync.WaitGroup
	var allowed atomic.Int32
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d, err := a.Decide(context.Background(), alice); err == nil && d.Allowed {
				allowed.Add(1)
			}
		}()
	}
	for p.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the others join
	close(release)
	wg.Wait()
	if p.calls.Load() != 1 || allowed.Load() != 20 {
		t.Fatalf("%d calls, %d allowed; want 1 call answering all 20", p.calls.Load(), allowed.Load())
	}
}

func TestDecisionsCachedBriefly(t *testing.T) {
	var answer atomic.Int32
	answer.Store(200)
	p := newPeer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(int(answer.Load())) })
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	a := newAuthorizer(t, Options{URL: p.URL, CacheTTL: 10 * time.Second, Now: clock})
	ask := func(in Input) Decision {
		t.Helper()
		d, err := a.Decide(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	first, second := ask(alice), ask(alice)
	if !first.Allowed || !second.Allowed || p.calls.Load() != 1 {
		t.Fatalf("%d calls for one question asked twice", p.calls.Load())
	}
	// Every part of the key is a different question.
	for _, change := range []func(*Input){
		func(in *Input) { in.User.Name = "bob@example.com" },
		func(in *Input) { in.User.Groups = []string{"acme"} },
		func(in *Input) { in.User.Groups = []string{"acme/ml", "acme"} },
		func(in *Input) { in.Request.Method = "POST" },
		func(in *Input) { in.Request.Host = "other.example.com" },
		func(in *Input) { in.Request.Port = 8443 },
		func(in *Input) { in.Request.Path = "/pipeline/y" },
	} {
		in := alice
		in.User.Groups = append([]string(nil), alice.User.Groups...)
		change(&in)
		before := p.calls.Load()
		ask(in)
		if p.calls.Load() != before+1 {
			t.Errorf("%+v answered from another question's cache entry", in)
		}
	}
	// A revoked permission is seen once the decision expires.
	answer.Store(403)
	if !ask(alice).Allowed {
		t.Fatal("the cached allow was not used")
	}
	mu.Lock()
	now = now.Add(11 * time.Second)
	mu.Unlock()
	if ask(alice).Allowed {
		t.Fatal("an expired allow was used")
	}
	// Errors are not cached.
	answer.Store(500)
	mu.Lock()
	now = now.Add(11 * time.Second)
	mu.Unlock()
	for range 2 {
		before := p.calls.Load()
		if _, err := a.Decide(context.Background(), alice); err == nil {
			t.Fatal("500 allowed or denied")
		}
		if p.calls.Load() != before+1 {
			t.Fatal("an error was cached")
		}
	}
}

func TestReason(t *testing.T) {
	for in, want := range map[string]string{
		"  fine  ":               "fine",
		"a\r\nb":                 "a  b",
		"\xff\xfe":               "�",
		"tab\there":              "tab here",
		strings.Repeat("é", 200): strings.Repeat("é", 128) + "…",
	} {
		if got := Reason(in); got != want {
			t.Errorf("Reason(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPortOf(t *testing.T) {
	for _, c := range []struct {
		in    string
		https bool
		host  string
		port  int
	}{
		{"kubeflow.example.com", true, "kubeflow.example.com", 443},
		{"kubeflow.example.com", false, "kubeflow.example.com", 80},
		{"kubeflow.example.com:8443", true, "kubeflow.example.com", 8443},
		{"[::1]:8080", false, "::1", 8080},
		{"[::1]", true, "::1", 443},
		{"host:notaport", false, "host", 80},
	} {
		if h, p := PortOf(c.in, c.https); h != c.host || p != c.port {
			t.Errorf("PortOf(%q, %v) = %q, %d", c.in, c.https, h, p)
		}
	}
}
