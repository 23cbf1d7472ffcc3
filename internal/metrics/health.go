package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The health of the parts the service depends on beyond the provider:
// readiness, Redis and the API server's TokenReview. Each set is registered
// only when the part is configured, so a dashboard or alert on it stays
// silent (no series) where the part is not used, and every label value is
// created at zero so that rates exist before the first failure.

// Readiness registers oidc_authservice_ready, read when scraped: 1 once
// provider discovery succeeded (what /readyz answers), else 0.
func (m *Metrics) Readiness(ready func() bool) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "ready",
		Help: "1 when this replica is ready (provider discovery succeeded; /readyz answers 200), else 0."},
		func() float64 {
			if ready() {
				return 1
			}
			return 0
		}))
}

// Redis operations, the "operation" label of oidc_authservice_redis_commands_total.
const (
	RedisPublish   = "publish"   // a revocation shared with the other replicas
	RedisLoad      = "load"      // the periodic full resync of the revocation list
	RedisRemember  = "remember"  // a one-time value (login state, logout token's jti)
	RedisSubscribe = "subscribe" // the revocation channel's subscription (re)established or lost
	RedisPing      = "ping"      // start-up and check-config
)

// Redis records the commands of the Redis store shared by the replicas.
type Redis struct {
	reg        *prometheus.Registry
	ops        map[string][2]prometheus.Counter // operation → ok, error
	subscribed prometheus.Gauge
}

// Redis registers the Redis collectors and returns them; call it once, when
// REDIS_URL (or Sentinel or Cluster) is configured.
func (m *Metrics) Redis() *Redis {
	if m == nil {
		return nil
	}
	ops := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "redis_commands_total",
		Help: "Redis operations of the revocation store, by operation (publish, load, remember, subscribe, ping) and result (ok, error)."},
		[]string{"operation", "result"})
	sub := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "redis_subscribed",
		Help: "1 while the subscription to the other replicas' revocations is established, else 0."})
	m.reg.MustRegister(ops, sub)
	r := &Redis{reg: m.reg, ops: map[string][2]prometheus.Counter{}, subscribed: sub}
	for _, op := range []string{RedisPublish, RedisLoad, RedisRemember, RedisSubscribe, RedisPing} {
		r.ops[op] = [2]prometheus.Counter{ops.WithLabelValues(op, "ok"), ops.WithLabelValues(op, "error")}
	}
	return r
}

// Op records one operation and its outcome and returns err.
func (r *Redis) Op(operation string, err error) error {
	if r == nil {
		return err
	}
	c, ok := r.ops[operation]
	if !ok {
		return err
	}
	if err != nil {
		c[1].Inc()
	} else {
		c[0].Inc()
	}
	return err
}

// Subscribed records whether the revocation subscription is established.
func (r *Redis) Subscribed(up bool) {
	if r == nil {
		return
	}
	if up {
		r.subscribed.Set(1)
	} else {
		r.subscribed.Set(0)
	}
}

// Unshared registers oidc_authservice_revocations_unshared, read when
// scraped: this replica's revocations Redis has not taken yet.
func (r *Redis) Unshared(n func() int) {
	if r == nil {
		return
	}
	r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "revocations_unshared",
		Help: "Revocations made on this replica that Redis has not taken yet (kept, and published again every 2 s until it does)."},
		func() float64 { return float64(n()) }))
}

// TokenReview results, the "result" label of oidc_authservice_tokenreviews_total.
const (
	ReviewAuthenticated = "authenticated" // the API server authenticated the token
	ReviewRefused       = "refused"       // it answered, and did not (or not for our audiences)
	ReviewUnavailable   = "unavailable"   // no answer: network, TLS, 5xx, timeout, too many in flight
)

// TokenReview records the reviews of service-account tokens at the API
// server.
type TokenReview struct {
	results  map[string]prometheus.Counter
	duration prometheus.Histogram
	cache    *CacheCounter
}

// TokenReview registers the TokenReview collectors and returns them; call
// it once, when KUBERNETES_AUTHN_ENABLED is on.
func (m *Metrics) TokenReview() *TokenReview {
	if m == nil {
		return nil
	}
	results := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "tokenreviews_total",
		Help: "TokenReviews sent to the API server, by result (authenticated, refused, unavailable); cached answers are not counted."},
		[]string{"result"})
	duration := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "tokenreview_duration_seconds",
		Help: "Time the API server took to answer a TokenReview (or to fail).", Buckets: prometheus.DefBuckets})
	m.reg.MustRegister(results, duration)
	t := &TokenReview{results: map[string]prometheus.Counter{}, duration: duration, cache: m.CacheCounter("tokenreview")}
	for _, r := range []string{ReviewAuthenticated, ReviewRefused, ReviewUnavailable} {
		t.results[r] = results.WithLabelValues(r)
	}
	return t
}

// Review records one review sent to the API server.
func (t *TokenReview) Review(result string, took time.Duration) {
	if t == nil {
		return
	}
	if c, ok := t.results[result]; ok {
		c.Inc()
		t.duration.Observe(took.Seconds())
	}
}

// Lookup counts a lookup in the cache of the API server's answers.
func (t *TokenReview) Lookup(hit bool) {
	if t != nil {
		t.cache.Lookup(hit)
	}
}
