package integration

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// replicas are services sharing Redis and SESSION_KEYS, each behind its own
// gateway: a Kubeflow Deployment with two pods.
type replicas struct {
	dex *peer.Dex
	svc []*peer.Service
	gw  []string
}

func startReplicas(t *testing.T, dex *peer.Dex, env map[string]string, n int) *replicas {
	t.Helper()
	env["REDIS_URL"] = peer.StartRedis(t)
	r := &replicas{dex: dex}
	for range n {
		svc := peer.StartService(t, env)
		svc.WaitReady(t, 30*time.Second)
		r.svc = append(r.svc, svc)
		r.gw = append(r.gw, gatewayFor(t, peer.ExtensionProviderLayout, svc, dex))
	}
	return r
}

// asBearer sends tok as Authorization: Bearer to an API path and returns
// the status.
func asBearer(t *testing.T, gw, tok string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", gw+"/api/x?format=json", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := noFollowWith(nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestLogoutEndsTheUpstreamTokenOnEveryReplica: with UPSTREAM_TOKEN=id_token
// (Kubeflow master's layout) every upstream receives the user's Dex ID
// token, which the gateway's bearer path accepts (ACCEPT_PROVIDER_ID_TOKENS)
// — from anyone who read it off a request. Once the session is logged out,
// by either logout contract, that token is refused on the replica that
// logged it out at once and on the other replica (which verified and cached
// it before) within the revocation list's delay, through Redis.
func TestLogoutEndsTheUpstreamTokenOnEveryReplica(t *testing.T) {
	dex := peer.StartDex(t, peer.DexOptions{Groups: "team-a,team-b"})
	r := startReplicas(t, dex, masterLayout(dex), 2)
	for _, c := range []struct {
		name   string
		logout func(t *testing.T, b *browser)
	}{
		{"GET logout", func(t *testing.T, b *browser) {
			resp, err := noFollowWith(b.Jar).Get(r.gw[0] + "/authservice/logout")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 302 {
				t.Fatalf("logout: %d", resp.StatusCode)
			}
		}},
		{"POST logout with the cookie value as bearer (dashboard < 1.10)", func(t *testing.T, b *browser) {
			req, _ := http.NewRequest("POST", r.gw[0]+"/authservice/logout", nil)
			req.Header.Set("Authorization", "Bearer "+sessionCookie(t, b, r.gw[0]))
			resp, err := noFollowWith(nil).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 201 {
				t.Fatalf("logout: %d", resp.StatusCode)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newBrowser()
			resp, err := peer.DexLogin(b.Client, r.gw[0]+"/notebook/?format=json", legitUser, "12341234")
			if err != nil {
				t.Fatal(err)
			}
			e := readEcho(t, resp)
			tok := strings.TrimPrefix(strings.Join(e.Headers["authorization"], ""), "Bearer ")
			if tok == "" || strings.Count(tok, ".") != 2 {
				t.Fatalf("the upstream got no ID token: %v", e.Headers["authorization"])
			}
			// What an upstream that read it can do with it: the gateway's
			// bearer path takes it, on both replicas (each caches it).
			for i, gw := range r.gw {
				if code := asBearer(t, gw, tok); code != 200 {
					t.Fatalf("replica %d: the ID token as bearer before logout: %d", i, code)
				}
			}
			c.logout(t, b)
			if code := asBearer(t, r.gw[0], tok); code != 401 {
				t.Errorf("replica that logged out: the ID token after logout: %d, want 401", code)
			}
			if !eventually(3*time.Second, func() bool { return asBearer(t, r.gw[1], tok) == 401 }) {
				t.Errorf("other replica: the ID token is still accepted 3 s after logout")
			}
		})
	}
}

// TestOneRefreshPerSessionAcrossReplicas: when a session's tokens are due,
// twenty requests carrying its cookie at once, half to each of two replicas
// sharing Redis, make one refresh at the provider, not one per replica; the
// replica that did not refresh answers with the still-valid tokens.
func TestOneRefreshPerSessionAcrossReplicas(t *testing.T) {
	f := countingDex(t, 12*time.Second)
	r := startReplicas(t, f.dex, masterLayout(f.dex), 2)
	b := newBrowser()
	resp, err := peer.DexLogin(b.Client, r.gw[0]+"/x?format=json", legitUser, "12341234")
	if err != nil {
		t.Fatal(err)
	}
	readEcho(t, resp)
	cookie := "authservice_session=" + sessionCookie(t, b, r.gw[0])
	before := f.proxy.Hits("/token")
	// Due after two thirds of the 12 s (8 s from the login).
	time.Sleep(9 * time.Second)
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", r.gw[i%2]+"/x?format=json", nil)
			req.Header.Set("Cookie", cookie)
			resp, err := noFollowWith(nil).Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	refreshes := f.proxy.Hits("/token") - before
	t.Logf("20 concurrent requests with a due session on 2 replicas: %d refreshes at Dex, answers %v", refreshes, codes)
	if refreshes != 1 {
		t.Errorf("%d refreshes at the provider, want 1", refreshes)
	}
	if codes[200]+codes[307] != 20 || codes[307] > 1 {
		t.Errorf("answers %v: want 200s and at most one 307 (the renewed cookie)", codes)
	}
}

func sessionCookie(t *testing.T, b *browser, gw string) string {
	t.Helper()
	u := mustReq("GET", gw).URL
	for _, c := range b.Jar.Cookies(u) {
		if c.Name == "authservice_session" {
			return c.Value
		}
	}
	t.Fatal("no session cookie")
	return ""
}

// eventually polls f until it holds or d has passed.
func eventually(d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if f() {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return f()
}
