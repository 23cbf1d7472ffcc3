package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a throw-away redis-server (Debian's package) on 127.0.0.1,
// without persistence, stopped by the test's cleanup.
type Redis struct {
	URL  string // redis://127.0.0.1:<port>/0
	Addr string // 127.0.0.1:<port>
	proc *process
}

// StartRedis runs a redis-server on a free port and returns its redis://
// URL.
func StartRedis(t testing.TB) string { return RunRedis(t).URL }

// RunRedis runs a redis-server on a free port; args are added to its
// command line.
func RunRedis(t testing.TB, args ...string) *Redis {
	t.Helper()
	var r *Redis
	OnFreePorts(t, "redis-server", 1, func(ports []int) (err error) {
		r, err = runRedis(t, ports[0], args...)
		return err
	})
	return r
}

// RunRedisAt runs a redis-server on port (a restart of one that was
// killed, empty: nothing is persisted).
func RunRedisAt(t testing.TB, port int, args ...string) *Redis {
	t.Helper()
	r, err := runRedis(t, port, args...)
	Require(t, "redis-server", err)
	return r
}

func runRedis(t testing.TB, port int, args ...string) (*Redis, error) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	Require(t, "redis-server (apt-get install redis-server)", err)
	// Its own folder: a replica's first sync writes an RDB file there.
	cmd := exec.Command(bin, append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir()}, args...)...)
	p, err := startProcess(t, cmd, "", nil, syscall.SIGKILL)
	if err != nil {
		return nil, err
	}
	r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port), proc: p}
	r.URL = "redis://" + r.Addr + "/0"
	if err := p.waitReady("redis-server", dialable(r.Addr), 10*time.Second, port); err != nil {
		return nil, err
	}
	return r, nil
}

// Kill ends the server at once (SIGKILL: no goodbye to its clients); safe
// to call twice.
func (r *Redis) Kill() { r.proc.stop() }

// Alive reports whether the server is still running.
func (r *Redis) Alive() bool {
	select {
	case <-r.proc.done:
		return false
	default:
		return true
	}
}

// Pause stops the server (SIGSTOP) until Resume: it neither answers nor
// closes its connections, as a node that hangs.
func (r *Redis) Pause() { r.proc.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume lets a paused server run again (SIGCONT).
func (r *Redis) Resume() { r.proc.cmd.Process.Signal(syscall.SIGCONT) }

// WaitTCP waits until addr accepts connections.
func WaitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not listening on %s after %s", addr, timeout)
}

// RedisPassword is the password of the test's Redis servers with
// authentication (Sentinel and Cluster); SentinelPassword the Sentinels'.
const (
	RedisPassword    = "redis-test-password"
	SentinelPassword = "sentinel-test-password"
)

// Sentinel is a master and a replica watched by three Sentinels (quorum
// 2, a master declared down after 1 s), all with passwords.
type Sentinel struct {
	MasterName string
	Addrs      []string // the Sentinels' host:port
	Master     *Redis   // the master at the start
	Replica    *Redis
}

