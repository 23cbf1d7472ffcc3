// Package credential owns what a request authenticates with, once
// verified, and the bounded caches of verified credentials:
//
//   - a live session (Sessions): a sealed session cookie, or its value as
//     Authorization: Bearer (older SDKs). Only sessions have a life on this
//     replica: revocation, idle timeout, refresh and strict validation at the
//     provider (one call per session at a time, concurrent requests collapsed
//     into it), re-sealing, and the successor that requests still carrying
//     the old cookie are answered as;
//   - a bearer token (Tokens): a JWT of a trusted issuer, valid until its own
//     expiry, never turned into a session or a cookie.
//
// Both yield a Principal: who the caller is, with the identity header
// values computed once, so an allowed check allocates nothing for them.
// Caches are keyed by the SHA-256 of the credential and hold only values
// that verified, so bogus input cannot fill them.
package credential
