// Package metrics holds the service's Prometheus metrics, served at /metrics
// on READINESS_PROBE_PORT.
//
// Every method works on a nil *Metrics and then does nothing, so parts built
// without metrics (unit tests, benchmarks of a bare handler) need no stubs.
// Labels are small fixed sets: no user id, host, path or token material ever
// becomes a label value.
//
// The check path records one counter increment and one histogram
// observation per request; the counter for a (decision, reason) pair is
// resolved once and kept, so the hot path does no label hashing.
package metrics

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "oidc_authservice"

// Metrics is the set of collectors of one service instance.
type Metrics struct {
	reg *prometheus.Registry

	checks        *prometheus.CounterVec
	checkDuration *prometheus.HistogramVec

	loginsStarted   prometheus.Counter
	loginsCompleted prometheus.Counter
	loginsFailed    *prometheus.CounterVec
	refreshes       *prometheus.CounterVec
	validations     *prometheus.CounterVec
	revocations     *prometheus.CounterVec
	providerCalls   *prometheus.CounterVec
	providerLatency *prometheus.HistogramVec
	cacheLookups    *prometheus.CounterVec
	accessLog       prometheus.Counter
	identityLimits  *prometheus.CounterVec
	sessionBytes    prometheus.Histogram
	authzCalls      *prometheus.CounterVec
	authzLatency    prometheus.Histogram
	accessTokens    *prometheus.CounterVec
}

// New registers every collector on a registry of its own, with the Go
// runtime and process collectors and a build-info gauge.
func New(version string) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{reg: reg}
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "build_info",
		Help: "Always 1; the labels say which build is running."}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	f(build)

	m.checks = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "checks_total",
		Help: "Checks answered, by protocol (http: SERVER_PORT, grpc: GRPC_PORT), decision (allow, redirect, deny, forbidden, error) and reason."},
		[]string{"protocol", "decision", "reason"})
	m.checkDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "check_duration_seconds",
		Help:    "Time to answer a check (ext_authz over HTTP or gRPC, or forward-auth verify), from request to answer written, by protocol.",
		Buckets: []float64{0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 3}}, []string{"protocol"})
	m.loginsStarted = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "logins_started_total",
		Help: "Redirects to the provider's login page."})
	m.loginsCompleted = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "logins_completed_total",
		Help: "Callbacks that ended in a new session."})
	m.loginsFailed = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "logins_failed_total",
		Help: "Callbacks (and login starts) that did not end in a session, by reason."}, []string{"reason"})
	m.refreshes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "refreshes_total",
		Help: "Refresh-token grants, by result (ok, rejected, unavailable)."}, []string{"result"})
	m.validations = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "validations_total",
		Help: "Strict session validations at the provider's userinfo endpoint, by result (ok, rejected, unavailable)."}, []string{"result"})
	m.revocations = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "revocations_total",
		Help: "Sessions ended before their expiry, by source (logout, backchannel)."}, []string{"source"})
	m.providerCalls = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "provider_requests_total",
		Help: "HTTP requests to the provider, by endpoint and result (2xx, 3xx, 4xx, 5xx, error)."}, []string{"endpoint", "result"})
	m.providerLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "provider_request_duration_seconds",
		Help: "Latency of HTTP requests to the provider, by endpoint.", Buckets: prometheus.DefBuckets}, []string{"endpoint"})
	m.cacheLookups = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "cache_lookups_total",
		Help: "Lookups in the cache of verified credentials, by cache (session, token) and result (hit, miss)."}, []string{"cache", "result"})
	m.accessLog = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "access_log_lines_total",
		Help: "Access-log lines written (ACCESS_LOG, after sampling)."})
	m.identityLimits = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "identity_limits_total",
		Help: "Identities, sessions and tokens that exceeded what the service carries, by where (login, refresh, session, bearer), " +
			"what (groups, session, id_token, access_token) and action (refused, truncated, dropped)."}, []string{"source", "limit", "action"})
	// The refusals start at 0, so that increase() over an alert's window sees
	// the first one (a series born at 1 shows no increase).
	for _, l := range [][3]string{{"login", "groups", "refused"}, {"login", "session", "refused"}, {"login", "id_token", "refused"},
		{"login", "forward_auth_answer", "refused"}, {"refresh", "session", "refused"}, {"refresh", "id_token", "refused"}, {"refresh", "forward_auth_answer", "refused"},
		{"session", "groups", "refused"}, {"bearer", "groups", "refused"}} {
		m.identityLimits.WithLabelValues(l[:]...)
	}
	m.sessionBytes = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "session_cookie_bytes",
		Help:    "Size of the sessions sealed (logins and renewals), all cookies together; one cookie holds 3,800 bytes.",
		Buckets: []float64{500, 1000, 2000, 3800, 7600, 11400, 15200, 30400}})
	m.authzCalls = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "authorizer_decisions_total",
		Help: "Decisions of the external authorizer (EXTERNAL_AUTHZ_URL), by result: allow, deny, error, timeout, saturated (refused at once: too many calls in flight), cached (a fresh decision reused)."}, []string{"result"})
	m.authzLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "authorizer_request_duration_seconds",
		Help:    "Latency of calls to the external authorizer (cached decisions and refusals at once not included).",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}})
	m.accessTokens = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "access_token_verifications_total",
		Help: "Verifications of the provider's access tokens presented as bearer tokens (ACCESS_TOKEN_AUTHN), by kind (jwt, opaque) and result: ok, rejected, unavailable (the provider could not say), limited (refused at once: rate or concurrency bound of userinfo lookups). Cached answers are in cache_lookups_total{cache=\"access_token\"}."}, []string{"kind", "result"})
	for _, c := range []prometheus.Collector{m.checks, m.checkDuration, m.loginsStarted, m.loginsCompleted, m.loginsFailed,
		m.refreshes, m.validations, m.revocations, m.providerCalls, m.providerLatency, m.cacheLookups, m.accessLog,
		m.identityLimits, m.sessionBytes, m.authzCalls, m.authzLatency, m.accessTokens} {
		f(c)
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Registry is where the collectors are registered.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Sizes registers the gauges of the service's bounded state, read when
// scraped: the revocation list's entries and the replay memory's one-time
// values (neither grows with anonymous requests).
func (m *Metrics) Sizes(revocations, replay func() int) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "revocation_list_entries",
			Help: "Entries of the revocation list on this replica (sessions, provider sessions, subjects and tokens ended early)."},
			func() float64 { return float64(revocations()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "replay_memory_entries",
			Help: "One-time values remembered on this replica (used login states, logout tokens' jti, refresh claims); at most 100,000."},
			func() float64 { return float64(replay()) }))
}

