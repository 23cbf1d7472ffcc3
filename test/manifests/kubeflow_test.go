package manifests

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/config"
)

// kubeflowView is a swapped composition seen from the service: its
// workload, its environment and settings, and the gateway around it.
type kubeflowView struct {
	r        *rendering
	deploy   *appsv1.Deployment
	ns       string
	env      map[string]string
	settings *config.Settings
	loadErr  error
	gateway  map[string]string // pod labels of the ingress gateway
	mesh     *meshv1alpha1.MeshConfig
	meshErr  error
}

const ourImage = "ghcr.io/oidc-authservice/oidc-authservice:"

// newView finds the service in a rendering and computes its environment as
// the kubelet would (envFrom in order, then env, valueFrom resolved).
func newView(t *testing.T, r *rendering) (*kubeflowView, error) {
	t.Helper()
	v := &kubeflowView{r: r, env: map[string]string{}}
	for _, o := range r.all("Deployment") {
		d := typed[appsv1.Deployment](o)
		if len(d.Spec.Template.Spec.Containers) > 0 && strings.HasPrefix(d.Spec.Template.Spec.Containers[0].Image, ourImage) {
			if v.deploy != nil {
				return nil, fmt.Errorf("two Deployments of the service: %s and %s", v.deploy.Name, d.Name)
			}
			v.deploy, v.ns = d, o.Namespace
		}
		if o.Namespace == "istio-system" && o.Name == "istio-ingressgateway" {
			v.gateway = d.Spec.Template.Labels
		}
	}
	if v.deploy == nil {
		return nil, fmt.Errorf("no Deployment runs %s", ourImage)
	}
	if v.gateway == nil {
		return nil, fmt.Errorf("no Deployment istio-system/istio-ingressgateway")
	}
	c := v.deploy.Spec.Template.Spec.Containers[0]
	for _, ef := range c.EnvFrom {
		switch {
		case ef.SecretRef != nil:
			o := r.findIn("Secret", v.ns, ef.SecretRef.Name)
			if o == nil {
				return nil, fmt.Errorf("envFrom Secret %s not rendered", ef.SecretRef.Name)
			}
			for k, b := range typed[corev1.Secret](o).Data {
				v.env[k] = string(b)
			}
		case ef.ConfigMapRef != nil:
			o := r.findIn("ConfigMap", v.ns, ef.ConfigMapRef.Name)
			if o == nil {
				return nil, fmt.Errorf("envFrom ConfigMap %s not rendered", ef.ConfigMapRef.Name)
			}
			for k, s := range typed[corev1.ConfigMap](o).Data {
				v.env[k] = s
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			v.env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			o := r.findIn("ConfigMap", v.ns, ref.Name)
			if o == nil {
				return nil, fmt.Errorf("env %s: ConfigMap %s not rendered", e.Name, ref.Name)
			}
			val, ok := typed[corev1.ConfigMap](o).Data[ref.Key]
			if !ok {
				return nil, fmt.Errorf("env %s: ConfigMap %s has no key %s", e.Name, ref.Name, ref.Key)
			}
			v.env[e.Name] = val
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			o := r.findIn("Secret", v.ns, ref.Name)
			if o == nil {
				return nil, fmt.Errorf("env %s: Secret %s not rendered", e.Name, ref.Name)
			}
			v.env[e.Name] = string(typed[corev1.Secret](o).Data[ref.Key])
		}
	}
	delete(v.env, "GOMEMLIMIT") // the Go runtime's, not a setting
	v.settings, v.loadErr = loadSettings(t, v.env)
	if cm := r.findIn("ConfigMap", "istio-system", "istio"); cm != nil {
		v.mesh, v.meshErr = decodeMesh([]byte(typed[corev1.ConfigMap](cm).Data["mesh"]))
	}
	return v, nil
}

// loadSettings is check-config's offline validation (config.Load) of env,
// with no other variable of the service set.
func loadSettings(t *testing.T, env map[string]string) (*config.Settings, error) {
	t.Helper()
	return config.Load(config.FromMap(env))
}

// dashboardNames are the central dashboard's Deployment in the kubeflow
// namespace: centraldashboard up to Kubeflow 26.03, dashboard for the
// dashboard v2 of master (applications/dashboard).
var dashboardNames = []string{"centraldashboard", "dashboard"}

// dashboard is the rendered central dashboard's Deployment.
func dashboard(r *rendering) *object {
	for _, n := range dashboardNames {
		if d := r.findIn("Deployment", "kubeflow", n); d != nil {
			return d
		}
	}
	return nil
}

func (r *rendering) findIn(kind, namespace, name string) *object {
	for _, o := range r.Objects {
		if o.Kind == kind && o.Namespace == namespace && o.Name == name {
			return o
		}
	}
	return nil
}

// appliesToGateway: a policy in the root namespace without selector, or one
// whose selector the gateway's labels satisfy.
func (v *kubeflowView) appliesToGateway(o *object) bool {
	if o.Namespace != "istio-system" {
		return false
	}
	sel := dig(o.Map, "spec", "selector", "matchLabels")
	for k, want := range sel {
		if v.gateway[k] != want {
			return false
		}
	}
	return true
}

func (v *kubeflowView) policies(action string) []*object {
	var out []*object
	for _, o := range v.r.all("AuthorizationPolicy") {
		a, _ := dig(o.Map, "spec")["action"].(string)
		if a == "" {
			a = "ALLOW"
		}
		if a == action && v.appliesToGateway(o) {
			out = append(out, o)
		}
	}
	return out
}

// reachesCheck resolves host:port (a Service's cluster DNS name) to a
// rendered Service and reports whether it reaches the service's check port.
func (v *kubeflowView) reachesCheck(host string, port int32) error {
	return v.reachesPort(host, port, int32(v.settings.Servers.CheckPort), "SERVER_PORT")
}

// reachesGRPC is reachesCheck for the gRPC check port (GRPC_PORT).
func (v *kubeflowView) reachesGRPC(host string, port int32) error {
	return v.reachesPort(host, port, int32(v.settings.Servers.GRPCPort), "GRPC_PORT")
}

func (v *kubeflowView) reachesPort(host string, port, want int32, setting string) error {
	parts := strings.Split(host, ".")
	if len(parts) < 2 {
		return fmt.Errorf("%s is not <service>.<namespace>[.svc.cluster.local]", host)
	}
	so := v.r.findIn("Service", parts[1], parts[0])
	if so == nil {
		return fmt.Errorf("no Service %s/%s is rendered", parts[1], parts[0])
	}
	svc := typed[corev1.Service](so)
	if !selectsMap(svc.Spec.Selector, v.deploy.Spec.Template.Labels) {
		return fmt.Errorf("Service %s/%s selects %v, not the service's pods", parts[1], parts[0], svc.Spec.Selector)
	}
	for _, p := range svc.Spec.Ports {
		if p.Port != port {
			continue
		}
		if got := v.containerPort(p.TargetPort); got != want || want == 0 {
			return fmt.Errorf("Service %s/%s port %d goes to container port %d, not %s %d", parts[1], parts[0], port, got, setting, want)
		}
		return nil
	}
	return fmt.Errorf("Service %s/%s has no port %d", parts[1], parts[0], port)
}

func (v *kubeflowView) containerPort(tp intstr.IntOrString) int32 {
	if tp.Type == intstr.Int {
		return tp.IntVal
	}
	for _, p := range v.deploy.Spec.Template.Spec.Containers[0].Ports {
		if p.Name == tp.StrVal {
			return p.ContainerPort
		}
	}
	return 0
}

func selectsMap(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, val := range sel {
		if labels[k] != val {
			return false
		}
	}
	return true
}

// provider is the extension provider a CUSTOM policy names, when it reaches
// the service.
func (v *kubeflowView) provider(name string) *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationHttpProvider {
	for _, p := range v.mesh.GetExtensionProviders() {
		if p.GetName() == name {
			return p.GetEnvoyExtAuthzHttp()
		}
	}
	return nil
}

// grpcProvider is the gRPC extension provider a CUSTOM policy names, or
// nil.
func (v *kubeflowView) grpcProvider(name string) *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider {
	for _, p := range v.mesh.GetExtensionProviders() {
		if p.GetName() == name {
			return p.GetEnvoyExtAuthzGrpc()
		}
	}
	return nil
}

// grpcCluster is the Service address (host, port) of an ext_authz
// filter's gRPC cluster (outbound|<port>||<host>, Istio's name), or an
// error.
func grpcCluster(ea *extauthzv3.ExtAuthz) (string, int32, error) {
	c := ea.GetGrpcService().GetEnvoyGrpc().GetClusterName()
	parts := strings.Split(c, "|")
	if len(parts) != 4 || parts[0] != "outbound" {
		return "", 0, fmt.Errorf("grpc_service cluster %q is not one Istio builds (outbound|<port>||<host>)", c)
	}
	n, err := strconv.Atoi(parts[1])
	return parts[3], int32(n), err
}

// routedToCheck reports whether a VirtualService routes path to the
// service's check port.
func (v *kubeflowView) routedToCheck(path string) bool {
	for _, o := range v.r.all("VirtualService") {
		for _, h := range asList(dig(o.Map, "spec")["http"]) {
			route := h.(map[string]any)
			matched := false
			for _, m := range asList(route["match"]) {
				uri := dig(m.(map[string]any), "uri")
				if p, ok := uri["prefix"].(string); ok && strings.HasPrefix(path, p) {
					matched = true
				}
				if e, ok := uri["exact"].(string); ok && path == e {
					matched = true
				}
			}
			if !matched {
				continue
			}
			for _, d := range asList(route["route"]) {
				dst := dig(d.(map[string]any), "destination")
				port, _ := dig(dst, "port")["number"].(float64)
				if host, ok := dst["host"].(string); ok && v.reachesCheck(host, int32(port)) == nil {
					return true
				}
			}
		}
	}
	return false
}

// checked reports whether the gateway asks the service about a request
// (a CUSTOM policy for a provider that reaches it, or an EnvoyFilter).
func (v *kubeflowView) checked(r request) (bool, error) {
	if len(v.extAuthzFilters()) > 0 {
		return true, nil
	}
	for _, o := range v.policies("CUSTOM") {
		name := fmt.Sprint(dig(o.Map, "spec", "provider")["name"])
		p, gp := v.provider(name), v.grpcProvider(name)
		if (p == nil || v.reachesCheck(p.GetService(), int32(p.GetPort())) != nil) &&
			(gp == nil || v.reachesGRPC(gp.GetService(), int32(gp.GetPort())) != nil) {
			continue
		}
		ok, err := policyApplies(o.Map["spec"].(map[string]any), r)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// reaches reports whether a request for path without a JWT gets to the
// service: routed to it, or checked by it (CUSTOM runs before DENY, and the
// service's answer to its own paths is never a 200).
func (v *kubeflowView) reaches(r request) (bool, error) {
	if v.routedToCheck(r.path) {
		for _, d := range v.policies("DENY") {
			if denied, err := policyApplies(d.Map["spec"].(map[string]any), r); err != nil || denied {
				return false, err
			}
		}
		return true, nil
	}
	return v.checked(r)
}

// extAuthzFilters are the EnvoyFilters that insert an ext_authz filter (not
// Istio's own stats and Lua filters).
func (v *kubeflowView) extAuthzFilters() []*object {
	var out []*object
	for _, o := range v.r.all("EnvoyFilter") {
		for _, p := range asList(dig(o.Map, "spec")["configPatches"]) {
			if dig(p.(map[string]any), "patch", "value")["name"] == "envoy.filters.http.ext_authz" {
				out = append(out, o)
				break
			}
		}
	}
	return out
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// produced is what the service's allow answer carries, per its settings:
// the identity headers, and the request's Cookie header without the
// service's own cookies.
func (v *kubeflowView) produced() []string {
	s := v.settings
	out := []string{strings.ToLower(s.Identity.UserHeader), strings.ToLower(s.Identity.GroupsHeader), "cookie"}
	if s.Upstream.Mode != "none" {
		out = append(out, "authorization")
	}
	if s.Identity.AuthRequestHeaders {
		out = append(out, "x-auth-request-user", "x-auth-request-email", "x-auth-request-groups")
	}
	return out
}

// notProduced are headers Kubeflow's provider lets through that no
// authenticator sets and nothing reads: oauth2-proxy never sets "path"
// either (and a header named path is not the request's :path).
var notProduced = map[string]string{"path": "oauth2-proxy never sets it; no Kubeflow component reads it"}

// TestKubeflowCompositions: every release from 1.8.1 to master, composed
// with the one-line swap, keeps working as Kubeflow's design expects.
func TestKubeflowCompositions(t *testing.T) {
	for _, c := range composeAll(t) {
		t.Run(c.name(), func(t *testing.T) {
			if c.Err != nil {
				t.Fatal(c.Err)
			}
			for _, err := range checkComposition(t, c, c.Objects) {
				t.Error(err)
			}
			if c.WithDex != nil {
				for _, err := range checkComposition(t, c, c.WithDex) {
					t.Errorf("with %s: %v", c.Dex, err)
				}
				for _, err := range checkDexCLI(c) {
					t.Error(err)
				}
			}
		})
	}
}

// checkComposition runs every check of docs/compatibility.md on one
// rendering of a composition.
func checkComposition(t *testing.T, c *composed, r *rendering) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Changed != c.Lines {
		bad("the swap changes %d lines of example/kustomization.yaml, want %d", c.Changed, c.Lines)
	}
	seen := map[string]bool{}
	for _, o := range r.Objects {
		if seen[o.id()] {
			bad("%s rendered twice", o.id())
		}
		seen[o.id()] = true
		switch o.Kind {
		case "AuthorizationPolicy", "RequestAuthentication", "VirtualService":
			for _, e := range validateObject(o) {
				bad("%s: %v", o.id(), e)
			}
		}
	}
	v, err := newView(t, r)
	if err != nil {
		return append(errs, err)
	}
	for _, o := range r.all("Deployment") {
		for _, ctr := range typed[appsv1.Deployment](o).Spec.Template.Spec.Containers {
			if strings.HasPrefix(ctr.Image, ourImage) && (strings.HasSuffix(ctr.Image, ":latest") || ctr.Image == ourImage) {
				bad("%s: image %s is not pinned to a version", o.id(), ctr.Image)
			}
		}
	}
	// check-config's offline validation.
	if v.loadErr != nil {
		return append(errs, fmt.Errorf("the service's rendered environment fails check-config's validation: %v", v.loadErr))
	}
	for _, ig := range v.settings.Ignored {
		bad("the rendered environment sets %s, which the service ignores: %s", ig.Name, ig.Why)
	}
	errs = append(errs, checkGatewayAuth(v)...)
	errs = append(errs, checkDexClient(v)...)
	errs = append(errs, checkRoutes(v)...)
	errs = append(errs, checkIdentityChain(v)...)
	errs = append(errs, checkBearerChain(v)...)
	errs = append(errs, checkNetworkPolicies(v)...)
	errs = append(errs, checkNothingMissing(c, r, v)...)
	errs = append(errs, checkUpstreamCredentials(v)...)
	errs = append(errs, checkServiceIsolation(v)...)
	return errs
}

// checkGatewayAuth: every CUSTOM policy names a declared provider, the
// providers (or the EnvoyFilter) reach the service's check port, and every
// header the gateway lets through on allow is one the service produces.
func checkGatewayAuth(v *kubeflowView) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	ours := 0
	custom := v.policies("CUSTOM")
	if len(custom) > 0 && (v.mesh == nil || v.meshErr != nil) {
		return []error{fmt.Errorf("CUSTOM policies but no valid mesh configuration (ConfigMap istio-system/istio): %v", v.meshErr)}
	}
	providers := map[string]bool{}
	for _, o := range custom {
		name := fmt.Sprint(dig(o.Map, "spec", "provider")["name"])
		providers[name] = true
		if gp := v.grpcProvider(name); gp != nil {
			if err := v.reachesGRPC(gp.GetService(), int32(gp.GetPort())); err != nil {
				bad("%s: gRPC provider %s at %s:%d: %v", o.id(), name, gp.GetService(), gp.GetPort(), err)
				continue
			}
			ours++
			continue
		}
		p := v.provider(name)
		if p == nil {
			bad("%s names provider %q, which the mesh configuration does not declare", o.id(), name)
			continue
		}
		if err := v.reachesCheck(p.GetService(), int32(p.GetPort())); err != nil {
			bad("%s: provider %s at %s:%d: %v", o.id(), name, p.GetService(), p.GetPort(), err)
			continue
		}
		ours++
	}
	if len(providers) > 1 {
		bad("several CUSTOM providers on the gateway %v: Istio refuses that", sortedKeys(providers))
	}
	for name := range providers {
		if gp := v.grpcProvider(name); gp != nil {
			// Over gRPC there are no lists: every request header goes to
			// the check, every header of its answer is applied, a renewed
			// cookie reaches the browser on allow.
			if gp.GetFailOpen() {
				bad("provider %s: failOpen lets requests through when the service is down", name)
			}
			if t := gp.GetTimeout(); t == nil || t.AsDuration() < 5*time.Second {
				bad("provider %s: timeout %v; a callback waits for the provider, use 10s", name, t.AsDuration())
			}
			if gp.GetIncludeRequestBodyInCheck() != nil {
				bad("provider %s sends the request body, which the check never reads", name)
			}
			continue
		}
		p := v.provider(name)
		if p == nil {
			continue
		}
		if p.GetFailOpen() {
			bad("provider %s: failOpen lets requests through when the service is down", name)
		}
		for _, h := range p.GetHeadersToUpstreamOnAllow() {
			h = strings.ToLower(h)
			if !slices.Contains(v.produced(), h) && notProduced[h] == "" {
				bad("provider %s lets %s through on allow, which the service does not produce", name, h)
			}
		}
		for _, h := range []string{"cookie"} {
			if !slices.Contains(lower(p.GetIncludeRequestHeadersInCheck()), h) {
				bad("provider %s does not send %s to the check", name, h)
			}
		}
		// Where the provider is ours (it sends accept, which Kubeflow's
		// own never lists: the recommended layout's kubeflow-istio-install,
		// kubeflow-jwt), the client's trace context reaches the check too.
		if inc := lower(p.GetIncludeRequestHeadersInCheck()); slices.Contains(inc, "accept") {
			for _, h := range traceHeaders {
				if !slices.Contains(inc, h) {
					bad("provider %s does not send %s to the check (docs/operations.md, Traces)", name, h)
				}
			}
		}
		if deny := lower(p.GetHeadersToDownstreamOnDeny()); len(deny) > 0 && !slices.Contains(deny, "set-cookie") {
			bad("provider %s does not pass set-cookie on deny: the login state cookie would be lost", name)
		}
		if v.settings.Sessions.RenewRedirect && slices.Contains(lower(p.GetHeadersToDownstreamOnAllow()), "set-cookie") {
			bad("provider %s passes set-cookie on allow: SESSION_RENEW_REDIRECT is not needed", name)
		}
		if !v.settings.Sessions.RenewRedirect && !slices.Contains(lower(p.GetHeadersToDownstreamOnAllow()), "set-cookie") {
			bad("provider %s passes no set-cookie on allow: renewed sessions need SESSION_RENEW_REDIRECT=true", name)
		}
	}
	for _, o := range v.extAuthzFilters() {
		value := dig(asList(dig(o.Map, "spec")["configPatches"])[0].(map[string]any), "patch", "value")
		ea, verrs := decodeExtAuthz(value)
		errs = append(errs, verrs...)
		if ea == nil {
			continue
		}
		if ea.GetGrpcService() != nil {
			host, port, err := grpcCluster(ea)
			if err == nil {
				err = v.reachesGRPC(host, port)
			}
			if err != nil {
				bad("%s: %v", o.id(), err)
				continue
			}
			ours++
			continue
		}
		u, err := url.Parse(ea.GetHttpService().GetServerUri().GetUri())
		if err != nil {
			bad("%s: %v", o.id(), err)
			continue
		}
		port := int32(80)
		if u.Port() != "" {
			n, _ := strconv.Atoi(u.Port())
			port = int32(n)
		}
		if c := ea.GetHttpService().GetServerUri().GetCluster(); strings.HasPrefix(c, "outbound|") {
			n, _ := strconv.Atoi(strings.Split(c, "|")[1])
			port = int32(n) // Istio routes by the cluster's port
		}
		if err := v.reachesCheck(u.Hostname(), port); err != nil {
			bad("%s: %v", o.id(), err)
			continue
		}
		up, _ := exactHeaders("allowed_upstream_headers", ea.GetHttpService().GetAuthorizationResponse().GetAllowedUpstreamHeaders())
		for _, h := range []string{strings.ToLower(v.settings.Identity.UserHeader), strings.ToLower(v.settings.Identity.GroupsHeader)} {
			if !slices.Contains(up, h) {
				bad("%s does not let %s through on allow", o.id(), h)
			}
		}
		// Ours (it passes accept): the client's trace context too.
		if req, _ := exactHeaders("allowed_headers", firstMatcher(ea.GetAllowedHeaders(), ea.GetHttpService().GetAuthorizationRequest().GetAllowedHeaders())); slices.Contains(req, "accept") {
			for _, h := range traceHeaders {
				if !slices.Contains(req, h) {
					bad("%s does not pass %s to the check (docs/operations.md, Traces)", o.id(), h)
				}
			}
		}
		ours++
	}
	if ours == 0 {
		bad("no CUSTOM policy and no EnvoyFilter makes the gateway ask the service")
	}
	if ours > 1 {
		bad("the gateway asks the service %d times per request", ours)
	}
	return errs
}

// usesGRPC reports whether the gateway asks the service over gRPC (a
// CUSTOM policy for a gRPC provider, or an ext_authz filter with
// grpc_service).
func (v *kubeflowView) usesGRPC() bool {
	for _, o := range v.policies("CUSTOM") {
		if v.grpcProvider(fmt.Sprint(dig(o.Map, "spec", "provider")["name"])) != nil {
			return true
		}
	}
	for _, o := range v.extAuthzFilters() {
		value := dig(asList(dig(o.Map, "spec")["configPatches"])[0].(map[string]any), "patch", "value")
		if ea, _ := decodeExtAuthz(value); ea.GetGrpcService() != nil {
			return true
		}
	}
	return false
}

func lower(l []string) []string {
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = strings.ToLower(s)
	}
	return out
}

// dexClient is a static client of Dex's configuration.
type dexClient struct {
	ID           string   `json:"id"`
	IDEnv        string   `json:"idEnv"`
	Secret       string   `json:"secret"`
	SecretEnv    string   `json:"secretEnv"`
	Name         string   `json:"name"`
	RedirectURIs []string `json:"redirectURIs"`
	TrustedPeers []string `json:"trustedPeers"`
	Public       bool     `json:"public"`
}

// dexConfig reads Dex's config.yaml from the rendering and the environment
// of Dex's Deployment (its idEnv/secretEnv values).
func dexConfig(r *rendering) (map[string]any, []dexClient, map[string]string, error) {
	cm := r.findIn("ConfigMap", "auth", "dex")
	if cm == nil {
		return nil, nil, nil, fmt.Errorf("no ConfigMap auth/dex")
	}
	raw := typed[corev1.ConfigMap](cm).Data["config.yaml"]
	var whole map[string]any
	if err := yaml.Unmarshal([]byte(raw), &whole); err != nil {
		return nil, nil, nil, fmt.Errorf("Dex's config.yaml: %v", err)
	}
	var cfg struct {
		StaticClients []dexClient `json:"staticClients"`
	}
	if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil {
		return nil, nil, nil, err
	}
	env := map[string]string{}
	if d := r.findIn("Deployment", "auth", "dex"); d != nil {
		for _, c := range typed[appsv1.Deployment](d).Spec.Template.Spec.Containers {
			for _, ef := range c.EnvFrom {
				if ef.SecretRef != nil {
					if s := r.findIn("Secret", "auth", ef.SecretRef.Name); s != nil {
						for k, b := range typed[corev1.Secret](s).Data {
							env[k] = string(b)
						}
					}
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					env[e.Name] = e.Value
				}
			}
		}
	}
	for i := range cfg.StaticClients {
		c := &cfg.StaticClients[i]
		if c.IDEnv != "" {
			c.ID = env[c.IDEnv]
		}
		if c.SecretEnv != "" {
			c.Secret = env[c.SecretEnv]
		}
	}
	return whole, cfg.StaticClients, env, nil
}

// checkDexClient: Dex's static client is the service's (id, secret) and
// registers its redirect URI exactly (Dex compares it literally).
func checkDexClient(v *kubeflowView) []error {
	_, clients, _, err := dexConfig(v.r)
	if err != nil {
		return []error{err}
	}
	for _, c := range clients {
		if c.ID != v.settings.Provider.ClientID {
			continue
		}
		var errs []error
		if c.Secret != v.settings.Provider.ClientSecret {
			errs = append(errs, fmt.Errorf("Dex's client %s has another secret than CLIENT_SECRET", c.ID))
		}
		if !slices.Contains(c.RedirectURIs, v.settings.Provider.RedirectURL) {
			errs = append(errs, fmt.Errorf("Dex's client %s registers %v, not REDIRECT_URL %q", c.ID, c.RedirectURIs, v.settings.Provider.RedirectURL))
		}
		return errs
	}
	return []error{fmt.Errorf("Dex has no static client %q (CLIENT_ID)", v.settings.Provider.ClientID)}
}

// checkDexCLI: the Dex component registers the public kubeflow-cli client,
// trusted by the gateway's client, and changes nothing else of Kubeflow's
// configuration.
func checkDexCLI(c *composed) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	stock, stockClients, _, err := dexConfig(c.Objects)
	if err != nil {
		return []error{err}
	}
	with, clients, _, err := dexConfig(c.WithDex)
	if err != nil {
		return []error{err}
	}
	var cli *dexClient
	for i := range clients {
		if clients[i].ID == "kubeflow-cli" {
			cli = &clients[i]
		}
	}
	switch {
	case cli == nil:
		bad("%s registers no client kubeflow-cli", c.Dex)
	case !cli.Public || cli.Secret != "" || cli.SecretEnv != "":
		bad("kubeflow-cli must be public, without secret: %+v", *cli)
	case len(cli.RedirectURIs) > 0:
		bad("kubeflow-cli must list no redirectURIs: with any, Dex refuses loopback redirects on other ports")
	}
	if len(clients) != len(stockClients)+1 {
		bad("%s: %d clients, want Kubeflow's %d plus kubeflow-cli", c.Dex, len(clients), len(stockClients))
	}
	for _, g := range clients {
		if g.ID == "kubeflow-cli" {
			continue
		}
		if !slices.Contains(g.TrustedPeers, "kubeflow-cli") {
			bad("Dex's client %s does not list kubeflow-cli in trustedPeers", g.ID)
		}
	}
	// Nothing else changed: remove the additions and compare with Kubeflow's.
	sc := asList(with["staticClients"])
	var kept []any
	for _, x := range sc {
		m := x.(map[string]any)
		if m["id"] == "kubeflow-cli" {
			continue
		}
		delete(m, "trustedPeers")
		kept = append(kept, m)
	}
	with["staticClients"] = kept
	if !reflect.DeepEqual(normalizeJSON(with), normalizeJSON(stock)) {
		bad("%s changes Dex's configuration beyond the kubeflow-cli client: Kubeflow's is %v, the component's (additions removed) %v", c.Dex, stock, with)
	}
	return errs
}

