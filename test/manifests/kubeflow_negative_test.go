package manifests

import (
	"strings"
	"testing"
)

// The composition checks must fail when a composition is broken: each case
// breaks one thing of a passing composition and expects the error naming it.
func TestKubeflowChecksCatchBreakage(t *testing.T) {
	var master, headers, grpcLayout, v181, v190 *composed
	for _, c := range composeAll(t) {
		switch c.name() {
		case "master/kubeflow-oauth2-proxy":
			master = c
		case "master/kubeflow-oauth2-proxy-headers":
			headers = c
		case "master-grpc/kubeflow-oauth2-proxy-headers":
			grpcLayout = c
		case "v1.8.1/kubeflow":
			v181 = c
		case "v1.9.0/kubeflow-oidc-client-oauth2-proxy-m2m-self-signed":
			v190 = c
		}
	}
	if master == nil || headers == nil || grpcLayout == nil || v181 == nil || v190 == nil || master.Err != nil || headers.Err != nil ||
		grpcLayout.Err != nil || v181.Err != nil || v190.Err != nil {
		t.Fatal("the compositions master/kubeflow-oauth2-proxy, master/kubeflow-oauth2-proxy-headers (and master-grpc/), v1.8.1/kubeflow and v1.9.0/kubeflow-oidc-client-oauth2-proxy-m2m-self-signed must render")
	}
	// generated is the rendered name of a generated ConfigMap (hash suffix).
	generated := func(c *composed, name string) string {
		for _, o := range c.Objects.all("ConfigMap") {
			if hashSuffix.ReplaceAllString(o.Name, "") == name {
				return o.Name
			}
		}
		t.Fatalf("%s: no ConfigMap %s", c.name(), name)
		return ""
	}
	wantComposition := func(t *testing.T, c *composed, r *rendering, want string) {
		t.Helper()
		var all []string
		for _, e := range checkComposition(t, c, r) {
			all = append(all, e.Error())
			if strings.Contains(e.Error(), want) {
				return
			}
		}
		t.Errorf("no error containing %q; got:\n%s", want, strings.Join(all, "\n"))
	}
	params := func(f func(d map[string]any)) func(m map[string]any) {
		return func(m map[string]any) { f(m["data"].(map[string]any)) }
	}
	cases := []struct {
		name       string
		c          *composed
		kind, obj  string
		f          func(m map[string]any)
		want       string
		deleteObjs bool
	}{
		{"provider port", master, "ConfigMap", "istio", params(func(d map[string]any) {
			d["mesh"] = strings.Replace(d["mesh"].(string), "port: 80", "port: 81", 1)
		}), "has no port 81", false},
		{"provider not declared", master, "AuthorizationPolicy", "istio-ingressgateway-oauth2-proxy", func(m map[string]any) {
			at(m, "spec", "provider")["name"] = "authservice"
		}, `names provider "authservice", which the mesh configuration does not declare`, false},
		{"Service selects other pods", master, "Service", "oauth2-proxy", func(m map[string]any) {
			at(m, "spec")["selector"] = map[string]any{"app.kubernetes.io/name": "oauth2-proxy"}
		}, "not the service's pods", false},
		{"logout path", master, "ConfigMap", "oidc-authservice-parameters", params(func(d map[string]any) {
			delete(d, "LOGOUT_PATH")
		}), `the dashboard logs out at LOGOUT_URL="/oauth2/sign_out"`, false},
		{"no token upstream", master, "ConfigMap", "oidc-authservice-parameters", params(func(d map[string]any) {
			d["UPSTREAM_TOKEN"] = "none"
		}), "lets authorization through on allow, which the service does not produce", false},
		{"no X-Auth-Request headers", master, "ConfigMap", "oidc-authservice-parameters", params(func(d map[string]any) {
			d["AUTH_REQUEST_HEADERS"] = "false"
		}), "lets x-auth-request-user through on allow", false},
		{"cookies lost on allow", master, "ConfigMap", "oidc-authservice-parameters", params(func(d map[string]any) {
			d["SESSION_RENEW_REDIRECT"] = "false"
		}), "renewed sessions need SESSION_RENEW_REDIRECT=true", false},
		{"another claim", master, "RequestAuthentication", "dex-jwt", func(m map[string]any) {
			at(m, "spec", "jwtRules", 0, "outputClaimToHeaders", 0)["claim"] = "sub"
		}, `maps kubeflow-userid from claim "sub"`, false},
		{"Dex's redirect URI", master, "ConfigMap", "dex", params(func(d map[string]any) {
			d["config.yaml"] = strings.Replace(d["config.yaml"].(string), `["/oauth2/callback"]`, `["/authservice/oidc/callback"]`, 1)
		}), "not REDIRECT_URL", false},
		{"an ignored variable", master, "ConfigMap", "oidc-authservice-parameters", params(func(d map[string]any) {
			d["STORE_PATH"] = "/var/lib/authservice/data.db"
		}), "sets STORE_PATH, which the service ignores", false},
		{"invalid setting", master, "ConfigMap", "oidc-authservice-parameters", params(func(d map[string]any) {
			d["LOGOUT_PATH"] = "sign_out"
		}), "fails check-config's validation", false},
		{"DENY policy on the callback", master, "AuthorizationPolicy", "istio-ingressgateway-require-jwt", func(m map[string]any) {
			op := at(m, "spec", "rules", 0, "to", 0, "operation")
			op["notPaths"] = []any{"/dex/*"}
		}, "the callback (REDIRECT_URL): /oauth2/callback does not reach the service", false},
		{"Dex isolated", master, "NetworkPolicy", "allow-oidc-authservice", nil, "Dex is isolated", true},
		{"a RequestAuthentication dropped", master, "RequestAuthentication", "dex-jwt", nil, "drops it without a replacement", true},
		// Kubeflow 1.9.0 checks every request, bearer tokens included.
		{"service-account tokens refused by the check", v190, "ConfigMap", "oidc-authservice-parameters", params(func(d map[string]any) {
			delete(d, "AUTHENTICATION_CONFIG_FILE")
		}), "RequestAuthentication istio-system/m2m-token-issuer verifies tokens the check refuses first: the service accepts no bearer token of issuer https://kubernetes.default.svc.cluster.local", false},
		{"Dex tokens refused by the check", v190, "ConfigMap", "oidc-authservice-parameters", params(func(d map[string]any) {
			d["ACCEPT_PROVIDER_ID_TOKENS"] = "false"
		}), "RequestAuthentication istio-system/dex-jwt verifies tokens the check refuses first: the service accepts no bearer token of issuer http://dex.auth.svc.cluster.local:5556/dex", false},
		{"another audience than EXTRA_JWT_ISSUERS", v190, "ConfigMap", generated(v190, "oidc-authservice-authentication"), params(func(d map[string]any) {
			d["authentication.yaml"] = strings.Replace(d["authentication.yaml"].(string), "    - https://kubernetes.default.svc.cluster.local", "    - pipelines.kubeflow.org", 1)
		}), "oauth2-proxy accepted EXTRA_JWT_ISSUERS https://kubernetes.default.svc.cluster.local=https://kubernetes.default.svc.cluster.local: the service accepts tokens of issuer https://kubernetes.default.svc.cluster.local for audiences [pipelines.kubeflow.org]", false},
		{"another issuer than m2m-token-issuer", v190, "RequestAuthentication", "m2m-token-issuer", func(m map[string]any) {
			at(m, "spec", "jwtRules", 0)["issuer"] = "https://oidc.eks.region.amazonaws.com/id/1234abcd"
		}, "the service accepts no bearer token of issuer https://oidc.eks.region.amazonaws.com/id/1234abcd", false},
		{"Dex's pages checked and not skipped", v190, "ConfigMap", "oidc-authservice-parameters", params(func(d map[string]any) {
			d["SKIP_AUTH_URLS"] = "/dex-other"
		}), "Dex's login page is checked and SKIP_AUTH_URLS [/dex-other] does not let it through", false},
		// What reaches an upstream (issue 21).
		{"token forwarded upstream", master, "RequestAuthentication", "dex-jwt", func(m map[string]any) {
			at(m, "spec", "jwtRules", 0)["forwardOriginalToken"] = true
		}, "forwards the token it verified (issuer http://dex.auth.svc.cluster.local:5556/dex) to the upstream", false},
		{"client tokens kept without a RequestAuthentication", headers, "ConfigMap", "oidc-authservice-parameters", params(func(d map[string]any) {
			d["UPSTREAM_BEARER"] = "keep"
		}), "UPSTREAM_BEARER=keep, but no RequestAuthentication of the gateway removes the tokens of issuer http://dex.auth.svc.cluster.local:5556/dex", false},
		{"bearer requests skip the check again", headers, "AuthorizationPolicy", "istio-ingressgateway-oauth2-proxy", func(m map[string]any) {
			at(m, "spec", "rules", 0)["when"] = []any{map[string]any{"key": "request.headers[authorization]", "notValues": []any{"*"}}}
		}, "is dropped as checked by the service, but the gateway does not ask the service about bearer requests", false},
		{"notebooks reach the check port", headers, "NetworkPolicy", "authservice", func(m map[string]any) {
			delete(at(m, "spec", "ingress", 0), "from")
		}, "a notebook server (kubeflow-user-example-com map[app:nb notebook-name:nb statefulset:nb]) may connect to the service's port 8080", false},
		{"probe port closed", headers, "NetworkPolicy", "authservice", nil, "the probe port 8081 is closed to a notebook server", true},
		{"no NetworkPolicy", v181, "NetworkPolicy", "authservice", nil, "no NetworkPolicy selects the service's pods", true},
		{"gateway not admitted", v181, "NetworkPolicy", "authservice", func(m map[string]any) {
			at(m, "spec", "ingress", 0, "from", 0, "podSelector", "matchLabels")["istio"] = "egressgateway"
		}, "do not admit the ingress gateway", false},
		{"EnvoyFilter without kubeflow-userid", v181, "EnvoyFilter", "authn-filter", func(m map[string]any) {
			hs := at(m, "spec", "configPatches", 0, "patch", "value", "typed_config", "http_service")
			at(hs, "authorization_response", "allowed_upstream_headers")["patterns"] = []any{map[string]any{"exact": "kubeflow-groups"}}
		}, "does not let kubeflow-userid through on allow", false},
		{"gRPC provider on the HTTP port", grpcLayout, "ConfigMap", "istio", params(func(d map[string]any) {
			d["mesh"] = strings.Replace(d["mesh"].(string), "port: 9000", "port: 80", 1)
		}), "goes to container port 8080, not GRPC_PORT 9000", false},
		{"gRPC provider failing open", grpcLayout, "ConfigMap", "istio", params(func(d map[string]any) {
			d["mesh"] = strings.Replace(d["mesh"].(string), "failOpen: false", "failOpen: true", 1)
		}), "failOpen lets requests through", false},
		{"gRPC port without its Service port", grpcLayout, "Service", "oauth2-proxy", func(m map[string]any) {
			at(m, "spec")["ports"] = asList(at(m, "spec")["ports"])[:1]
		}, "has no port 9000", false},
		{"notebooks reach the gRPC port", grpcLayout, "NetworkPolicy", "authservice", func(m map[string]any) {
			delete(at(m, "spec", "ingress", 0), "from")
		}, "may connect to the service's port 9000", false},
		{"EnvoyFilter elsewhere", v181, "EnvoyFilter", "authn-filter", func(m map[string]any) {
			hs := at(m, "spec", "configPatches", 0, "patch", "value", "typed_config", "http_service")
			at(hs, "server_uri")["cluster"] = "outbound|8080||authservice.kubeflow.svc.cluster.local"
			at(hs, "server_uri")["uri"] = "http://authservice.kubeflow.svc.cluster.local"
		}, "no Service kubeflow/authservice is rendered", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r *rendering
			if tc.deleteObjs {
				r = &rendering{Name: tc.c.name() + " (broken)"}
				for _, o := range tc.c.Objects.Objects {
					if !(o.Kind == tc.kind && o.Name == tc.obj) {
						r.Objects = append(r.Objects, o)
					}
				}
			} else {
				r = mutated(t, tc.c.Objects, tc.kind, tc.obj, tc.f)
			}
			wantComposition(t, tc.c, r, tc.want)
		})
	}
	// Kubeflow's own composition has no service to check at all.
	t.Run("stock composition", func(t *testing.T) {
		wantComposition(t, master, master.StockRender, "no Deployment runs "+ourImage)
	})
	// A swap that changes another line than the authenticator's.
	t.Run("two lines", func(t *testing.T) {
		c := *master
		c.Changed = 2
		wantComposition(t, &c, master.Objects, "changes 2 lines")
	})
}
