package config

import (
	"encoding/base64"
	"fmt"
)

// ParseSecret accepts a secret as base64 (standard or URL alphabet, padded
// or not) when it decodes to at least 32 bytes, else as raw bytes.
func ParseSecret(k string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(k); err == nil && len(b) >= 32 {
			return b, nil
		}
	}
	if len(k) >= 32 {
		return []byte(k), nil
	}
	return nil, fmt.Errorf("too short: need at least 32 bytes (raw) or base64 of at least 32 bytes")
}
