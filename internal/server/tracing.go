package server

import (
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/tracing"
)

// newTracer builds the tracer of OTEL_EXPORTER_OTLP_* (nil without an
// endpoint). Export failures (the receiver down or refusing) are logged at
// most once a minute: spans are dropped, checks never wait for them.
func newTracer(s config.Tracing, version string, log *zap.Logger) (*tracing.Tracer, error) {
	if s.Endpoint == "" {
		return nil, nil
	}
	t, err := tracing.New(tracing.Options{Endpoint: s.Endpoint, Protocol: s.Protocol, Sampler: s.Sampler, SamplerArg: s.SamplerArg,
		ServiceName: s.ServiceName, Version: version, Attributes: s.Attributes})
	if err != nil {
		return nil, err
	}
	var last atomic.Int64
	log = log.Named("tracing")
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		now := time.Now().Unix()
		if l := last.Load(); now-l >= 60 && last.CompareAndSwap(l, now) {
			log.Warn("spans not exported (at most one such line a minute)", zap.Error(err))
		}
	}))
	log.Info("traces exported", zap.String("endpoint", s.Endpoint), zap.String("protocol", s.Protocol),
		zap.String("sampler", s.Sampler), zap.Float64("ratio", s.SamplerArg), zap.String("service_name", s.ServiceName))
	return t, nil
}
