// Package authorizer asks an external authorization service whether an
// authenticated request may pass (EXTERNAL_AUTHZ_URL), after
// GROUPS_ALLOWLIST and the rules of AUTHORIZATION_RULES_FILE allowed it:
// both must allow.
//
// Two protocols (EXTERNAL_AUTHZ_FORMAT):
//
//   - arrikto, the predecessor's: a POST of
//     {"timestamp", "user": {"name", "id", "groups", "extra", "claims"},
//     "request": {"host", "port", "path", "method"}} as JSON; a 2xx answer
//     allows, 401 and 403 deny with the body as the reason, anything else
//     is an error.
//   - opa, Open Policy Agent's Data API: a POST of {"input": <the same
//     document>} to /v1/data/<policy path>; the answer's "result" is true or
//     false, or {"allow": bool, "reason": string}; no result (the policy is
//     undefined for the input) denies; anything else is an error.
//
// Unlike the predecessor's client, every call has a timeout, at most
// MaxConcurrent calls run at once (a call beyond is answered at once with
// ErrSaturated), identical concurrent questions share one call, redirects
// are never followed, answers are read up to MaxBody, and decisions (allow
// and deny, not errors) are cached for CacheTTL under the user, the groups,
// the method, the host and the path. Every error fails closed: the caller
// denies.
package authorizer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/cache"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/outbound"
	"github.com/oidc-authservice/oidc-authservice/internal/tracing"
)

// Formats of EXTERNAL_AUTHZ_FORMAT.
const (
	FormatArrikto = "arrikto"
	FormatOPA     = "opa"
)

// Defaults and limits.
const (
	DefaultTimeout       = 2 * time.Second
	DefaultMaxConcurrent = 32
	DefaultCacheTTL      = 10 * time.Second
	DefaultCacheSize     = 10000
	// MaxBody is the longest answer read; a longer one is an error.
	MaxBody = 64 << 10
	// MaxReason bounds the reason shown to the user and logged.
	MaxReason = 256
)

// Errors of Decide, for errors.Is; each fails closed.
var (
	// ErrUnavailable wraps every failure: unreachable, timeout, an answer
	// outside the protocol.
	ErrUnavailable = errors.New("external authorizer unavailable")
	// ErrSaturated: MaxConcurrent calls are running; answered at once.
	ErrSaturated = fmt.Errorf("%w: too many calls in flight", ErrUnavailable)
	// ErrTimeout: no answer within the timeout.
	ErrTimeout = fmt.Errorf("%w: no answer in time", ErrUnavailable)
)

// Options configure an Authorizer.
type Options struct {
	URL           string
	Format        string        // FormatArrikto (default) or FormatOPA
	Timeout       time.Duration // of one call; DefaultTimeout when 0
	MaxConcurrent int           // calls in flight; DefaultMaxConcurrent when 0
	CacheTTL      time.Duration // how long a decision is reused; 0 turns the cache off
	CacheSize     int           // decisions kept; DefaultCacheSize when 0
	CAPEM         []byte        // extra trusted CAs for an https URL
	Logger        *zap.Logger
	Metrics       *metrics.Metrics
	Tracer        *tracing.Tracer // nil: no spans; else each call is a client span "POST authorizer"
	Now           func() time.Time
}

// Input is what the authorizer is told: arrikto's document. An empty
// Timestamp is the time of the call.
type Input struct {
	Timestamp string  `json:"timestamp"`
	User      User    `json:"user"`
	Request   Request `json:"request"`
}

// User is the authenticated identity: its name (the user id after
// USERID_TRANSFORMERS, without USERID_PREFIX), its id (the subject), groups,
// extra attributes and the verified credential's claims (never a token).
type User struct {
	Name   string              `json:"name"`
	ID     string              `json:"id"`
	Groups []string            `json:"groups"`
	Extra  map[string][]string `json:"extra"`
	Claims map[string]any      `json:"claims"`
}

// Request is the request judged: the host without its port, the port (the
// Host header's, else 443 for https and 80 for http), the path (canonical,
// see docs/authorization.md) and the method.
type Request struct {
	Host   string `json:"host"`
	Port   int    `json:"port"`
	Path   string `json:"path"`
	Method string `json:"method"`
}

// Decision is the authorizer's answer.
type Decision struct {
	Allowed bool
	Reason  string // why not; bounded, control characters removed
}

// Authorizer is the client of one external authorization service.
type Authorizer struct {
	o      Options
	log    *zap.Logger
	client *http.Client
	slots  chan struct{}
	cache  *cache.Cache[cached] // nil when CacheTTL is 0
	stats  *metrics.AuthorizerStats
	now    func() time.Time

	mu       sync.Mutex
	inflight map[cache.Key]*call
}

