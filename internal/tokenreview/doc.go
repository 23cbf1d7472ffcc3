// Package tokenreview authenticates Kubernetes service-account tokens the way
// arrikto's oidc-authservice did: by asking the cluster's API server with a
// TokenReview (authentication.k8s.io/v1), sent with the service's own
// projected token, for the audiences of AUDIENCES. It is the path for tokens
// whose issuer the service cannot verify itself (no JWKS reachable), and the
// only one that notices a deleted ServiceAccount or Pod before the token
// expires.
//
// What is sent: only a well-formed JWT (three base64url parts, a JSON header
// whose alg is not "none", a JSON payload) of at most authn.MaxTokenSize bytes
// whose unverified iss is one of the cluster's service-account issuers (in a
// pod: the iss of the service's own token) and whose exp, when present, has
// not passed. Anything else is refused without a call, so arbitrary bearer
// values never reach the API server.
//
// What it costs: answers are cached under the token's SHA-256 — an accepted
// token until its exp or PositiveTTL (10 s), whichever is first, so a deleted
// ServiceAccount is noticed within that time; a refusal for NegativeTTL (2 s).
// Concurrent reviews of one token share one call; at most MaxConcurrent
// calls run at once and a request waits for a slot only within its deadline;
// every call ends after Timeout.
//
// What happens when the API server is down, slow, or refuses the service's
// own credentials (RBAC): the token is refused — an error wrapping
// authn.ErrInvalidToken and ErrUnavailable, which the check answers with 401
// and a log line naming the cause. Never an allow, never a 5xx.
package tokenreview
