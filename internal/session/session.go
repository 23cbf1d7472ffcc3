package session

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Session is what a logged-in browser carries, sealed. Field names are short
// because every request carries them.
type Session struct {
	ID      string   `json:"id"` // IDFromNonce of the login; names this browser session in the revocation list
	Subject string   `json:"sub"`
	Issuer  string   `json:"iss,omitempty"`
	User    string   `json:"u"`           // user id after USERID_TRANSFORMERS, without USERID_PREFIX
	Groups  []string `json:"g,omitempty"` // groups after sanitizing
	SID     string   `json:"sid,omitempty"`
	Created int64    `json:"c"`           // unix seconds
	Expires int64    `json:"x"`           // unix seconds; absolute bound (SESSION_MAX_AGE)
	Active  int64    `json:"a,omitempty"` // unix seconds; last activity, for SESSION_IDLE_TIMEOUT
	Renewed int64    `json:"r,omitempty"` // unix seconds; tokens obtained (login or refresh)

	AccessToken  string `json:"at,omitempty"`
	RefreshToken string `json:"rt,omitempty"`
	IDToken      string `json:"it,omitempty"`
	TokenExpiry  int64  `json:"tx,omitempty"` // access token expiry, unix seconds
	// IDTokenExpiry is the exp of IDToken (unix seconds), so a session that
	// hands the ID token upstream (UPSTREAM_TOKEN=id_token) refreshes it in
	// time; 0 when unknown.
	IDTokenExpiry int64  `json:"ix,omitempty"`
	Email         string `json:"e,omitempty"` // the email claim, kept for AUTH_REQUEST_HEADERS only
	// GroupsPolicy is the fingerprint of the groups policy (GROUPS_FILTER,
	// GROUPS_MAX, ...) Groups went through; a session sealed under another
	// one (or before there was one) has its groups filtered again when
	// opened.
	GroupsPolicy string `json:"gp,omitempty"`
}

// IDFromNonce is the id of the session a login with this nonce makes: a
// digest of the nonce, which is random per login. The provider's tokens of
// that login carry the nonce (its ID token; at Dex, refreshed ID tokens and
// access tokens too), so they name the session they were obtained for, and
// ending the session ends them on the bearer path as well
// (credential.Tokens). The nonce is no secret (every upstream that gets the
// ID token reads it) and neither is the id: it only names an entry of the
// revocation list, which only a logout of the session itself can add.
func IDFromNonce(nonce string) string {
	sum := sha256.Sum256([]byte("oidc-authservice session id\x00" + nonce))
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// Errors of Open, for errors.Is. The service logs them as the reason of a
// rejected cookie; the user only learns that a login is needed.
var (
	ErrMalformed = errors.New("session cookie malformed")
	ErrForged    = errors.New("session cookie not sealed by any configured key")
	ErrExpired   = errors.New("session expired")
)

// MaxValue is the longest sealed value accepted, all chunks together.
// Anything longer is rejected before any cryptography runs.
const MaxValue = maxChunks * chunkSize

// Codec seals and opens sessions and login states, in securecookie's
// format (sealer).
type Codec struct {
	keys   []*sealer // the first seals, all open
	maxAge int64     // seconds: the sealed time's bound
	now    func() time.Time
}

// NewCodec builds a codec from the SESSION_KEYS secrets (each at least 32
// bytes); secrets[0] seals, all open. maxAge bounds the sealed timestamp as
// a second line of defence behind Session.Expires.
func NewCodec(secrets [][]byte, maxAge time.Duration, now func() time.Time) *Codec {
	c := &Codec{now: now, maxAge: int64(maxAge/time.Second) + 300}
	for _, secret := range secrets {
		c.keys = append(c.keys, newSealer(DeriveKey(secret)))
	}
	return c
}

// Seal encrypts and authenticates v under the cookie name, with the first
// key.
func (c *Codec) Seal(name string, v any) (string, error) {
	s, err := c.keys[0].seal(name, v)
	if err != nil {
		return "", fmt.Errorf("seal %s: %w", name, err)
	}
	return s, nil
}

// Open reverses Seal with any configured key.
func (c *Codec) Open(name, value string, dst any) error {
	if value == "" || len(value) > MaxValue {
		return ErrMalformed
	}
	return open(c.keys, c.maxAge, name, value, dst)
}

// SealSession seals s under the session cookie name, in the compact format
// (compact.go) with the first key.
func (c *Codec) SealSession(name string, s *Session) (string, error) {
	v, err := c.keys[0].sealSession(name, s)
	if err != nil {
		return "", fmt.Errorf("seal %s: %w", name, err)
	}
	return v, nil
}

// OpenSession opens and checks a sealed session, of either format:
// authentic, complete and not expired by the codec's clock.
func (c *Codec) OpenSession(name, value string) (*Session, error) {
	s := new(Session)
	if value == "" || len(value) > MaxValue {
		return nil, ErrMalformed
	}
	var err error
	if value[0] == v2Marker {
		err = openSession(c.keys, c.maxAge, name, value, s)
	} else {
		err = open(c.keys, c.maxAge, name, value, s)
	}
	if err != nil {
		return nil, err
	}
	if s.User == "" || s.Expires == 0 {
		return nil, fmt.Errorf("%w: incomplete session", ErrMalformed)
	}
	if c.now().Unix() >= s.Expires {
		return nil, ErrExpired
	}
	return s, nil
}

// deserialize reads the JSON of a value sealed by securecookie's JSON
// serializer, as json.Unmarshal does (decodeSession for sessions); its
// json.Decoder reads every such value (JSON and a newline) alike, about
// twice as slowly.
func deserialize(b []byte, v any) error {
	if s, ok := v.(*Session); ok {
		return decodeSession(b, s)
	}
	return json.Unmarshal(b, v)
}

// Key is one session secret expanded into the two keys of securecookie's
// format.
type Key struct {
	Hash  []byte // HMAC-SHA256 key
	Block []byte // AES-256 key
}

// DeriveKey expands one secret into independent HMAC and AES keys with
// HKDF-SHA256, so one secret per rotation step is all an operator manages.
func DeriveKey(secret []byte) Key {
	h, err := hkdf.Key(sha256.New, secret, nil, "oidc-authservice session hmac", 32)
	if err != nil {
		panic(err) // only for lengths > 255*32
	}
	b, err := hkdf.Key(sha256.New, secret, nil, "oidc-authservice session aes", 32)
	if err != nil {
		panic(err)
	}
	return Key{Hash: h, Block: b}
}
