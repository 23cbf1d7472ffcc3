package kube

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"crypto/sha256"
)

// Issuers is an HTTPS server (its own CA, as kube-apiserver requires https
// issuers) publishing discovery and keys for any number of issuers, each
// under its own path: https://127.0.0.1:<port>/<name>. Every issuer
// publishes the same RSA key (kid "rsa-1") and EC key (kid "ec-1").
type Issuers struct {
	Base  string // https://127.0.0.1:<port>
	CAPEM []byte
	RSA   *rsa.PrivateKey
	EC    *ecdsa.PrivateKey
}

// StartIssuers serves issuer discovery and keys until the test ends.
func StartIssuers(t testing.TB) *Issuers {
	t.Helper()
	is := &Issuers{}
	var err error
	if is.RSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	is.EC, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuers CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	is.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(is.serve))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	is.Base = srv.URL
	return is
}

// URL is the issuer URL of name.
func (is *Issuers) URL(name string) string { return is.Base + "/" + name }

func (is *Issuers) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration"):
		iss := is.Base + strings.TrimSuffix(r.URL.Path, "/.well-known/openid-configuration")
		json.NewEncoder(w).Encode(map[string]any{"issuer": iss, "jwks_uri": iss + "/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"}, "response_types_supported": []string{"id_token"},
			"subject_types_supported": []string{"public"}})
	case strings.HasSuffix(r.URL.Path, "/jwks"):
		b := func(x []byte) string { return base64.RawURLEncoding.EncodeToString(x) }
		pad := func(x *big.Int) []byte { out := make([]byte, 32); return x.FillBytes(out) }
		json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]any{
			{"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": b(is.RSA.N.Bytes()), "e": b(big.NewInt(int64(is.RSA.E)).Bytes())},
			{"kty": "EC", "kid": "ec-1", "alg": "ES256", "use": "sig", "crv": "P-256", "x": b(pad(is.EC.X)), "y": b(pad(is.EC.Y))},
		}})
	default:
		http.NotFound(w, r)
	}
}

// Sign signs claims with the issuers' RSA key (RS256, kid rsa-1).
func (is *Issuers) Sign(claims map[string]any) string {
	return SignRS256(is.RSA, "rsa-1", claims)
}

// SignRS256 signs claims with any RSA key under kid.
func SignRS256(key *rsa.PrivateKey, kid string, claims map[string]any) string {
	input := jwsInput(map[string]any{"alg": "RS256", "typ": "JWT", "kid": kid}, claims)
	h := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		panic(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// SignES256 signs claims with the issuers' EC key (kid ec-1).
func (is *Issuers) SignES256(claims map[string]any) string {
	input := jwsInput(map[string]any{"alg": "ES256", "typ": "JWT", "kid": "ec-1"}, claims)
	h := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, is.EC, h[:])
	if err != nil {
		panic(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// Unsigned is the token with alg "none".
func Unsigned(claims map[string]any) string {
	return jwsInput(map[string]any{"alg": "none", "typ": "JWT"}, claims) + "."
}

func jwsInput(header, claims map[string]any) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
}