type cached struct {
	d   Decision
	exp int64 // unix nanoseconds
}

type call struct {
	done chan struct{}
	d    Decision
	err  error
}

// New builds an Authorizer for o.URL.
func New(o Options) (*Authorizer, error) {
	switch o.Format {
	case "":
		o.Format = FormatArrikto
	case FormatArrikto, FormatOPA:
	default:
		return nil, fmt.Errorf("format %q: want %s or %s", o.Format, FormatArrikto, FormatOPA)
	}
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Fragment != "" {
		return nil, fmt.Errorf("%q is not an http(s) URL (without user info or fragment)", o.URL)
	}
	if o.Format == FormatOPA && !strings.HasPrefix(u.Path, "/v1/data/") {
		return nil, fmt.Errorf("%q: an OPA Data API URL has the path /v1/data/<policy path> (e.g. http://opa:8181/v1/data/kubeflow/authz)", o.URL)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = DefaultMaxConcurrent
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	client, err := outbound.NewClient(outbound.Options{Timeout: o.Timeout, CAPEM: o.CAPEM, MaxIdleConnsPerHost: o.MaxConcurrent})
	if err != nil {
		return nil, err
	}
	// A redirect is an answer outside the protocol: never followed (it
	// could lead the request, with the user's claims, anywhere).
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	// A call made for a traced check is a client span under it, and
	// carries its trace context (traceparent) to the authorizer, as every
	// outbound call does; cached decisions make none.
	client.Transport = o.Tracer.Transport(client.Transport, func(*http.Request) string { return "authorizer" })
	a := &Authorizer{o: o, log: o.Logger.Named("authorizer"), client: client, slots: make(chan struct{}, o.MaxConcurrent),
		stats: o.Metrics.AuthorizerStats(), now: o.Now, inflight: map[cache.Key]*call{}}
	if o.CacheTTL > 0 {
		a.cache = cache.New[cached](o.CacheSize)
	}
	return a, nil
}

// Format is the protocol spoken.
func (a *Authorizer) Format() string { return a.o.Format }

// URL is where the authorizer is asked.
func (a *Authorizer) URL() string { return a.o.URL }

// Decide asks whether in may pass. A cached decision for the same user,
// groups, method, host, port and path is reused while it is fresh. Every
// error wraps ErrUnavailable and means: deny.
func (a *Authorizer) Decide(ctx context.Context, in Input) (Decision, error) {
	k := keyOf(&in)
	now := a.now().UnixNano()
	if a.cache != nil {
		c, ok := a.cache.Get(k)
		if ok && now < c.exp {
			a.stats.Cached()
			return c.d, nil
		}
		if ok {
			a.cache.Delete(k)
		}
	}
	a.mu.Lock()
	if c, ok := a.inflight[k]; ok {
		a.mu.Unlock()
		select {
		case <-c.done:
			return c.d, c.err
		case <-ctx.Done():
			return Decision{}, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
		}
	}
	select {
	case a.slots <- struct{}{}:
	default:
		a.mu.Unlock()
		a.stats.Call("saturated", 0)
		return Decision{}, ErrSaturated
	}
	c := &call{done: make(chan struct{})}
	a.inflight[k] = c
	a.mu.Unlock()

	start := time.Now()
	asked := in // only a question asked goes to the heap
	c.d, c.err = a.ask(ctx, &asked)
	took := time.Since(start)
	<-a.slots
	switch {
	case errors.Is(c.err, ErrTimeout):
		a.stats.Call("timeout", took)
	case c.err != nil:
		a.stats.Call("error", took)
	case c.d.Allowed:
		a.stats.Call("allow", took)
	default:
		a.stats.Call("deny", took)
	}
	if c.err == nil && a.cache != nil {
		a.cache.Put(k, cached{d: c.d, exp: a.now().Add(a.o.CacheTTL).UnixNano()})
	}
	a.mu.Lock()
	delete(a.inflight, k)
	a.mu.Unlock()
	close(c.done)
	return c.d, c.err
}

// keyOf is the cache key of a question: what the decision may depend on
// besides the claims (docs/authorization.md says so). The fields are
// written with their lengths, so no two questions share a key.
func keyOf(in *Input) cache.Key {
	var buf [512]byte
	b := buf[:0]
	field := func(s string) {
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, ':')
		b = append(b, s...)
	}
	field(in.User.Name)
	field(in.User.ID)
	field(in.Request.Method)
	field(in.Request.Host)
	b = strconv.AppendInt(b, int64(in.Request.Port), 10)
	field(in.Request.Path)
	for _, g := range in.User.Groups {
		field(g)
	}
	return sha256.Sum256(b)
}

