// Package tokencli is the `oidc-authservice token` command, which runs on a
// user's machine: it obtains an ID token from the OpenID Connect provider
// for a public client (Kubeflow's is `kubeflow-cli`) and prints it, for the
// Kubeflow Pipelines SDK, curl or notebooks outside the cluster, or prints
// a Kubernetes ExecCredential for kubectl and client-go. The gateway accepts
// the token as `Authorization: Bearer` (ACCEPT_PROVIDER_ID_TOKENS with the
// client among PROVIDER_ID_TOKEN_AUDIENCES, or, with Dex, a token asked for
// with --audience <gateway client>). See docs/programmatic-access.md.
//
// What one run does, in order:
//
//	| step                                     | network            | result                                  |
//	|------------------------------------------|--------------------|-----------------------------------------|
//	| cached ID token valid for --min-validity | none               | print it                                |
//	| cached refresh token                     | discovery, token   | print the new ID token, cache it        |
//	|   refused (revoked, expired, rotated)    |                    | say so on stderr, go on to a login      |
//	| device_authorization_endpoint advertised | RFC 8628 grant     | print verification URL and code; poll   |
//	|   (and no --provider-url)                |                    |                                         |
//	| otherwise                                | code + PKCE + state| loopback http://127.0.0.1:<port>/ redirect |
//	|                                          |   + nonce          | opens the browser (or prints the URL)   |
//
// Every ID token obtained is verified (signature, issuer, audience = the
// client, expiry; nonce for the loopback flow) before it is cached or
// printed. --force skips the cache.
//
// The cache is one JSON file per issuer, client, scopes and audiences under
// os.UserCacheDir()/oidc-authservice/tokens, mode 0600, replaced atomically
// (temporary file and rename) and locked while a run reads and renews it, so
// parallel kubectl calls log in once. A cache file whose permissions are
// wider than 0600, or that is not a regular file, is refused with the command
// that fixes it.
//
// Tokens go to standard output only. Prompts, progress and errors go to
// standard error and never contain a token; the provider's error responses
// are reduced to their OAuth error code and description.
package tokencli
