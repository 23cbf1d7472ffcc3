package peer

import (
	"context"
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
func StartCluster(t testing.TB, n int) []string {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	Require(t, "redis-cli (apt-get install redis-tools)", err)
	dir := t.TempDir()
	var addrs []string
	for i := range n {
		// The node's port and its cluster bus port.
		OnFreePorts(t, "redis-server (cluster node)", 2, func(ports []int) error {
			conf := filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i))
			os.Remove(conf)
			r, err := runRedis(t, ports[0], "--requirepass", RedisPassword, "--masterauth", RedisPassword, "--cluster-enabled", "yes",
				"--cluster-port", strconv.Itoa(ports[1]), "--cluster-config-file", conf,
				"--cluster-node-timeout", "2000", "--dir", dir)
			if err == nil {
				addrs = append(addrs, r.Addr)
			}
			return err
		})
	}
	cmd := exec.Command(cli, append(append([]string{"--no-auth-warning", "-a", RedisPassword, "--cluster", "create"}, addrs...), "--cluster-yes")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a, Password: RedisPassword})
		for {
			info, err := c.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				t.Fatalf("cluster node %s: %v %s", a, err, info)
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.Close()
	}
	return addrs
}
