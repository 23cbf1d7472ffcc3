package config

import (
	"errors"
	"strings"
	"testing"
)

// The verified-credential caches default to 20,000 entries each, take the
// configured size, and refuse sizes that would either thrash or hold
// gigabytes.
func TestCacheSizes(t *testing.T) {
	s, err := Load(FromMap(setenv(t, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if s.Sessions.CacheSize != 20000 || s.Bearer.CacheSize != 20000 {
		t.Fatalf("defaults: sessions %d, tokens %d", s.Sessions.CacheSize, s.Bearer.CacheSize)
	}
	s, err = Load(FromMap(setenv(t, map[string]string{"SESSION_CACHE_SIZE": "50000", "TOKEN_CACHE_SIZE": "1000"})))
	if err != nil {
		t.Fatal(err)
	}
	if s.Sessions.CacheSize != 50000 || s.Bearer.CacheSize != 1000 {
		t.Fatalf("configured: sessions %d, tokens %d", s.Sessions.CacheSize, s.Bearer.CacheSize)
	}
	for _, bad := range []map[string]string{{"SESSION_CACHE_SIZE": "999"}, {"TOKEN_CACHE_SIZE": "0"}, {"SESSION_CACHE_SIZE": "10000001"}, {"TOKEN_CACHE_SIZE": "-5"}} {
		_, err := Load(FromMap(setenv(t, bad)))
		for name := range bad {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), name) {
				t.Errorf("%v: err = %v, want one naming %s", bad, err, name)
			}
		}
	}
}
