package main

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// testKeys are the fixed test keys by name (file name without .pem).
type testKeys struct{ keys map[string]*rsa.PublicKey }

func loadKeys(dir string) (*testKeys, error) {
	ks := &testKeys{keys: map[string]*rsa.PublicKey{}}
	for _, name := range []string{"dex", "serviceaccount", "upstream-token"} {
		b, err := os.ReadFile(filepath.Join(dir, name+".pem"))
		if err != nil {
			return nil, err
		}
		block, _ := pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("%s.pem: no PEM block", name)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s.pem: %w", name, err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s.pem: not an RSA key", name)
		}
		ks.keys[name] = &rk.PublicKey
	}
	return ks, nil
}

// jwks is the key set of one key, as its issuer publishes it.
func (ks *testKeys) jwks(name string) []byte {
	pub := ks.keys[name]
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	enc := base64.RawURLEncoding
	set := map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": enc.EncodeToString(sum[:12]),
		"n": enc.EncodeToString(pub.N.Bytes()), "e": enc.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}}
	b, _ := json.Marshal(set)
	return b
}

// jwksProxy is the HTTP proxy istiod's key-set fetches go through: it
// answers for the issuers of the compositions with the fixed test keys, as
// cluster DNS and the issuers would, and fails everything else.
type jwksProxy struct {
	URL  string
	srv  *http.Server
	mu   sync.Mutex
	seen map[string]bool
}

// issuers: host:port -> path -> response.
func (ks *testKeys) routes() map[string]map[string][]byte {
	discovery := func(iss, jwks string) []byte {
		b, _ := json.Marshal(map[string]any{"issuer": iss, "jwks_uri": jwks,
			"id_token_signing_alg_values_supported": []string{"RS256"}})
		return b
	}
	const dex = "http://dex.auth.svc.cluster.local:5556/dex"
	const authservice = "http://authservice.istio-system.svc.cluster.local:8082"
	return map[string]map[string][]byte{
		// Kubeflow's Dex: discovery, then its keys.
		"dex.auth.svc.cluster.local:5556": {
			"/dex/.well-known/openid-configuration": discovery(dex, dex+"/keys"),
			"/dex/keys":                             ks.jwks("dex"),
		},
		// Kubeflow's cluster-jwks-proxy (m2m-dex-and-kind): the API
		// server's /openid/v1/jwks, reached over plain HTTP.
		"cluster-jwks-proxy.istio-system.svc.cluster.local:80": {
			"/openid/v1/jwks": ks.jwks("serviceaccount"),
		},
		// The service's issued upstream tokens (kubeflow-jwt).
		"authservice.istio-system.svc.cluster.local:8082": {
			"/.well-known/openid-configuration": discovery(authservice, authservice+"/.well-known/jwks.json"),
			"/.well-known/jwks.json":            ks.jwks("upstream-token"),
		},
	}
}

func startJWKSProxy(ks *testKeys) (*jwksProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &jwksProxy{URL: "http://" + l.Addr().String(), seen: map[string]bool{}}
	routes := ks.routes()
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := r.URL.String()
		if r.Method == http.MethodConnect {
			// https issuers (the API server's, EKS's): unreachable here,
			// as the self-signed API server is for istiod on a cluster.
			target = "https://" + r.Host
		}
		host := r.URL.Host
		if !strings.Contains(host, ":") {
			host += ":80"
		}
		body, ok := routes[host][r.URL.Path]
		p.mu.Lock()
		status := "answered"
		if !ok || r.Method != http.MethodGet {
			status = "failed"
		}
		p.seen[target+" ("+status+")"] = true
		p.mu.Unlock()
		if !ok || r.Method != http.MethodGet {
			http.Error(w, "not reachable from the generator", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})}
	go p.srv.Serve(l)
	return p, nil
}

func (p *jwksProxy) Close() { p.srv.Close() }

func (p *jwksProxy) fetched() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for k := range p.seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
