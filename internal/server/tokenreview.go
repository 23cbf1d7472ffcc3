package server

import (
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/check"
	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/tokenreview"
)

// tokenReviews builds the TokenReview authenticator when
// KUBERNETES_AUTHN_ENABLED is on (nil otherwise): the in-cluster API server,
// the service's own token and CA, AUDIENCES. A pod without them fails to
// start, naming what is missing.
func tokenReviews(s *config.Settings, log *zap.Logger, now func() time.Time) (check.TokenAuthenticator, error) {
	if !s.KubernetesAuthn {
		return nil, nil
	}
	var audiences []string
	for _, a := range strings.Split(s.Audiences, ",") {
		if a = strings.TrimSpace(a); a != "" {
			audiences = append(audiences, a)
		}
	}
	o, err := tokenreview.InCluster(s.KubernetesServiceDir, tokenreview.Options{
		Audiences: audiences, Timeout: s.CheckProviderBudget, Logger: log, Now: now,
	})
	if err != nil {
		return nil, fmt.Errorf("KUBERNETES_AUTHN_ENABLED: %w", err)
	}
	a, err := tokenreview.New(o)
	if err != nil {
		return nil, fmt.Errorf("KUBERNETES_AUTHN_ENABLED: %w", err)
	}
	log.Info("service-account tokens are reviewed by the API server", zap.String("api_server", o.APIServer),
		zap.Strings("issuers", a.Issuers()), zap.Strings("audiences", audiences))
	return a, nil
}
