package revocation

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// A malformed REDIS_URL is reported without its password: the error ends
// up in the start-up log and in check-config's output.
func TestRedisURLErrorsHideThePassword(t *testing.T) {
	for _, u := range []string{
		"redis://user:s3cret-pw@host:notaport/0",
		"redis://:s3cret-pw@host:6379/notadb",
		"rediss://user:s3cret-pw@[::1/0",
		"http://user:s3cret-pw@host:6379/0",
	} {
		_, err := NewRedisStore(RedisOptions{URL: u, KeyPrefix: "x"})
		if err == nil {
			t.Fatalf("%s accepted", u)
		}
		if strings.Contains(err.Error(), "s3cret-pw") || !strings.HasPrefix(err.Error(), "REDIS_URL: ") {
			t.Errorf("%s: %v", u, err)
		}
	}
}

// With Sentinel or Cluster, REDIS_URL gives the servers' credentials,
// database and TLS; each server's certificate is checked against the name
// it is dialled by.
func TestRedisModesOptions(t *testing.T) {
	s, err := NewRedisStore(RedisOptions{URL: "redis://:pw@/2", SentinelMaster: "m", SentinelAddrs: []string{"s:26379"}, SentinelPassword: "sp"})
	if err != nil {
		t.Fatal(err)
	}
	fo := s.c.(*redis.Client).Options()
	if s.Mode() != "sentinel" || fo.Password != "pw" || fo.DB != 2 || fo.TLSConfig != nil {
		t.Fatalf("sentinel: mode %s, password %q, db %d, TLS %v", s.Mode(), fo.Password, fo.DB, fo.TLSConfig)
	}
	s, err = NewRedisStore(RedisOptions{URL: "rediss://user:pw@", ClusterAddrs: []string{"r-0:6379", "r-1:6379"}})
	if err != nil {
		t.Fatal(err)
	}
	co := s.c.(*redis.ClusterClient).Options()
	if s.Mode() != "cluster" || co.Username != "user" || co.Password != "pw" || co.TLSConfig == nil || co.TLSConfig.ServerName != "" ||
		len(co.Addrs) != 2 {
		t.Fatalf("cluster: mode %s, %+v", s.Mode(), co)
	}
	s, err = NewRedisStore(RedisOptions{ClusterAddrs: []string{"r-0:6379"}})
	if err != nil || s.Mode() != "cluster" {
		t.Fatalf("a cluster named by one node: %v %v", s, err)
	}
	if _, ok := s.c.(*redis.ClusterClient); !ok {
		t.Fatalf("one cluster address made a %T", s.c)
	}
	s, err = NewRedisStore(RedisOptions{URL: "rediss://user:pw@redis.example.com:6380/1"})
	if err != nil {
		t.Fatal(err)
	}
	so := s.c.(*redis.Client).Options()
	if s.Mode() != "single" || so.Addr != "redis.example.com:6380" || so.TLSConfig.ServerName != "redis.example.com" || so.DB != 1 {
		t.Fatalf("single: %+v", so)
	}
}
