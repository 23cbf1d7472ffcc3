package session

import (
	"bytes"
	"compress/flate"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"
)

// Sessions are sealed in the compact format (version 2) since groups may
// number in the hundreds; values of securecookie's format (version 1, every
// session sealed before) still open, so an upgrade logs nobody out.
//
//	"~" base64url-unpadded(time[8] || iv[16] || AES-256-CTR(plain) || HMAC-SHA256(domain || name || 0 || time || iv || ciphertext))
//	plain = flags[1] || uvarint(len(identity)) || identity || tokens
//
// with the keys of version 1 (DeriveKey). identity is the JSON of the
// session without its tokens, DEFLATE-compressed when flags has
// flagCompressed (only when that makes it shorter, and only from
// compressMin bytes on); tokens is the JSON of the provider's tokens,
// never compressed. Compression next to a secret lets whoever can choose
// part of the compressed text and see the sealed length learn the secret a
// byte at a time (CRIME, BREACH); here nothing secret is compressed: the
// tokens stay out of it, and the identity holds names, times and ids that
// are no credentials (docs/security.md). One base64 layer instead of
// securecookie's two makes a value 25 % shorter besides.
//
// "~" is not a base64url character, so the version is known from the first
// byte; there is no "." in a value either (the chunk marker of Split, and
// what tells a JWT from a session sent as a bearer token).
const v2Marker = '~'

const (
	flagCompressed = 1
	// compressMin: a shorter identity (up to about 15 groups) is sealed as
	// it is, so the common session costs no inflating when opened.
	compressMin = 1024
	// maxInflated bounds what an identity inflates to (only a value sealed
	// with a configured key is ever inflated: the HMAC comes first).
	maxInflated = 1 << 20
	v2Time      = 8
	v2Header    = v2Time + aes.BlockSize
)

// v2Domain separates the MACs of this format from those of version 1.
var v2Domain = []byte("oidc-authservice session v2\x00")

// sessionTokens are the parts of a session that are credentials.
type sessionTokens struct {
	AccessToken  string `json:"at,omitempty"`
	RefreshToken string `json:"rt,omitempty"`
	IDToken      string `json:"it,omitempty"`
}

var deflaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestCompression)
	return w
}}

var inflaters sync.Pool // of io.ReadCloser that implement flate.Resetter

// sealSession seals a session in the compact format with a fresh IV and
// the current time.
func (s *sealer) sealSession(name string, sess *Session) (string, error) {
	var iv [aes.BlockSize]byte
	if _, err := rand.Read(iv[:]); err != nil {
		return "", err
	}
	return s.sealSessionWith(name, sess, time.Now().Unix(), iv[:])
}

func (s *sealer) sealSessionWith(name string, sess *Session, now int64, iv []byte) (string, error) {
	ident := *sess
	ident.AccessToken, ident.RefreshToken, ident.IDToken = "", "", ""
	id, err := json.Marshal(&ident)
	if err != nil {
		return "", err
	}
	tok, err := json.Marshal(sessionTokens{AccessToken: sess.AccessToken, RefreshToken: sess.RefreshToken, IDToken: sess.IDToken})
	if err != nil {
		return "", err
	}
	flags := byte(0)
	if len(id) >= compressMin {
		if z := deflate(id); len(z) < len(id) {
			id, flags = z, flagCompressed
		}
	}
	// time || iv || ciphertext || mac, in one buffer.
	plainLen := 1 + binary.MaxVarintLen64 + len(id) + len(tok)
	raw := make([]byte, v2Header, v2Header+plainLen+sha256.Size)
	binary.BigEndian.PutUint64(raw, uint64(now))
	copy(raw[v2Time:], iv)
	raw = append(raw, flags)
	raw = binary.AppendUvarint(raw, uint64(len(id)))
	raw = append(append(raw, id...), tok...)
	plain := raw[v2Header:]
	cipher.NewCTR(s.block, iv).XORKeyStream(plain, plain)
	mac := s.mac2(name, raw)
	raw = append(raw, mac[:]...)
	out := make([]byte, 1+base64.RawURLEncoding.EncodedLen(len(raw)))
	out[0] = v2Marker
	base64.RawURLEncoding.Encode(out[1:], raw)
	return string(out), nil
}

