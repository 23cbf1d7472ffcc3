package tokenreview_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/tokenreview"
)

const clusterIssuer = "https://kubernetes.default.svc.cluster.local"

// jwt builds an unsigned-but-well-formed token: the API server (here a
// fake) is what verifies it.
func jwt(claims map[string]any) string {
	h, _ := json.Marshal(map[string]any{"alg": "RS256", "kid": "k"})
	p, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + ".c2ln"
}

func saToken(name string, exp time.Time) string {
	return jwt(map[string]any{"iss": clusterIssuer, "sub": "system:serviceaccount:ns:" + name,
		"aud": []string{"istio-ingressgateway.istio-system.svc.cluster.local"}, "exp": exp.Unix()})
}

// fakeAPIServer answers TokenReviews: tokens listed in valid are
// authenticated with the audiences asked for.
type fakeAPIServer struct {
	*httptest.Server
	reviews  atomic.Int64
	inFlight atomic.Int64
	maxSeen  atomic.Int64
	mu       sync.Mutex
	valid    map[string]string // token → service account name
	authz    []string          // Authorization headers seen
	specs    []map[string]any
	delay    time.Duration
	status   int // answer this status instead, when set
}

func startFake(t *testing.T) *fakeAPIServer {
	f := &fakeAPIServer{valid: map[string]string{}}
	f.Server = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPIServer) serve(w http.ResponseWriter, r *http.Request) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxSeen.Load()
		if n <= m || f.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	f.reviews.Add(1)
	if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
		http.Error(w, "wrong endpoint", http.StatusNotFound)
		return
	}
	var req struct {
		APIVersion, Kind string
		Spec             map[string]any
	}
	json.NewDecoder(r.Body).Decode(&req)
	f.mu.Lock()
	f.authz = append(f.authz, r.Header.Get("Authorization"))
	f.specs = append(f.specs, req.Spec)
	name, ok := f.valid[fmt.Sprint(req.Spec["token"])]
	delay, status := f.delay, f.status
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if status != 0 {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "message": "tokenreviews.authentication.k8s.io is forbidden"})
		return
	}
	st := map[string]any{"authenticated": false, "error": "invalid bearer token"}
	if ok {
		st = map[string]any{"authenticated": true, "audiences": req.Spec["audiences"], "user": map[string]any{
			"username": "system:serviceaccount:ns:" + name, "uid": "uid-" + name,
			"groups": []string{"system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated"},
			"extra":  map[string][]string{"authentication.kubernetes.io/pod-name": {"p"}}}}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": st})
}

// setup writes the service's own token and the fake's CA like a pod's
// service-account directory and builds an Authenticator.
func setup(t *testing.T, f *fakeAPIServer, mod func(*tokenreview.Options)) (*tokenreview.Authenticator, string) {
	t.Helper()
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.Certificate().Raw})
	os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o600)
	os.WriteFile(filepath.Join(dir, "token"), []byte(saToken("authservice", time.Now().Add(time.Hour))+"\n"), 0o600)
	o := tokenreview.Options{APIServer: f.URL, CAFile: filepath.Join(dir, "ca.crt"), TokenFile: filepath.Join(dir, "token"),
		Audiences: []string{"istio-ingressgateway.istio-system.svc.cluster.local"}}
	if mod != nil {
		mod(&o)
	}
	a, err := tokenreview.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return a, dir
}

