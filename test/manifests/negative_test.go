package manifests

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// These tests break rendered objects on purpose and expect the validation to
// notice: a check that cannot fail proves nothing.

// mutated copies a rendering with one object changed by f.
func mutated(t *testing.T, r *rendering, kind, name string, f func(m map[string]any)) *rendering {
	t.Helper()
	out := &rendering{Name: r.Name + " (mutated)"}
	found := false
	for _, o := range r.Objects {
		c := &object{APIVersion: o.APIVersion, Kind: o.Kind, Name: o.Name, Namespace: o.Namespace}
		if err := json.Unmarshal(o.JSON, &c.Map); err != nil {
			t.Fatal(err)
		}
		if o.Kind == kind && o.Name == name {
			f(c.Map)
			found = true
		}
		var err error
		if c.JSON, err = json.Marshal(c.Map); err != nil {
			t.Fatal(err)
		}
		out.Objects = append(out.Objects, c)
	}
	if !found {
		t.Fatalf("%s: no %s %s", r.Name, kind, name)
	}
	return out
}

// at walks a path of map keys and list indexes.
func at(m map[string]any, path ...any) map[string]any {
	var v any = m
	for _, p := range path {
		switch k := p.(type) {
		case string:
			v = v.(map[string]any)[k]
		case int:
			v = v.([]any)[k]
		}
	}
	return v.(map[string]any)
}

// wantError runs every check on the rendering and expects an error
// containing want.
func wantError(t *testing.T, r *rendering, want string) {
	t.Helper()
	var all []string
	for _, o := range r.Objects {
		for _, e := range validateObject(o) {
			all = append(all, fmt.Sprintf("%s: %v", o.id(), e))
		}
	}
	for _, e := range checkConsistency(r) {
		all = append(all, e.Error())
	}
	for _, e := range all {
		if strings.Contains(e, want) {
			return
		}
	}
	t.Errorf("no error containing %q; got %d errors:\n%s", want, len(all), strings.Join(all, "\n"))
}