// CheckCounter counts checks of one protocol, decision and reason. Callers
// resolve one per label set they use, once, so the hot path pays one atomic
// add.
type CheckCounter struct {
	c        prometheus.Counter
	duration prometheus.Observer
}

// CheckCounter returns the counter of checks that arrived in protocol and
// were answered with decision for reason (the labels of
// oidc_authservice_checks_total, whose vocabulary belongs to the caller).
func (m *Metrics) CheckCounter(protocol, decision, reason string) *CheckCounter {
	if m == nil {
		return nil
	}
	return &CheckCounter{c: m.checks.WithLabelValues(protocol, decision, reason), duration: m.checkDuration.WithLabelValues(protocol)}
}

// Add records one check and how long it took.
func (c *CheckCounter) Add(took time.Duration) {
	if c != nil {
		c.c.Inc()
		c.duration.Observe(took.Seconds())
	}
}

// LoginStarted counts a redirect to the provider.
func (m *Metrics) LoginStarted() {
	if m != nil {
		m.loginsStarted.Inc()
	}
}

// LoginCompleted counts a callback that made a session.
func (m *Metrics) LoginCompleted() {
	if m != nil {
		m.loginsCompleted.Inc()
	}
}

// LoginFailed counts a login that did not end in a session.
func (m *Metrics) LoginFailed(reason string) {
	if m != nil {
		m.loginsFailed.WithLabelValues(reason).Inc()
	}
}

// Refresh counts a refresh-token grant by result.
func (m *Metrics) Refresh(result string) {
	if m != nil {
		m.refreshes.WithLabelValues(result).Inc()
	}
}

// Validation counts a strict validation by result.
func (m *Metrics) Validation(result string) {
	if m != nil {
		m.validations.WithLabelValues(result).Inc()
	}
}

// Revocation counts a session ended early, by source ("logout", "backchannel").
func (m *Metrics) Revocation(source string) {
	if m != nil {
		m.revocations.WithLabelValues(source).Inc()
	}
}