func TestAcceptedTokenMapsTheAPIServersUser(t *testing.T) {
	f := startFake(t)
	a, dir := setup(t, f, nil)
	exp := time.Now().Add(time.Hour)
	tok := saToken("pipeline-runner", exp)
	f.valid[tok] = "pipeline-runner"

	id, err := a.Authenticate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.Username != "system:serviceaccount:ns:pipeline-runner" || id.UID != "uid-pipeline-runner" ||
		strings.Join(id.Groups, ",") != "system:serviceaccounts,system:serviceaccounts:ns,system:authenticated" || id.Issuer != clusterIssuer {
		t.Fatalf("identity %+v", id)
	}
	if d := time.Until(id.Expiry); d > 10*time.Second || d < 8*time.Second {
		t.Fatalf("identity trusted for %s, want the positive TTL (10 s), not the token's hour", d)
	}
	own, _ := os.ReadFile(filepath.Join(dir, "token"))
	if f.authz[0] != "Bearer "+strings.TrimSpace(string(own)) {
		t.Fatalf("the review was not sent with the service's own token: %q", f.authz[0])
	}
	if aud, _ := json.Marshal(f.specs[0]["audiences"]); string(aud) != `["istio-ingressgateway.istio-system.svc.cluster.local"]` {
		t.Fatalf("spec.audiences = %s", aud)
	}

	// The service's own token rotates: the next review carries the new one.
	rotated := saToken("authservice-rotated", time.Now().Add(time.Hour))
	os.WriteFile(filepath.Join(dir, "token"), []byte(rotated), 0o600)
	other := saToken("other", time.Now().Add(time.Hour))
	f.valid[other] = "other"
	if _, err := a.Authenticate(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	if f.authz[1] != "Bearer "+rotated {
		t.Fatal("the rotated token of the service was not re-read")
	}
}

func TestTrustIsBoundedByTheTokensExp(t *testing.T) {
	f := startFake(t)
	a, _ := setup(t, f, nil)
	exp := time.Now().Add(3 * time.Second)
	tok := saToken("short", exp)
	f.valid[tok] = "short"
	id, err := a.Authenticate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.Expiry.Unix() != exp.Unix() {
		t.Fatalf("expiry %s, want the token's exp %s", id.Expiry, exp)
	}
}

func TestAnswersAreCachedAndAskedAgainAfterTheirTTL(t *testing.T) {
	f := startFake(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	a, _ := setup(t, f, func(o *tokenreview.Options) { o.Now = clock })
	good := saToken("good", time.Now().Add(time.Hour))
	bad := saToken("unknown", time.Now().Add(time.Hour))
	f.valid[good] = "good"
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := a.Authenticate(ctx, good); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Authenticate(ctx, bad); !errors.Is(err, authn.ErrInvalidToken) || errors.Is(err, tokenreview.ErrUnavailable) {
			t.Fatalf("unknown token: %v", err)
		}
	}
	if n := f.reviews.Load(); n != 2 {
		t.Fatalf("%d reviews for 10 checks of 2 tokens, want 2", n)
	}
	now.Add(int64(3 * time.Second)) // past the negative TTL, within the positive one
	a.Authenticate(ctx, good)
	a.Authenticate(ctx, bad)
	if n := f.reviews.Load(); n != 3 {
		t.Fatalf("%d reviews, want 3: the refusal asked again, the acceptance not", n)
	}
	// The ServiceAccount is deleted: noticed once the positive TTL passed.
	f.mu.Lock()
	delete(f.valid, good)
	f.mu.Unlock()
	now.Add(int64(8 * time.Second))
	if _, err := a.Authenticate(ctx, good); err == nil {
		t.Fatal("a token the API server no longer accepts is still accepted after the positive TTL")
	}
}

func TestConcurrentReviewsOfOneTokenShareOneCall(t *testing.T) {
	f := startFake(t)
	f.delay = 200 * time.Millisecond
	a, _ := setup(t, f, nil)
	tok := saToken("busy", time.Now().Add(time.Hour))
	f.valid[tok] = "busy"
	var wg sync.WaitGroup
	errs := make([]error, 30)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = a.Authenticate(context.Background(), tok)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := f.reviews.Load(); n != 1 {
		t.Fatalf("%d reviews for 30 concurrent checks of one token, want 1", n)
	}
}

func TestConcurrencyIsBounded(t *testing.T) {
	f := startFake(t)
	f.delay = 100 * time.Millisecond
	a, _ := setup(t, f, func(o *tokenreview.Options) { o.MaxConcurrent = 3 })
	var wg sync.WaitGroup
	for i := 0; i < 24; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			a.Authenticate(ctx, saToken(fmt.Sprint("distinct-", i), time.Now().Add(time.Hour)))
		}()
	}
	wg.Wait()
	if m := f.maxSeen.Load(); m > 3 {
		t.Fatalf("%d reviews in flight at once, bound is 3", m)
	}
	if n := f.reviews.Load(); n != 24 {
		t.Fatalf("%d reviews of 24 distinct tokens", n)
	}
}

