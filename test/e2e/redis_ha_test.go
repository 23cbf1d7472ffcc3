//go:build e2e

package e2e

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// startHAReplica is a replica of the service sharing revocations through
// the Redis of env, behind its own gateway.
func startHAReplica(t *testing.T, dex *peer.Dex, key string, env map[string]string) *replica {
	t.Helper()
	e := peer.KubeflowEnv(dex)
	e["SESSION_KEYS"] = key
	for k, v := range env {
		e[k] = v
	}
	svc := peer.StartService(t, e)
	svc.WaitReady(t, 30*time.Second)
	return &replica{svc: svc, gateway: peer.KubeflowGateway(t, peer.EnvoyFilterLayout, svc.CheckURL, svc.WebURL, dex.Port)}
}

// prober sends a request with a live session to every gateway every 20
// ms until stopped, and counts what was not a 200 (a 5xx, a transport
// error, a refusal).
type prober struct {
	stop         chan struct{}
	wg           sync.WaitGroup
	sent, failed atomic.Int64
	mu           sync.Mutex
	failures     []string
}

func probe(cookie string, gateways ...string) *prober {
	p := &prober{stop: make(chan struct{})}
	for _, gw := range gateways {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			c := &http.Client{Timeout: 15 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			for {
				select {
				case <-p.stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				req, _ := http.NewRequest("GET", gw+"/pipeline/apis/v2beta1/runs", nil)
				req.Header.Set("Cookie", "authservice_session="+cookie)
				req.Header.Set("Accept", "application/json")
				resp, err := c.Do(req)
				p.sent.Add(1)
				if err == nil {
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != 200 {
					p.failed.Add(1)
					p.mu.Lock()
					if len(p.failures) < 10 {
						p.failures = append(p.failures, time.Now().Format("15:04:05.000")+" "+gw+" "+statusOrErr(resp, err))
					}
					p.mu.Unlock()
				}
			}
		}()
	}
	return p
}

func statusOrErr(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

func (p *prober) end(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); p.sent.Load() < 50 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	close(p.stop)
	p.wg.Wait()
	if p.failed.Load() > 0 || p.sent.Load() < 50 {
		t.Errorf("%d of %d checks with a live session were not answered 200: %v", p.failed.Load(), p.sent.Load(), p.failures)
	} else {
		t.Logf("%d checks with a live session meanwhile, all 200", p.sent.Load())
	}
}

// loggedIn logs in a new browser through gw and returns the session
// cookie's value (a copy, as a thief would keep).
func loggedIn(t *testing.T, gw string) (*client, string) {
	t.Helper()
	c := newClient()
	resp, err := peer.DexLogin(c.Client, gw+"/x?format=json", "user@example.com", "12341234")
	readEcho(t, resp, err)
	v := c.cookie(gw, "authservice_session")
	if v == "" {
		t.Fatal("no session cookie")
	}
	return c, v
}

// logoutAndWatch logs c out through one replica and returns how long,
// from the logout request, the copied cookie kept working on the other (at
// most within).
func logoutAndWatch(t *testing.T, c *client, cookie, on, other string, within time.Duration) time.Duration {
	t.Helper()
	plain := &http.Client{Timeout: 15 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	hdr := map[string]string{"Cookie": "authservice_session=" + cookie, "Accept": "application/json"}
	if code, _ := status(t, plain, other+"/y", hdr); code != 200 {
		t.Fatalf("before the logout, the other replica answers %d", code)
	}
	start := time.Now()
	if code, _ := status(t, c.noFollow(), on+"/authservice/logout", nil); code != 302 {
		t.Fatalf("logout: %d", code)
	}
	if !eventually(within, func() bool {
		code, _ := status(t, plain, other+"/y", hdr)
		if code >= 500 {
			t.Errorf("the other replica answered %d", code)
		}
		return code == 401
	}) {
		t.Fatalf("the copied cookie of a session logged out on one replica still worked on the other after %v", within)
	}
	return time.Since(start)
}

// TestLogoutAcrossSentinelFailover: two replicas share revocations through
// Redis Sentinel (a master, a replica, three Sentinels, all with
// passwords). The master is killed mid-run. A logout on one replica before,
// during and after the failover ends the session on the other within the
// delay docs/operations.md states; meanwhile every check with a live
// session, on both replicas, is answered 200 (no 5xx, nothing waits for
// Redis).
func TestLogoutAcrossSentinelFailover(t *testing.T) {
	s := peer.StartSentinel(t)
	dex := peer.StartDex(t, peer.DexOptions{})
	key := peer.RandomKey()
	env := map[string]string{"REDIS_URL": "redis://:" + peer.RedisPassword + "@/0", "REDIS_SENTINEL_MASTER_NAME": s.MasterName,
		"REDIS_SENTINEL_ADDRS": strings.Join(s.Addrs, ","), "REDIS_SENTINEL_PASSWORD": peer.SentinelPassword}
	a, b := startHAReplica(t, dex, key, env), startHAReplica(t, dex, key, env)

	_, live := loggedIn(t, a.gateway)
	p := probe(live, a.gateway, b.gateway)

	c1, s1 := loggedIn(t, a.gateway)
	t.Logf("before the failover: the other replica refused the logged-out session after %v",
		logoutAndWatch(t, c1, s1, a.gateway, b.gateway, 5*time.Second).Round(time.Millisecond))

	c2, s2 := loggedIn(t, a.gateway)
	c3, s3 := loggedIn(t, a.gateway)
	s.Master.Kill()
	t.Logf("during the failover: the other replica refused the logged-out session after %v",
		logoutAndWatch(t, c2, s2, a.gateway, b.gateway, 20*time.Second).Round(time.Millisecond))
	// After: the Sentinels name the new master.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if m, err := s.CurrentMaster(t.Context()); err == nil && m == s.Replica.Addr {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no failover")
		}
	}
	t.Logf("after the failover: the other replica refused the logged-out session after %v",
		logoutAndWatch(t, c3, s3, a.gateway, b.gateway, 5*time.Second).Round(time.Millisecond))
	p.end(t)
}

// TestLogoutAcrossCluster: the same through a three-master Redis Cluster.
func TestLogoutAcrossCluster(t *testing.T) {
	nodes := peer.StartCluster(t, 3)
	dex := peer.StartDex(t, peer.DexOptions{})
	key := peer.RandomKey()
	env := map[string]string{"REDIS_URL": "redis://:" + peer.RedisPassword + "@", "REDIS_CLUSTER_ADDRS": strings.Join(nodes[:2], ",")}
	a, b := startHAReplica(t, dex, key, env), startHAReplica(t, dex, key, env)
	_, live := loggedIn(t, b.gateway)
	p := probe(live, a.gateway, b.gateway)
	for i := range 3 {
		c, s := loggedIn(t, a.gateway)
		on, other := a.gateway, b.gateway
		if i%2 == 1 {
			on, other = other, on
		}
		t.Logf("logout %d: the other replica refused the logged-out session after %v", i,
			logoutAndWatch(t, c, s, on, other, 5*time.Second).Round(time.Millisecond))
	}
	p.end(t)
}

// clusterFailoverBound is how long a logout made on one replica may take
// to end the session on the other across the failover of a Redis Cluster
// node, from the logout request. The cluster: a master unreachable for the
// node timeout (2 s here, 15 s by default) is flagged failing once the other
// masters agree (gossip, within about a second), then its replica waits
// 0.5 to 1 s and is elected (milliseconds): about 4 s. The service re-reads
// the slot map after every failed command, retries a publication Redis did
// not take every 2 s (shareRetry) and a lost subscription every 2 s
// (subscribeBackoff), and reloads the list once subscribed again: about
// 4 + 2 + 2 = 8 s (measured: 6.0 to 8.1 s); 30 s leaves room for a
// loaded machine. A panic in the service fails the test (the services run
// in the test's process; one in a check is a transport error the probe
// counts).
const clusterFailoverBound = 30 * time.Second

// TestLogoutAcrossClusterFailover: two replicas share revocations through
// a Redis Cluster of three masters with a replica each. First the master
// of the revocation list's slot is killed; then (the killed node back as
// a replica) the node the replicas' subscriptions are connected to; then
// a master that holds neither (the channel's slot's). Right
// after each kill, and again once the cluster has promoted a replica, a
// logout on one replica ends the copied session on the other within
// clusterFailoverBound; every check with a live session on both replicas
// is answered 200 throughout.
func TestLogoutAcrossClusterFailover(t *testing.T) {
	cl := peer.StartClusterReplicas(t, 3, 1)
	dex := peer.StartDex(t, peer.DexOptions{})
	key := peer.RandomKey()
	env := map[string]string{"REDIS_URL": "redis://:" + peer.RedisPassword + "@", "REDIS_CLUSTER_ADDRS": strings.Join(cl.Addrs[:2], ",")}
	a, b := startHAReplica(t, dex, key, env), startHAReplica(t, dex, key, env)
	ctx := t.Context()
	// The names of internal/revocation (REDIS_KEY_PREFIX's default).
	const list, channel = "oidc-authservice:revoked", "oidc-authservice:revocations"

	_, live := loggedIn(t, b.gateway)
	p := probe(live, a.gateway, b.gateway)
	c, s := loggedIn(t, a.gateway)
	t.Logf("before any failure: the other replica refused the logged-out session after %v",
		logoutAndWatch(t, c, s, a.gateway, b.gateway, 5*time.Second).Round(time.Millisecond))

	failover := func(phase, victim string) {
		t.Helper()
		c1, s1 := loggedIn(t, a.gateway)
		c2, s2 := loggedIn(t, b.gateway)
		cl.Node(victim).Kill()
		killed := time.Now()
		t.Logf("%s: killed %s; right after: the other replica refused the logged-out session after %v", phase, victim,
			logoutAndWatch(t, c1, s1, a.gateway, b.gateway, clusterFailoverBound).Round(time.Millisecond))
		cl.WaitOK(t, 30*time.Second, victim)
		t.Logf("%s: a replica promoted, cluster_state:ok on every node %v after the kill", phase, time.Since(killed).Round(time.Millisecond))
		t.Logf("%s: after the promotion: the other replica refused the logged-out session after %v", phase,
			logoutAndWatch(t, c2, s2, b.gateway, a.gateway, clusterFailoverBound).Round(time.Millisecond))
	}

	listMaster, err := cl.MasterOf(ctx, list)
	if err != nil {
		t.Fatal(err)
	}
	channelMaster, err := cl.MasterOf(ctx, channel)
	if err != nil {
		t.Fatal(err)
	}
	subs, err := cl.Subscribers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the list's master %s, the channel's master %s, subscriptions %v", listMaster, channelMaster, subs)
	failover("the list's master", listMaster)

	// The killed node comes back (empty) as the new master's replica; then
	// the node holding the subscriptions dies.
	cl.Restart(t, listMaster)
	cl.WaitOK(t, 30*time.Second, "")
	var subscribed string
	for deadline := time.Now().Add(clusterFailoverBound); subscribed == "" || len(subs) != 1; time.Sleep(200 * time.Millisecond) {
		if subs, err = cl.Subscribers(ctx); err != nil {
			t.Fatal(err)
		}
		for addr, n := range subs {
			if n == 2 {
				subscribed = addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replicas' subscriptions are not on one node: %v", subs)
		}
	}
	if listMaster, err = cl.MasterOf(ctx, list); err != nil {
		t.Fatal(err)
	}
	t.Logf("the list's master now %s, subscriptions %v", listMaster, subs)
	failover("the subscriptions' node", subscribed)

	// A master that holds neither: while its slots have no master the
	// cluster refuses every key (cluster-require-full-coverage).
	if channelMaster, err = cl.MasterOf(ctx, channel); err != nil {
		t.Fatal(err)
	}
	if subs, err = cl.Subscribers(ctx); err != nil {
		t.Fatal(err)
	}
	if listMaster, err = cl.MasterOf(ctx, list); err != nil || listMaster == channelMaster || subs[channelMaster] > 0 {
		t.Fatalf("the channel's master %s, the list's %s (%v), subscriptions %v", channelMaster, listMaster, err, subs)
	}
	failover("another master (the channel's)", channelMaster)
	p.end(t)
}
