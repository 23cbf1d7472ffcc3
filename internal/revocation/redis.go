package revocation

import (
	"context"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
)

// RedisStore shares revocations through Redis: a sorted set of
// "<kind>:<value>" scored by revocation time, and a channel announcing new
// entries. Every command has a short timeout.
type RedisStore struct {
	c      *redis.Client
	key    string
	chann  string
	prefix string
	// Metrics records every operation and the subscription's state (nil:
	// nothing recorded). Set before the store is used.
	Metrics *metrics.Redis
}

// NewRedisStore connects to url (redis://[:password@]host:port/db, or
// rediss:// for TLS). keyPrefix namespaces the keys (default
// "oidc-authservice").
func NewRedisStore(url, keyPrefix string) (*RedisStore, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		// url.Error quotes the whole URL, password included: keep only
		// what went wrong.
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	opt.DialTimeout = 2 * time.Second
	opt.ReadTimeout = 2 * time.Second
	opt.WriteTimeout = 2 * time.Second
	opt.MaxRetries = 1
	if keyPrefix == "" {
		keyPrefix = "oidc-authservice"
	}
	return &RedisStore{c: redis.NewClient(opt), key: keyPrefix + ":revoked", chann: keyPrefix + ":revocations", prefix: keyPrefix}, nil
}

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
	return r.Metrics.Op(metrics.RedisPing, r.c.Ping(ctx).Err())
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
	return r.Metrics.Op(metrics.RedisPublish, err)
}

// Load implements Store; it also drops entries older than since.
func (r *RedisStore) Load(ctx context.Context, since time.Time) ([]Entry, error) {
	out, err := r.load(ctx, since)
	return out, r.Metrics.Op(metrics.RedisLoad, err)
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
func (r *RedisStore) Subscribe(ctx context.Context, fn func(Entry)) error {
	sub := r.c.Subscribe(ctx, r.chann)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return r.Metrics.Op(metrics.RedisSubscribe, err)
	}
	r.Metrics.Op(metrics.RedisSubscribe, nil)
	r.Metrics.Subscribed(true)
	defer r.Metrics.Subscribed(false)
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
				return r.Metrics.Op(metrics.RedisSubscribe, fmt.Errorf("subscription lost: %w", err))
			}
			pinged = true
			continue
		default:
			return r.Metrics.Op(metrics.RedisSubscribe, fmt.Errorf("subscription lost: %w", err))
		}
		m, ok := msg.(*redis.Message)
		if !ok {
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

// subscriptionCheck is how long a quiet subscription waits before it
// checks its connection.
const subscriptionCheck = 5 * time.Second

// Remember implements Store with SET NX EX.
func (r *RedisStore) Remember(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	fresh, err := r.c.SetNX(ctx, r.prefix+":once:"+key, 1, ttl).Result()
	return fresh, r.Metrics.Op(metrics.RedisRemember, err)
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
