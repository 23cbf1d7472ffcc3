// Package sessionkeys gives an installation a session key of its own when
// the operator gives none: a Secret in the service's own namespace, created
// with a random key by the first replica that finds it absent, read by every
// replica and every restart.
//
//	GET  /api/v1/namespaces/<ns>/secrets/<name>       200: its keys
//	                                                   404: POST a new one
//	POST /api/v1/namespaces/<ns>/secrets               201: the key just drawn
//	                                                   409: another replica won: GET
//
// What the service needs for it (deploy/components/session-keys): `get` on
// that one Secret and `create` on secrets in its namespace — RBAC cannot
// restrict create by name — with a ValidatingAdmissionPolicy that refuses
// any Secret write by the service's account except that name, type Opaque,
// without the annotation that makes a service-account token. Guarded probes
// that at start: a dry-run create of what the policy must refuse.
//
// The keys are never logged. Rotation is the operator's (docs/operations.md):
// edit the Secret, then restart the replicas; they read it at start.
package sessionkeys

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/oidc-authservice/oidc-authservice/internal/kubeapi"
)

// DataKey is the key of the Secret's data that holds the session keys
// (comma- or newline-separated, as SESSION_KEYS and SESSION_KEYS_FILE).
const DataKey = "SESSION_KEYS"

// Component is where the RBAC and policy the store needs are shipped.
const Component = "deploy/components/session-keys"

// Store is the Secret of one installation's session keys.
type Store struct {
	API       *kubeapi.Client
	Namespace string
	Name      string
	// Account is the service's own account, for messages
	// (system:serviceaccount:<ns>:<name>).
	Account string
	// Random is where new keys come from (crypto/rand when nil).
	Random io.Reader
}

// Keys are what the Secret holds.
type Keys struct {
	Text    string // DataKey's value: the keys, never to be logged
	Created bool   // this call created the Secret
	Exists  bool   // for Inspect: the Secret exists
}

// ErrForbidden marks an answer 401 or 403: the service's account may not do
// what it needs; the error says what to apply.
var ErrForbidden = errors.New("not permitted")

// ErrUnguarded marks an account that could create a Secret other than its
// own: the error says what to apply.
var ErrUnguarded = errors.New("the account is not confined to its own Secret")

// ErrUnavailable marks a call without an answer (network, timeout, 5xx): a
// retry may succeed.
var ErrUnavailable = errors.New("the API server did not answer")

// secret is the part of a v1 Secret that is read and written.
type secret struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metadata          `json:"metadata"`
	Type       string            `json:"type,omitempty"`
	Data       map[string][]byte `json:"data,omitempty"`
}

type metadata struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func (s *Store) path() string {
	return "/api/v1/namespaces/" + url.PathEscape(s.Namespace) + "/secrets"
}

// Obtain returns the installation's keys: those of the Secret, or, when it
// does not exist, a random key in a Secret it creates. Two replicas
// starting at once end with the same key: the one whose create loses
// (409) reads the winner's.
func (s *Store) Obtain(ctx context.Context) (Keys, error) {
	k, err := s.get(ctx)
	if err == nil || !errors.Is(err, errNotFound) {
		return k, err
	}
	text, err := s.newKey()
	if err != nil {
		return Keys{}, err
	}
	obj := s.object(text)
	ans, err := s.API.Do(ctx, http.MethodPost, s.path(), obj)
	if err != nil {
		return Keys{}, fmt.Errorf("%w: creating Secret %s/%s: %v", ErrUnavailable, s.Namespace, s.Name, err)
	}
	switch ans.Code {
	case http.StatusCreated, http.StatusOK:
		return Keys{Text: text, Created: true, Exists: true}, nil
	case http.StatusConflict:
		// Another replica created it between our read and our create.
		return s.get(ctx)
	}
	return Keys{}, s.refusal("create", ans)
}

// object is the Secret the store creates.
func (s *Store) object(text string) secret {
	return secret{APIVersion: "v1", Kind: "Secret", Type: "Opaque",
		Metadata: metadata{Name: s.Name, Namespace: s.Namespace,
			Labels: map[string]string{"app.kubernetes.io/name": "oidc-authservice", "app.kubernetes.io/component": "session-keys"},
			Annotations: map[string]string{"oidc-authservice/about": "The session keys of this installation, created at its first start. " +
				"Comma-separated; the first seals, all open. Rotation: docs/operations.md."}},
		Data: map[string][]byte{DataKey: []byte(text)}}
}

// CanCreate asks the API server whether the Secret could be created, as a
// dry run (check-config, when it is absent): nil when it could.
func (s *Store) CanCreate(ctx context.Context) error {
	text, err := s.newKey()
	if err != nil {
		return err
	}
	ans, err := s.API.Do(ctx, http.MethodPost, s.path()+"?dryRun=All", s.object(text))
	if err != nil {
		return fmt.Errorf("%w: creating Secret %s/%s (dry run): %v", ErrUnavailable, s.Namespace, s.Name, err)
	}
	switch ans.Code {
	case http.StatusCreated, http.StatusOK, http.StatusConflict:
		return nil
	}
	return s.refusal("create", ans)
}

// Inspect reads the Secret without creating it (check-config).
func (s *Store) Inspect(ctx context.Context) (Keys, error) {
	k, err := s.get(ctx)
	if errors.Is(err, errNotFound) {
		return Keys{}, nil
	}
	return k, err
}

var errNotFound = errors.New("not found")

