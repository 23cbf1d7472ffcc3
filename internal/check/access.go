package check

import (
	"math/rand/v2"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
)

// accessLog writes one audit line per check (ACCESS_LOG): who, what, and
// the decision. Allowed checks are sampled at ACCESS_LOG_SAMPLE_RATE; every
// other decision is written. The query string is left out: it may carry
// codes or tokens.
type accessLog struct {
	log     *zap.Logger
	rate    float64
	metrics *metrics.Metrics
}

func (a *accessLog) line(q *request, v *verdict) {
	if v.decision == allow && a.rate < 1 && (a.rate <= 0 || rand.Float64() >= a.rate) {
		return
	}
	user := ""
	if v.who.ok() {
		user = v.who.UserHeader[0]
	}
	a.log.Info("access", zap.String("protocol", q.front.String()), zap.String("decision", v.decision.String()), zap.String("reason", v.reason.String()),
		zap.String("user", user), zap.String("method", q.Method), zap.String("host", q.Host),
		zap.String("path", q.URL.Path), q.rid())
	a.metrics.AccessLogLine()
}
