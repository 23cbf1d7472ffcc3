// Command loadbench compares the check server under load with a bare
// net/http server answering 200 with two headers, on loopback, with the same
// load generator and concurrency, alternating: (a) oidc-authservice with
// valid session cookies of many distinct users, (b) the bare server. It
// prints requests/s, p50, p99 and peak RSS of each, and the ratios.
//
//	go run ./test/loadbench -bin bin/oidc-authservice -users 1000 -c 32 -d 5s
//
// With -tokens N it then drives N distinct bearer JWTs (ES256, from an
// issuer served here and trusted through AUTHENTICATION_CONFIG_FILE) and
// reports the peak RSS with N cached tokens on top of the sessions.
//
// Cookies are sealed here with the service's configured key (test code), as a
// login would seal them; nothing in the product is bypassed.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
)

const key = "loadbench-session-key-0123456789abcdefghij"

var tokens int

// tokenIssuer serves discovery and the JWKS of a fresh ES256 key and
// returns its URL and a function that signs a token for subject sub.
func tokenIssuer() (string, func(sub string) string) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	u := "http://" + l.Addr().String()
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/jwks" {
			json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &priv.PublicKey, KeyID: "bench", Algorithm: "ES256", Use: "sig"}}})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"issuer": u, "jwks_uri": u + "/jwks", "id_token_signing_alg_values_supported": []string{"ES256"}})
	}))
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: priv}, (&jose.SignerOptions{}).WithHeader("kid", "bench").WithType("JWT"))
	if err != nil {
		log.Fatal(err)
	}
	return u, func(sub string) string {
		now := time.Now()
		b, _ := json.Marshal(map[string]any{"iss": u, "aud": "bench", "sub": sub, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
		jws, err := signer.Sign(b)
		if err != nil {
			log.Fatal(err)
		}
		tok, _ := jws.CompactSerialize()
		return tok
	}
}

func main() {
	bare := flag.String("bare", "", "internal: serve the bare server on this address")
	bin := flag.String("bin", "bin/oidc-authservice", "service binary")
	users := flag.Int("users", 1000, "distinct sessions")
	conc := flag.Int("c", 32, "concurrent connections")
	dur := flag.Duration("d", 5*time.Second, "duration of each run")
	rounds := flag.Int("rounds", 2, "alternating rounds")
	flag.IntVar(&tokens, "tokens", 0, "distinct bearer JWTs driven after the session rounds (0: none)")
	flag.Parse()
	if *bare != "" {
		serveBare(*bare)
		return
	}
	if err := run(*bin, *users, *conc, *dur, *rounds); err != nil {
		log.Fatal(err)
	}
}

func serveBare(addr string) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Kubeflow-Userid"] = []string{"user@example.com"}
		w.Header()["Kubeflow-Groups"] = []string{"team-a,team-b"}
		w.WriteHeader(200)
	})
	log.Fatal((&http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}).ListenAndServe())
}

func freePort() int {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// discovery serves just enough of a provider for the service to be ready.
func discovery() string {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	u := "http://" + l.Addr().String()
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/keys" {
			w.Write([]byte(`{"keys":[]}`))
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"issuer": u, "authorization_endpoint": u + "/auth",
			"token_endpoint": u + "/token", "jwks_uri": u + "/keys", "id_token_signing_alg_values_supported": []string{"RS256"}})
	}))
	return u
}

