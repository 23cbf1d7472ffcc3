package revocation_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
	"github.com/oidc-authservice/oidc-authservice/test/peer"
)

// replica is one List with its own store, as one replica of the service
// has, kept in step by Run.
type replica struct {
	l     *revocation.List
	store *revocation.RedisStore
}

// resync is the full resync interval of the replicas here: long, so that
// only the subscription, a reconnection's reload or a republication can
// carry a revocation within a test.
const resync = time.Hour

func startReplica(t *testing.T, o revocation.RedisOptions) *replica {
	t.Helper()
	s, err := revocation.NewRedisStore(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Metrics = metrics.New("test").Redis()
	l := revocation.New(time.Hour, s, time.Now, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx, resync); close(done) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	return &replica{l: l, store: s}
}

// knows waits up to d for r to know the session revoked and reports how
// long it took.
func (r *replica) knows(id string, d time.Duration) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < d {
		if r.l.Revoked(id, "", "", 0) {
			return time.Since(start), true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d, false
}

// subscribed waits until the replica's subscription is up.
func subscribed(t *testing.T, rs ...*replica) {
	t.Helper()
	for _, r := range rs {
		probe := fmt.Sprintf("probe-%p", r)
		other := rs[0]
		if other == r && len(rs) > 1 {
			other = rs[1]
		}
		deadline := time.Now().Add(20 * time.Second)
		for !r.l.Revoked(probe, "", "", 0) {
			other.l.Revoke(context.Background(), revocation.Session, probe)
			if time.Now().After(deadline) {
				t.Fatal("the replicas never shared a revocation")
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// The worst delay docs/operations.md states for a revocation to reach the
// other replicas across a Sentinel failover: Sentinel's detection and
// promotion (down-after-milliseconds, 1 s here, 30 s by default, plus the
// election), then at most shareRetry (2 s) for the replica that made it to
// publish it and subscribeBackoff (2 s) for the others to resubscribe and
// reload. 20 s covers the test's failover with room for a loaded machine.
const failoverBound = 20 * time.Second

// TestSentinelFailover: two replicas share revocations through the master
// Sentinel names; the master is killed; a logout made during the failover
// is kept by the replica that made it, published once the replica has
// become master, and reaches the other replica; one made after the
// failover reaches it through the new master at once.
func TestSentinelFailover(t *testing.T) {
	s := peer.StartSentinel(t)
	o := revocation.RedisOptions{URL: "redis://:" + peer.RedisPassword + "@/0", SentinelMaster: s.MasterName,
		SentinelAddrs: s.Addrs, SentinelPassword: peer.SentinelPassword, KeyPrefix: "ha"}
	a, b := startReplica(t, o), startReplica(t, o)
	subscribed(t, a, b)
	ctx := context.Background()
	if found, err := a.store.Check(ctx); err != nil || found != "sentinel: the master answers" {
		t.Fatalf("check: %q %v", found, err)
	}

	a.l.Revoke(ctx, revocation.Session, "before")
	if took, ok := b.knows("before", 5*time.Second); !ok {
		t.Fatal("a revocation before the failover did not reach the other replica")
	} else {
		t.Logf("before the failover: the other replica knew after %v", took.Round(time.Millisecond))
	}

	old := s.Master.Addr
	s.Master.Kill()
	killed := time.Now()
	// During the failover: the master is gone, none promoted yet.
	err := a.l.Revoke(ctx, revocation.Session, "during")
	if err == nil {
		t.Log("the revocation made during the failover was published within its 2 s: the new master came in time")
	} else if a.l.Unshared() != 1 {
		t.Fatalf("a revocation Redis did not take is not kept: %d unshared", a.l.Unshared())
	}
	if !a.l.Revoked("during", "", "", 0) {
		t.Fatal("the replica that made the revocation does not honour it")
	}
	took, ok := b.knows("during", failoverBound)
	if !ok {
		t.Fatalf("a revocation made during the failover did not reach the other replica within %v", failoverBound)
	}
	master, _ := s.CurrentMaster(ctx)
	t.Logf("during the failover: the other replica knew after %v (%v after the kill); master %s → %s",
		took.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), old, master)
	if master == old {
		t.Fatalf("no failover: the master is still %s", master)
	}
	for deadline := time.Now().Add(5 * time.Second); a.l.Unshared() != 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
	}
	if n := a.l.Unshared(); n != 0 {
		t.Fatalf("%d revocations still unshared after the failover", n)
	}

	a.l.Revoke(ctx, revocation.Session, "after")
	if took, ok := b.knows("after", 5*time.Second); !ok {
		t.Fatal("a revocation after the failover did not reach the other replica")
	} else {
		t.Logf("after the failover: the other replica knew after %v", took.Round(time.Millisecond))
	}
	// Replay memory through the new master.
	if !a.l.FirstUse(ctx, "state-1", time.Minute) || b.l.FirstUse(ctx, "state-1", time.Minute) {
		t.Fatal("a one-time value is not shared through the new master")
	}
}

// TestCluster: replicas share revocations through a three-master Redis
// Cluster: PUBLISH reaches a subscriber of any node, the sorted set is
// read back by a replica started later, one-time values (keys in every
// slot) are shared.
func TestCluster(t *testing.T) {
	nodes := peer.StartCluster(t, 3)
	o := revocation.RedisOptions{URL: "redis://:" + peer.RedisPassword + "@", ClusterAddrs: nodes[:1], KeyPrefix: "ha"}
	a, b := startReplica(t, o), startReplica(t, o)
	subscribed(t, a, b)
	ctx := context.Background()
	found, err := a.store.Check(ctx)
	if err != nil || found != "cluster: 3 masters answer, state ok" {
		t.Fatalf("check: %q %v", found, err)
	}
	for i := range 20 {
		id := "s-" + strconv.Itoa(i)
		if err := a.l.Revoke(ctx, revocation.Session, id); err != nil {
			t.Fatal(err)
		}
		if _, ok := b.knows(id, 5*time.Second); !ok {
			t.Fatalf("revocation %d did not reach the other replica through the cluster", i)
		}
	}
	// A replica started now reloads what was revoked before.
	c := startReplica(t, o)
	if _, ok := c.knows("s-19", 5*time.Second); !ok {
		t.Fatal("a new replica did not load the revocations from the cluster")
	}
	// One-time values land in every master's slots and are shared.
	for i := range 30 {
		key := fmt.Sprintf("state-%d", i)
		if !a.l.FirstUse(ctx, key, time.Minute) || b.l.FirstUse(ctx, key, time.Minute) {
			t.Fatalf("one-time value %s not shared through the cluster", key)
		}
	}
}

// TestRedisOutage is the choice for a Redis that cannot be reached:
// checks go on (nothing waits), a revocation stands at once on the replica
// that made it, is kept, and reaches the others once Redis is back — here
// a Redis restarted empty, as one without persistence comes back.
func TestRedisOutage(t *testing.T) {
	r := peer.RunRedis(t)
	port, _ := strconv.Atoi(r.Addr[strings.LastIndexByte(r.Addr, ':')+1:])
	o := revocation.RedisOptions{URL: r.URL, KeyPrefix: "ha"}
	a, b := startReplica(t, o), startReplica(t, o)
	subscribed(t, a, b)
	ctx := context.Background()
	r.Kill()
	if err := a.l.Revoke(ctx, revocation.Session, "while-down"); err == nil {
		t.Fatal("publishing to a Redis that is down succeeded")
	}
	if !a.l.Revoked("while-down", "", "", 0) || a.l.Unshared() != 1 {
		t.Fatalf("the revocation is not honoured here and kept: unshared %d", a.l.Unshared())
	}
	if b.l.Revoked("while-down", "", "", 0) {
		t.Fatal("the other replica knew without Redis")
	}
	time.Sleep(3 * time.Second) // retries fail meanwhile
	peer.RunRedisAt(t, port)
	back := time.Now()
	took, ok := b.knows("while-down", 15*time.Second)
	if !ok {
		t.Fatal("the revocation kept during the outage never reached the other replica")
	}
	t.Logf("after Redis came back: the other replica knew after %v", took.Round(time.Millisecond))
	_ = back
	if n := a.l.Unshared(); n != 0 {
		t.Fatalf("%d revocations still unshared", n)
	}
}

// clusterFailoverBound is the worst delay for a revocation to reach the
// other replicas across the failover of a Redis Cluster master: the
// cluster's detection and promotion (the node timeout, 2 s here, 15 s by
// default, then the replica's election after 0.5 to 1 s), then at most
// shareRetry (2 s) for the replica that made it to publish it again after
// re-reading the slot map and subscribeBackoff (2 s) for the others to
// resubscribe and reload. 20 s covers the test's failover with room for
// a loaded machine; go-redis left alone re-reads its slot map only once
// it is a minute old.
const clusterFailoverBound = 20 * time.Second

// TestClusterFailover: two replicas share revocations through a Redis
// Cluster of three masters with a replica each; the master of the
// revocation list's slot is killed. A revocation made right after reaches
// the other replica once the cluster has promoted the dead master's
// replica, and one made after the promotion reaches it at once.
func TestClusterFailover(t *testing.T) {
	cl := peer.StartClusterReplicas(t, 3, 1)
	o := revocation.RedisOptions{URL: "redis://:" + peer.RedisPassword + "@", ClusterAddrs: cl.Addrs[:2], KeyPrefix: "ha"}
	a, b := startReplica(t, o), startReplica(t, o)
	subscribed(t, a, b)
	ctx := context.Background()
	master, err := cl.MasterOf(ctx, "ha:revoked")
	if err != nil {
		t.Fatal(err)
	}
	cl.Node(master).Kill()
	killed := time.Now()
	if err := a.l.Revoke(ctx, revocation.Session, "during"); err == nil {
		t.Log("the revocation made right after the kill was published within its 2 s")
	}
	took, ok := b.knows("during", clusterFailoverBound)
	if !ok {
		t.Fatalf("a revocation made during the failover did not reach the other replica within %v (%d unshared)",
			clusterFailoverBound, a.l.Unshared())
	}
	t.Logf("during the failover: the other replica knew after %v", took.Round(time.Millisecond))
	cl.WaitOK(t, 30*time.Second, master)
	t.Logf("replica promoted %v after the kill", time.Since(killed).Round(time.Millisecond))
	a.l.Revoke(ctx, revocation.Session, "after")
	if took, ok := b.knows("after", 5*time.Second); !ok {
		t.Fatal("a revocation after the failover did not reach the other replica")
	} else {
		t.Logf("after the failover: the other replica knew after %v", took.Round(time.Millisecond))
	}
}

// TestClusterFailoverLostWrite: a failover can lose what the old master
// acknowledged but had not yet passed to its replica. Here the replica of
// the revocation list's master is stopped, a revocation is published (the
// master takes it, the other replica hears it), the master is killed and
// the replica, resumed without it, is promoted. The replica that made the
// revocation publishes it again after the failover, so a replica started
// afterwards loads it from the new master.
func TestClusterFailoverLostWrite(t *testing.T) {
	cl := peer.StartClusterReplicas(t, 3, 1)
	o := revocation.RedisOptions{URL: "redis://:" + peer.RedisPassword + "@", ClusterAddrs: cl.Addrs[:2]}
	a, b := startReplica(t, o), startReplica(t, o)
	subscribed(t, a, b)
	ctx := context.Background()
	// The default names: the list's slot and the channel's are on two
	// masters, so the failover of the list's master need not touch the
	// replicas' subscriptions.
	master, err := cl.MasterOf(ctx, "oidc-authservice:revoked")
	if err != nil {
		t.Fatal(err)
	}
	if ch, err := cl.MasterOf(ctx, "oidc-authservice:revocations"); err != nil || ch == master {
		t.Fatalf("the channel's master %s (%v) is the list's", ch, err)
	}
	replica := cl.ReplicaOf(t, master)
	// The replica stops, and the master drops its replication link (what
	// was sent before sits in the stopped replica's socket and would still
	// arrive): what the master takes now reaches no replica.
	cl.Node(replica).Pause()
	mc := redis.NewClient(&redis.Options{Addr: master, Password: peer.RedisPassword})
	defer mc.Close()
	if err := mc.ClientKillByFilter(ctx, "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.l.Revoke(ctx, revocation.Session, "unreplicated"); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.knows("unreplicated", 5*time.Second); !ok {
		t.Fatal("the revocation did not reach the other replica before the failover")
	}
	cl.Node(master).Kill()
	cl.Node(replica).Resume()
	cl.WaitOK(t, 30*time.Second, master)
	c := startReplica(t, o)
	took, ok := c.knows("unreplicated", clusterFailoverBound)
	if !ok {
		t.Fatalf("a revocation the failover lost was not published again: a replica started after it does not know it after %v", clusterFailoverBound)
	}
	t.Logf("a replica started after the failover knew the revocation the failover lost after %v", took.Round(time.Millisecond))
}

// TestClusterSubscribeThroughListMaster: while the revocation list's
// master is down (before the cluster has noticed), a subscription fails
// rather than being made through another node (the channel's master),
// where it would outlive the failover and nothing would be published
// again (TestClusterFailoverLostWrite).
func TestClusterSubscribeThroughListMaster(t *testing.T) {
	cl := peer.StartClusterReplicas(t, 3, 1)
	s, err := revocation.NewRedisStore(revocation.RedisOptions{URL: "redis://:" + peer.RedisPassword + "@", ClusterAddrs: cl.Addrs[:2]})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	master, err := cl.MasterOf(ctx, "oidc-authservice:revoked")
	if err != nil {
		t.Fatal(err)
	}
	if ch, err := cl.MasterOf(ctx, "oidc-authservice:revocations"); err != nil || ch == master {
		t.Fatalf("the channel's master %s (%v) is the list's", ch, err)
	}
	if _, err := s.Load(ctx, time.Now()); err != nil { // the slot map
		t.Fatal(err)
	}
	cl.Node(master).Kill()
	killed := time.Now()
	// The node timeout is 2 s: until then no node names another master.
	attempts := 0
	for ; time.Since(killed) < 1500*time.Millisecond; attempts++ {
		sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		up := false
		err := s.Subscribe(sctx, func() { up = true; cancel() }, func(revocation.Entry) {})
		cancel()
		if up {
			t.Fatalf("attempt %d: subscribed while the list's master %s is down: not through it", attempts, master)
		}
		if err == nil && time.Since(killed) < 1500*time.Millisecond {
			t.Fatalf("attempt %d: no error", attempts)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d attempts failed while the list's master was down", attempts)
	if attempts < 5 {
		t.Fatalf("only %d attempts", attempts)
	}
}
