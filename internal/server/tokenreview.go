package server

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/credential"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/tokenreview"
	"github.com/oidc-authservice/oidc-authservice/internal/tracing"
)

// tokenReviews builds the TokenReview authenticator when
// KUBERNETES_AUTHN_ENABLED is on (nil otherwise): the in-cluster API server,
// the service's own token and CA, AUDIENCES. A pod without them fails to
// start, naming what is missing.
func tokenReviews(s *config.Settings, m *metrics.Metrics, tr *tracing.Tracer, log *zap.Logger, now func() time.Time) (credential.Authenticator, error) {
	if !s.Bearer.TokenReview {
		return nil, nil
	}
	o, err := tokenreview.InCluster(s.Bearer.ServiceAccountDir, tokenreview.Options{
		Audiences: s.Bearer.ReviewAudiences, Timeout: s.Sessions.CheckProviderBudget, Logger: log, Now: now,
	})
	o.Metrics, o.Tracer = m.TokenReview(), tr
	if err != nil {
		return nil, fmt.Errorf("KUBERNETES_AUTHN_ENABLED: %w", err)
	}
	a, err := tokenreview.New(o)
	if err != nil {
		return nil, fmt.Errorf("KUBERNETES_AUTHN_ENABLED: %w", err)
	}
	log.Info("service-account tokens are reviewed by the API server", zap.String("api_server", o.APIServer),
		zap.Strings("issuers", a.Issuers()), zap.Strings("audiences", s.Bearer.ReviewAudiences))
	return a, nil
}
