//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// TestSoakWithProviderRestartAndKeyRotation: a steady load of 1,000
// sessions (and bearer tokens) on two replicas while the provider is killed
// and restarted (Dex keeps its keys in memory, so it comes back with new
// signing keys), the bearer-token issuer rotates its key, and one replica is
// restarted with a new session key first. Valid sessions must get exactly
// their identity on every request, nothing may answer 5xx, and the heap
// must not grow without bound. SOAK_DURATION sets the length (default 20 s;
// `make soak` runs 60 s). Figures are printed, not asserted.
func TestSoakWithProviderRestartAndKeyRotation(t *testing.T) {
	duration := 20 * time.Second
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		duration = d
	}
	oldKey, newKey := peer.RandomKey(), peer.RandomKey()
	dex := peer.StartDex(t, peer.DexOptions{})
	iss := peer.StartIssuer(t)
	authnFile := filepath.Join(t.TempDir(), "authn.yaml")
	os.WriteFile(authnFile, []byte(fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1beta1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: %s
    audiences: ["soak"]
  claimMappings:
    username:
      claim: sub
      prefix: "bot:"
`, iss.URL)), 0o600)
	start := func(keys string) *replica {
		env := peer.KubeflowEnv(dex)
		env["SESSION_KEYS"] = keys
		env["AUTHENTICATION_CONFIG_FILE"] = authnFile
		env["LOG_LEVEL"] = "info"
		svc := peer.StartService(t, env)
		svc.WaitReady(t, 30*time.Second)
		return &replica{svc: svc, gateway: peer.KubeflowGateway(t, peer.EnvoyFilterLayout, svc.CheckURL, svc.WebURL, dex.Port)}
	}
	var replicas atomic.Pointer[[]*replica]
	a, b := start(oldKey), start(oldKey)
	replicas.Store(&[]*replica{a, b})

	// 1,000 sessions: 10 from real logins through Dex, 990 sealed with the
	// old key as another replica would have sealed them.
	type sess struct {
		user   string
		cookie string
	}
	var sessions []sess
	for i := 0; i < 10; i++ {
		c := newClient()
		resp, err := peer.DexLogin(c.Client, a.gateway+"/login?format=json", "user@example.com", "12341234")
		readEcho(t, resp, err)
		sessions = append(sessions, sess{"user@example.com", c.cookie(a.gateway, "authservice_session")})
	}
	secret, _ := config.ParseSecret(oldKey)
	codec := session.NewCodec([][]byte{secret}, 24*time.Hour, time.Now)
	now := time.Now()
	for i := len(sessions); i < 1000; i++ {
		user := fmt.Sprintf("user%d@example.com", i)
		v, err := codec.SealSession("authservice_session", &session.Session{ID: fmt.Sprint(i), Subject: fmt.Sprint(i), User: user,
			Groups: []string{"soak"}, Created: now.Unix(), Expires: now.Add(2 * time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, sess{user, v})
	}
	var tokMu sync.Mutex
	tokens := map[string]string{}
	addTokens := func(n int) {
		tokMu.Lock()
		defer tokMu.Unlock()
		for i := 0; i < n; i++ {
			sub := fmt.Sprintf("job-%d", len(tokens))
			tokens[iss.Sign(t, map[string]any{"sub": sub, "aud": "soak", "exp": time.Now().Add(time.Hour).Unix()})] = "bot:" + sub
		}
	}
	addTokens(20)

	var (
		requests, wrong, fivexx, transport atomic.Int64
		latMu                              sync.Mutex
		latencies                          []time.Duration
		firstWrong                         atomic.Value
	)
	transportClient := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	one := func(rng *rand.Rand) {
		rs := *replicas.Load()
		r := rs[rng.IntN(len(rs))]
		req, _ := http.NewRequest("GET", r.gateway+"/soak?format=json", nil)
		want, status := "", 200
		switch k := rng.IntN(100); {
		case k < 85:
			s := sessions[rng.IntN(len(sessions))]
			req.Header.Set("Cookie", "authservice_session="+s.cookie)
			want = s.user
		case k < 95:
			tokMu.Lock()
			for tok, user := range tokens {
				req.Header.Set("Authorization", "Bearer "+tok)
				want = user
				break
			}
			tokMu.Unlock()
		case k < 98:
			req.Header.Set("X-Requested-With", "XMLHttpRequest")
			status = 401
		default:
			req.Header.Set("Cookie", "authservice_session=forged"+fmt.Sprint(k))
			req.Header.Set("Accept", "application/json")
			status = 401
		}
		t0 := time.Now()
		resp, err := transportClient.Do(req)
		took := time.Since(t0)
		requests.Add(1)
		if err != nil {
			transport.Add(1)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		latMu.Lock()
		latencies = append(latencies, took)
		latMu.Unlock()
		if resp.StatusCode >= 500 {
			fivexx.Add(1)
		}
		ok := resp.StatusCode == status
		if ok && want != "" {
			var e struct{ Headers map[string][]string }
			ok = json.Unmarshal(body, &e) == nil && slices.Equal(e.Headers["kubeflow-userid"], []string{want})
		}
		if !ok {
			wrong.Add(1)
			firstWrong.CompareAndSwap(nil, fmt.Sprintf("want %d %q, got %d %.200s", status, want, resp.StatusCode, body))
		}
	}

	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 7))
			for time.Now().Before(deadline) {
				one(rng)
				time.Sleep(time.Millisecond) // a steady rate, not a flood
			}
		}(uint64(w))
	}

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	at := func(frac float64) {
		time.Sleep(time.Until(deadline.Add(-duration).Add(time.Duration(frac * float64(duration)))))
	}

	at(0.2)
	warm := heap()
	// The provider dies. Existing sessions and tokens keep working; a new
	// login gets a page that says so, not a 5xx.
	dex.Stop()
	at(0.3)
	resp, err := newClient().noFollow().Get(a.gateway + "/during-outage")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		t.Errorf("login start while the provider is down: %d", resp.StatusCode)
	}
	at(0.45)
	dex.Start() // new signing keys: Dex's storage is in memory
	// The bearer-token issuer rotates its key: new tokens use it.
	iss.Rotate()
	addTokens(20)
	at(0.6)
	// Logins work again, with the provider's new keys.
	c := newClient()
	resp, err = peer.DexLogin(c.Client, b.gateway+"/after-restart?format=json", "user@example.com", "12341234")
	if e := readEcho(t, resp, err); header(e, "kubeflow-userid") != "user@example.com" {
		t.Errorf("login after the provider restart: %v", e.Headers)
	}
	// Rolling restart of one replica with the new session key first.
	replicas.Store(&[]*replica{b})
	time.Sleep(200 * time.Millisecond) // requests already sent to a finish
	a.svc.Stop()
	a = start(newKey + "," + oldKey)
	replicas.Store(&[]*replica{a, b})
	wg.Wait()
	end := heap()

	latMu.Lock()
	slices.Sort(latencies)
	p := func(q float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(q*float64(len(latencies)-1))]
	}
	latMu.Unlock()
	t.Logf("soak %s: %d requests (%.0f/s), %d wrong answers, %d 5xx, %d transport errors; latency p50 %s p99 %s max %s; heap in use %.1f MiB after warm-up, %.1f MiB at the end",
		duration, requests.Load(), float64(requests.Load())/duration.Seconds(), wrong.Load(), fivexx.Load(), transport.Load(),
		p(0.5), p(0.99), p(1), float64(warm)/(1<<20), float64(end)/(1<<20))
	if wrong.Load() != 0 {
		t.Errorf("%d wrong answers; first: %v", wrong.Load(), firstWrong.Load())
	}
	if fivexx.Load() != 0 || transport.Load() != 0 {
		t.Errorf("%d 5xx answers, %d transport errors", fivexx.Load(), transport.Load())
	}
	if requests.Load() < 100 {
		t.Errorf("only %d requests: the load did not run", requests.Load())
	}
	// Not a timing assertion: memory must not grow with the number of
	// requests once the caches are warm (they are bounded).
	if end > warm+64<<20 {
		t.Errorf("heap grew from %.1f to %.1f MiB", float64(warm)/(1<<20), float64(end)/(1<<20))
	}
}
