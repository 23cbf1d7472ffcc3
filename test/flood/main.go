// Command flood measures what anonymous login traffic does to a running
// service (issue 21, finding 3): workers repeat the pair anyone can send
// without an account — a navigation that mints a sealed login state, then
// the callback with that state and its cookie, without a code or with a
// made-up one — as fast as the service answers, while a real user logs in
// through Dex every few seconds. It samples the service's resident memory
// (VmRSS of -pid) every second and prints the pairs per second, the
// answers, the memory and the real logins.
//
// The service must redirect to Dex with absolute URLs (no OIDC_AUTH_URL)
// and have REDIRECT_URL on its own check server, registered at Dex:
//
//	go run ./test/flood -check http://127.0.0.1:8080 -pid $(pidof oidc-authservice) -d 60s -code madeup
package main

import (
	"flag"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

func main() {
	check := flag.String("check", "http://127.0.0.1:8080", "the service's check server")
	pid := flag.Int("pid", 0, "the service's process id (for VmRSS)")
	d := flag.Duration("d", 60*time.Second, "how long to flood")
	workers := flag.Int("workers", 64, "concurrent anonymous clients")
	code := flag.String("code", "none", "callback code: none, madeup or mixed")
	loginEvery := flag.Duration("login-every", 5*time.Second, "a real login through Dex this often")
	user := flag.String("user", "user@example.com", "Dex user")
	password := flag.String("password", "12341234", "Dex password")
	flag.Parse()
	if err := run(*check, *pid, *d, *workers, *code, *loginEvery, *user, *password); err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		os.Exit(1)
	}
}

func run(check string, pid int, d time.Duration, workers int, codeMode string, loginEvery time.Duration, user, password string) error {
	tr := &http.Transport{MaxIdleConns: workers * 2, MaxIdleConnsPerHost: workers * 2, IdleConnTimeout: 30 * time.Second}
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var pairs, errs atomic.Int64
	var mu sync.Mutex
	statuses := map[int]int64{}
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				code := ""
				switch {
				case codeMode == "madeup", codeMode == "mixed" && i%2 == 1:
					code = fmt.Sprintf("made-up-%d-%d", w, i)
				}
				st, err := pair(c, check, code)
				if err != nil {
					errs.Add(1)
					continue
				}
				pairs.Add(1)
				mu.Lock()
				statuses[st]++
				mu.Unlock()
			}
		}()
	}

	rss0 := rss(pid)
	var samples []int64
	var logins []string
	loginOK, loginTried := 0, 0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	nextLogin := time.Now().Add(loginEvery / 2)
	var last int64
	fmt.Printf("flood: %d workers, code=%s, %s; RSS before %s\n", workers, codeMode, d, mb(rss0))
	for time.Now().Before(stop) {
		<-tick.C
		r := rss(pid)
		samples = append(samples, r)
		n := pairs.Load()
		fmt.Printf("  %3ds  %6d pairs/s  RSS %s\n", len(samples), n-last, mb(r))
		last = n
		if time.Now().After(nextLogin) {
			nextLogin = time.Now().Add(loginEvery)
			loginTried++
			took, err := login(check, user, password)
			if err == nil {
				loginOK++
				logins = append(logins, took.Round(time.Millisecond).String())
			} else {
				logins = append(logins, "failed: "+err.Error())
			}
		}
	}
	wg.Wait()
	tr.CloseIdleConnections()
	time.Sleep(2 * time.Second)
	after := rss(pid)
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	peak := int64(0)
	if len(samples) > 0 {
		peak = samples[len(samples)-1]
	}
	total := pairs.Load()
	fmt.Printf("pairs: %d in %s (%.0f/s), transport errors %d, callback answers %v\n", total, d, float64(total)/d.Seconds(), errs.Load(), statuses)
	fmt.Printf("RSS: before %s, peak %s, 2 s after %s\n", mb(rss0), mb(peak), mb(after))
	fmt.Printf("real logins during the flood: %d of %d completed: %s\n", loginOK, loginTried, strings.Join(logins, ", "))
	return nil
}

// pair starts a login and brings its state back to the callback.
func pair(c *http.Client, check, code string) (int, error) {
	req, _ := http.NewRequest("GET", check+"/notebook/", nil)
	req.Header.Set("Accept", "text/html")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound {
		return 0, fmt.Errorf("no login started: %d", resp.StatusCode)
	}
	state := loc.Query().Get("state")
	var cookie string
	for _, ck := range resp.Cookies() {
		if ck.Name == "authservice_state_"+state {
			cookie = ck.Name + "=" + ck.Value
		}
	}
	q := "state=" + url.QueryEscape(state)
	if code != "" {
		q += "&code=" + code
	}
	req, _ = http.NewRequest("GET", check+"/authservice/oidc/callback?"+q, nil)
	req.Header.Set("Cookie", cookie)
	req.Header.Set("Accept", "text/html")
	resp, err = c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// login is a real user's login through Dex, ending allowed at the check
// server with the session cookie.
func login(check, user, password string) (time.Duration, error) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	start := time.Now()
	resp, err := peer.DexLogin(c, check+"/notebook/real", user, password)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Kubeflow-Userid") != user {
		return 0, fmt.Errorf("ended at %s with %d", resp.Request.URL, resp.StatusCode)
	}
	return time.Since(start), nil
}

// rss is VmRSS of pid in bytes (0 without a pid).
func rss(pid int) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }
