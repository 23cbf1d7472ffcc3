package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// A session key anyone can read is no key: whoever knows it seals a
// session for any user and any group (the sealing format is public). The
// service therefore refuses every key this repository has ever published —
// the old placeholder of deploy/base, documentation examples, the
// development key of `make run`, test keys, and the published secrets of
// the Kubeflow manifests operators copy from (oauth2-proxy's cookie secret,
// which docs/migration.md maps to SESSION_KEYS, and Dex's client secret) —
// and any key that reads as a placeholder. published_test.go scans every
// tracked file for SESSION_KEYS values and key-looking literals and fails
// when one of them would be accepted.

// publishedKeys are the SHA-256 digests of the secrets (as ParseSecret
// returns them, so every encoding of a key is caught) of the keys published
// here, with where they were published. Keep the plaintext out of the
// product: published_test.go holds it and checks each digest.
var publishedKeys = map[string]string{
	"35bc07d09b21f2954b13c992ae7f894fe6eba4d09cff4176d9a943fefd257209": "the placeholder of deploy/base/secret_params.env (up to v0.1.0)",
	"e1566f2ef2076c8473699c2b97f50d97c34ad7d4af931f5f272736d3e4e19fac": "the development key of `make run` (deploy/local/run.sh, up to v0.1.0)",
	"0d1334b1baa57cda8b510a8ea5de5bbb3c4ce3afcfc9f70b1aab57487ee76876": "the example of docs/gitlab.md",
	"80c8cb5e94a392a3d8fc7cf03d8a73bf68788e684466a02393405c717243c900": "the cookie secret Kubeflow's oauth2-proxy manifests ship to every installation",
	"462a0aa7e3ad7e72bcc06fd22a504044f4a4c79033231b9dc8900ad84fbe29b9": "Kubeflow's published Dex client secret",
	"7d1eb512d015e6193a6b792957db909a6ce72ae23b7542fa8d839f7fabd1cce6": "a test key of this repository",
	"bcc32d77d27eef39f15689a43890da7b19c586a6ef370d320e92ddbf60117632": "a test key of this repository",
	"292b41dd22a099acbcc726ae27a24665056a6a2300ad683af9eb84666df012bb": "a test key of this repository",
	"7f462cb5919cc170bad5e625d62487721978e9651a7023ec58e75995fc762f32": "a test key of this repository",
	"93bd6eab3259128408d5d3bdb7ed3e2a3006465d3a30b438ad2f8a0b4ab66074": "a test key of this repository",
	"60c7da41ade93f2b8d2cb1c3db9e688b9c0dead4e9f3819874d3b6c55193912e": "a test key of this repository",
	"cd422b24d168efab31caf61b706fb0c63e8017ae3a81e53d7b315f9ecf8fc0ed": "a test key of this repository",
	"da34ef17d0d57255bb78bb4350a8c8672f1785bc55a18f58b6f00f799fbfa14c": "a test key of this repository",
}

// placeholderWords mark a key written by a person as a stand-in (no
// output of a random generator contains them by chance).
var placeholderWords = []string{"replace", "changeme", "change-me", "change_me", "placeholder", "example",
	"do-not-use", "donotuse", "openssl", "your-", "insecure"}

// GenerateKeyHint is what every refusal of a key tells the operator to do.
const GenerateKeyHint = "generate a key with `openssl rand -base64 32` (every replica needs the same), " +
	"or leave SESSION_KEYS unset in a Kubernetes cluster: the service then keeps a key of its own in a Secret (SESSION_KEYS_SECRET)"

// Published says why the key k (one entry of SESSION_KEYS, as written) is
// known to others, or "" when it is not known to be.
func Published(k string) string {
	k = strings.TrimSpace(k)
	l := strings.ToLower(k)
	for _, w := range placeholderWords {
		if strings.Contains(l, w) {
			return fmt.Sprintf("it reads as a placeholder (%q)", w)
		}
	}
	if strings.HasPrefix(k, "<") || strings.HasPrefix(k, "$(") || strings.HasPrefix(k, "${") {
		return "it reads as a placeholder"
	}
	if where := KnownKey(k); where != "" {
		return "it is " + where + ", which anyone can read"
	}
	return ""
}

// KnownKey says where the key k, in any encoding, was published, or "":
// the digest list only, without the placeholder rules (for scanning text
// that is not meant as a key).
func KnownKey(k string) string {
	b, err := ParseSecret(strings.TrimSpace(k))
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return publishedKeys[hex.EncodeToString(sum[:])]
}

// SessionSecrets parses keys (comma- or newline-separated, as SESSION_KEYS,
// SESSION_KEYS_FILE and the key Secret hold them) into secrets, refusing
// keys too short and keys others know. Each problem names its key by
// position, never by value.
func SessionSecrets(keys string) ([][]byte, []error) {
	var out [][]byte
	var errs []error
	for i, k := range splitList(strings.ReplaceAll(keys, "\n", ","), ",") {
		if why := Published(k); why != "" {
			errs = append(errs, fmt.Errorf("key %d is published: %s, so anyone could seal a session for any user with it; %s", i+1, why, GenerateKeyHint))
			continue
		}
		secret, err := ParseSecret(k)
		if err != nil {
			errs = append(errs, fmt.Errorf("key %d: %v", i+1, err))
			continue
		}
		out = append(out, secret)
	}
	return out, errs
}

// PublishedClientSecret says why the client secret v is known to others,
// or "" when it is not known to be. Such a secret is warned about, not
// refused: Kubeflow's own Dex registers its client with it, and the
// one-line swaps must match Dex as Kubeflow ships it.
func PublishedClientSecret(v string) string {
	v = strings.TrimSpace(v)
	l := strings.ToLower(v)
	for _, w := range placeholderWords {
		if strings.Contains(l, w) {
			return fmt.Sprintf("it reads as a placeholder (%q)", w)
		}
	}
	sum := sha256.Sum256([]byte(v))
	if where, ok := publishedClientSecrets[hex.EncodeToString(sum[:])]; ok {
		return "it is " + where + ", which anyone can read"
	}
	return ""
}

// publishedClientSecrets are the SHA-256 digests of client secrets
// published in Kubeflow's manifests and here.
var publishedClientSecrets = map[string]string{
	"462a0aa7e3ad7e72bcc06fd22a504044f4a4c79033231b9dc8900ad84fbe29b9": "the client secret of Kubeflow's Dex client kubeflow-oidc-authservice (common/dex, every release)",
}