func normalizeJSON(v any) any {
	b, _ := json.Marshal(v)
	var out any
	json.Unmarshal(b, &out)
	return out
}

// checkRoutes: the callback, logout (the dashboard's LOGOUT_URL) and login
// start reach the service; Dex's pages are neither checked nor denied.
func checkRoutes(v *kubeflowView) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	d := dashboard(v.r)
	if d == nil {
		return []error{fmt.Errorf("no dashboard Deployment (kubeflow/%s)", strings.Join(dashboardNames, " or kubeflow/"))}
	}
	logout := ""
	for _, e := range typed[appsv1.Deployment](d).Spec.Template.Spec.Containers[0].Env {
		if e.Name == "LOGOUT_URL" {
			logout = e.Value
		}
	}
	if logout != v.settings.Paths.Logout {
		bad("the dashboard logs out at LOGOUT_URL=%q, the service serves logout at %q", logout, v.settings.Paths.Logout)
	}
	for _, p := range []struct {
		what string
		r    request
	}{
		{"the callback (REDIRECT_URL)", request{path: v.settings.Paths.Callback}},
		{"logout, GET (dashboard 1.10+)", request{path: v.settings.Paths.Logout}},
		{"logout, POST with Authorization (dashboards before 1.10)", request{path: v.settings.Paths.Logout, authorization: true}},
		{"the login start", request{path: v.settings.Paths.Start}},
		{"a page of Kubeflow", request{path: "/jupyter/"}},
	} {
		ok, err := v.reaches(p.r)
		if err != nil {
			bad("%s: %v", p.what, err)
		} else if !ok {
			bad("%s: %s does not reach the service", p.what, p.r.path)
		}
	}
	// Dex's pages carry no session: the gateway must not ask the service
	// about them, or the service must let them through (SKIP_AUTH_URLS), as
	// on Kubeflow ≤ 1.9.0 where every request is checked.
	if checked, err := v.checked(request{path: "/dex/auth"}); err != nil {
		bad("Dex's login page: %v", err)
	} else if checked && !skipped(v.settings.Paths.Skip, "/dex/auth") {
		bad("Dex's login page is checked and SKIP_AUTH_URLS %v does not let it through: nobody could log in", v.settings.Paths.Skip)
	}
	for _, o := range v.policies("DENY") {
		if denied, err := policyApplies(o.Map["spec"].(map[string]any), request{path: "/dex/auth"}); err != nil || denied {
			bad("%s denies Dex's login page (%v)", o.id(), err)
		}
	}
	return errs
}

