package tokenreview

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"errors"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/cache"
	"github.com/oidc-authservice/oidc-authservice/internal/kubeapi"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/tracing"
)

// ErrUnavailable marks a refusal because the API server could not give an
// answer (down, timeout, an error status, the service's credentials refused,
// too many reviews in flight). It always comes with authn.ErrInvalidToken.
var ErrUnavailable = errors.New("TokenReview unavailable")

// DefaultServiceAccountDir is where a pod's projected token and the
// cluster's CA are mounted.
const DefaultServiceAccountDir = kubeapi.DefaultServiceAccountDir

// Options configure an Authenticator. Zero values take the defaults named.
type Options struct {
	// APIServer is the API server's base URL (https://host:port).
	APIServer string
	// CAFile holds the PEM certificates the API server's certificate must
	// chain to.
	CAFile string
	// TokenFile holds the service's own bearer token for the API server;
	// it is re-read for every review (projected tokens rotate).
	TokenFile string
	// Audiences are sent as spec.audiences; the answer must name one of
	// them. Empty: the API server's own audiences (arrikto's behaviour
	// with AUDIENCES="").
	Audiences []string
	// Issuers are the unverified iss values worth a review. Empty: the iss
	// of the token in TokenFile (the cluster's service-account issuer).
	Issuers []string

	Timeout       time.Duration // of one review call (5 s)
	PositiveTTL   time.Duration // longest an accepted token is trusted without asking again (10 s)
	NegativeTTL   time.Duration // how long a refusal is remembered (2 s)
	MaxConcurrent int           // reviews in flight at once (8); eight times as many (at least 32) may wait, more are refused at once
	CacheSize     int           // remembered answers (20,000)

	Logger  *zap.Logger
	Now     func() time.Time
	Metrics *metrics.TokenReview // nil: none
	Tracer  *tracing.Tracer      // nil: no spans
}

// InCluster fills the API server, CA and token of o from a pod's
// environment: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, and
// ca.crt and token in dir (DefaultServiceAccountDir when empty).
func InCluster(dir string, o Options) (Options, error) {
	k, err := kubeapi.InCluster(dir)
	if err != nil {
		return o, err
	}
	o.APIServer, o.CAFile, o.TokenFile = k.APIServer, k.CAFile, k.TokenFile
	return o, nil
}

// Authenticator reviews bearer tokens at the API server. Safe for
// concurrent use.
type Authenticator struct {
	opts    Options
	log     *zap.Logger
	api     *kubeapi.Client
	issuers []string
	answers *cache.Cache[answer]
	slots   chan struct{}
	// maxWaiting bounds the reviews in flight or waiting for a slot:
	// beyond it a token is refused at once (ErrUnavailable).
	maxWaiting int

	mu       sync.Mutex // guards inflight and lastWarn
	inflight map[cache.Key]*call
	lastWarn time.Time
}

// answer is a remembered review result: an identity or a refusal.
type answer struct {
	id    *authn.Identity
	err   error
	until time.Time
}

// call is one review in flight, shared by the requests that present the
// same token meanwhile.
type call struct {
	done chan struct{}
	res  answer
}

// New checks o and builds an Authenticator. It reads the CA and, when
// Issuers is empty, the service's own token, so a pod without them fails at
// start-up rather than on the first request.
func New(o Options) (*Authenticator, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.PositiveTTL <= 0 {
		o.PositiveTTL = 10 * time.Second
	}
	if o.NegativeTTL <= 0 {
		o.NegativeTTL = 2 * time.Second
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 8
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 20000
	}
	api, err := kubeapi.New(kubeapi.Options{APIServer: o.APIServer, CAFile: o.CAFile, TokenFile: o.TokenFile,
		Timeout: o.Timeout, MaxConns: o.MaxConcurrent, Wrap: func(next http.RoundTripper) http.RoundTripper {
			return o.Tracer.Transport(next, func(*http.Request) string { return "tokenreview" })
		}})
	if err != nil {
		return nil, fmt.Errorf("tokenreview: %w", err)
	}
	own, err := kubeapi.ReadToken(o.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("tokenreview: %w", err)
	}
	issuers := o.Issuers
	if len(issuers) == 0 {
		c, err := parse(own)
		if err != nil || c.Iss == "" {
			return nil, fmt.Errorf("tokenreview: the service's own token in %s names no issuer to recognise the cluster's tokens by", o.TokenFile)
		}
		issuers = []string{c.Iss}
	}
	return &Authenticator{
		opts:       o,
		log:        o.Logger.Named("tokenreview"),
		api:        api,
		issuers:    issuers,
		answers:    cache.New[answer](o.CacheSize),
		slots:      make(chan struct{}, o.MaxConcurrent),
		maxWaiting: max(8*o.MaxConcurrent, 32),
		inflight:   map[cache.Key]*call{},
	}, nil
}

