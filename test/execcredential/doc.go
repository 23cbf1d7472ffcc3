// Package execcredential tests `oidc-authservice token` as a Kubernetes
// credential plugin: client-go's exec authenticator (a rest.Config with an
// ExecProvider) runs the built binary, reads its ExecCredential and sends the
// token to an HTTPS server that verifies it against Dex. It is its own Go
// module so that client-go stays out of the product's go.mod; run it with
// `make exec-credential-check`.
package execcredential