func waitHTTP(u string) error {
	for i := 0; i < 100; i++ {
		if resp, err := http.Get(u); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready", u)
}

func run(bin string, users, conc int, dur time.Duration, rounds int) error {
	issuer := discovery()
	port, probe := freePort(), freePort()
	tokURL, sign := tokenIssuer()
	authnFile, err := os.CreateTemp("", "loadbench-authn-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(authnFile.Name())
	fmt.Fprintf(authnFile, "apiVersion: apiserver.config.k8s.io/v1beta1\nkind: AuthenticationConfiguration\njwt:\n- issuer:\n    url: %s\n    audiences: [bench]\n  claimMappings:\n    username:\n      claim: sub\n      prefix: \"bot:\"\n", tokURL)
	authnFile.Close()
	svc := exec.Command(bin)
	svc.Env = append(os.Environ(), "AUTHENTICATION_CONFIG_FILE="+authnFile.Name(), "OIDC_PROVIDER="+issuer, "CLIENT_ID=bench", "CLIENT_SECRET=bench",
		"SESSION_KEYS="+key, "SERVER_HOSTNAME=127.0.0.1", "SERVER_PORT="+strconv.Itoa(port),
		"READINESS_PROBE_PORT="+strconv.Itoa(probe), "WEB_SERVER_PORT="+strconv.Itoa(freePort()), "LOG_LEVEL=warn")
	svc.Stderr = io.Discard
	if err := svc.Start(); err != nil {
		return err
	}
	defer svc.Process.Kill()
	barePort := freePort()
	self, _ := os.Executable()
	bs := exec.Command(self, "-bare", fmt.Sprintf("127.0.0.1:%d", barePort))
	if err := bs.Start(); err != nil {
		return err
	}
	defer bs.Process.Kill()
	if err := waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/readyz", probe)); err != nil {
		return err
	}
	if err := waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", barePort)); err != nil {
		return err
	}

	secret, _ := config.ParseSecret(key)
	codec := session.NewCodec([][]byte{secret}, 24*time.Hour, time.Now)
	cookies := make([]string, users)
	now := time.Now()
	for i := range cookies {
		v, err := codec.SealSession("authservice_session", &session.Session{ID: fmt.Sprint(i), Subject: fmt.Sprint(i),
			User: fmt.Sprintf("user%d@example.com", i), Groups: []string{"team-a", "team-b"},
			Created: now.Unix(), Expires: now.Add(24 * time.Hour).Unix()})
		if err != nil {
			return err
		}
		cookies[i] = "_ga=GA1.1.1; authservice_session=" + v
	}

	fmt.Printf("loadbench: %d distinct sessions, %d connections, %s per run, %d alternating rounds, GOMAXPROCS of this driver %s\n",
		users, conc, dur, rounds, os.Getenv("GOMAXPROCS"))
	type result struct{ rps, p50, p99 float64 }
	var a, b []result
	for r := 0; r < rounds; r++ {
		ra := drive(fmt.Sprintf("http://127.0.0.1:%d/notebook/ns/nb/lab", port), "Cookie", cookies, conc, dur)
		rb := drive(fmt.Sprintf("http://127.0.0.1:%d/notebook/ns/nb/lab", barePort), "Cookie", cookies, conc, dur)
		a, b = append(a, result(ra)), append(b, result(rb))
		fmt.Printf("round %d  authservice %9.0f req/s  p50 %6.0f µs  p99 %6.0f µs   |   bare %9.0f req/s  p50 %6.0f µs  p99 %6.0f µs\n",
			r+1, ra.rps, ra.p50, ra.p99, rb.rps, rb.p50, rb.p99)
	}
	best := func(rs []result) result {
		sort.Slice(rs, func(i, j int) bool { return rs[i].rps > rs[j].rps })
		return rs[len(rs)/2]
	}
	ma, mb := best(a), best(b)
	fmt.Printf("\nmedian     authservice %9.0f req/s  p50 %6.0f µs  p99 %6.0f µs  peak RSS %5.1f MiB\n", ma.rps, ma.p50, ma.p99, rss(svc.Process.Pid))
	fmt.Printf("median     bare        %9.0f req/s  p50 %6.0f µs  p99 %6.0f µs  peak RSS %5.1f MiB\n", mb.rps, mb.p50, mb.p99, rss(bs.Process.Pid))
	fmt.Printf("ratio (a)/(b): throughput %.2f, p99 %.2f\n", ma.rps/mb.rps, ma.p99/mb.p99)
	if tokens > 0 {
		auths := make([]string, tokens)
		for i := range auths {
			auths[i] = "Bearer " + sign(fmt.Sprintf("job-%d", i))
		}
		u := fmt.Sprintf("http://127.0.0.1:%d/pipeline/apis/v2beta1/runs", port)
		first := drive(u, "Authorization", auths, conc, dur) // verifies each token once, then hits the cache
		again := drive(u, "Authorization", auths, conc, dur)
		fmt.Printf("\n%d bearer JWTs  first run %9.0f req/s  p99 %6.0f µs;  cached %9.0f req/s  p50 %6.0f µs  p99 %6.0f µs\n",
			tokens, first.rps, first.p99, again.rps, again.p50, again.p99)
		fmt.Printf("peak RSS with %d sessions and %d cached tokens: %5.1f MiB\n", users, tokens, rss(svc.Process.Pid))
	}
	return nil
}

type stats struct{ rps, p50, p99 float64 }

// drive sends GETs for d over conc keep-alive connections, cycling through
// the values of header, and measures each request's latency.
func drive(url, header string, values []string, conc int, d time.Duration) stats {
	tr := &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var next atomic.Int64
	var mu sync.Mutex
	var lat []float64
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]float64, 0, 1<<16)
			for ctx.Err() == nil {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set(header, values[int(next.Add(1))%len(values)])
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					errs.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs.Add(1)
				}
				local = append(local, float64(time.Since(t0).Microseconds()))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	if errs.Load() > 0 {
		log.Printf("%s: %d errors or non-200 answers", url, errs.Load())
	}
	sort.Float64s(lat)
	if len(lat) == 0 {
		return stats{}
	}
	return stats{rps: float64(len(lat)) / elapsed, p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
}

// rss is the peak resident set size of a process, in MiB (VmHWM).
func rss(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "VmHWM:") {
			kb, _ := strconv.Atoi(strings.Fields(sc.Text())[1])
			return float64(kb) / 1024
		}
	}
	return 0
}
