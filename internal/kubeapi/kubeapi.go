// Package kubeapi is the service's one way to call the Kubernetes API
// server: plain HTTPS with the pod's own service-account token (re-read for
// every call, as projected tokens rotate) and the cluster's CA, TLS 1.2 or
// later, a timeout on every call and a bound on every answer read. It is
// what TokenReview (internal/tokenreview) and the session-key Secret
// (internal/sessionkeys) share; the product has no client-go.
package kubeapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultServiceAccountDir is where a pod's token, the cluster's CA and the
// pod's namespace are mounted.
const DefaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// MaxAnswer is the most read of any answer of the API server.
const MaxAnswer = 1 << 20

// Options configure a Client.
type Options struct {
	// APIServer is the API server's base URL (https://host:port).
	APIServer string
	// CAFile holds the PEM certificates the API server's certificate must
	// chain to; empty: the system's roots.
	CAFile string
	// TokenFile holds the service's own bearer token; it is re-read for
	// every call.
	TokenFile string
	// NamespaceFile holds the pod's namespace (InCluster sets it).
	NamespaceFile string
	Timeout       time.Duration // of one call (5 s)
	MaxConns      int           // idle connections kept (8)
	// Wrap, when set, wraps the transport (the tracer's client spans).
	Wrap func(http.RoundTripper) http.RoundTripper
}

// InCluster is the pod's API server and credentials: KUBERNETES_SERVICE_HOST
// and KUBERNETES_SERVICE_PORT, and token, ca.crt and namespace in dir
// (DefaultServiceAccountDir when empty).
func InCluster(dir string) (Options, error) {
	var o Options
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return o, fmt.Errorf("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: not running in a Kubernetes pod")
	}
	if dir == "" {
		dir = DefaultServiceAccountDir
	}
	o.APIServer = "https://" + net.JoinHostPort(host, port)
	o.CAFile = filepath.Join(dir, "ca.crt")
	o.TokenFile = filepath.Join(dir, "token")
	o.NamespaceFile = filepath.Join(dir, "namespace")
	return o, nil
}

// InPod reports whether the process runs in a Kubernetes pod (the kubelet
// sets KUBERNETES_SERVICE_HOST in every container).
func InPod() bool { return os.Getenv("KUBERNETES_SERVICE_HOST") != "" }

// Client calls one API server. Safe for concurrent use.
type Client struct {
	opts   Options
	client *http.Client
	base   string
}

// New checks o and builds a Client. It reads the CA and the token once, so
// that a pod without them fails at start-up rather than on a call.
func New(o Options) (*Client, error) {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 8
	}
	if !strings.HasPrefix(o.APIServer, "https://") {
		return nil, fmt.Errorf("API server %q is not an https URL", o.APIServer)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = o.Timeout
	tr.MaxIdleConnsPerHost = o.MaxConns
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("the API server's CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", o.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	if o.TokenFile == "" {
		return nil, fmt.Errorf("no token file for the service's own credentials")
	}
	if _, err := ReadToken(o.TokenFile); err != nil {
		return nil, err
	}
	var rt http.RoundTripper = tr
	if o.Wrap != nil {
		rt = o.Wrap(tr)
	}
	return &Client{opts: o, client: &http.Client{Transport: rt, Timeout: o.Timeout,
		// An answer of the API server is never a redirect to follow with
		// the service's token.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		base: strings.TrimSuffix(o.APIServer, "/")}, nil
}

// APIServer is the base URL called.
func (c *Client) APIServer() string { return c.opts.APIServer }

// TokenFile is where the service's own token is read.
func (c *Client) TokenFile() string { return c.opts.TokenFile }

// Answer is an answer of the API server: its status and body (at most
// MaxAnswer bytes).
type Answer struct {
	Code int
	Body []byte
}

// Status is the API server's error body (metav1.Status), the parts used.
type Status struct {
	Message string `json:"message"`
	Reason  string `json:"reason"`
}

// Status reads the answer as a metav1.Status; the message is cut to 300
// bytes (it is logged).
func (a *Answer) Status() Status {
	var s Status
	json.Unmarshal(a.Body, &s)
	if len(s.Message) > 300 {
		s.Message = s.Message[:300]
	}
	return s
}

// Do sends method path (with the query, e.g. ?dryRun=All) and body (JSON
// encoded when not nil) with the service's own token, and returns the
// answer whatever its status; an error only when there is none.
func (c *Client) Do(ctx context.Context, method, path string, body any) (*Answer, error) {
	token, err := ReadToken(c.opts.TokenFile)
	if err != nil {
		return nil, err
	}
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("User-Agent", "oidc-authservice")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	return &Answer{Code: resp.StatusCode, Body: b}, nil
}

// ReadToken reads a bearer token file.
func ReadToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("the service's own token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("the service's own token file %s is empty", file)
	}
	return t, nil
}

// Identity is who the service's own token says it is.
type Identity struct {
	Issuer         string
	Namespace      string
	ServiceAccount string
}

// Username is the API server's name for the service account,
// system:serviceaccount:<namespace>:<name>.
func (id Identity) Username() string {
	return "system:serviceaccount:" + id.Namespace + ":" + id.ServiceAccount
}

// Whoami reads, unverified, the issuer, namespace and service account of
// the service's own token (a projected token's kubernetes.io claims, or a
// legacy Secret token's), and the pod's namespace from NamespaceFile when
// there is one.
func (c *Client) Whoami() (Identity, error) {
	token, err := ReadToken(c.opts.TokenFile)
	if err != nil {
		return Identity{}, err
	}
	id, err := ParseIdentity(token)
	if c.opts.NamespaceFile != "" {
		if b, ferr := os.ReadFile(c.opts.NamespaceFile); ferr == nil && strings.TrimSpace(string(b)) != "" {
			id.Namespace = strings.TrimSpace(string(b))
		}
	}
	if err != nil {
		return id, err
	}
	if id.Namespace == "" || id.ServiceAccount == "" {
		return id, errors.New("the service's own token names no namespace and service account")
	}
	return id, nil
}

// ParseIdentity reads the claims of a service-account token without
// verifying it.
func ParseIdentity(token string) (Identity, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Identity{}, errors.New("the service's own token is not a JWT")
	}
	p, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return Identity{}, errors.New("the service's own token: payload is not base64url")
	}
	var c struct {
		Iss  string `json:"iss"`
		Kube struct {
			Namespace      string `json:"namespace"`
			ServiceAccount struct {
				Name string `json:"name"`
			} `json:"serviceaccount"`
		} `json:"kubernetes.io"`
		LegacyNamespace string `json:"kubernetes.io/serviceaccount/namespace"`
		LegacyName      string `json:"kubernetes.io/serviceaccount/service-account.name"`
	}
	if err := json.Unmarshal(p, &c); err != nil {
		return Identity{}, errors.New("the service's own token: payload is not a JSON object")
	}
	id := Identity{Issuer: c.Iss, Namespace: c.Kube.Namespace, ServiceAccount: c.Kube.ServiceAccount.Name}
	if id.Namespace == "" {
		id.Namespace, id.ServiceAccount = c.LegacyNamespace, c.LegacyName
	}
	return id, nil
}
