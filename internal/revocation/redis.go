package revocation

import (
	"context"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
)

// RedisStore shares revocations through Redis: a sorted set of
// "<kind>:<value>" scored by revocation time, and a channel announcing new
// entries. Every command has a short timeout. The same commands work on a
// single Redis, on the master Sentinel names (followed across failovers)
// and on a Redis Cluster: there the sorted set is one key, so one slot on
// one master (and its replicas); one-time values are keys of their own,
// spread over the slots; PUBLISH reaches the subscribers of every node.
type RedisStore struct {
	c      redis.UniversalClient
	mode   string
	key    string
	chann  string
	prefix string
	// Metrics records every operation and the subscription's state (nil:
	// nothing recorded). Set before the store is used.
	Metrics *metrics.Redis
}

// RedisOptions say which Redis to use: a single server (URL), a master
// behind Sentinel, or a Cluster.
type RedisOptions struct {
	// URL is REDIS_URL: redis://[[user]:password@]host:port/db (rediss://
	// for TLS). With Sentinel or Cluster it has no host and gives the
	// servers' user, password, database and TLS.
	URL string
	// SentinelMaster and SentinelAddrs: the master's name and the
	// Sentinels (REDIS_SENTINEL_MASTER_NAME, REDIS_SENTINEL_ADDRS);
	// SentinelPassword is the Sentinels' own.
	SentinelMaster   string
	SentinelAddrs    []string
	SentinelPassword string
	// ClusterAddrs are some nodes of a Redis Cluster (REDIS_CLUSTER_ADDRS).
	ClusterAddrs []string
	// KeyPrefix namespaces the keys (default "oidc-authservice").
	KeyPrefix string
}