func (s *Store) get(ctx context.Context) (Keys, error) {
	ans, err := s.API.Do(ctx, http.MethodGet, s.path()+"/"+url.PathEscape(s.Name), nil)
	if err != nil {
		return Keys{}, fmt.Errorf("%w: reading Secret %s/%s: %v", ErrUnavailable, s.Namespace, s.Name, err)
	}
	switch ans.Code {
	case http.StatusOK:
	case http.StatusNotFound:
		return Keys{}, errNotFound
	default:
		return Keys{}, s.refusal("get", ans)
	}
	var sec secret
	if err := json.Unmarshal(ans.Body, &sec); err != nil {
		return Keys{}, fmt.Errorf("reading Secret %s/%s: the answer is not a Secret: %v", s.Namespace, s.Name, err)
	}
	text := string(sec.Data[DataKey])
	if text == "" {
		return Keys{}, fmt.Errorf("the Secret %s/%s has no %s: put the keys there (openssl rand -base64 32), or delete the Secret and the service creates it again", s.Namespace, s.Name, DataKey)
	}
	return Keys{Text: text, Exists: true}, nil
}

// newKey draws 32 random bytes, base64 as `openssl rand -base64 32` prints
// them.
func (s *Store) newKey() (string, error) {
	r := s.Random
	if r == nil {
		r = rand.Reader
	}
	b := make([]byte, 32)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("drawing a session key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// refusal turns an answer other than success into an error; 401 and 403
// say what to apply.
func (s *Store) refusal(verb string, ans *kubeapi.Answer) error {
	st := ans.Status()
	switch ans.Code {
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("%w: %s may not %s Secret %s/%s (HTTP %d: %s). %s", ErrForbidden, s.Account, verb, s.Namespace, s.Name, ans.Code, st.Message, s.Remedy())
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return fmt.Errorf("%w: %s Secret %s/%s: HTTP %d: %s", ErrUnavailable, verb, s.Namespace, s.Name, ans.Code, st.Message)
	}
	return fmt.Errorf("%s Secret %s/%s: HTTP %d: %s", verb, s.Namespace, s.Name, ans.Code, st.Message)
}

// Remedy is what to apply so that the service may keep its key, or how to
// do without.
func (s *Store) Remedy() string {
	return fmt.Sprintf("Apply %s (deploy/base includes it; kubectl apply -k <your overlay>): Role and RoleBinding "+
		"authservice-session-keys in namespace %s (get on secrets/%s, create on secrets, bound to ServiceAccount %s), "+
		"ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding oidc-authservice-session-keys, and "+
		"automountServiceAccountToken: true on the Deployment. Or set SESSION_KEYS (openssl rand -base64 32; "+
		"the same for every replica) and SESSION_KEYS_SECRET= (empty).", Component, s.Namespace, s.Name, accountName(s.Account))
}

// Guarded checks that the service's account can create no Secret but its
// own: it asks the API server to create, as a dry run (nothing is stored),
// a service-account-token Secret under the store's name and an Opaque
// Secret under another name. Each must be refused, by RBAC or by the
// admission policy; a dry run that succeeds means the account could make
// itself a token of another service account, and the error says what to
// apply. An error wrapping ErrUnavailable means no answer.
func (s *Store) Guarded(ctx context.Context) error {
	probes := []struct {
		what string
		obj  secret
	}{
		{"a service-account-token Secret", secret{APIVersion: "v1", Kind: "Secret", Type: "kubernetes.io/service-account-token",
			Metadata: metadata{Name: s.Name, Namespace: s.Namespace,
				Annotations: map[string]string{"kubernetes.io/service-account.name": accountName(s.Account)}}}},
		{"a Secret of another name", secret{APIVersion: "v1", Kind: "Secret", Type: "Opaque",
			Metadata: metadata{Name: s.Name + "-probe", Namespace: s.Namespace}}},
	}
	for _, p := range probes {
		ans, err := s.API.Do(ctx, http.MethodPost, s.path()+"?dryRun=All", p.obj)
		if err != nil {
			return fmt.Errorf("%w: the dry-run probe: %v", ErrUnavailable, err)
		}
		switch {
		case ans.Code == http.StatusForbidden:
			continue // RBAC or the admission policy: refused, as it must be
		case ans.Code == http.StatusCreated || ans.Code == http.StatusOK || ans.Code == http.StatusConflict:
			// 409: admission let it through to storage, where the name exists.
			return fmt.Errorf("%w: %s can create %s in namespace %s (a dry run was admitted, HTTP %d): with that, whoever runs "+
				"this service could make itself a token of another service account. Apply the ValidatingAdmissionPolicy "+
				"and ValidatingAdmissionPolicyBinding oidc-authservice-session-keys of %s (Kubernetes 1.30 or later; "+
				"they match ServiceAccount authservice: patch them if yours is named otherwise), or remove the Role that "+
				"grants create on secrets and set SESSION_KEYS", ErrUnguarded, s.Account, p.what, s.Namespace, ans.Code, Component)
		case ans.Code >= 500 || ans.Code == http.StatusTooManyRequests:
			return fmt.Errorf("%w: the dry-run probe: HTTP %d: %s", ErrUnavailable, ans.Code, ans.Status().Message)
		default:
			return fmt.Errorf("the dry-run probe of %s answered HTTP %d (%s): cannot tell whether the admission policy holds", p.what, ans.Code, ans.Status().Message)
		}
	}
	return nil
}

// accountName is the name part of system:serviceaccount:<ns>:<name>.
func accountName(username string) string {
	for i := len(username) - 1; i >= 0; i-- {
		if username[i] == ':' {
			return username[i+1:]
		}
	}
	return username
}

// Retry runs f until it succeeds, fails other than for want of an answer,
// or ctx ends, waiting 1 s doubling to 8 s between tries.
func Retry[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	wait := time.Second
	for {
		v, err := f(ctx)
		if err == nil || !errors.Is(err, ErrUnavailable) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(wait):
		}
		if wait < 8*time.Second {
			wait *= 2
		}
	}
}
