package config

import (
	"slices"
	"strings"
	"testing"
)

// TestRedisModes: REDIS_URL alone is one server; Sentinel and Cluster name
// their servers in their own variables, REDIS_URL then carrying only the
// password, user, database and TLS.
func TestRedisModes(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		mode string
	}{
		{nil, ""},
		{map[string]string{"REDIS_URL": "redis://:pw@redis:6379/0"}, "single"},
		{map[string]string{"REDIS_SENTINEL_MASTER_NAME": "mymaster", "REDIS_SENTINEL_ADDRS": "s-0:26379, s-1:26379,s-2:26379",
			"REDIS_SENTINEL_PASSWORD": "sp", "REDIS_URL": "redis://:pw@/1"}, "sentinel"},
		{map[string]string{"REDIS_SENTINEL_MASTER_NAME": "mymaster", "REDIS_SENTINEL_ADDRS": "[::1]:26379"}, "sentinel"},
		{map[string]string{"REDIS_CLUSTER_ADDRS": "r-0:6379,r-1:6379", "REDIS_URL": "rediss://user:pw@"}, "cluster"},
		{map[string]string{"REDIS_CLUSTER_ADDRS": "r-0:6379", "REDIS_URL": "redis://:pw@/0"}, "cluster"},
	} {
		s, err := Load(FromMap(setenv(t, c.env)))
		if err != nil {
			t.Errorf("%v: %v", c.env, err)
			continue
		}
		if got := s.Logout.RedisMode(); got != c.mode {
			t.Errorf("%v: mode %q, want %q", c.env, got, c.mode)
		}
	}
	s, _ := Load(FromMap(setenv(t, map[string]string{"REDIS_SENTINEL_MASTER_NAME": "m", "REDIS_SENTINEL_ADDRS": "a:1, b:2"})))
	if !slices.Equal(s.Logout.RedisSentinelAddrs, []string{"a:1", "b:2"}) {
		t.Errorf("addresses %v", s.Logout.RedisSentinelAddrs)
	}
	if r := s.Redacted(); r["REDIS_SENTINEL_PASSWORD"] != "" {
		t.Errorf("unset password shown as %q", r["REDIS_SENTINEL_PASSWORD"])
	}
	s, _ = Load(FromMap(setenv(t, map[string]string{"REDIS_SENTINEL_MASTER_NAME": "m", "REDIS_SENTINEL_ADDRS": "a:1", "REDIS_SENTINEL_PASSWORD": "s3cret"})))
	if r := s.Redacted(); r["REDIS_SENTINEL_PASSWORD"] != "[redacted]" {
		t.Errorf("the Sentinel password is shown: %q", r["REDIS_SENTINEL_PASSWORD"])
	}
}

func TestRedisRefusals(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		name string
	}{
		{map[string]string{"REDIS_SENTINEL_MASTER_NAME": "m"}, "REDIS_SENTINEL_ADDRS"},
		{map[string]string{"REDIS_SENTINEL_ADDRS": "s:26379"}, "REDIS_SENTINEL_MASTER_NAME"},
		{map[string]string{"REDIS_SENTINEL_PASSWORD": "p"}, "REDIS_SENTINEL_PASSWORD"},
		{map[string]string{"REDIS_SENTINEL_MASTER_NAME": "m", "REDIS_SENTINEL_ADDRS": "s:26379", "REDIS_CLUSTER_ADDRS": "r:6379"}, "REDIS_CLUSTER_ADDRS"},
		{map[string]string{"REDIS_SENTINEL_MASTER_NAME": "m", "REDIS_SENTINEL_ADDRS": "sentinel"}, "REDIS_SENTINEL_ADDRS"},
		{map[string]string{"REDIS_CLUSTER_ADDRS": "r:notaport"}, "REDIS_CLUSTER_ADDRS"},
		{map[string]string{"REDIS_CLUSTER_ADDRS": ":6379"}, "REDIS_CLUSTER_ADDRS"},
		// With Sentinel or Cluster the URL names no server: a host would
		// be silently ignored.
		{map[string]string{"REDIS_SENTINEL_MASTER_NAME": "m", "REDIS_SENTINEL_ADDRS": "s:26379", "REDIS_URL": "redis://:s3cret-pw@redis:6379/0"}, "REDIS_URL"},
		{map[string]string{"REDIS_CLUSTER_ADDRS": "r:6379", "REDIS_URL": "redis://:s3cret-pw@/3"}, "REDIS_URL"},
		{map[string]string{"REDIS_CLUSTER_ADDRS": "r:6379", "REDIS_URL": "http://:s3cret-pw@"}, "REDIS_URL"},
	} {
		_, err := Load(FromMap(setenv(t, c.env)))
		if err == nil || !strings.Contains(err.Error(), c.name+":") {
			t.Errorf("%v: %v, want a problem naming %s", c.env, err, c.name)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error shows a password: %v", err)
		}
	}
}
