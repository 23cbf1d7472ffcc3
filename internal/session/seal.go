package session

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"strconv"
	"sync"
	"time"
)

// sealer seals and opens values in securecookie's format, with
// securecookie's JSON serializer, for one key:
//
//	base64url(time "|" base64url(iv || AES-256-CTR(json "\n")) "|" HMAC-SHA256(name "|" time "|" base64url(...)))
//
// It writes what securecookie.Encode writes, byte for byte for the same IV
// and second, and opens by securecookie.Decode's rules (seal_test.go holds
// both to the library, which stays the reference): values sealed by either
// open with either, and key rotation is unchanged. It does in one or two
// buffers what the library does in a dozen allocations, and keys the HMAC
// once where the library derives its pads from the key on every call: every
// unauthenticated navigation seals a login state, and every check with a
// cookie this replica has not verified opens one (more users than the
// cache holds), where the library's overhead was most of the cost.
type sealer struct {
	block cipher.Block
	macs  sync.Pool // of hash.Hash: HMAC-SHA256 keyed with the hash key
}

func newSealer(k Key) *sealer {
	block, err := aes.NewCipher(k.Block)
	if err != nil {
		panic(err) // DeriveKey makes 32-byte keys
	}
	s := &sealer{block: block}
	s.macs.New = func() any { return hmac.New(sha256.New, k.Hash) }
	return s
}

// seal encrypts and authenticates v under the cookie name, with a fresh IV
// and the current time (securecookie's clock: the time sealed is checked
// against the real clock when opened).
func (s *sealer) seal(name string, v any) (string, error) {
	var iv [aes.BlockSize]byte
	if _, err := rand.Read(iv[:]); err != nil {
		return "", err
	}
	return s.sealWith(name, v, time.Now().Unix(), iv[:])
}

func (s *sealer) sealWith(name string, v any, now int64, iv []byte) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	plain = append(plain, '\n') // json.Encoder's newline, as securecookie.JSONEncoder writes it
	enc := base64.URLEncoding
	// iv || ciphertext, then "time|" base64(iv || ciphertext) "|" mac.
	ct := make([]byte, len(iv)+len(plain))
	copy(ct, iv)
	cipher.NewCTR(s.block, iv).XORKeyStream(ct[len(iv):], plain)
	var ts [20]byte
	t := strconv.AppendInt(ts[:0], now, 10)
	inner := make([]byte, 0, len(t)+1+enc.EncodedLen(len(ct))+1+sha256.Size)
	inner = append(append(inner, t...), '|')
	inner = enc.AppendEncode(inner, ct)
	mac := s.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write([]byte(name))
	mac.Write([]byte{'|'})
	mac.Write(inner)
	inner = mac.Sum(append(inner, '|'))
	s.macs.Put(mac)
	return enc.EncodeToString(inner), nil
}

// verify reports whether mac is this key's HMAC of name "|" signed, in
// constant time.
func (s *sealer) verify(name string, signed, mac []byte) bool {
	h := s.macs.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(name))
	h.Write([]byte{'|'})
	h.Write(signed)
	var sum [sha256.Size]byte
	ok := hmac.Equal(h.Sum(sum[:0]), mac)
	s.macs.Put(h)
	return ok
}

// buffers holds the decoding buffers of open (a sealed value is at most
// MaxValue bytes).
var buffers = sync.Pool{New: func() any { return new([]byte) }}

// open reverses seal with the first of keys whose HMAC matches, by
// securecookie.DecodeMulti's rules: base64url, "time|ciphertext|mac", the
// HMAC over name "|" time "|" ciphertext, the time no older than maxAge
// seconds (0: any) by the real clock, then AES-CTR and JSON into dst. No
// matching key is ErrForged; anything else wrong is ErrMalformed.
func open(keys []*sealer, maxAge int64, name, value string, dst any) error {
	enc := base64.URLEncoding
	// One buffer for the outer value and, after it, the plaintext.
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	if need := 2 * enc.DecodedLen(len(value)); cap(*bp) < need {
		*bp = make([]byte, 0, need)
	}
	raw, err := enc.AppendDecode((*bp)[:0], []byte(value))
	if err != nil {
		return fmt.Errorf("%w: base64: %v", ErrMalformed, err)
	}
	first := bytes.IndexByte(raw, '|')
	second := -1
	if first >= 0 {
		second = bytes.IndexByte(raw[first+1:], '|')
	}
	if second < 0 {
		return ErrForged // securecookie: not three parts is an invalid MAC
	}
	second += first + 1
	var key *sealer
	for _, k := range keys {
		if k.verify(name, raw[:second], raw[second+1:]) {
			key = k
			break
		}
	}
	if key == nil {
		return ErrForged
	}
	t, err := strconv.ParseInt(string(raw[:first]), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: invalid timestamp", ErrMalformed)
	}
	if maxAge != 0 && t < time.Now().Unix()-maxAge {
		return fmt.Errorf("%w: sealed more than %d s ago", ErrMalformed, maxAge)
	}
	ct, err := enc.AppendDecode(raw[len(raw):], raw[first+1:second])
	if err != nil {
		return fmt.Errorf("%w: base64: %v", ErrMalformed, err)
	}
	if len(ct) <= aes.BlockSize {
		return fmt.Errorf("%w: no ciphertext", ErrMalformed)
	}
	plain := ct[aes.BlockSize:]
	cipher.NewCTR(key.block, ct[:aes.BlockSize]).XORKeyStream(plain, plain)
	if err := deserialize(plain, dst); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}