// Issuers are the iss values whose tokens are reviewed.
func (a *Authenticator) Issuers() []string { return slices.Clone(a.issuers) }

// Authenticate returns the identity the API server gives raw, or an error
// wrapping authn.ErrInvalidToken (and ErrUnavailable when the API server
// could not answer). The identity's Expiry is when it must be asked again.
func (a *Authenticator) Authenticate(ctx context.Context, raw string) (*authn.Identity, error) {
	c, err := a.admissible(raw)
	if err != nil {
		return nil, err
	}
	k := cache.KeyOf(raw)
	now := a.opts.Now()
	if ans, ok := a.answers.Get(k); ok {
		if now.Before(ans.until) {
			a.opts.Metrics.Lookup(true)
			return ans.id, ans.err
		}
		a.answers.Delete(k)
	}
	a.opts.Metrics.Lookup(false)

	a.mu.Lock()
	cl, shared := a.inflight[k]
	full := !shared && len(a.inflight) >= a.maxWaiting
	if !shared && !full {
		cl = &call{done: make(chan struct{})}
		a.inflight[k] = cl
	}
	a.mu.Unlock()
	if full {
		// Anyone can send distinct tokens naming the cluster's issuer; each
		// waiting review holds its token and a goroutine until Timeout.
		return nil, a.unavailable(fmt.Errorf("%d reviews already in flight or waiting", a.maxWaiting))
	}
	if !shared {
		// The review runs for everyone waiting on it: one request giving
		// up must not fail the others.
		go a.run(context.WithoutCancel(ctx), k, raw, c, cl)
	}
	select {
	case <-cl.done:
		return cl.res.id, cl.res.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w: no answer within the request's deadline", authn.ErrInvalidToken, ErrUnavailable)
	}
}

func (a *Authenticator) run(ctx context.Context, k cache.Key, raw string, c claims, cl *call) {
	cl.res = a.review(ctx, raw, c)
	a.answers.Put(k, cl.res)
	a.mu.Lock()
	delete(a.inflight, k)
	a.mu.Unlock()
	close(cl.done)
}

// review asks the API server, within the concurrency bound and Timeout.
func (a *Authenticator) review(ctx context.Context, raw string, c claims) answer {
	ctx, cancel := context.WithTimeout(ctx, a.opts.Timeout)
	defer cancel()
	refuse := func(err error) answer {
		return answer{err: err, until: a.opts.Now().Add(a.opts.NegativeTTL)}
	}
	start := time.Now()
	result := metrics.ReviewRefused
	defer func() { a.opts.Metrics.Review(result, time.Since(start)) }()
	select {
	case a.slots <- struct{}{}:
		defer func() { <-a.slots }()
	case <-ctx.Done():
		result = metrics.ReviewUnavailable
		return refuse(a.unavailable(fmt.Errorf("%d reviews already in flight", a.opts.MaxConcurrent)))
	}
	st, err := a.post(ctx, raw)
	if err != nil {
		result = metrics.ReviewUnavailable
		return refuse(a.unavailable(err))
	}
	if st.Error != "" && !st.Authenticated {
		return refuse(fmt.Errorf("%w: the API server refused the token: %s", authn.ErrInvalidToken, truncate(st.Error, 200)))
	}
	if !st.Authenticated || st.User.Username == "" {
		return refuse(fmt.Errorf("%w: the API server did not authenticate the token", authn.ErrInvalidToken))
	}
	if len(a.opts.Audiences) > 0 && !intersects(st.Audiences, a.opts.Audiences) {
		// An authenticator that is not audience-aware answers without
		// status.audiences: its token was not meant for us.
		return refuse(fmt.Errorf("%w: the API server confirmed none of the audiences %v (it answered %v)", authn.ErrInvalidToken, a.opts.Audiences, st.Audiences))
	}
	result = metrics.ReviewAuthenticated
	now := a.opts.Now()
	until := now.Add(a.opts.PositiveTTL)
	if c.HasExp {
		if exp := time.Unix(int64(c.Exp), 0); exp.Before(until) {
			until = exp
		}
	}
	id := &authn.Identity{Username: st.User.Username, UID: st.User.UID, Groups: st.User.Groups,
		Extra: st.User.Extra, Issuer: c.Iss, Expiry: until}
	return answer{id: id, until: until}
}