// CacheCounter counts lookups in one cache of verified credentials.
type CacheCounter struct{ hit, miss prometheus.Counter }

// CacheCounter returns the counters of the cache called name (the "cache"
// label of oidc_authservice_cache_lookups_total), resolved once.
func (m *Metrics) CacheCounter(name string) *CacheCounter {
	if m == nil {
		return nil
	}
	return &CacheCounter{hit: m.cacheLookups.WithLabelValues(name, "hit"), miss: m.cacheLookups.WithLabelValues(name, "miss")}
}

// Lookup counts a hit or a miss.
func (c *CacheCounter) Lookup(hit bool) {
	switch {
	case c == nil:
	case hit:
		c.hit.Inc()
	default:
		c.miss.Inc()
	}
}

// IdentityLimit counts an identity, session or token beyond a limit: where
// (login, refresh, session, bearer), which limit (groups, session,
// id_token, access_token) and what was done (refused, truncated, dropped).
func (m *Metrics) IdentityLimit(source, limit, action string) {
	if m != nil {
		m.identityLimits.WithLabelValues(source, limit, action).Inc()
	}
}

// SessionBytes records the size of a sealed session.
func (m *Metrics) SessionBytes(n int) {
	if m != nil {
		m.sessionBytes.Observe(float64(n))
	}
}

// AccessLogLine counts a written access-log line.
func (m *Metrics) AccessLogLine() {
	if m != nil {
		m.accessLog.Inc()
	}
}

// AuthorizerStats records the external authorizer's decisions.
type AuthorizerStats struct {
	results map[string]prometheus.Counter
	latency prometheus.Histogram
}

// AuthorizerStats returns the authorizer's counters, resolved once.
func (m *Metrics) AuthorizerStats() *AuthorizerStats {
	if m == nil {
		return nil
	}
	s := &AuthorizerStats{results: map[string]prometheus.Counter{}, latency: m.authzLatency}
	for _, r := range []string{"allow", "deny", "error", "timeout", "saturated", "cached"} {
		s.results[r] = m.authzCalls.WithLabelValues(r)
	}
	return s
}

// Call records one decision by result (allow, deny, error, timeout,
// saturated); took is the call's duration (0: no call was made).
func (s *AuthorizerStats) Call(result string, took time.Duration) {
	if s == nil {
		return
	}
	s.results[result].Inc()
	if took > 0 {
		s.latency.Observe(took.Seconds())
	}
}

// Cached records a decision reused from the cache.
func (s *AuthorizerStats) Cached() {
	if s != nil {
		s.results["cached"].Inc()
	}
}

// AccessTokenStats records verifications of one kind of access token.
type AccessTokenStats struct{ results map[string]prometheus.Counter }

// AccessTokenStats returns the counters of kind ("jwt" or "opaque").
func (m *Metrics) AccessTokenStats(kind string) *AccessTokenStats {
	if m == nil {
		return nil
	}
	s := &AccessTokenStats{results: map[string]prometheus.Counter{}}
	for _, r := range []string{"ok", "rejected", "unavailable", "limited"} {
		s.results[r] = m.accessTokens.WithLabelValues(kind, r)
	}
	return s
}

// Result records one verification: ok, rejected, unavailable or limited.
func (s *AccessTokenStats) Result(result string) {
	if s != nil {
		s.results[result].Inc()
	}
}

// ProviderCall records one HTTP request to the provider.
func (m *Metrics) ProviderCall(endpoint string, status int, err error, took time.Duration) {
	if m == nil {
		return
	}
	result := "error"
	if err == nil {
		result = statusClass(status)
	}
	m.providerCalls.WithLabelValues(endpoint, result).Inc()
	m.providerLatency.WithLabelValues(endpoint).Observe(took.Seconds())
}

func statusClass(code int) string {
	switch {
	case code >= 500:
		return "5xx"
	case code >= 400:
		return "4xx"
	case code >= 300:
		return "3xx"
	default:
		return "2xx"
	}
}

// Transport wraps next so that every request through it is recorded with
// the endpoint name that endpoint(req) gives.
func (m *Metrics) Transport(next http.RoundTripper, endpoint func(*http.Request) string) http.RoundTripper {
	if m == nil {
		return next
	}
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		start := time.Now()
		resp, err := next.RoundTrip(req)
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		m.ProviderCall(endpoint(req), status, err, time.Since(start))
		return resp, err
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