func TestNothingInadmissibleIsSent(t *testing.T) {
	f := startFake(t)
	a, _ := setup(t, f, nil)
	noneHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`))
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"` + clusterIssuer + `","exp":9999999999}`))
	cases := map[string]string{
		"empty":              "",
		"opaque":             "not-a-jwt",
		"two parts":          "a.b",
		"no signature":       noneHeader + "." + payload + ".",
		"alg none":           noneHeader + "." + payload + ".c2ln",
		"payload not json":   noneHeader + ".bm90IGpzb24.c2ln",
		"another issuer":     jwt(map[string]any{"iss": "https://gitlab.example.com", "exp": time.Now().Add(time.Hour).Unix()}),
		"no issuer":          jwt(map[string]any{"sub": "x", "exp": time.Now().Add(time.Hour).Unix()}),
		"expired":            saToken("late", time.Now().Add(-time.Second)),
		"exp not a number":   jwt(map[string]any{"iss": clusterIssuer, "exp": "tomorrow"}),
		"oversized":          jwt(map[string]any{"iss": clusterIssuer, "pad": strings.Repeat("x", authn.MaxTokenSize)}),
		"header not base64":  "!!!." + payload + ".c2ln",
		"payload not base64": base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256"}`)) + ".!!!.c2ln",
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := a.Authenticate(context.Background(), tok)
			if !errors.Is(err, authn.ErrInvalidToken) || errors.Is(err, tokenreview.ErrUnavailable) {
				t.Fatalf("err = %v", err)
			}
		})
	}
	if n := f.reviews.Load(); n != 0 {
		t.Fatalf("%d inadmissible tokens were sent to the API server", n)
	}
}

// The API server down, erroring, refusing the service's credentials, hung,
// or answering nonsense: every time a refusal that says why, never an
// identity.
func TestAPIServerFailuresRefuse(t *testing.T) {
	cases := []struct {
		name string
		prep func(*fakeAPIServer)
		want string
	}{
		{"down", func(f *fakeAPIServer) { f.Listener.Close() }, "connection refused"},
		{"RBAC refuses the service", func(f *fakeAPIServer) { f.status = http.StatusForbidden }, "create` on tokenreviews"},
		{"service token refused", func(f *fakeAPIServer) { f.status = http.StatusUnauthorized }, "own credentials"},
		{"500", func(f *fakeAPIServer) { f.status = http.StatusInternalServerError }, "HTTP 500"},
		{"503", func(f *fakeAPIServer) { f.status = http.StatusServiceUnavailable }, "HTTP 503"},
		// Which of the three equal bounds (context, client, response
		// headers) fires first depends on scheduling: any of them says so.
		{"hangs", func(f *fakeAPIServer) { f.delay = time.Minute }, "deadline|timeout|Timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := startFake(t)
			a, _ := setup(t, f, func(o *tokenreview.Options) { o.Timeout = 300 * time.Millisecond })
			tok := saToken("x", time.Now().Add(time.Hour))
			f.valid[tok] = "x"
			f.mu.Lock()
			c.prep(f)
			f.mu.Unlock()
			start := time.Now()
			id, err := a.Authenticate(context.Background(), tok)
			if id != nil || !errors.Is(err, authn.ErrInvalidToken) || !errors.Is(err, tokenreview.ErrUnavailable) {
				t.Fatalf("id %+v, err %v", id, err)
			}
			if !regexp.MustCompile(c.want).MatchString(err.Error()) {
				t.Fatalf("the reason does not say %q: %v", c.want, err)
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("took %s despite the 300 ms timeout", time.Since(start))
			}
		})
	}
}

func TestRequestDeadlineIsHonoured(t *testing.T) {
	f := startFake(t)
	f.delay = 2 * time.Second
	a, _ := setup(t, f, nil)
	tok := saToken("slow", time.Now().Add(time.Hour))
	f.valid[tok] = "slow"
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := a.Authenticate(ctx, tok); !errors.Is(err, tokenreview.ErrUnavailable) {
		t.Fatalf("err = %v", err)
	}
}