func TestChecksCatchBrokenManifests(t *testing.T) {
	base := renderingNamed(t, "base")
	envoy := renderingNamed(t, "overlays/istio-envoyfilter")
	provider := renderingNamed(t, "overlays/istio-extension-provider")
	jwt := renderingNamed(t, "overlays/kubeflow-jwt")
	pod := func(m map[string]any) map[string]any { return at(m, "spec", "template", "spec") }
	container := func(m map[string]any) map[string]any { return at(m, "spec", "template", "spec", "containers", 0) }

	cases := []struct {
		name       string
		r          *rendering
		kind, obj  string
		f          func(map[string]any)
		wantSubstr string
	}{
		{"misspelt Deployment field", base, "Deployment", "authservice",
			func(m map[string]any) { container(m)["securityContex"] = map[string]any{} }, `unknown field "spec.template.spec.containers[0].securityContex"`},
		{"wrong case", base, "Deployment", "authservice",
			func(m map[string]any) { at(m, "spec")["Replicas"] = 3 }, `unknown field "spec.Replicas"`},
		{"root user", base, "Deployment", "authservice",
			func(m map[string]any) { at(container(m), "securityContext")["runAsUser"] = 0 }, "runAsUser must be 65532"},
		{"writable root", base, "Deployment", "authservice",
			func(m map[string]any) { at(container(m), "securityContext")["readOnlyRootFilesystem"] = false }, "readOnlyRootFilesystem"},
		{"liveness on the check port", base, "Deployment", "authservice",
			func(m map[string]any) { at(container(m), "livenessProbe", "httpGet")["port"] = "http-api" }, "livenessProbe: GET /healthz on port 8080"},
		{"token not mounted", base, "Deployment", "authservice",
			func(m map[string]any) { pod(m)["automountServiceAccountToken"] = false }, "SESSION_KEYS_SECRET=authservice-session-keys needs the pod's token"},
		{"token mounted for nothing", base, "ConfigMap", "oidc-authservice-parameters",
			func(m map[string]any) {
				at(m, "data")["SESSION_KEYS_SECRET"] = ""
				at(m, "data")["SESSION_KEYS_FILE"] = "/etc/keys"
			}, "automountServiceAccountToken must be false"},
		{"published session key", base, "Secret", "oidc-authservice-client",
			func(m map[string]any) {
				at(m, "data")["SESSION_KEYS"] = base64.StdEncoding.EncodeToString([]byte("REPLACE-ME-with-the-output-of-openssl-rand-base64-32"))
			}, "SESSION_KEYS key 1 is published"},
		{"Kubeflow's oauth2-proxy cookie secret as the key", base, "Secret", "oidc-authservice-client",
			func(m map[string]any) {
				at(m, "data")["SESSION_KEYS"] = base64.StdEncoding.EncodeToString([]byte("7d16fee92f8d11b8940b081b3f8b8acb"))
			}, "SESSION_KEYS key 1 is published"},
		{"the Role reads every Secret", base, "Role", "authservice-session-keys",
			func(m map[string]any) { delete(at(m, "rules", 0), "resourceNames") }, "grants get on secrets []"},
		{"the Role may update", base, "Role", "authservice-session-keys",
			func(m map[string]any) { at(m, "rules", 1)["verbs"] = []any{"create", "update"} }, "grants update on secrets"},
		{"no Role", base, "RoleBinding", "authservice-session-keys",
			func(m map[string]any) { at(m, "roleRef")["name"] = "other" }, "needs get on secrets/authservice-session-keys and create"},
		{"policy for another account", base, "ValidatingAdmissionPolicy", "oidc-authservice-session-keys",
			func(m map[string]any) {
				at(m, "spec", "matchConditions", 0)["expression"] = `request.userInfo.username == "system:serviceaccount:" + request.namespace + ":other"`
			}, "must match ServiceAccount authservice"},
		{"policy without the type rule", base, "ValidatingAdmissionPolicy", "oidc-authservice-session-keys",
			func(m map[string]any) {
				at(m, "spec")["validations"] = at(m, "spec")["validations"].([]any)[:1]
			}, `lacks the rule object.type == "Opaque"`},
		{"policy that only warns", base, "ValidatingAdmissionPolicyBinding", "oidc-authservice-session-keys",
			func(m map[string]any) { at(m, "spec")["validationActions"] = []any{"Warn"} }, "with Deny"},
		{"policy ignored on failure", base, "ValidatingAdmissionPolicy", "oidc-authservice-session-keys",
			func(m map[string]any) { at(m, "spec")["failurePolicy"] = "Ignore" }, "failurePolicy must be Fail"},
		{"sidecar", base, "Deployment", "authservice",
			func(m map[string]any) {
				at(m, "spec", "template", "metadata", "annotations")["sidecar.istio.io/inject"] = "true"
			}, "sidecar.istio.io/inject"},
		{"unknown variable", base, "ConfigMap", "oidc-authservice-parameters",
			func(m map[string]any) { at(m, "data")["OIDC_PROVDER"] = "x" }, "OIDC_PROVDER is not a variable"},
		{"obsolete variable", base, "ConfigMap", "oidc-authservice-parameters",
			func(m map[string]any) { at(m, "data")["STORE_PATH"] = "/var/lib/authservice/data.db" }, "STORE_PATH is obsolete"},
		{"secret in the ConfigMap", base, "ConfigMap", "oidc-authservice-parameters",
			func(m map[string]any) { at(m, "data")["CLIENT_SECRET"] = "x" }, "CLIENT_SECRET belongs in the Secret"},
		{"short session key", base, "Secret", "oidc-authservice-client",
			func(m map[string]any) { at(m, "data")["SESSION_KEYS"] = "c2hvcnQ=" }, "SESSION_KEYS key 1: need at least 32 bytes"},
		{"not-ready endpoints", base, "Service", "authservice",
			func(m map[string]any) { at(m, "spec")["publishNotReadyAddresses"] = true }, "publishNotReadyAddresses"},
		{"service selects nothing", base, "Service", "authservice",
			func(m map[string]any) { at(m, "spec")["selector"] = map[string]any{"app": "oidc-authservice"} }, "does not select the pods"},
		{"envoy filter typo", envoy, "EnvoyFilter", "authn-filter",
			func(m map[string]any) {
				rsp := at(m, "spec", "configPatches", 0, "patch", "value", "typed_config", "http_service", "authorization_response")
				rsp["allowed_upstream_header"] = rsp["allowed_upstream_headers"]
				delete(rsp, "allowed_upstream_headers")
			}, `unknown field "allowed_upstream_header"`},
		{"envoy filter without groups upstream", envoy, "EnvoyFilter", "authn-filter",
			func(m map[string]any) {
				up := at(m, "spec", "configPatches", 0, "patch", "value", "typed_config", "http_service", "authorization_response", "allowed_upstream_headers")
				up["patterns"] = []any{map[string]any{"exact": "kubeflow-userid"}}
			}, "headers upstream on allow must include kubeflow-groups"},
		{"uppercase header", envoy, "EnvoyFilter", "authn-filter",
			func(m map[string]any) {
				req := at(m, "spec", "configPatches", 0, "patch", "value", "typed_config", "http_service", "authorization_request", "allowed_headers")
				req["patterns"] = append(req["patterns"].([]any), map[string]any{"exact": "Cookie"})
			}, `header "Cookie" must be lowercase`},
		{"envoy validation rule", envoy, "EnvoyFilter", "authn-filter",
			func(m map[string]any) {
				delete(at(m, "spec", "configPatches", 0, "patch", "value", "typed_config", "http_service", "server_uri"), "uri")
			}, "envoy validation"},
		{"wrong cluster", envoy, "EnvoyFilter", "authn-filter",
			func(m map[string]any) {
				at(m, "spec", "configPatches", 0, "patch", "value", "typed_config", "http_service", "server_uri")["cluster"] = "outbound|80||authservice.istio-system.svc.cluster.local"
			}, "does not match the uri"},
		{"CRD enum", envoy, "EnvoyFilter", "authn-filter",
			func(m map[string]any) { at(m, "spec", "configPatches", 0, "patch")["operation"] = "INSERT_BEFOR" }, "schema:"},
		{"CRD unknown field", provider, "AuthorizationPolicy", "istio-ingressgateway-oidc-authservice",
			func(m map[string]any) {
				op := at(m, "spec", "rules", 0, "to", 0, "operation")
				op["notPath"] = op["notPaths"]
				delete(op, "notPaths")
			}, `unknown field "notPath"`},
		{"CRD CEL rule", provider, "AuthorizationPolicy", "istio-ingressgateway-oidc-authservice",
			func(m map[string]any) {
				at(m, "spec")["targetRef"] = map[string]any{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "kubeflow"}
			}, "x-kubernetes-validations"},
		{"dashboard unprotected", provider, "AuthorizationPolicy", "istio-ingressgateway-oidc-authservice",
			func(m map[string]any) {
				at(m, "spec", "rules", 0, "to", 0, "operation")["notPaths"] = []any{"/dex/*", "/*"}
			}, "the dashboard needs a session"},
		{"unknown provider", provider, "AuthorizationPolicy", "istio-ingressgateway-oidc-authservice",
			func(m map[string]any) { at(m, "spec", "provider")["name"] = "oauth2-proxy" }, "provider oauth2-proxy"},
		{"DENY blocks the pages", jwt, "AuthorizationPolicy", "istio-ingressgateway-require-jwt",
			func(m map[string]any) { at(m, "spec", "rules", 0, "to", 0, "operation")["notPaths"] = []any{"/dex/*"} }, "the service's pages carry no token"},
		{"issuer mismatch", jwt, "RequestAuthentication", "oidc-authservice-jwt",
			func(m map[string]any) {
				at(m, "spec", "jwtRules", 0)["issuer"] = "http://dex.auth.svc.cluster.local:5556/dex"
			}, "want UPSTREAM_TOKEN_ISSUER"},
		{"jwks scheme (CEL)", jwt, "RequestAuthentication", "oidc-authservice-jwt",
			func(m map[string]any) {
				at(m, "spec", "jwtRules", 0)["jwksUri"] = "ftp://authservice.istio-system.svc.cluster.local:8082/.well-known/jwks.json"
			}, "getScheme"},
		{"writable key mount", jwt, "Deployment", "authservice",
			func(m map[string]any) { at(container(m), "volumeMounts", 0)["readOnly"] = false }, "must be read-only"},
		{"route to the check port", jwt, "VirtualService", "authservice-web",
			func(m map[string]any) {
				at(m, "spec", "http", 0, "route", 0, "destination", "port")["number"] = 8080
			}, "want the web port"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantError(t, mutated(t, c.r, c.kind, c.obj, c.f), c.wantSubstr)
		})
	}
}

func TestMeshDecodingIsStrict(t *testing.T) {
	if _, err := decodeMesh([]byte("extensionProviders:\n- name: x\n  envoyExtAuthzHttp:\n    service: a\n    port: 8080\n    headersToUpstreamOnAllows: [a]\n")); err == nil {
		t.Error("a misspelt MeshConfig field was accepted")
	}
	if _, err := decodeMesh([]byte("extensionProviders:\n- name: x\n  envoyExtAuthzHttp:\n    service: a\n    port: 8080\n    timeout: 10\n")); err == nil {
		t.Error("a duration without unit was accepted")
	}
}