// StartSentinel runs the master, its replica and three Sentinels and waits
// until the Sentinels know the replica and each other.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	bin, err := exec.LookPath("redis-sentinel")
	Require(t, "redis-sentinel (apt-get install redis-sentinel)", err)
	auth := []string{"--requirepass", RedisPassword, "--masterauth", RedisPassword}
	s := &Sentinel{MasterName: "authservice"}
	s.Master = RunRedis(t, auth...)
	masterPort := s.Master.Addr[strings.LastIndexByte(s.Master.Addr, ':')+1:]
	s.Replica = RunRedis(t, append(auth, "--replicaof", "127.0.0.1", masterPort)...)
	dir := t.TempDir()
	for i := range 3 {
		OnFreePorts(t, "redis-sentinel", 1, func(ports []int) error {
			port := ports[0]
			conf := filepath.Join(dir, fmt.Sprintf("sentinel-%d.conf", i))
			text := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
sentinel monitor %s 127.0.0.1 %s 2
sentinel auth-pass %s %s
sentinel down-after-milliseconds %s 1000
sentinel failover-timeout %s 5000
sentinel parallel-syncs %s 1
requirepass %s
sentinel sentinel-pass %s
`, port, dir, s.MasterName, masterPort, s.MasterName, RedisPassword, s.MasterName, s.MasterName, s.MasterName, SentinelPassword, SentinelPassword)
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			p, err := startProcess(t, exec.Command(bin, conf), fmt.Sprintf("sentinel-%d.log", i), nil, syscall.SIGKILL)
			if err != nil {
				return err
			}
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			if err := p.waitReady("redis-sentinel", dialable(addr), 10*time.Second, port); err != nil {
				return err
			}
			s.Addrs = append(s.Addrs, addr)
			return nil
		})
	}
	// Every Sentinel sees the replica and the two other Sentinels.
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range s.Addrs {
		c := redis.NewSentinelClient(&redis.Options{Addr: a, Password: SentinelPassword})
		for {
			replicas, err1 := c.Replicas(context.Background(), s.MasterName).Result()
			sentinels, err2 := c.Sentinels(context.Background(), s.MasterName).Result()
			if err1 == nil && err2 == nil && len(replicas) == 1 && len(sentinels) == 2 {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				t.Fatalf("Sentinel %s: replicas %v (%v), other Sentinels %d (%v)", a, replicas, err1, len(sentinels), err2)
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.Close()
	}
	return s
}

// CurrentMaster is the address the Sentinels give for the master now.
func (s *Sentinel) CurrentMaster(ctx context.Context) (string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addrs[0], Password: SentinelPassword})
	defer c.Close()
	hp, err := c.GetMasterAddrByName(ctx, s.MasterName).Result()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// StartCluster runs a Redis Cluster of n masters (no replicas), with a
// password, created by `redis-cli --cluster create … --cluster-yes`, and
// returns its nodes' host:port once every node says cluster_state:ok.
func StartCluster(t testing.TB, n int) []string { return StartClusterReplicas(t, n, 0).Addrs }

// Cluster is a Redis Cluster of StartClusterReplicas: its nodes with
// their handles, to kill one, stop it for a while or start it again.
type Cluster struct {
	Addrs []string // every node's host:port, in the order they were started
	Nodes []*Redis // the same nodes
	args  [][]string
}

// StartClusterReplicas runs a Redis Cluster of masters, each with
// replicas replicas (`--cluster-replicas`), with a password and a node
// timeout of 2 s, and returns once every node says cluster_state:ok and
// every replica has synchronised with its master.
func StartClusterReplicas(t testing.TB, masters, replicas int) *Cluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	Require(t, "redis-cli (apt-get install redis-tools)", err)
	dir := t.TempDir()
	c := &Cluster{}
	for i := range masters * (1 + replicas) {
		// The node's port and its cluster bus port.
		OnFreePorts(t, "redis-server (cluster node)", 2, func(ports []int) error {
			conf := filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i))
			os.Remove(conf)
			args := []string{"--requirepass", RedisPassword, "--masterauth", RedisPassword, "--cluster-enabled", "yes",
				"--cluster-port", strconv.Itoa(ports[1]), "--cluster-config-file", conf,
				"--cluster-node-timeout", "2000", "--dir", dir}
			r, err := runRedis(t, ports[0], args...)
			if err == nil {
				c.Addrs, c.Nodes, c.args = append(c.Addrs, r.Addr), append(c.Nodes, r), append(c.args, args)
			}
			return err
		})
	}
	create := append(append([]string{"--no-auth-warning", "-a", RedisPassword, "--cluster", "create"}, c.Addrs...),
		"--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command(cli, create...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitOK(t, 30*time.Second, "")
	return c
}

// Node is the handle of the node at addr (nil: none).
func (c *Cluster) Node(addr string) *Redis {
	for i, a := range c.Addrs {
		if a == addr {
			return c.Nodes[i]
		}
	}
	return nil
}

// Restart starts the node at addr again on its port with its cluster
// configuration file, empty (nothing is persisted): it rejoins the
// cluster, as a replica of the master that replaced it.
func (c *Cluster) Restart(t testing.TB, addr string) {
	t.Helper()
	for i, a := range c.Addrs {
		if a == addr {
			port, _ := strconv.Atoi(a[strings.LastIndexByte(a, ':')+1:])
			c.Nodes[i] = RunRedisAt(t, port, c.args[i]...)
			return
		}
	}
	t.Fatalf("no cluster node %s", addr)
}

func (c *Cluster) client(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Password: RedisPassword, DialTimeout: time.Second, ReadTimeout: time.Second})
}

// shardNode is the host:port of a node of shard in role ("master" or
// "replica") not known to have failed ("": none).
func shardNode(shard redis.ClusterShard, role string) string {
	for _, n := range shard.Nodes {
		if n.Role == role && n.Health != "fail" {
			return net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
		}
	}
	return ""
}

// MasterOf is the address of the master that serves key's slot, as a
// running node says (CLUSTER KEYSLOT, CLUSTER SHARDS).
func (c *Cluster) MasterOf(ctx context.Context, key string) (string, error) {
	var last error
	for i, a := range c.Addrs {
		if !c.Nodes[i].Alive() {
			continue
		}
		cl := c.client(a)
		slot, err := cl.ClusterKeySlot(ctx, key).Result()
		var shards []redis.ClusterShard
		if err == nil {
			shards, err = cl.ClusterShards(ctx).Result()
		}
		cl.Close()
		if err != nil {
			last = err
			continue
		}
		for _, sh := range shards {
			for _, r := range sh.Slots {
				if m := shardNode(sh, "master"); r.Start <= slot && slot <= r.End && m != "" {
					return m, nil
				}
			}
		}
		return "", fmt.Errorf("node %s: no master serves slot %d", a, slot)
	}
	return "", fmt.Errorf("no cluster node answers: %v", last)
}

// ReplicaOf is the address of a replica of the master at addr, as it
// says (CLUSTER SHARDS).
func (c *Cluster) ReplicaOf(t testing.TB, addr string) string {
	t.Helper()
	cl := c.client(addr)
	defer cl.Close()
	shards, err := cl.ClusterShards(context.Background()).Result()
	if err != nil {
		t.Fatalf("cluster node %s: %v", addr, err)
	}
	for _, sh := range shards {
		if shardNode(sh, "master") == addr {
			if r := shardNode(sh, "replica"); r != "" {
				return r
			}
		}
	}
	t.Fatalf("cluster node %s: no replica", addr)
	return ""
}

// Subscribers lists the running nodes that hold a pub/sub connection
// (CLIENT LIST TYPE pubsub), with how many.
func (c *Cluster) Subscribers(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	for i, a := range c.Addrs {
		if !c.Nodes[i].Alive() {
			continue
		}
		cl := c.client(a)
		list, err := cl.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
		cl.Close()
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", a, err)
		}
		for line := range strings.Lines(list) {
			if strings.TrimSpace(line) != "" {
				out[a]++
			}
		}
	}
	return out, nil
}

// WaitOK waits until every running node says cluster_state:ok, serves no
// slot from gone (a killed master's address; "": none) and, if it is a
// replica, has synchronised with its master.
func (c *Cluster) WaitOK(t testing.TB, timeout time.Duration, gone string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for i, a := range c.Addrs {
		if !c.Nodes[i].Alive() {
			continue
		}
		cl := c.client(a)
		for {
			err := clusterReady(ctx, cl, gone)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				cl.Close()
				t.Fatalf("cluster node %s: %v", a, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		cl.Close()
	}
}

func clusterReady(ctx context.Context, cl *redis.Client, gone string) error {
	info, err := cl.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return fmt.Errorf("not ok: %s", strings.Fields(info)[0])
	}
	if gone != "" {
		shards, err := cl.ClusterShards(ctx).Result()
		if err != nil {
			return err
		}
		for _, sh := range shards {
			if len(sh.Slots) > 0 && shardNode(sh, "master") == gone {
				return fmt.Errorf("slots %v still served by %s", sh.Slots, gone)
			}
		}
	}
	repl, err := cl.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
		return errors.New("replica not synchronised with its master yet")
	}
	return nil
}