func TestAnswersThatAreNotAnAcceptance(t *testing.T) {
	cases := map[string]http.HandlerFunc{
		"not JSON": func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(201); w.Write([]byte("<html>")) },
		"authenticated without user": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(201)
			w.Write([]byte(`{"status":{"authenticated":true,"audiences":["a"]}}`))
		},
		"audience-unaware answer": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(201)
			w.Write([]byte(`{"status":{"authenticated":true,"user":{"username":"admin"}}}`))
		},
		"another audience": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(201)
			w.Write([]byte(`{"status":{"authenticated":true,"audiences":["https://kubernetes.default.svc"],"user":{"username":"admin"}}}`))
		},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewTLSServer(h)
			defer srv.Close()
			f := &fakeAPIServer{Server: srv}
			a, _ := setup(t, f, func(o *tokenreview.Options) { o.Audiences = []string{"a"} })
			if id, err := a.Authenticate(context.Background(), saToken("x", time.Now().Add(time.Hour))); err == nil {
				t.Fatalf("accepted as %+v", id)
			}
		})
	}
}

func TestSetUp(t *testing.T) {
	f := startFake(t)
	_, dir := setup(t, f, nil)
	a, err := tokenreview.New(tokenreview.Options{APIServer: f.URL, CAFile: filepath.Join(dir, "ca.crt"), TokenFile: filepath.Join(dir, "token")})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Issuers(); len(got) != 1 || got[0] != clusterIssuer {
		t.Fatalf("issuers %v: want the iss of the service's own token", got)
	}
	bad := map[string]tokenreview.Options{
		"http":           {APIServer: "http://127.0.0.1:1", TokenFile: filepath.Join(dir, "token")},
		"no token":       {APIServer: f.URL, TokenFile: filepath.Join(dir, "missing")},
		"opaque token":   {APIServer: f.URL, TokenFile: filepath.Join(dir, "ca.crt")},
		"CA not PEM":     {APIServer: f.URL, TokenFile: filepath.Join(dir, "token"), CAFile: filepath.Join(dir, "token")},
		"CA file absent": {APIServer: f.URL, TokenFile: filepath.Join(dir, "token"), CAFile: filepath.Join(dir, "nope")},
	}
	for name, o := range bad {
		if _, err := tokenreview.New(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}

	t.Setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "443")
	o, err := tokenreview.InCluster(dir, tokenreview.Options{})
	if err != nil || o.APIServer != "https://[fd00::1]:443" || o.TokenFile != filepath.Join(dir, "token") || o.CAFile != filepath.Join(dir, "ca.crt") {
		t.Fatalf("%+v %v", o, err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := tokenreview.InCluster(dir, tokenreview.Options{}); err == nil {
		t.Fatal("outside a pod: no error")
	}
}

// Distinct tokens naming the cluster's issuer need no account: beyond eight
// times MaxConcurrent (at least 32) reviews in flight or waiting, a token is
// refused at once, so a flood of them holds neither goroutines nor tokens
// in memory until the API server answers.
func TestWaitingReviewsAreBounded(t *testing.T) {
	f := startFake(t)
	f.delay = time.Second
	a, _ := setup(t, f, func(o *tokenreview.Options) { o.MaxConcurrent = 1 })
	var wg sync.WaitGroup
	var unavailable atomic.Int64
	before := runtime.NumGoroutine()
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if _, err := a.Authenticate(ctx, saToken(fmt.Sprint("flood-", i), time.Now().Add(time.Hour))); errors.Is(err, tokenreview.ErrUnavailable) {
				unavailable.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := unavailable.Load(); n != 200 {
		t.Fatalf("%d of 200 refused as unavailable", n)
	}
	// The requests are answered; what still waits for the API server is
	// one goroutine per review admitted (and the fake's handlers).
	if g := runtime.NumGoroutine() - before; g > 32+20 {
		t.Fatalf("%d goroutines still waiting after the flood: reviews in flight or waiting are bounded by 32", g)
	}
}
