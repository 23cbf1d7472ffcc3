// Package integration runs the service in-process against a real Dex (our
// runner of the Dex server library), behind the Envoy-faithful ext_authz
// gateway configured like Kubeflow, and drives it with an HTTP client that
// keeps cookies the way a browser does.
package integration
