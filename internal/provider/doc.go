// Package provider owns everything the service asks the OpenID Connect
// provider: discovery (retried with backoff until it succeeds, so a provider
// that comes up late makes the service ready without a restart), the
// authorization URL, the code exchange with PKCE, ID token verification
// (signature, issuer, audience, expiry, nonce) and userinfo.
//
// The go-oidc provider, verifier and oauth2.Config are built once, after
// discovery, and shared by every request. Every outbound call goes through
// one http.Client with a timeout.
package provider
