// Package outbound owns the HTTP clients of the service's outbound calls
// (the provider, bearer-token issuers): a timeout on the dial, the TLS
// handshake, the response headers and the whole call, TLS 1.2 or later,
// and the certificate authorities the settings name.
package outbound

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"time"
)

// Options configure a client.
type Options struct {
	Timeout time.Duration // of the dial, the handshake, the headers and the whole call
	// CAPEM are extra trusted certificate authorities (PEM); none: the
	// system's roots.
	CAPEM []byte
	// OnlyCA trusts CAPEM alone instead of adding it to the system's roots
	// (a Kubernetes issuer's certificateAuthority).
	OnlyCA bool
	// MaxIdleConnsPerHost keeps connections to a busy peer (default 2).
	MaxIdleConnsPerHost int
}

// ErrNoCertificate: CAPEM holds no PEM certificate.
var ErrNoCertificate = errors.New("no PEM certificate")

// NewClient builds a client.
func NewClient(o Options) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = o.Timeout
	tr.ResponseHeaderTimeout = o.Timeout
	if o.MaxIdleConnsPerHost > 0 {
		tr.MaxIdleConnsPerHost = o.MaxIdleConnsPerHost
	}
	if len(o.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if !o.OnlyCA {
			if sys, err := x509.SystemCertPool(); err == nil {
				pool = sys
			}
		}
		if !pool.AppendCertsFromPEM(o.CAPEM) {
			return nil, ErrNoCertificate
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: o.Timeout}, nil
}
