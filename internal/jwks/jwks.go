// Package jwks owns the verification keys of an issuer: a JSON Web Key Set
// fetched from its jwks_uri, used to check JWS signatures (go-oidc's
// oidc.KeySet) on every path that verifies a token of that issuer — the
// login's ID token, refreshed ID tokens, back-channel logout tokens and
// bearer JWTs share one Set per issuer.
//
// A token names its key by kid. A kid the Set does not know makes it fetch
// the key set again, at most once per interval however many distinct
// unknown kids arrive, so anonymous input cannot make the service hammer the
// issuer. A caller whose kid is still unknown when no fetch is allowed is
// answered at once (the Set schedules one trailing fetch at the end of the
// interval, so a key the issuer has just rotated in is picked up within an
// interval); only callers marked with MayWait — tokens the service obtained
// from the provider itself, never anonymous input — wait for that fetch
// within their context's deadline.
package jwks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/logtext"
)

// Algorithms are the signature algorithms accepted for every token the
// service verifies: asymmetric only, so a public key can never be used as
// an HMAC secret.
var Algorithms = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}

var joseAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
}

// Limits on what an issuer's key set may be.
const (
	MaxBytes = 256 << 10
	MaxKeys  = 100
)

// DefaultInterval is the shortest time between two fetches of one Set.
const DefaultInterval = 2 * time.Second

// ErrUnknownKey: no key of the set verifies the token, and the set may not
// be fetched again yet (or was, and still has no such key).
var ErrUnknownKey = errors.New("no key of the issuer's key set matches")

// Set is one issuer's key set.
type Set struct {
	client   *http.Client
	interval time.Duration
	log      *zap.Logger

	url  atomic.Pointer[string]
	keys atomic.Pointer[[]jose.JSONWebKey]
	gen  atomic.Uint64 // incremented each time keys are replaced

	mu        sync.Mutex // guards the fields below
	lastFetch time.Time
	inflight  chan struct{} // closed when the running fetch ends; nil when none runs
	trailing  bool          // a fetch is scheduled for the end of the interval
}

// fetchTimeout bounds one fetch (the client's own timeout may be shorter).
const fetchTimeout = 10 * time.Second

// New builds a Set that fetches url (which may be set later with SetURL,
// once discovery has found it) with client, at most once per interval
// (DefaultInterval when zero).
func New(url string, client *http.Client, interval time.Duration, log *zap.Logger) *Set {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &Set{client: client, interval: interval, log: log}
	s.SetURL(url)
	return s
}

// SetURL points the set at a (new) jwks_uri; the keys already known stay
// until the next fetch.
func (s *Set) SetURL(u string) { s.url.Store(&u) }

type mayWaitKey struct{}

// MayWait marks ctx as a caller that may wait for the next allowed fetch
// within its deadline: use it only for tokens the service obtained from the
// provider itself (code exchange, refresh), never for anonymous input.
func MayWait(ctx context.Context) context.Context { return context.WithValue(ctx, mayWaitKey{}, true) }

// VerifySignature implements oidc.KeySet.
func (s *Set) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSigned(raw, joseAlgorithms)
	if err != nil {
		return nil, fmt.Errorf("malformed JWS: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("want exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	seen := s.gen.Load()
	if payload, ok := s.verify(jws, kid); ok {
		return payload, nil
	}
	if !s.refetch(ctx, seen) {
		return nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, logtext.Bound(kid, 64))
	}
	if payload, ok := s.verify(jws, kid); ok {
		return payload, nil
	}
	return nil, fmt.Errorf("%w: signature does not verify with any key of kid %q", ErrUnknownKey, logtext.Bound(kid, 64))
}

func (s *Set) verify(jws *jose.JSONWebSignature, kid string) ([]byte, bool) {
	keys := s.keys.Load()
	if keys == nil {
		return nil, false
	}
	alg := jws.Signatures[0].Header.Algorithm
	for _, key := range *keys {
		if (kid != "" && key.KeyID != kid) || (key.Use != "" && key.Use != "sig") || (key.Algorithm != "" && key.Algorithm != alg) {
			continue
		}
		if payload, err := jws.Verify(key.Key); err == nil {
			return payload, true
		}
	}
	return nil, false
}

// refetch makes sure the key set is newer than generation seen and reports
// whether newer keys are there to try. Concurrent callers share one fetch
// (waiting for it within their context). When the interval has not passed,
// it schedules one trailing fetch and answers false at once, unless ctx is
// marked MayWait and that fetch falls before its deadline.
func (s *Set) refetch(ctx context.Context, seen uint64) bool {
	for {
		s.mu.Lock()
		if s.gen.Load() != seen {
			s.mu.Unlock()
			return true
		}
		if done := s.inflight; done != nil {
			s.mu.Unlock()
			select {
			case <-done:
				continue
			case <-ctx.Done():
				return false
			}
		}
		wait := s.interval - time.Since(s.lastFetch)
		if wait <= 0 {
			s.startFetchLocked(ctx)
			continue
		}
		if !s.trailing {
			s.trailing = true
			time.AfterFunc(wait, s.trailingFetch)
		}
		s.mu.Unlock()
		deadline, ok := ctx.Deadline()
		if ctx.Value(mayWaitKey{}) == nil || !ok || time.Until(deadline) < wait {
			return false
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return false
		}
	}
}

// trailingFetch is the fetch scheduled for the end of an interval in which
// unknown kids arrived.
func (s *Set) trailingFetch() {
	s.mu.Lock()
	s.trailing = false
	if s.inflight == nil && time.Since(s.lastFetch) >= s.interval {
		s.startFetchLocked(context.Background())
		return
	}
	s.mu.Unlock()
}

// startFetchLocked starts one fetch in the background and unlocks s.mu;
// s.inflight is closed when it ends. The fetch has its own timeout, so a
// caller that gives up does not cancel it for the others; it keeps the
// values of from, the context of the request that asked for it (its
// trace: the fetch's span is a child of that request's).
func (s *Set) startFetchLocked(from context.Context) {
	done := make(chan struct{})
	s.inflight = done
	s.lastFetch = time.Now()
	u := *s.url.Load()
	s.mu.Unlock()
	go func() {
		defer close(done)
		keys, err := s.fetch(from, u)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.inflight = nil
		if err != nil {
			s.log.Warn("key set fetch failed", zap.String("jwks", u), zap.Error(err))
			return
		}
		s.keys.Store(&keys)
		s.gen.Add(1)
	}()
}

func (s *Set) fetch(from context.Context, u string) ([]jose.JSONWebKey, error) {
	if u == "" {
		return nil, errors.New("jwks_uri not known yet (discovery has not succeeded)")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(from), fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxBytes {
		return nil, fmt.Errorf("key set larger than %d bytes", MaxBytes)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, err
	}
	if len(set.Keys) > MaxKeys {
		return nil, fmt.Errorf("key set has %d keys, more than %d", len(set.Keys), MaxKeys)
	}
	var out []jose.JSONWebKey
	for _, raw := range set.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(raw); err != nil {
			continue // a key of a kind we do not use
		}
		if !key.IsPublic() {
			continue // never accept symmetric or private material as a verification key
		}
		out = append(out, key)
	}
	return out, nil
}

var _ oidc.KeySet = (*Set)(nil)
