package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/kubeapi"
	"github.com/oidc-authservice/oidc-authservice/internal/sessionkeys"
)

// KeyStore is the Secret of the installation's session keys
// (SESSION_KEYS_SECRET), when the service runs in a pod with it on: the
// service reads its keys there when none is given, and checks that its
// account can create no other Secret whenever it holds a token. Nil, nil
// outside a pod, with SESSION_KEYS_SECRET empty, or with keys given and no
// token mounted (then the account can do nothing). No key given and no
// token is an error that says what to apply.
func KeyStore(s *config.Settings) (*sessionkeys.Store, error) {
	ss := s.Sessions
	if ss.KeySecret == "" || !kubeapi.InPod() {
		return nil, nil
	}
	o, err := kubeapi.InCluster(s.Bearer.ServiceAccountDir)
	if err != nil {
		return nil, nil
	}
	api, err := kubeapi.New(o)
	if err == nil {
		var id kubeapi.Identity
		if id, err = api.Whoami(); err == nil {
			return &sessionkeys.Store{API: api, Namespace: id.Namespace, Name: ss.KeySecret, Account: id.Username()}, nil
		}
	}
	if !ss.Generated {
		return nil, nil
	}
	return nil, fmt.Errorf("SESSION_KEYS is not set, so the service keeps its key in Secret %s of its namespace, but it "+
		"has no usable service-account token to read it with (%v). Apply %s (deploy/base includes it: it sets "+
		"automountServiceAccountToken: true and adds the Role, RoleBinding and ValidatingAdmissionPolicy it needs), "+
		"or set SESSION_KEYS (openssl rand -base64 32; the same for every replica)", ss.KeySecret, err, sessionkeys.Component)
}

// sessionKeys refuses to go on when the service's account could create a
// Secret other than its own, then makes s's session keys those of the
// Secret when none is given (waiting up to 20 s for an API server that does
// not answer). It returns s itself when there is nothing to do.
func sessionKeys(ctx context.Context, s *config.Settings, log *zap.Logger) (*config.Settings, error) {
	store, err := KeyStore(s)
	if err != nil || store == nil {
		return s, err
	}
	// First the guard: nothing is created while the account could create
	// more than its Secret.
	gctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = store.Guarded(gctx)
	cancel()
	switch {
	case err == nil:
	case errors.Is(err, sessionkeys.ErrUnguarded):
		return nil, err
	default:
		log.Warn("could not check that the service's account can create no other Secret", zap.Error(err))
	}
	if s.Sessions.Generated {
		// Within the Deployment's liveness allowance (3 × 10 s), so that
		// the pod ends with this error rather than a kill.
		octx, cancel := context.WithTimeout(ctx, 20*time.Second)
		keys, err := sessionkeys.Retry(octx, store.Obtain)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("SESSION_KEYS is not set, and the service's own key could not be obtained: %w", err)
		}
		secrets, errs := config.SessionSecrets(keys.Text)
		if len(errs) > 0 {
			return nil, fmt.Errorf("the session keys of Secret %s/%s (%s): %w", store.Namespace, store.Name, sessionkeys.DataKey, errors.Join(errs...))
		}
		c := *s
		c.Sessions.Secrets, c.Sessions.Generated = secrets, false
		s = &c
		log.Info("session keys read from the installation's Secret", zap.String("namespace", store.Namespace),
			zap.String("secret", store.Name), zap.Bool("created", keys.Created), zap.Int("keys", len(secrets)))
	}
	return s, nil
}