// skipped reports whether a SKIP_AUTH_URLS prefix lets path through, as the
// service matches them: a prefix ending in "/" matches what starts with it,
// another one that path and its sub-paths.
func skipped(prefixes []string, path string) bool {
	for _, p := range prefixes {
		if strings.HasSuffix(p, "/") && strings.HasPrefix(path, p) || path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}

// checkBearerChain: where the gateway asks the service about requests that
// carry a bearer token (Kubeflow 1.9.0's oauth2-proxy design checks every
// request), a token the service refuses never reaches Istio. So the service
// accepts the tokens of every issuer a RequestAuthentication of the gateway
// verifies (with an audience that rule accepts), and the issuer and audience
// pairs of oauth2-proxy's EXTRA_JWT_ISSUERS in ConfigMap
// oauth2-proxy-parameters, which said which tokens passed before.
func checkBearerChain(v *kubeflowView) []error {
	checked, err := v.checked(request{path: "/pipeline/apis/v2beta1/runs", authorization: true})
	if err != nil || !checked {
		return nil
	}
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, err := v.acceptedBearers(); err != nil {
		return []error{err}
	}
	accepts := v.acceptsBearer
	for _, o := range v.r.all("RequestAuthentication") {
		if !v.appliesToGateway(o) {
			continue
		}
		for _, jr := range asList(dig(o.Map, "spec")["jwtRules"]) {
			rule := jr.(map[string]any)
			if err := accepts(fmt.Sprint(rule["issuer"]), toStrings(asList(rule["audiences"]))); err != nil {
				bad("%s verifies tokens the check refuses first: %v", o.id(), err)
			}
		}
	}
	for _, cm := range v.r.all("ConfigMap") {
		if cm.Namespace != v.ns || hashSuffix.ReplaceAllString(cm.Name, "") != "oauth2-proxy-parameters" {
			continue
		}
		for _, pair := range strings.Split(typed[corev1.ConfigMap](cm).Data["EXTRA_JWT_ISSUERS"], ",") {
			if pair = strings.TrimSpace(pair); pair == "" {
				continue
			}
			iss, aud, ok := strings.Cut(pair, "=")
			if !ok {
				bad("EXTRA_JWT_ISSUERS: %q is not issuer=audience", pair)
				continue
			}
			if err := accepts(iss, []string{aud}); err != nil {
				bad("oauth2-proxy accepted EXTRA_JWT_ISSUERS %s: %v", pair, err)
			}
		}
	}
	return errs
}

// acceptedBearers are the bearer tokens the service accepts: issuer ->
// audiences (the provider's ID tokens, AUTHENTICATION_CONFIG_FILE's issuers).
func (v *kubeflowView) acceptedBearers() (map[string][]string, error) {
	accepted := map[string][]string{}
	if b := v.settings.Bearer; b.AcceptProviderIDTokens {
		accepted[v.settings.Provider.Issuer] = b.ProviderTokenAudiences
	}
	if f := v.settings.Bearer.AuthenticationConfigFile; f != "" {
		content, err := v.mountedFile(f)
		if err != nil {
			return nil, fmt.Errorf("AUTHENTICATION_CONFIG_FILE: %v", err)
		}
		cfg, _, err := authn.Parse([]byte(content))
		if err != nil {
			return nil, fmt.Errorf("AUTHENTICATION_CONFIG_FILE %s: %v", f, err)
		}
		for _, j := range cfg.JWT {
			accepted[j.Issuer.URL] = j.Issuer.Audiences
		}
	}
	return accepted, nil
}

// acceptsBearer reports why the service would refuse a token of issuer iss
// for one of auds (any audience when auds is empty), or nil.
func (v *kubeflowView) acceptsBearer(iss string, auds []string) error {
	accepted, err := v.acceptedBearers()
	if err != nil {
		return err
	}
	have, ok := accepted[iss]
	switch {
	case !ok && v.settings.Bearer.TokenReview && iss != v.settings.Provider.Issuer:
		return nil // TokenReview: the cluster's own issuer, whatever it is
	case !ok:
		return fmt.Errorf("the service accepts no bearer token of issuer %s (accepted: %v)", iss, sortedKeys(accepted))
	case len(auds) > 0 && !slices.ContainsFunc(auds, func(a string) bool { return slices.Contains(have, a) }):
		return fmt.Errorf("the service accepts tokens of issuer %s for audiences %v, none of %v", iss, have, auds)
	}
	return nil
}

// mountedFile is the content of a file of the service's container, read from
// the rendered ConfigMap or Secret mounted where it lies.
func (v *kubeflowView) mountedFile(file string) (string, error) {
	dir, base := path.Split(file)
	dir = strings.TrimSuffix(dir, "/")
	pod := v.deploy.Spec.Template.Spec
	for _, m := range pod.Containers[0].VolumeMounts {
		if m.MountPath != dir {
			continue
		}
		for _, vol := range pod.Volumes {
			if vol.Name != m.Name {
				continue
			}
			var kind, name string
			var items []corev1.KeyToPath
			switch {
			case vol.ConfigMap != nil:
				kind, name, items = "ConfigMap", vol.ConfigMap.Name, vol.ConfigMap.Items
			case vol.Secret != nil:
				kind, name, items = "Secret", vol.Secret.SecretName, vol.Secret.Items
			default:
				return "", fmt.Errorf("%s: volume %s is neither a ConfigMap nor a Secret", file, vol.Name)
			}
			key := base
			for _, it := range items {
				if it.Path == base {
					key = it.Key
				}
			}
			o := v.r.findIn(kind, v.ns, name)
			if o == nil {
				return "", fmt.Errorf("%s: %s %s is not rendered", file, kind, name)
			}
			if kind == "Secret" {
				if b, ok := typed[corev1.Secret](o).Data[key]; ok {
					return string(b), nil
				}
			} else if c, ok := typed[corev1.ConfigMap](o).Data[key]; ok {
				return c, nil
			}
			return "", fmt.Errorf("%s: %s %s has no key %s", file, kind, name, key)
		}
	}
	return "", fmt.Errorf("%s: nothing is mounted at %s", file, dir)
}

// checkIdentityChain: where Istio turns the token the service hands upstream
// into kubeflow-userid (UPSTREAM_TOKEN=id_token), a RequestAuthentication of
// the gateway verifies that token where it is put and maps the same claim the
// service would, and the DENY policy lets such requests through.
func checkIdentityChain(v *kubeflowView) []error {
	s := v.settings
	if s.Upstream.Mode != "id_token" {
		return nil
	}
	var errs []error
	found := false
	for _, o := range v.r.all("RequestAuthentication") {
		if !v.appliesToGateway(o) {
			continue
		}
		for _, jr := range asList(dig(o.Map, "spec")["jwtRules"]) {
			rule := jr.(map[string]any)
			if rule["issuer"] != s.Provider.Issuer {
				continue
			}
			found = true
			fromAuth := len(asList(rule["fromHeaders"])) == 0
			for _, h := range asList(rule["fromHeaders"]) {
				hm := h.(map[string]any)
				if strings.EqualFold(fmt.Sprint(hm["name"]), "authorization") && hm["prefix"] == "Bearer " {
					fromAuth = true
				}
			}
			if !fromAuth {
				errs = append(errs, fmt.Errorf("%s does not read the token from Authorization: Bearer, where the service puts it", o.id()))
			}
			if a := asList(rule["audiences"]); len(a) > 0 && !slices.Contains(toStrings(a), s.Provider.ClientID) {
				errs = append(errs, fmt.Errorf("%s: audiences %v exclude the ID token's (CLIENT_ID %s)", o.id(), a, s.Provider.ClientID))
			}
			claims := map[string]string{}
			for _, m := range asList(rule["outputClaimToHeaders"]) {
				mm := m.(map[string]any)
				claims[strings.ToLower(fmt.Sprint(mm["header"]))] = fmt.Sprint(mm["claim"])
			}
			if claims[strings.ToLower(s.Identity.UserHeader)] != s.Identity.UserClaim {
				errs = append(errs, fmt.Errorf("%s maps %s from claim %q, the service's USERID_CLAIM is %q", o.id(), s.Identity.UserHeader, claims[strings.ToLower(s.Identity.UserHeader)], s.Identity.UserClaim))
			}
		}
	}
	if !found {
		errs = append(errs, fmt.Errorf("UPSTREAM_TOKEN=id_token, but no RequestAuthentication of the gateway verifies issuer %s", s.Provider.Issuer))
	}
	for _, o := range v.policies("DENY") {
		if denied, err := policyApplies(o.Map["spec"].(map[string]any), request{path: "/jupyter/", principal: true}); err != nil || denied {
			errs = append(errs, fmt.Errorf("%s denies a request with a verified token (%v)", o.id(), err))
		}
	}
	return errs
}

// checkNetworkPolicies: where Dex or the service's namespace is isolated,
// the policies admit the service to Dex and the gateway to the service.
func checkNetworkPolicies(v *kubeflowView) []error {
	var errs []error
	dexNS := "auth"
	nsLabels := func(ns string) map[string]string { return map[string]string{"kubernetes.io/metadata.name": ns} }
	admitted := func(ns string, pod map[string]string, fromNS string, from map[string]string, port int32) (bool, bool) {
		isolated, ok := false, false
		for _, o := range v.r.all("NetworkPolicy") {
			if o.Namespace != ns {
				continue
			}
			np := typed[networkingv1.NetworkPolicy](o)
			if !selects(&np.Spec.PodSelector, pod) && len(np.Spec.PodSelector.MatchLabels)+len(np.Spec.PodSelector.MatchExpressions) > 0 {
				continue
			}
			isolated = true
			for _, in := range np.Spec.Ingress {
				portOK := len(in.Ports) == 0
				for _, p := range in.Ports {
					portOK = portOK || p.Port.IntValue() == int(port) || p.Port.StrVal != ""
				}
				for _, f := range in.From {
					nsOK := (f.NamespaceSelector == nil && fromNS == ns) || (f.NamespaceSelector != nil && (len(f.NamespaceSelector.MatchLabels)+len(f.NamespaceSelector.MatchExpressions) == 0 || selects(f.NamespaceSelector, nsLabels(fromNS))))
					podOK := f.PodSelector == nil || len(f.PodSelector.MatchLabels)+len(f.PodSelector.MatchExpressions) == 0 || selects(f.PodSelector, from)
					if nsOK && podOK && portOK {
						ok = true
					}
				}
			}
		}
		return isolated, ok
	}
	if iso, ok := admitted(dexNS, map[string]string{"app": "dex"}, v.ns, v.deploy.Spec.Template.Labels, 5556); iso && !ok {
		errs = append(errs, fmt.Errorf("Dex is isolated by NetworkPolicies that do not admit the service's pods (namespace %s)", v.ns))
	}
	if iso, ok := admitted(v.ns, v.deploy.Spec.Template.Labels, "istio-system", v.gateway, int32(v.settings.Servers.CheckPort)); iso && !ok {
		errs = append(errs, fmt.Errorf("the service's namespace %s is isolated by NetworkPolicies that do not admit the ingress gateway", v.ns))
	}
	if v.usesGRPC() {
		if iso, ok := admitted(v.ns, v.deploy.Spec.Template.Labels, "istio-system", v.gateway, int32(v.settings.Servers.GRPCPort)); iso && !ok {
			errs = append(errs, fmt.Errorf("the service's namespace %s is isolated by NetworkPolicies that do not admit the ingress gateway to the gRPC port", v.ns))
		}
	}
	return errs
}

// checkNothingMissing: every object of Kubeflow's replaced line is kept
// (same kind, namespace and name) or has a declared replacement that is
// rendered; policies, RequestAuthentications and routes are never dropped
// without one of their own kind.
//
// A RequestAuthentication may instead be "checked: <why>" where the gateway
// asks the service about requests that carry a bearer token: then the
// service must accept every issuer (and audience) it verified.
func checkNothingMissing(c *composed, r *rendering, v *kubeflowView) []error {
	var errs []error
	have := map[string]bool{}
	for _, k := range keys(r.Objects) {
		have[k] = true
	}
	line := map[string]*object{}
	for _, o := range c.Line {
		line[objectKey(o)] = o
	}
	for _, k := range keys(c.Line) {
		if have[k] {
			continue
		}
		repl, ok := c.Replacements[k]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("Kubeflow's line provided %s; the swap drops it without a replacement", k))
		case strings.HasPrefix(repl, "checked: "):
			if strings.Fields(k)[0] != "RequestAuthentication" {
				errs = append(errs, fmt.Errorf("Kubeflow's %s: only a RequestAuthentication can be replaced by the service's own check", k))
				continue
			}
			checked, err := v.checked(request{path: "/pipeline/apis/v2beta1/runs", authorization: true})
			if err != nil || !checked {
				errs = append(errs, fmt.Errorf("Kubeflow's %s is dropped as checked by the service, but the gateway does not ask the service about bearer requests (%v)", k, err))
				continue
			}
			for _, jr := range asList(dig(line[k].Map, "spec")["jwtRules"]) {
				rule := jr.(map[string]any)
				if err := v.acceptsBearer(fmt.Sprint(rule["issuer"]), toStrings(asList(rule["audiences"]))); err != nil {
					errs = append(errs, fmt.Errorf("Kubeflow's %s is dropped, but %v", k, err))
				}
			}
		case strings.HasPrefix(repl, "none: ") || strings.HasPrefix(repl, "none until"):
			kind := strings.Fields(k)[0]
			if kind == "AuthorizationPolicy" || kind == "RequestAuthentication" || kind == "VirtualService" {
				errs = append(errs, fmt.Errorf("Kubeflow's %s is dropped (%s): policies, RequestAuthentications and routes need a replacement", k, repl))
			}
		case !have[repl]:
			errs = append(errs, fmt.Errorf("Kubeflow's %s is replaced by %s, which is not rendered", k, repl))
		case strings.Fields(repl)[0] != strings.Fields(k)[0] && slices.Contains([]string{"AuthorizationPolicy", "RequestAuthentication", "VirtualService"}, strings.Fields(k)[0]):
			errs = append(errs, fmt.Errorf("Kubeflow's %s is replaced by a %s", k, strings.Fields(repl)[0]))
		}
	}
	for k := range c.Replacements {
		if have[k] && slices.Contains(keys(c.Line), k) {
			errs = append(errs, fmt.Errorf("replacement for %s declared, but the swap keeps Kubeflow's object: remove the entry", k))
		}
	}
	return errs
}
