package authn

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

// Limits on what an issuer's key set may be.
const (
	maxJWKSBytes = 256 << 10
	maxKeys      = 100
)

// keySet verifies signatures with an issuer's JWKS. It picks keys by kid,
// so a token costs one signature check, and refetches the set when a kid is
// unknown — at most once per interval, so tokens with invented kids cannot
// make the service hammer the issuer.
type keySet struct {
	url      string
	client   *http.Client
	interval time.Duration
	log      *zap.Logger

	keys      atomic.Pointer[[]jose.JSONWebKey]
	gen       atomic.Uint64 // incremented each time keys are replaced
	mu        sync.Mutex    // serializes fetches; guards lastFetch
	lastFetch time.Time
}

func limit(r io.Reader) io.Reader { return io.LimitReader(r, maxJWKSBytes) }

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{
		jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
	})
	if err != nil {
		return nil, fmt.Errorf("malformed JWS: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("want exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	seen := k.gen.Load()
	if payload, ok := k.verify(jws, kid); ok {
		return payload, nil
	}
	if !k.refetch(ctx, seen) {
		return nil, fmt.Errorf("no key matches kid %q", truncate(kid, 64))
	}
	if payload, ok := k.verify(jws, kid); ok {
		return payload, nil
	}
	return nil, fmt.Errorf("signature does not verify with any key of kid %q", truncate(kid, 64))
}

func (k *keySet) verify(jws *jose.JSONWebSignature, kid string) ([]byte, bool) {
	keys := k.keys.Load()
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

// refetch makes sure the key set is newer than generation seen: it
// returns at once when another request has already loaded newer keys, and
// otherwise fetches, at most once per interval. When the interval has not
// passed yet but will before ctx's deadline (the check's provider budget),
// it waits for it instead of failing, so a token signed with a key the
// issuer has just rotated in is accepted rather than refused for up to an
// interval. It reports whether newer keys are there to try.
func (k *keySet) refetch(ctx context.Context, seen uint64) bool {
	for {
		k.mu.Lock()
		if k.gen.Load() != seen {
			k.mu.Unlock()
			return true
		}
		wait := k.interval - time.Since(k.lastFetch)
		if wait <= 0 {
			k.lastFetch = time.Now()
			keys, err := k.fetch(ctx)
			if err != nil {
				k.mu.Unlock()
				k.log.Warn("key set fetch failed", zap.String("jwks", k.url), zap.Error(err))
				return false
			}
			k.keys.Store(&keys)
			k.gen.Add(1)
			k.mu.Unlock()
			return true
		}
		k.mu.Unlock()
		if deadline, ok := ctx.Deadline(); !ok || time.Until(deadline) < wait {
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

func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("key set larger than %d bytes", maxJWKSBytes)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, err
	}
	if len(set.Keys) > maxKeys {
		return nil, fmt.Errorf("key set has %d keys, more than %d", len(set.Keys), maxKeys)
	}
	var out []jose.JSONWebKey
	for _, raw := range set.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(raw); err != nil {
			continue // a key of a kind we do not use
		}
		if _, ok := key.Key.(crypto.PublicKey); !ok || !key.IsPublic() {
			continue // never accept symmetric or private material as a verification key
		}
		out = append(out, key)
	}
	return out, nil
}

var _ oidc.KeySet = (*keySet)(nil)
