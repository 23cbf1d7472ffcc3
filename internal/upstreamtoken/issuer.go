// Package upstreamtoken owns the identity tokens the service issues for upstreams
// (UPSTREAM_TOKEN=issued): short-lived JWTs with iss, aud, sub, email,
// groups (and groups_csv, comma-joined), iat and exp, signed with keys from a Secret (the first signs,
// all are published, so keys rotate without rejecting tokens in flight),
// and the discovery document and key set an Istio RequestAuthentication
// reads to validate them.
//
// Signing uses the standard library (ES256 or RS256 over a compact JWS);
// tests validate the tokens with an independent library.
package upstreamtoken

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"
)

// Key is one signing key.
type Key struct {
	signer crypto.Signer
	kid    string
	alg    string
}

// ErrKeys wraps key file problems.
var ErrKeys = errors.New("invalid upstream token keys")

// LoadKeys reads PEM private keys (PKCS#8, PKCS#1 RSA, SEC1 EC), newest
// first.
func LoadKeys(file string) ([]Key, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeys, err)
	}
	var keys []Key
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		var k any
		switch blk.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKeys, err)
		}
		key, err := newKey(k)
		if err != nil {
			return nil, err
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no private key in %s", ErrKeys, file)
	}
	return keys, nil
}

// GenerateKey makes a P-256 key (for development: not shared by replicas).
func GenerateKey() (Key, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Key{}, err
	}
	return newKey(k)
}

func newKey(k any) (Key, error) {
	var alg string
	switch key := k.(type) {
	case *rsa.PrivateKey:
		if key.N.BitLen() < 2048 {
			return Key{}, fmt.Errorf("%w: RSA keys need at least 2048 bits", ErrKeys)
		}
		alg = "RS256"
	case *ecdsa.PrivateKey:
		if key.Curve != elliptic.P256() {
			return Key{}, fmt.Errorf("%w: EC keys must be P-256", ErrKeys)
		}
		alg = "ES256"
	default:
		return Key{}, fmt.Errorf("%w: unsupported key type %T", ErrKeys, k)
	}
	s := k.(crypto.Signer)
	der, err := x509.MarshalPKIXPublicKey(s.Public())
	if err != nil {
		return Key{}, err
	}
	sum := sha256.Sum256(der)
	return Key{signer: s, kid: base64.RawURLEncoding.EncodeToString(sum[:12]), alg: alg}, nil
}

// Issuer signs upstream tokens.
type Issuer struct {
	keys      []Key
	iss, aud  string
	lifetime  time.Duration
	now       func() time.Time
	jwks      []byte
	discovery []byte
}

// New builds an Issuer; keys[0] signs.
func New(keys []Key, iss, aud string, lifetime time.Duration, now func() time.Time) (*Issuer, error) {
	if len(keys) == 0 {
		return nil, errors.New("no signing key")
	}
	i := &Issuer{keys: keys, iss: strings.TrimSuffix(iss, "/"), aud: aud, lifetime: lifetime, now: now}
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	for _, k := range keys {
		set.Keys = append(set.Keys, jwk(k))
	}
	var err error
	if i.jwks, err = json.Marshal(set); err != nil {
		return nil, err
	}
	i.discovery, err = json.Marshal(map[string]any{
		"issuer":                                i.iss,
		"jwks_uri":                              i.iss + "/.well-known/jwks.json",
		"id_token_signing_alg_values_supported": []string{"ES256", "RS256"},
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
	})
	return i, err
}

func jwk(k Key) map[string]string {
	enc := base64.RawURLEncoding
	m := map[string]string{"kid": k.kid, "alg": k.alg, "use": "sig"}
	switch pub := k.signer.Public().(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", enc.EncodeToString(pub.N.Bytes()), enc.EncodeToString(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		// Uncompressed point: 0x04 || X || Y, 32 bytes each on P-256.
		if b, err := pub.Bytes(); err == nil && len(b) == 65 {
			m["kty"], m["crv"] = "EC", "P-256"
			m["x"], m["y"] = enc.EncodeToString(b[1:33]), enc.EncodeToString(b[33:])
		}
	}
	return m
}

// JWKS is the published key set.
func (i *Issuer) JWKS() []byte { return i.jwks }

// Discovery is the discovery document.
func (i *Issuer) Discovery() []byte { return i.discovery }

// Lifetime of issued tokens.
func (i *Issuer) Lifetime() time.Duration { return i.lifetime }

// Sign issues a token for the identity.
func (i *Issuer) Sign(sub string, groups []string) (string, time.Time, error) {
	now := i.now()
	exp := now.Add(i.lifetime)
	claims := map[string]any{"iss": i.iss, "aud": i.aud, "sub": sub, "iat": now.Unix(), "nbf": now.Unix() - 5, "exp": exp.Unix()}
	if strings.Contains(sub, "@") {
		claims["email"] = sub
	}
	if groups == nil {
		groups = []string{}
	}
	claims["groups"] = groups
	// The groups as one string, for a gateway that copies a claim to a
	// header: Envoy's jwt_authn writes a list claim as the base64 of its
	// JSON, not comma-joined (deploy/overlays/kubeflow-jwt maps this one to
	// kubeflow-groups).
	claims["groups_csv"] = strings.Join(groups, ",")
	k := i.keys[0]
	header, _ := json.Marshal(map[string]string{"alg": k.alg, "kid": k.kid, "typ": "JWT"})
	payload, err := encodeClaims(claims)
	if err != nil {
		return "", time.Time{}, err
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
	sum := sha256.Sum256([]byte(input))
	var sig []byte
	switch key := k.signer.(type) {
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	case *ecdsa.PrivateKey:
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, key, sum[:])
		if err == nil {
			sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
		}
	}
	if err != nil {
		return "", time.Time{}, err
	}
	return input + "." + enc.EncodeToString(sig), exp, nil
}

// encodeClaims is the claims' JSON without HTML escaping: json.Marshal
// would write each <, > and & of a name as \u003c (6 bytes), and the
// groups' bound (identity.JSONLen) counts what remains escaped: " and \
// (2 bytes) and U+2028, U+2029 (6). The token is base64url-encoded, never
// put into HTML.
func encodeClaims(claims map[string]any) ([]byte, error) {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(claims); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