// NewRedisStore builds the client of o (go-redis' universal client: a
// single server, a Sentinel-backed failover client or a cluster client).
// It does not connect.
func NewRedisStore(o RedisOptions) (*RedisStore, error) {
	u := &redis.UniversalOptions{DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxRetries: 1}
	mode := "single"
	switch {
	case o.SentinelMaster != "":
		mode, u.MasterName, u.Addrs, u.SentinelPassword = "sentinel", o.SentinelMaster, o.SentinelAddrs, o.SentinelPassword
	case len(o.ClusterAddrs) > 0:
		mode, u.Addrs, u.IsClusterMode = "cluster", o.ClusterAddrs, true
	}
	if o.URL != "" || mode == "single" {
		raw := o.URL
		if mode != "single" {
			// The servers come from Sentinel or the cluster: the URL
			// brings the credentials, database and TLS only.
			if i := strings.LastIndex(raw, "@"); i >= 0 {
				raw = raw[:i+1] + "placeholder" + raw[i+1:]
			} else if i := strings.Index(raw, "://"); i >= 0 {
				raw = raw[:i+3] + "placeholder" + raw[i+3:]
			}
		}
		opt, err := redis.ParseURL(raw)
		if err != nil {
			// url.Error quotes the whole URL, password included: keep only
			// what went wrong.
			var ue *neturl.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		u.Username, u.Password, u.DB, u.TLSConfig = opt.Username, opt.Password, opt.DB, opt.TLSConfig
		if mode == "single" {
			u.Addrs = []string{opt.Addr}
		} else if u.TLSConfig != nil {
			// Each server's certificate is checked against the name it
			// is dialled by (tls.DialWithDialer), not the placeholder.
			u.TLSConfig.ServerName = ""
		}
	}
	prefix := o.KeyPrefix
	if prefix == "" {
		prefix = "oidc-authservice"
	}
	return &RedisStore{c: redis.NewUniversalClient(u), mode: mode, key: prefix + ":revoked", chann: prefix + ":revocations", prefix: prefix}, nil
}

// Mode is "single", "sentinel" or "cluster".
func (r *RedisStore) Mode() string { return r.mode }

// Trace makes every Redis command a span (its name; never its arguments,
// which hold session ids and one-time values) under the span of the
// request that caused it, with tp (tracing.Tracer.Provider).
func (r *RedisStore) Trace(tp trace.TracerProvider) error {
	return redisotel.InstrumentTracing(r.c, redisotel.WithTracerProvider(tp), redisotel.WithDBStatement(false),
		redisotel.WithCallerEnabled(false))
}

// Close closes the connection pool.
func (r *RedisStore) Close() error { return r.c.Close() }

// Ping checks the connection.
func (r *RedisStore) Ping(ctx context.Context) error {
	return r.op(metrics.RedisPing, r.c.Ping(ctx).Err())
}

func member(k Kind, value string) string { return string(k) + ":" + value }

// Publish implements Store.
func (r *RedisStore) Publish(ctx context.Context, k Kind, value string, at time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m := member(k, value)
	pipe := r.c.TxPipeline()
	pipe.ZAdd(ctx, r.key, redis.Z{Score: float64(at.Unix()), Member: m})
	pipe.Publish(ctx, r.chann, strconv.FormatInt(at.Unix(), 10)+" "+m)
	_, err := pipe.Exec(ctx)
	return r.op(metrics.RedisPublish, err)
}

// Load implements Store; it also drops entries older than since.
func (r *RedisStore) Load(ctx context.Context, since time.Time) ([]Entry, error) {
	out, err := r.load(ctx, since)
	return out, r.op(metrics.RedisLoad, err)
}

func (r *RedisStore) load(ctx context.Context, since time.Time) ([]Entry, error) {
	cut := strconv.FormatInt(since.Unix(), 10)
	if err := r.c.ZRemRangeByScore(ctx, r.key, "-inf", "("+cut).Err(); err != nil {
		return nil, err
	}
	zs, err := r.c.ZRangeByScoreWithScores(ctx, r.key, &redis.ZRangeBy{Min: cut, Max: "+inf"}).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(zs))
	for _, z := range zs {
		if e, ok := parseMember(z.Member.(string), int64(z.Score)); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// Subscribe implements Store. It returns when the subscription is lost
// (the caller subscribes again): go-redis would reconnect on its own, but
// silently, and what was published meanwhile would be missed without the
// caller knowing it must resync. A quiet channel is checked with a PING
// every subscriptionCheck; no answer within another subscriptionCheck
// counts as lost.
//
// In a Cluster, go-redis subscribes through the master of the first
// channel's slot. The first channel is the list's own name (nobody
// publishes on it), so the subscription is held by the master that holds
// the list: its failover, which may lose what it had acknowledged but not
// yet passed to its replica, ends the subscription, and subscribing again
// reloads the list and publishes this replica's recent revocations again,
// as after a Sentinel failover. (Through the channel's own master, on
// another node, the subscription would outlive that failover and nothing
// would be published again.)
func (r *RedisStore) Subscribe(ctx context.Context, ready func(), fn func(Entry)) error {
	channels := []string{r.chann}
	if r.mode == "cluster" {
		channels = []string{r.key, r.chann}
	}
	// Subscribed here rather than by c.Subscribe, which drops the error:
	// after a failed first attempt go-redis would connect again with its
	// channels in map order, through either node.
	sub := r.c.Subscribe(ctx)
	defer sub.Close()
	if err := sub.Subscribe(ctx, channels...); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return r.op(metrics.RedisSubscribe, err)
	}
	if _, err := sub.Receive(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return r.op(metrics.RedisSubscribe, err)
	}
	r.Metrics.Op(metrics.RedisSubscribe, nil)
	r.Metrics.Subscribed(true)
	defer r.Metrics.Subscribed(false)
	ready()
	pinged := false
	for {
		msg, err := sub.ReceiveTimeout(ctx, subscriptionCheck)
		if ctx.Err() != nil {
			return nil
		}
		var ne net.Error
		switch {
		case err == nil:
			pinged = false
		case errors.As(err, &ne) && ne.Timeout() && !pinged:
			if err := sub.Ping(ctx); err != nil {
				return r.op(metrics.RedisSubscribe, fmt.Errorf("subscription lost: %w", err))
			}
			pinged = true
			continue
		default:
			return r.op(metrics.RedisSubscribe, fmt.Errorf("subscription lost: %w", err))
		}
		m, ok := msg.(*redis.Message)
		if !ok || m.Channel != r.chann {
			continue
		}
		at, member, found := strings.Cut(m.Payload, " ")
		t, err := strconv.ParseInt(at, 10, 64)
		if !found || err != nil {
			continue
		}
		if e, ok := parseMember(member, t); ok {
			fn(e)
		}
	}
}

// op records the outcome of an operation and, in a Cluster, has the
// client read the slot map again after a failure. go-redis does so by
// itself only on a MOVED answer or once its map is a minute old
// (ClusterStateReloadInterval); a master that died answers nothing, and a
// transaction (Publish) is retried on the same node, so without this the
// service would dial the dead master for up to a minute after the cluster
// had promoted its replica. The reload runs in the background, one at a
// time; the next attempt (shareRetry, subscribeBackoff) uses the new map.
func (r *RedisStore) op(operation string, err error) error {
	if err != nil {
		if c, ok := r.c.(*redis.ClusterClient); ok {
			c.ReloadState(context.Background())
		}
	}
	return r.Metrics.Op(operation, err)
}

// subscriptionCheck is how long a quiet subscription waits before it
// checks its connection.
const subscriptionCheck = 5 * time.Second

// Remember implements Store with SET NX EX.
func (r *RedisStore) Remember(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	fresh, err := r.c.SetNX(ctx, r.prefix+":once:"+key, 1, ttl).Result()
	return fresh, r.op(metrics.RedisRemember, err)
}

func parseMember(m string, at int64) (Entry, bool) {
	if len(m) < 3 || m[1] != ':' {
		return Entry{}, false
	}
	k := Kind(m[0])
	if k != Session && k != SID && k != Subject && k != Token {
		return Entry{}, false
	}
	return Entry{Kind: k, Value: m[2:], At: at}, true
}

var redisLogOnce sync.Once

// LogRedisTo sends go-redis' own log lines (dial failures of its pool,
// Sentinel's new masters), which it writes to stderr otherwise, to log at
// debug level: the service logs what an outage means itself. Once per
// process (go-redis has one logger).
func LogRedisTo(log *zap.Logger) {
	redisLogOnce.Do(func() { redis.SetLogger(redisLogger{log.Named("redis")}) })
}

type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := l.log.Check(zap.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("message", fmt.Sprintf(format, v...)))
	}
}

// Check reaches the store as the service will and says what it found: the
// master Sentinel names and where it is, or the cluster's masters. An
// error says what cannot be reached.
func (r *RedisStore) Check(ctx context.Context) (string, error) {
	switch c := r.c.(type) {
	case *redis.ClusterClient:
		c.ReloadState(ctx)
		info, err := c.ClusterInfo(ctx).Result()
		if err != nil {
			return "", fmt.Errorf("CLUSTER INFO: %w", err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return "", fmt.Errorf("the cluster's state is not ok (CLUSTER INFO: %s)", strings.Fields(info)[0])
		}
		masters := 0
		err = c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			masters++
			return m.Ping(ctx).Err()
		})
		if err != nil {
			return "", fmt.Errorf("a master does not answer: %w", err)
		}
		return fmt.Sprintf("cluster: %d masters answer, state ok", masters), r.Metrics.Op(metrics.RedisPing, nil)
	}
	if err := r.Ping(ctx); err != nil {
		return "", err
	}
	if r.mode == "sentinel" {
		return "sentinel: the master answers", nil
	}
	return "single server answers", nil
}
