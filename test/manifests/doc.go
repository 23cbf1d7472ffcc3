// Package manifests validates the Kubernetes manifests under deploy/ offline:
// `go test ./...` in this directory (make manifests-check).
//
// Every kustomization (deploy/base, each overlay under deploy/overlays, each
// component under deploy/components applied to the base) is rendered in
// process with kustomize's krusty, then every rendered object is validated:
//
//   - Kubernetes kinds are decoded into the k8s.io/api types with unknown and
//     duplicate fields rejected (sigs.k8s.io/json, case-sensitive);
//   - Istio kinds are validated against the OpenAPI v3 schemas of Istio's CRDs
//     (testdata/istio, vendored from the istio.io/api module) with
//     k8s.io/kube-openapi, fields the schema does not declare are rejected,
//     and the CRDs' x-kubernetes-validations CEL rules are evaluated;
//   - the Envoy ext_authz configuration inside the EnvoyFilter is decoded with
//     Envoy's own protobuf types (go-control-plane), checked with their
//     validation rules and for deprecated fields;
//   - the mesh configuration snippets are decoded strictly into Istio's
//     MeshConfig.
//
// Then the properties the deployment relies on are asserted: object names
// (Kubeflow's, for the drop-in overlay), the Deployment's security settings
// and probes, that every params.env key is a variable of
// docs/configuration.md, and that the gateway objects agree with the
// service's configuration (ports, paths, headers, issuer).
//
// Kubeflow's real manifests (testdata/kubeflow: 1.8.1, 1.9.0, 1.9.1, 1.10.2,
// 1.11.0, 26.03 also with its ambient install overlay, master) are composed as an operator's
// example/kustomization.yaml does, once as shipped and once with the line
// naming the gateway authenticator swapped for an overlay of deploy/ (and,
// for the recommended layout and kubeflow-jwt, the Istio line too:
// kubeflow-istio-install's pinned Kubeflow base is checked, then rendered
// from the vendored copy, istioinstall_test.go) (compose_test.go), and each
// composition is checked (kubeflow_test.go): providers and the Services they
// reach, Dex's client, the dashboard's logout URL, the headers on allow, the
// identity chain to Istio's RequestAuthentication, what reaches an upstream
// and what stays exposed, NetworkPolicies (upstream_test.go), check-config's
// offline validation of the rendered environment, and that no object of
// Kubeflow's line went missing. export_test.go writes the compositions
// test/integration runs with real Dex, docs/compatibility.md and test/istio's
// inputs (istio_export_test.go: every composition and our own istio-*
// overlays, which make istio-config turns into the gateway's Envoy
// configuration) from the same table (UPDATE=1 rewrites them; otherwise a
// difference fails).
package manifests
