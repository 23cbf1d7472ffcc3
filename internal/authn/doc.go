// Package authn owns bearer-token authentication: JSON Web Tokens from
// issuers configured the way Kubernetes' structured AuthenticationConfiguration
// (apiserver.config.k8s.io/v1beta1 and v1) configures them — GitLab users and
// CI jobs, Kubernetes service accounts, the login provider's own ID tokens —
// mapped to one identity (username, uid, groups, extra) by claims or CEL
// expressions with the API server's semantics and environment (`claims`,
// `user`).
//
// A token is verified once: its identity is cached under the SHA-256 of the
// token until the token's exp (bounded), so the common case costs a digest and
// a map lookup. Keys come from each issuer's discovery and JWKS; an unknown
// kid refetches the key set, at most once per KeyRefetchInterval (2 s) per
// issuer, waiting for the next allowed fetch when it falls within the request's
// deadline.
//
// Every refusal is an error wrapping ErrInvalidToken, with the reason for the
// log; callers answer a generic 401.
package authn
