package check

import (
	"math/rand/v2"
	"net/http"

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

func (a *accessLog) line(r *http.Request, d metrics.Decision, why metrics.Reason, pr *principal) {
	if d == metrics.Allow && a.rate < 1 && (a.rate <= 0 || rand.Float64() >= a.rate) {
		return
	}
	user := ""
	if pr != nil {
		user = pr.user[0]
	}
	a.log.Info("access", zap.String("decision", d.String()), zap.String("reason", why.String()),
		zap.String("user", user), zap.String("method", r.Method), zap.String("host", r.Host),
		zap.String("path", r.URL.Path), requestID(r))
	a.metrics.AccessLogLine()
}