// mac2 is the key's HMAC of a version-2 value's signed part.
func (s *sealer) mac2(name string, signed []byte) (sum [sha256.Size]byte) {
	h := s.macs.Get().(hash.Hash)
	h.Reset()
	h.Write(v2Domain)
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(signed)
	h.Sum(sum[:0])
	s.macs.Put(h)
	return sum
}

func deflate(b []byte) []byte {
	var out bytes.Buffer
	w := deflaters.Get().(*flate.Writer)
	w.Reset(&out)
	w.Write(b)
	w.Close()
	deflaters.Put(w)
	return out.Bytes()
}

// inflate appends what z inflates to (at most maxInflated bytes) to dst.
func inflate(dst, z []byte) ([]byte, error) {
	r, _ := inflaters.Get().(io.ReadCloser)
	if r == nil {
		r = flate.NewReader(bytes.NewReader(z))
	} else if err := r.(flate.Resetter).Reset(bytes.NewReader(z), nil); err != nil {
		return nil, err
	}
	defer inflaters.Put(r)
	buf := bytes.NewBuffer(dst)
	n, err := buf.ReadFrom(io.LimitReader(r, maxInflated+1))
	if err != nil {
		return nil, err
	}
	if n > maxInflated {
		return nil, errors.New("identity inflates beyond the bound")
	}
	return buf.Bytes(), nil
}

// openSession reverses sealSession with the first key whose HMAC matches.
func openSession(keys []*sealer, maxAge int64, name, value string, s *Session) error {
	enc := base64.RawURLEncoding
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	if need := 2 * enc.DecodedLen(len(value)); cap(*bp) < need {
		*bp = make([]byte, 0, need)
	}
	raw, err := enc.AppendDecode((*bp)[:0], []byte(value[1:]))
	if err != nil {
		return fmt.Errorf("%w: base64: %v", ErrMalformed, err)
	}
	if len(raw) < v2Header+2+sha256.Size {
		return ErrForged
	}
	signed, mac := raw[:len(raw)-sha256.Size], raw[len(raw)-sha256.Size:]
	var key *sealer
	for _, k := range keys {
		if sum := k.mac2(name, signed); hmac.Equal(sum[:], mac) {
			key = k
			break
		}
	}
	if key == nil {
		return ErrForged
	}
	t := int64(binary.BigEndian.Uint64(signed))
	if maxAge != 0 && t < time.Now().Unix()-maxAge {
		return fmt.Errorf("%w: sealed more than %d s ago", ErrMalformed, maxAge)
	}
	plain := signed[v2Header:]
	cipher.NewCTR(key.block, signed[v2Time:v2Header]).XORKeyStream(plain, plain)
	flags := plain[0]
	n, w := binary.Uvarint(plain[1:])
	if w <= 0 || n > uint64(len(plain)-1-w) || flags&^flagCompressed != 0 {
		return fmt.Errorf("%w: compact layout", ErrMalformed)
	}
	id, tok := plain[1+w:1+w+int(n)], plain[1+w+int(n):]
	if flags&flagCompressed != 0 {
		// Inflated after everything else in the buffer.
		if id, err = inflate(raw[len(raw):], id); err != nil {
			return fmt.Errorf("%w: identity: %v", ErrMalformed, err)
		}
	}
	if err := decodeSession(id, s); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(tok) > 0 {
		var t Session
		if err := decodeSession(tok, &t); err != nil {
			return fmt.Errorf("%w: tokens: %v", ErrMalformed, err)
		}
		s.AccessToken, s.RefreshToken, s.IDToken = t.AccessToken, t.RefreshToken, t.IDToken
	}
	return nil
}
