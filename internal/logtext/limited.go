package logtext

import (
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Limited returns a logger for the lines anonymous requests can cause (a
// refused callback, a forged token, a malformed path): each message is
// written at most burst times a second, so a flood of hostile requests
// cannot turn into a flood of log lines. What is left out is counted and
// reported, at most once every report, in one warning, "log lines
// suppressed", written just before the next line that is let through.
// Lines of signed-in users (logins, logouts, refreshes) belong on the
// ordinary logger: they are audit lines and never sampled.
func Limited(log *zap.Logger, burst int, report time.Duration) *zap.Logger {
	l := &limiter{log: log, report: int64(report)}
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, burst, 0, zapcore.SamplerHook(l.hook))
	}))
}

// limiter counts the lines the sampler drops and reports them.
type limiter struct {
	log     *zap.Logger // not sampled
	report  int64       // nanoseconds between reports
	dropped atomic.Int64
	last    atomic.Int64 // last report, unix nanoseconds (0: none yet, the first is not delayed)
}

func (l *limiter) hook(e zapcore.Entry, d zapcore.SamplingDecision) {
	if d&zapcore.LogDropped != 0 {
		l.dropped.Add(1)
		return
	}
	now, prev := e.Time.UnixNano(), l.last.Load()
	if l.dropped.Load() == 0 || now-prev < l.report || !l.last.CompareAndSwap(prev, now) {
		return
	}
	if n := l.dropped.Swap(0); n > 0 {
		l.log.Warn("log lines suppressed: too many refusals of anonymous requests of one kind (at most a few a second are written)",
			zap.Int64("suppressed", n))
	}
}
