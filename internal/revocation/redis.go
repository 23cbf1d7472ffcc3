package revocation

import (
	"context"
	"errors"
	"fmt"
	neturl "net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore shares revocations through Redis: a sorted set of
// "<kind>:<value>" scored by revocation time, and a channel announcing new
// entries. Every command has a short timeout.
type RedisStore struct {
	c      *redis.Client
	key    string
	chann  string
	prefix string
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

// Close closes the connection pool.
func (r *RedisStore) Close() error { return r.c.Close() }

// Ping checks the connection.
func (r *RedisStore) Ping(ctx context.Context) error { return r.c.Ping(ctx).Err() }

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
	return err
}

// Load implements Store; it also drops entries older than since.
func (r *RedisStore) Load(ctx context.Context, since time.Time) ([]Entry, error) {
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

// Subscribe implements Store.
func (r *RedisStore) Subscribe(ctx context.Context, fn func(Entry)) error {
	sub := r.c.Subscribe(ctx, r.chann)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return err
	}
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-ch:
			if !ok {
				return fmt.Errorf("redis subscription closed")
			}
			at, m, found := strings.Cut(msg.Payload, " ")
			t, err := strconv.ParseInt(at, 10, 64)
			if !found || err != nil {
				continue
			}
			if e, ok := parseMember(m, t); ok {
				fn(e)
			}
		}
	}
}

// Remember implements Store with SET NX EX.
func (r *RedisStore) Remember(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return r.c.SetNX(ctx, r.prefix+":once:"+key, 1, ttl).Result()
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
