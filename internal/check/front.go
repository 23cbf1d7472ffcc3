package check

import (
	"net/http"

	"go.opentelemetry.io/otel/propagation"
	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/tracing"
)

// front is the protocol a check arrived in. A front translates; it never
// decides: every front hands the Handler an *http.Request, and the same
// classify → decide → answer writes the same answer, which the front then
// translates back into its protocol.
//
//	front      port        who translates
//	frontHTTP  SERVER_PORT  net/http (Envoy's HTTP ext_authz service, forward-auth proxies)
//	frontGRPC  GRPC_PORT    package grpccheck (envoy.service.auth.v3.Authorization/Check)
//
// The seam is small on purpose: ServeHTTP and ServeGRPC enter the same
// route; answer, the one writer, writes to an http.ResponseWriter either
// way (for gRPC an *Answer that records it) and hands an *Answer what only
// another protocol can carry (decided). The HTTP path pays one comparison.
type front uint8

const (
	frontHTTP front = iota
	frontGRPC
	nFronts
)

var frontNames = [nFronts]string{"http", "grpc"}

// String is the "protocol" label of oidc_authservice_checks_total.
func (f front) String() string { return frontNames[f] }

// Answer is a check's answer for a front that does not speak HTTP: the
// HTTP answer the check port would have sent (Status, the header, Body),
// recorded as an http.ResponseWriter, and what was decided, for the fields
// only the front's protocol has (gRPC's dynamic metadata). A front reuses
// one Answer per check (Reset).
type Answer struct {
	// Status is the HTTP status: 200 lets the request through; any other
	// is the answer to the client (a redirect, a page, a refusal).
	Status int
	Body   []byte
	// Decision and Reason are the labels of oidc_authservice_checks_total
	// ("allow", "session"); for the service's own endpoints Reason names
	// the endpoint ("callback", "logout", "start").
	Decision, Reason string
	// User is the USERID_HEADER value (USERID_PREFIX and the user id) and
	// Groups the groups of the principal of an allow or a policy refusal;
	// empty for no one. Groups is shared: read it, never change it.
	User   string
	Groups []string

	header http.Header
}

// Header is the answer's header, as ServeHTTP would have written it
// (canonical names, X-Envoy-Auth-Headers-To-Remove on allow).
func (a *Answer) Header() http.Header {
	if a.header == nil {
		a.header = make(http.Header, 8)
	}
	return a.header
}

// WriteHeader records the status (the first one written).
func (a *Answer) WriteHeader(status int) {
	if a.Status == 0 {
		a.Status = status
	}
}

// Write records the body.
func (a *Answer) Write(b []byte) (int, error) {
	a.WriteHeader(http.StatusOK)
	a.Body = append(a.Body, b...)
	return len(b), nil
}

// Reset empties a for the next check, keeping its storage.
func (a *Answer) Reset() {
	clear(a.header)
	*a = Answer{Body: a.Body[:0], header: a.header}
}

// decided records what the verdict says beyond the HTTP answer.
func (a *Answer) decided(v *verdict) {
	a.Decision, a.Reason = v.decision.String(), v.reason.String()
	if v.who.ok() {
		a.User, a.Groups = v.who.UserHeader[0], v.who.Groups
	}
}

// endpoint names the service's own endpoint that answered, for a front
// that reports it (an *Answer's Reason).
func endpoint(w http.ResponseWriter, name string) {
	if a, ok := w.(*Answer); ok {
		a.Reason = name
	}
}

// ServeGRPC answers r, a check that arrived over gRPC and that the front
// translated into the request the HTTP check port would have received
// (method, URL with query, Host, header, X-Forwarded-Proto, RemoteAddr,
// the stream's context; no body), into a: routed and decided exactly as
// ServeHTTP would, except that a renewed session cookie never needs
// SESSION_RENEW_REDIRECT's redirect (the gRPC answer delivers it on allow).
// trace is the trace context the front received (TRACING): the check's
// span continues it as the HTTP check's continues its request's header.
func (h *Handler) ServeGRPC(a *Answer, r *http.Request, trace propagation.TextMapCarrier) {
	h.route(a, r, frontGRPC, trace)
}

// RefuseGRPC answers a gRPC check the front could not translate — a
// missing or malformed attribute, a value that is not UTF-8, more header
// than the HTTP check port reads — with status (400, or 431 for too much
// header) and a JSON body naming why, through the one writer: counted
// (decision deny, reason bad_request), logged (a few lines a second) and
// access-logged like any other check, and traced like ServeGRPC. r
// carries what could be read (at least a URL; the header for the request
// id).
func (h *Handler) RefuseGRPC(a *Answer, r *http.Request, trace propagation.TextMapCarrier, status int, why string) {
	if h.d.Tracer != nil {
		var span tracing.Span
		r, span = h.traceStart(r, trace, frontGRPC)
		defer span.End()
	}
	v := badRequest(why)
	v.status = status
	h.serve(a, r, extAuthz, frontGRPC, &refusal{v: v, log: func(rid zap.Field) {
		h.quiet.Info("refused: gRPC check request malformed", rid, zap.Int("status", status), zap.String("why", why))
	}})
}