// unavailable wraps err as a refusal for want of an answer and logs why,
// at most once every 10 s (a down API server must not flood the log).
func (a *Authenticator) unavailable(err error) error {
	a.mu.Lock()
	now := a.opts.Now()
	warn := now.Sub(a.lastWarn) >= 10*time.Second
	if warn {
		a.lastWarn = now
	}
	a.mu.Unlock()
	if warn {
		a.log.Warn("TokenReview failed: service-account tokens are refused until the API server answers", zap.String("api_server", a.opts.APIServer), zap.Error(err))
	}
	return fmt.Errorf("%w: %w: %v", authn.ErrInvalidToken, ErrUnavailable, err)
}

// Wire types of authentication.k8s.io/v1 TokenReview: what is used of them.
type (
	reviewRequest struct {
		APIVersion string     `json:"apiVersion"`
		Kind       string     `json:"kind"`
		Spec       reviewSpec `json:"spec"`
	}
	reviewSpec struct {
		Token     string   `json:"token"`
		Audiences []string `json:"audiences,omitempty"`
	}
	reviewResponse struct {
		Status reviewStatus `json:"status"`
	}
	reviewStatus struct {
		Authenticated bool     `json:"authenticated"`
		User          userInfo `json:"user"`
		Audiences     []string `json:"audiences"`
		Error         string   `json:"error"`
	}
	userInfo struct {
		Username string              `json:"username"`
		UID      string              `json:"uid"`
		Groups   []string            `json:"groups"`
		Extra    map[string][]string `json:"extra"`
	}
)

func (a *Authenticator) post(ctx context.Context, raw string) (*reviewStatus, error) {
	ans, err := a.api.Do(ctx, http.MethodPost, "/apis/authentication.k8s.io/v1/tokenreviews",
		reviewRequest{APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview", Spec: reviewSpec{Token: raw, Audiences: a.opts.Audiences}})
	if err != nil {
		return nil, err
	}
	switch ans.Code {
	case http.StatusOK, http.StatusCreated:
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("the API server refused the service's own credentials (HTTP %d: %s): does its ServiceAccount have `create` on tokenreviews (deploy/components/tokenreview)?", ans.Code, truncate(ans.Status().Message, 200))
	default:
		return nil, fmt.Errorf("HTTP %d from the API server: %s", ans.Code, truncate(ans.Status().Message, 200))
	}
	var r reviewResponse
	if err := json.Unmarshal(ans.Body, &r); err != nil {
		return nil, fmt.Errorf("the answer is not a TokenReview: %v", err)
	}
	return &r.Status, nil
}

// claims is what is read, unverified, from a token before it is sent.
type claims struct {
	Iss    string
	Exp    float64
	HasExp bool
}

// parse reads a JWS compact token's header and payload without verifying
// anything: enough to decide whether it is worth a review.
func parse(raw string) (claims, error) {
	var c claims
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || parts[2] == "" {
		return c, errors.New("not a signed JWT")
	}
	h, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return c, errors.New("header is not base64url")
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(h, &hdr); err != nil || hdr.Alg == "" || strings.EqualFold(hdr.Alg, "none") {
		return c, errors.New("header is not a JSON object with a signing alg")
	}
	p, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return c, errors.New("payload is not base64url")
	}
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		return c, errors.New("payload is not a JSON object")
	}
	c.Iss, _ = m["iss"].(string)
	switch exp := m["exp"].(type) {
	case nil:
	case float64:
		c.Exp, c.HasExp = exp, true
	default:
		return c, errors.New("exp is not a number")
	}
	return c, nil
}

// admissible decides, without a call, whether raw may be sent for review.
func (a *Authenticator) admissible(raw string) (claims, error) {
	if len(raw) > authn.MaxTokenSize {
		return claims{}, fmt.Errorf("%w: larger than %d bytes", authn.ErrInvalidToken, authn.MaxTokenSize)
	}
	c, err := parse(raw)
	if err != nil {
		return c, fmt.Errorf("%w: %v", authn.ErrInvalidToken, err)
	}
	if !slices.Contains(a.issuers, c.Iss) {
		return c, fmt.Errorf("%w: issuer %q is neither configured nor the cluster's service-account issuer", authn.ErrInvalidToken, truncate(c.Iss, 100))
	}
	if c.HasExp && !a.opts.Now().Before(time.Unix(int64(c.Exp), 0)) {
		return c, fmt.Errorf("%w: expired", authn.ErrInvalidToken)
	}
	return c, nil
}

func intersects(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