// ask makes one call. The call is detached from the caller's cancellation
// (other callers may be waiting for the same answer) but bounded by the
// timeout.
func (a *Authorizer) ask(parent context.Context, in *Input) (Decision, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), a.o.Timeout)
	defer cancel()
	if in.Timestamp == "" {
		in.Timestamp = a.now().UTC().Format(time.RFC3339)
	}
	var body []byte
	var err error
	if a.o.Format == FormatOPA {
		body, err = json.Marshal(struct {
			Input *Input `json:"input"`
		}{in})
	} else {
		body, err = json.Marshal(in)
	}
	if err != nil {
		return Decision{}, fmt.Errorf("%w: encoding the request: %v", ErrUnavailable, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.o.URL, bytes.NewReader(body))
	if err != nil {
		return Decision{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		if isTimeout(err) {
			return Decision{}, ErrTimeout
		}
		return Decision{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	switch {
	case err != nil && isTimeout(err):
		return Decision{}, ErrTimeout
	case err != nil:
		return Decision{}, fmt.Errorf("%w: reading the answer: %v", ErrUnavailable, err)
	case len(answer) > MaxBody:
		return Decision{}, fmt.Errorf("%w: answer larger than %d bytes (HTTP %d)", ErrUnavailable, MaxBody, resp.StatusCode)
	}
	if a.o.Format == FormatOPA {
		return opaDecision(resp.StatusCode, answer)
	}
	return arriktoDecision(resp.StatusCode, answer)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// arriktoDecision reads an answer of the predecessor's protocol.
func arriktoDecision(status int, body []byte) (Decision, error) {
	switch {
	case status >= 200 && status < 300:
		return Decision{Allowed: true}, nil
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		r := Reason(string(body))
		if r == "" {
			r = fmt.Sprintf("denied by the external authorizer (HTTP %d)", status)
		}
		return Decision{Reason: r}, nil
	}
	return Decision{}, fmt.Errorf("%w: HTTP %d: %s", ErrUnavailable, status, Reason(string(body)))
}

// opaDecision reads an answer of OPA's Data API.
func opaDecision(status int, body []byte) (Decision, error) {
	if status != http.StatusOK {
		return Decision{}, fmt.Errorf("%w: OPA answered HTTP %d: %s", ErrUnavailable, status, Reason(string(body)))
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		return Decision{}, fmt.Errorf("%w: OPA's answer is not a JSON object", ErrUnavailable)
	}
	raw, ok := doc["result"]
	if !ok {
		return Decision{Reason: "the policy has no result for this request (undefined)"}, nil
	}
	switch string(bytes.TrimSpace(raw)) {
	case "true":
		return Decision{Allowed: true}, nil
	case "false":
		return Decision{Reason: "denied by the policy"}, nil
	}
	// Keys are matched exactly (encoding/json would take "Allow" for
	// "allow"): only {"allow": true} allows.
	var obj map[string]json.RawMessage
	if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) && json.Unmarshal(raw, &obj) == nil {
		var (
			allow  *bool
			reason *string
			bad    bool
		)
		if a, ok := obj["allow"]; ok {
			bad = bad || json.Unmarshal(a, &allow) != nil
		}
		if rr, ok := obj["reason"]; ok {
			bad = bad || json.Unmarshal(rr, &reason) != nil
		}
		if !bad {
			switch {
			case allow == nil:
				return Decision{Reason: "the policy's result has no allow"}, nil
			case *allow:
				return Decision{Allowed: true}, nil
			}
			r := "denied by the policy"
			if reason != nil && Reason(*reason) != "" {
				r = Reason(*reason)
			}
			return Decision{Reason: r}, nil
		}
	}
	return Decision{}, fmt.Errorf("%w: OPA's result is neither a boolean nor {\"allow\": boolean, \"reason\": string}", ErrUnavailable)
}

// Reason makes text an authorizer sent fit for a log line and a page: valid
// UTF-8, control characters replaced by spaces, trimmed, at most MaxReason
// bytes.
func Reason(text string) string {
	text = strings.ToValidUTF8(text, "�")
	text = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, text)
	text = strings.TrimSpace(text)
	if len(text) > MaxReason {
		cut := MaxReason
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut] + "…"
	}
	return text
}

// PortOf splits a Host header into the host and the port, with the
// scheme's default port when none is given.
func PortOf(hostport string, https bool) (string, int) {
	host, p, err := net.SplitHostPort(hostport)
	if err == nil {
		if n, err := strconv.Atoi(p); err == nil && n > 0 && n < 65536 {
			return host, n
		}
		hostport = host
	}
	if https {
		return strings.Trim(hostport, "[]"), 443
	}
	return strings.Trim(hostport, "[]"), 80
}
