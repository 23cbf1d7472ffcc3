package manifests

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/oidc-authservice/oidc-authservice/test/extauthz"
)

const (
	workloadName = "authservice"
	paramsName   = "oidc-authservice-parameters"
	secretName   = "oidc-authservice-client"
	namespace    = "istio-system"
	serviceDNS   = "authservice.istio-system.svc.cluster.local"
	providerName = "oidc-authservice"
	// grpcProviderName is the gRPC overlay's extension provider.
	grpcProviderName = "oidc-authservice-grpc"
	gatewayLabelK    = "istio"
	gatewayLabelV    = "ingressgateway"
)

// oauth2ProxyNS is where the service runs in oauth2-proxy's place.
const oauth2ProxyNS = "oauth2-proxy"

// istioSecurityKinds are the gateway's Istio objects, in istio-system.
var istioSecurityKinds = map[string]bool{"AuthorizationPolicy": true, "RequestAuthentication": true, "EnvoyFilter": true}

// kubeflowM2M are the objects of Kubeflow's m2m components in istio-system
// that the swaps keep: cluster-jwks-proxy (1.9.1+, kind) and 1.9.0's
// kubeflow-m2m-oidc-configurator CronJob with its RBAC and ConfigMaps.
var kubeflowM2M = map[string]bool{"cluster-jwks-proxy": true, "kubeflow-m2m-oidc-configurator": true,
	"kubeflow-m2m-oidc-configurator-envs": true, "kubeflow-m2m-oidc-configurator-script": true}

// selectsGateway: a selector of the ingress gateway's pods, by its istio
// label (ours) or its app label (Kubeflow's policies).
func selectsGateway(l map[string]any) bool {
	return l[gatewayLabelK] == gatewayLabelV || (len(l) == 1 && l["app"] == "istio-ingressgateway")
}

// externalSecrets are Secrets the manifests mount but the operator creates
// (private keys are not shipped).
var externalSecrets = map[string]bool{"oidc-authservice-upstream-token-keys": true}

// typed decodes an object into its k8s.io/api type (already validated).
func typed[T any](o *object) *T {
	v := new(T)
	if err := json.Unmarshal(o.JSON, v); err != nil {
		panic(err)
	}
	return v
}

// settings is the service's environment as the Deployment gets it: the
// Secret, then the ConfigMap (envFrom order: later sources win).
type settings struct {
	env      map[string]string
	inSecret map[string]bool
	vars     variables
}

func (s settings) get(name string) string {
	if v, ok := s.env[name]; ok {
		return v
	}
	return s.vars.Known[name]
}

func (s settings) prefix() string {
	p := s.get("AUTHSERVICE_URL_PREFIX")
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}

func (s settings) redirectPath() string {
	r := s.get("REDIRECT_URL")
	if r == "" {
		return s.prefix() + "oidc/callback"
	}
	u, err := url.Parse(r)
	if err != nil {
		return r
	}
	return u.Path
}

func (s settings) port(name string) int32 {
	p, _ := strconv.Atoi(s.get(name))
	return int32(p)
}

// checkConsistency asserts what every rendering that contains the service
// must satisfy, and that its gateway objects agree with the service.
func checkConsistency(r *rendering) []error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf(r.Name+": "+format, a...))
	}
	vars, err := loadVariables()
	if err != nil {
		return []error{err}
	}
	do := r.find("Deployment", workloadName)
	if do == nil {
		bad("no Deployment %s", workloadName)
		return errs
	}
	// The service's namespace: istio-system, or oauth2-proxy in
	// oauth2-proxy's place (Kubeflow 1.9.1+), where Kubeflow's Istio objects
	// and m2m pieces stay in istio-system and Dex's policy in auth.
	ns := do.Namespace
	if ns != namespace && ns != oauth2ProxyNS {
		bad("the service runs in namespace %q, want %s or %s", ns, namespace, oauth2ProxyNS)
	}
	for _, o := range r.Objects {
		switch {
		case o.Namespace == ns, clusterScoped[o.Kind] && o.Namespace == "":
		case o.Kind == "NetworkPolicy" && o.Namespace == "auth":
		case o.Namespace == namespace && (istioSecurityKinds[o.Kind] || kubeflowM2M[hashSuffix.ReplaceAllString(o.Name, "")]):
		default:
			bad("%s: namespace %q, want %s", o.id(), o.Namespace, ns)
		}
	}
	d := typed[appsv1.Deployment](do)
	s := settings{env: map[string]string{}, inSecret: map[string]bool{}, vars: vars}

	// Configuration: the Secret and ConfigMap the Deployment reads.
	cmo, seco := r.find("ConfigMap", paramsName), r.find("Secret", secretName)
	if cmo == nil || seco == nil {
		bad("ConfigMap %s and Secret %s are required", paramsName, secretName)
		return errs
	}
	sec := typed[corev1.Secret](seco)
	cm := typed[corev1.ConfigMap](cmo)
	for k, v := range sec.Data {
		s.env[k], s.inSecret[k] = string(v), true
	}
	for k, v := range sec.StringData {
		s.env[k], s.inSecret[k] = v, true
	}
	for k, v := range cm.Data {
		if s.inSecret[k] {
			bad("%s is in both the Secret and the ConfigMap (the ConfigMap would win)", k)
		}
		s.env[k] = v
	}
	for k := range s.env {
		switch {
		case vars.Obsolete[k]:
			bad("%s is obsolete (ignored by the service): remove it", k)
		case !vars.knownVariable(k):
			bad("%s is not a variable of docs/configuration.md", k)
		}
	}
	for _, k := range []string{"CLIENT_SECRET", "SESSION_KEYS", "REDIS_URL", "REDIS_SENTINEL_PASSWORD"} {
		if _, ok := cm.Data[k]; ok {
			bad("%s belongs in the Secret, not the ConfigMap", k)
		}
	}
	for _, k := range []string{"OIDC_PROVIDER", "CLIENT_ID", "CLIENT_SECRET"} {
		if s.env[k] == "" {
			bad("%s is not set", k)
		}
	}
	errs = append(errs, checkSessionKeys(r, s, d.Spec.Template.Spec, ns)...)
	if u, err := url.Parse(s.get("OIDC_PROVIDER")); err != nil || !u.IsAbs() || strings.HasSuffix(u.Path, "/") {
		bad("OIDC_PROVIDER %q: an absolute URL without trailing slash", s.get("OIDC_PROVIDER"))
	}
	if u, err := url.Parse(s.get("REDIRECT_URL")); s.get("REDIRECT_URL") != "" && (err != nil || !strings.HasPrefix(u.Path, "/")) {
		bad("REDIRECT_URL %q: an absolute URL or path", s.get("REDIRECT_URL"))
	}

	errs = append(errs, checkDeployment(r.Name, d, s)...)

	// Everything the pod refers to exists.
	pod := d.Spec.Template.Spec
	for _, c := range pod.Containers {
		for _, ef := range c.EnvFrom {
			if ef.SecretRef != nil && r.find("Secret", ef.SecretRef.Name) == nil {
				bad("envFrom Secret %s is not rendered", ef.SecretRef.Name)
			}
			if ef.ConfigMapRef != nil && r.find("ConfigMap", ef.ConfigMapRef.Name) == nil {
				bad("envFrom ConfigMap %s is not rendered", ef.ConfigMapRef.Name)
			}
		}
	}
	for _, v := range pod.Volumes {
		if v.Secret != nil && r.find("Secret", v.Secret.SecretName) == nil && !externalSecrets[v.Secret.SecretName] {
			bad("volume %s: Secret %s is not rendered", v.Name, v.Secret.SecretName)
		}
		if v.PersistentVolumeClaim != nil {
			bad("volume %s: a PVC; the service keeps no state", v.Name)
		}
	}
	if sa := r.find("ServiceAccount", pod.ServiceAccountName); sa == nil {
		bad("ServiceAccount %s is not rendered", pod.ServiceAccountName)
	} else if a := typed[corev1.ServiceAccount](sa).AutomountServiceAccountToken; a == nil || *a {
		bad("ServiceAccount %s: automountServiceAccountToken must be false", sa.Name)
	}
	// The file variables point into read-only mounts.
	for _, k := range []string{"UPSTREAM_TOKEN_KEYS_FILE", "CLIENT_SECRET_FILE", "SESSION_KEYS_FILE", "AUTHENTICATION_CONFIG_FILE", "AUTHORIZATION_RULES_FILE", "CA_BUNDLE"} {
		if f := s.get(k); f != "" {
			errs = append(errs, checkMountedFile(r.Name, k, f, pod)...)
		}
	}
	if s.get("UPSTREAM_TOKEN") == "issued" && s.get("UPSTREAM_TOKEN_KEYS_FILE") == "" {
		bad("UPSTREAM_TOKEN=issued needs UPSTREAM_TOKEN_KEYS_FILE: replicas must sign with the same keys")
	}

	// The Service, its ports and selector: authservice, or in oauth2-proxy's
	// place the Service Kubeflow's mesh configuration names.
	so := r.find("Service", workloadName)
	if so == nil && ns == oauth2ProxyNS {
		so = r.find("Service", "oauth2-proxy")
	}
	if so == nil {
		bad("no Service %s", workloadName)
		return errs
	}
	svc := typed[corev1.Service](so)
	errs = append(errs, checkService(r.Name, svc, d, s)...)

	if po := r.find("PodDisruptionBudget", workloadName); po == nil {
		bad("no PodDisruptionBudget")
	} else {
		pdb := typed[policyv1.PodDisruptionBudget](po)
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
			bad("PodDisruptionBudget: minAvailable %v, want 1", pdb.Spec.MinAvailable)
		}
		if !selects(pdb.Spec.Selector, d.Spec.Template.Labels) {
			bad("PodDisruptionBudget selector does not select the pods")
		}
	}
	for _, ho := range r.all("HorizontalPodAutoscaler") {
		h := typed[autoscalingv2.HorizontalPodAutoscaler](ho)
		t := h.Spec.ScaleTargetRef
		if t.Kind != "Deployment" || t.Name != workloadName || t.APIVersion != "apps/v1" {
			bad("HPA targets %v", t)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas != 2 || h.Spec.MaxReplicas != 6 {
			bad("HPA: replicas %v..%d, want 2..6", h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
		if len(h.Spec.Metrics) != 1 || h.Spec.Metrics[0].Resource == nil || h.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU ||
			h.Spec.Metrics[0].Resource.Target.AverageUtilization == nil || *h.Spec.Metrics[0].Resource.Target.AverageUtilization != 70 {
			bad("HPA: want one metric, CPU at 70%% utilization")
		}
		if d.Spec.Replicas != nil {
			bad("with an HPA the Deployment must not set replicas (kubectl apply would reset the HPA's count)")
		}
	}
	if r.find("HorizontalPodAutoscaler", workloadName) == nil && (d.Spec.Replicas == nil || *d.Spec.Replicas != 2) {
		bad("Deployment replicas %v, want 2", d.Spec.Replicas)
	}

	// Gateway objects agree with the service.
	for _, o := range r.all("EnvoyFilter") {
		errs = append(errs, checkEnvoyFilter(r.Name, o, svc, s)...)
	}
	var custom, deny []*object
	for _, o := range r.all("AuthorizationPolicy") {
		switch o.Map["spec"].(map[string]any)["action"] {
		case "CUSTOM":
			custom = append(custom, o)
		case "DENY":
			deny = append(deny, o)
		default:
			bad("%s: unexpected action", o.id())
		}
	}
	if len(custom) > 0 && len(r.all("EnvoyFilter")) > 0 {
		bad("both an EnvoyFilter and a CUSTOM policy: every request would be checked twice")
	}
	if len(custom) > 1 {
		bad("one CUSTOM policy per gateway (Istio refuses several providers on one workload)")
	}
	for _, o := range custom {
		if p := dig(o.Map["spec"].(map[string]any), "provider")["name"]; p == "oauth2-proxy" && ns == oauth2ProxyNS {
			// Kubeflow's policy for the provider Kubeflow's mesh declares:
			// checked with that mesh in TestKubeflowCompositions.
			continue
		}
		errs = append(errs, checkCustomPolicy(r.Name, o, svc, s)...)
	}
	for _, o := range deny {
		errs = append(errs, checkDenyPolicy(r.Name, o, custom, s)...)
	}
	ras := r.all("RequestAuthentication")
	if len(deny) > 0 && len(ras) == 0 {
		bad("a DENY policy requiring a JWT, but no RequestAuthentication")
	}
	if s.get("UPSTREAM_TOKEN") == "issued" && len(ras) == 0 {
		bad("UPSTREAM_TOKEN=issued but no RequestAuthentication validates the tokens")
	}
	for _, o := range ras {
		if ns == oauth2ProxyNS {
			// Kubeflow's dex-jwt and m2m-token-issuer, checked against
			// Kubeflow's manifests in TestKubeflowCompositions.
			continue
		}
		errs = append(errs, checkRequestAuthentication(r.Name, o, svc, s)...)
	}
	for _, o := range r.all("VirtualService") {
		errs = append(errs, checkVirtualService(r.Name, o, svc, s)...)
	}
	for _, o := range r.all("NetworkPolicy") {
		if o.Namespace == ns {
			continue // the service's own namespace (checked in TestKubeflowCompositions)
		}
		errs = append(errs, checkNetworkPolicy(r.Name, o, d, s, ns)...)
	}
	return errs
}

// validSessionKey mirrors the service's rule (internal/config.ParseSecret).
func validSessionKey(k string) bool {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(k); err == nil && len(b) >= 32 {
			return true
		}
	}
	return len(k) >= 32
}

func selects(sel *metav1.LabelSelector, podLabels map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && !s.Empty() && s.Matches(labels.Set(podLabels))
}

// checkDeployment: the security settings, probes, resources and spreading
// every rendering keeps.
func checkDeployment(name string, d *appsv1.Deployment, s settings) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(name+": Deployment: "+format, a...)) }
	pod := d.Spec.Template.Spec
	if d.Spec.Template.Annotations["sidecar.istio.io/inject"] != "false" {
		bad(`pod annotation sidecar.istio.io/inject must be "false"`)
	}
	if pod.ServiceAccountName != workloadName {
		bad("serviceAccountName %q", pod.ServiceAccountName)
	}
	// Only TokenReview (components/tokenreview) and the key Secret
	// (components/session-keys, SESSION_KEYS_SECRET) need the pod's token.
	if need := s.env["KUBERNETES_AUTHN_ENABLED"] == "true" || s.get("SESSION_KEYS_SECRET") != ""; need != (pod.AutomountServiceAccountToken != nil && *pod.AutomountServiceAccountToken) {
		bad("automountServiceAccountToken must be %v when KUBERNETES_AUTHN_ENABLED is %q and SESSION_KEYS_SECRET is %q", need, s.env["KUBERNETES_AUTHN_ENABLED"], s.get("SESSION_KEYS_SECRET"))
	}
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		bad("one container expected")
		return errs
	}
	c := pod.Containers[0]
	if !strings.HasPrefix(c.Image, "ghcr.io/oidc-authservice/oidc-authservice:") {
		bad("image %q", c.Image)
	}
	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	// Effective values: the container's, else the pod's.
	runAsNonRoot := firstNonNil(sc.RunAsNonRoot, psc.RunAsNonRoot)
	runAsUser := firstNonNil(sc.RunAsUser, psc.RunAsUser)
	seccomp := firstNonNil(sc.SeccompProfile, psc.SeccompProfile)
	if runAsNonRoot == nil || !*runAsNonRoot {
		bad("runAsNonRoot must be true")
	}
	if runAsUser == nil || *runAsUser != 65532 {
		bad("runAsUser must be 65532 (the image's nonroot user)")
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		bad("seccompProfile must be RuntimeDefault")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		bad("readOnlyRootFilesystem must be true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		bad("allowPrivilegeEscalation must be false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		bad("privileged")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		bad("capabilities must drop ALL and add none")
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[res], c.Resources.Limits[res]
		if req.IsZero() || lim.IsZero() {
			bad("%s request and limit are required", res)
		} else if req.Cmp(lim) > 0 {
			bad("%s request above the limit", res)
		}
	}
	// Ports: the names the Service and probes use, the numbers the service
	// listens on (SERVER_PORT, READINESS_PROBE_PORT, WEB_SERVER_PORT,
	// GRPC_PORT).
	want := map[string]int32{
		"http-api":       s.port("SERVER_PORT"),
		"http-readiness": s.port("READINESS_PROBE_PORT"),
		"http-web":       s.port("WEB_SERVER_PORT"),
		"grpc":           s.port("GRPC_PORT"),
	}
	got := map[string]int32{}
	for _, p := range c.Ports {
		got[p.Name] = p.ContainerPort
	}
	for n, p := range want {
		if got[n] != p {
			bad("container port %s = %d, want %d", n, got[n], p)
		}
	}
	probe := func(kind string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil {
			bad("%s: an HTTP GET probe is required", kind)
			return
		}
		port := p.HTTPGet.Port.IntVal
		if p.HTTPGet.Port.StrVal != "" {
			port = got[p.HTTPGet.Port.StrVal]
		}
		if p.HTTPGet.Path != path || port != want["http-readiness"] {
			bad("%s: GET %s on port %d, want GET %s on %d", kind, p.HTTPGet.Path, port, path, want["http-readiness"])
		}
	}
	probe("livenessProbe", c.LivenessProbe, "/healthz")
	probe("readinessProbe", c.ReadinessProbe, "/readyz")
	refs := map[string]bool{}
	for _, ef := range c.EnvFrom {
		if ef.SecretRef != nil {
			refs["Secret/"+ef.SecretRef.Name] = true
		}
		if ef.ConfigMapRef != nil {
			refs["ConfigMap/"+ef.ConfigMapRef.Name] = true
		}
	}
	if !refs["Secret/"+secretName] || !refs["ConfigMap/"+paramsName] {
		bad("envFrom must read Secret %s and ConfigMap %s", secretName, paramsName)
	}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			bad("volume mount %s must be read-only", m.MountPath)
		}
	}
	spread := map[string]corev1.UnsatisfiableConstraintAction{}
	for _, t := range pod.TopologySpreadConstraints {
		spread[t.TopologyKey] = t.WhenUnsatisfiable
		if !selects(t.LabelSelector, d.Spec.Template.Labels) {
			bad("topologySpreadConstraint %s does not select the pods", t.TopologyKey)
		}
	}
	if spread["kubernetes.io/hostname"] != corev1.ScheduleAnyway || spread["topology.kubernetes.io/zone"] != corev1.ScheduleAnyway {
		bad("spread over kubernetes.io/hostname and topology.kubernetes.io/zone with ScheduleAnyway, got %v", spread)
	}
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.DefaultMode != nil && *v.Secret.DefaultMode&0o007 != 0 {
			bad("volume %s: Secret files readable by others (mode %o)", v.Name, *v.Secret.DefaultMode)
		}
	}
	return errs
}

func firstNonNil[T any](a ...*T) *T {
	for _, v := range a {
		if v != nil {
			return v
		}
	}
	return nil
}

// checkMountedFile: a file variable points into a read-only Secret or
// ConfigMap mount that provides that file.
func checkMountedFile(name, variable, file string, pod corev1.PodSpec) []error {
	dir, base := path.Split(file)
	dir = strings.TrimSuffix(dir, "/")
	for _, c := range pod.Containers {
		for _, m := range c.VolumeMounts {
			if m.MountPath != dir {
				continue
			}
			if !m.ReadOnly {
				return []error{fmt.Errorf("%s: %s: mount %s is not read-only", name, variable, dir)}
			}
			for _, v := range pod.Volumes {
				if v.Name != m.Name {
					continue
				}
				var items []corev1.KeyToPath
				switch {
				case v.Secret != nil:
					items = v.Secret.Items
				case v.ConfigMap != nil:
					items = v.ConfigMap.Items
				default:
					return []error{fmt.Errorf("%s: %s: volume %s is not a Secret or ConfigMap", name, variable, v.Name)}
				}
				if len(items) == 0 {
					return nil // every key is a file
				}
				for _, it := range items {
					if it.Path == base {
						return nil
					}
				}
				return []error{fmt.Errorf("%s: %s: volume %s has no item %s", name, variable, v.Name, base)}
			}
		}
	}
	return []error{fmt.Errorf("%s: %s=%s: no volume is mounted at %s", name, variable, file, dir)}
}

func checkService(name string, svc *corev1.Service, d *appsv1.Deployment, s settings) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(name+": Service: "+format, a...)) }
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		bad("selector %v does not select the pods", svc.Spec.Selector)
	}
	if svc.Spec.PublishNotReadyAddresses {
		bad("publishNotReadyAddresses must be false: a replica without provider discovery cannot log anyone in")
	}
	want := []struct {
		name   string
		port   int32
		target string
	}{{"http-authservice", 8080, "http-api"}, {"http-web", 8082, "http-web"}, {"grpc", 9000, "grpc"}}
	if svc.Name == "oauth2-proxy" {
		// Where Kubeflow's mesh configuration expects oauth2-proxy: port 80;
		// and the gRPC check for a mesh whose provider is gRPC.
		want = []struct {
			name   string
			port   int32
			target string
		}{{"http", 80, "http-api"}, {"grpc", 9000, "grpc"}}
	}
	if len(svc.Spec.Ports) != len(want) {
		bad("%d ports, want %d", len(svc.Spec.Ports), len(want))
	}
	for _, w := range want {
		found := false
		for _, p := range svc.Spec.Ports {
			if p.Name == w.name {
				found = true
				if p.Port != w.port || p.TargetPort.StrVal != w.target {
					bad("port %s: %d -> %s, want %d -> %s", w.name, p.Port, p.TargetPort.String(), w.port, w.target)
				}
				switch {
				case w.target == "grpc":
					// gRPC: Istio must speak HTTP/2 to it (it reads the
					// protocol from appProtocol, or the name's prefix).
					if p.AppProtocol == nil || *p.AppProtocol != "grpc" {
						bad("port %s: appProtocol %v, want grpc", w.name, p.AppProtocol)
					}
				case p.AppProtocol != nil && *p.AppProtocol != "http":
					// HTTP/1.1 to the check (Istio reads the protocol from
					// the name, or appProtocol): it costs less CPU per check
					// than HTTP/2 (docs/performance.md).
					bad("port %s: appProtocol %s, want http (HTTP/1.1) or none", w.name, *p.AppProtocol)
				}
			}
		}
		if !found {
			bad("no port %s", w.name)
		}
	}
	return errs
}

// servicePortFor is the Service port that reaches the container port named
// target, 0 if none.
func servicePortFor(svc *corev1.Service, target string) int32 {
	for _, p := range svc.Spec.Ports {
		if p.TargetPort.StrVal == target {
			return p.Port
		}
	}
	return 0
}

// hostPort splits an http URL into host and port (80 when absent).
func hostPort(raw string) (string, int32, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", 0, err
	}
	if u.Scheme != "http" {
		return "", 0, fmt.Errorf("%q: in-cluster calls are plain http", raw)
	}
	h, p := u.Hostname(), u.Port()
	if p == "" {
		return h, 80, nil
	}
	n, err := strconv.Atoi(p)
	return h, int32(n), err
}

func checkEnvoyFilter(name string, o *object, svc *corev1.Service, s settings) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(name+": "+o.id()+": "+format, a...)) }
	spec := o.Map["spec"].(map[string]any)
	ws, _ := spec["workloadSelector"].(map[string]any)
	if l, _ := ws["labels"].(map[string]any); l[gatewayLabelK] != gatewayLabelV {
		bad("workloadSelector must select %s: %s", gatewayLabelK, gatewayLabelV)
	}
	patches, _ := spec["configPatches"].([]any)
	if len(patches) != 1 {
		bad("one config patch expected, got %d", len(patches))
		return errs
	}
	p := patches[0].(map[string]any)
	match, _ := p["match"].(map[string]any)
	filter := dig(match, "listener", "filterChain", "filter")
	if p["applyTo"] != "HTTP_FILTER" || match["context"] != "GATEWAY" ||
		filter["name"] != "envoy.filters.network.http_connection_manager" ||
		dig(filter, "subFilter")["name"] != "envoy.filters.http.router" ||
		dig(p, "patch")["operation"] != "INSERT_BEFORE" {
		bad("must insert an HTTP filter before envoy.filters.http.router on the gateway's HTTP connection manager")
	}
	value := dig(p, "patch", "value")
	ea, verrs := decodeExtAuthz(value)
	for _, e := range verrs {
		bad("%v", e)
	}
	if ea == nil {
		return errs
	}
	if ea.GetFailureModeAllow() {
		bad("failure_mode_allow must be false")
	}
	if gs := ea.GetGrpcService(); gs != nil {
		return append(errs, checkGRPCService(name+": "+o.id(), ea, svc)...)
	}
	hs := ea.GetHttpService()
	if hs == nil {
		bad("http_service or grpc_service is required")
		return errs
	}
	if hs.GetPathPrefix() != "" {
		bad("path_prefix must be empty: the service matches the original path")
	}
	host, port, err := hostPort(hs.GetServerUri().GetUri())
	if err != nil {
		bad("server_uri: %v", err)
	}
	if host != serviceDNS || port != servicePortFor(svc, "http-api") {
		bad("server_uri %s:%d, want the check port %s:%d", host, port, serviceDNS, servicePortFor(svc, "http-api"))
	}
	if c := hs.GetServerUri().GetCluster(); c != fmt.Sprintf("outbound|%d||%s", port, host) {
		bad("cluster %q does not match the uri", c)
	}
	if t := hs.GetServerUri().GetTimeout().AsDuration(); t < 5*time.Second {
		bad("timeout %s: a callback waits for the provider; use 10s", t)
	}
	req, e1 := exactHeaders("allowed_headers", firstMatcher(ea.GetAllowedHeaders(), hs.GetAuthorizationRequest().GetAllowedHeaders()))
	up, e2 := exactHeaders("allowed_upstream_headers", hs.GetAuthorizationResponse().GetAllowedUpstreamHeaders())
	ok, e3 := exactHeaders("allowed_client_headers_on_success", hs.GetAuthorizationResponse().GetAllowedClientHeadersOnSuccess())
	deny, e4 := exactHeaders("allowed_client_headers", hs.GetAuthorizationResponse().GetAllowedClientHeaders())
	for _, e := range append(append(append(e1, e2...), e3...), e4...) {
		bad("%v", e)
	}
	errs = append(errs, checkHeaderSets(name+": "+o.id(), s, req, up, ok, deny)...)
	return errs
}

// checkGRPCService: an ext_authz filter that calls the gRPC check: Istio's
// cluster of the Service's port grpc, the v3 API, a timeout a callback fits
// in, no request body (the check never reads one).
func checkGRPCService(where string, ea *extauthzv3.ExtAuthz, svc *corev1.Service) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(where+": "+format, a...)) }
	gs := ea.GetGrpcService()
	eg := gs.GetEnvoyGrpc()
	if eg == nil {
		bad("grpc_service must be envoy_grpc (Envoy's own client, to a cluster Istio builds)")
		return errs
	}
	port := servicePortFor(svc, "grpc")
	if want := fmt.Sprintf("outbound|%d||%s", port, serviceDNS); port == 0 || eg.GetClusterName() != want {
		bad("cluster %q, want %q (the Service's port grpc)", eg.GetClusterName(), want)
	}
	if a := eg.GetAuthority(); a != "" && a != serviceDNS {
		bad("authority %q, want %s", a, serviceDNS)
	}
	if t := gs.GetTimeout().AsDuration(); t < 5*time.Second {
		bad("timeout %s: a callback waits for the provider; use 10s", t)
	}
	if ea.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		bad("transport_api_version %v, want V3", ea.GetTransportApiVersion())
	}
	if ea.GetWithRequestBody() != nil {
		bad("with_request_body: the check never reads a body")
	}
	return errs
}

// traceHeaders are the client's trace context (W3C and B3), which every
// gateway the project configures passes to the check so that the check's
// span joins the client's trace (docs/operations.md, Traces).
var traceHeaders = []string{"traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"}

// checkHeaderSets: what the gateway passes, per docs/kubeflow.md.
// deny == nil means every header goes to the client on deny.
func checkHeaderSets(where string, s settings, req, up, ok, deny []string) []error {
	var errs []error
	need := func(list []string, what string, names ...string) {
		for _, n := range names {
			if !slices.Contains(list, strings.ToLower(n)) {
				errs = append(errs, fmt.Errorf("%s: %s must include %s", where, what, n))
			}
		}
	}
	need(req, "headers to the check", "cookie", "authorization", "accept", "x-requested-with", "x-forwarded-proto")
	need(req, "headers to the check", traceHeaders...)
	need(up, "headers upstream on allow", s.get("USERID_HEADER"), s.get("GROUPS_HEADER"))
	if s.get("UPSTREAM_TOKEN") != "none" {
		need(up, "headers upstream on allow", "authorization")
	}
	need(ok, "headers to the browser on allow", "set-cookie")
	if deny != nil {
		need(deny, "headers to the browser on deny", "set-cookie", "location", "content-type", "www-authenticate", "cache-control")
	}
	return errs
}

func dig(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		m, _ = m[k].(map[string]any)
	}
	return m
}

// request is what the policy simulation looks at.
type request struct {
	path          string
	authorization bool // an Authorization header is present
	principal     bool // a RequestAuthentication validated a JWT
}

// policyApplies evaluates an AuthorizationPolicy's rules for a request the
// way Istio does, with the gateway emulation's matcher (test/extauthz).
func policyApplies(spec map[string]any, r request) (bool, error) {
	req := httptest.NewRequest("GET", "http://kubeflow.example.com"+r.path, nil)
	if r.authorization {
		req.Header.Set("Authorization", "Bearer x")
	}
	principal := ""
	if r.principal {
		principal = "https://issuer.example.com/user"
	}
	return extauthz.PolicyMatches(spec, req, principal)
}

func toStrings(v any) []string {
	var out []string
	for _, e := range v.([]any) {
		out = append(out, e.(string))
	}
	return out
}

func skipsDex(s settings) bool {
	for _, p := range strings.Split(s.get("SKIP_AUTH_URLS"), ",") {
		if strings.TrimSpace(p) == "/dex" || strings.TrimSpace(p) == "/dex/" {
			return true
		}
	}
	return false
}

func checkCustomPolicy(name string, o *object, svc *corev1.Service, s settings) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(name+": "+o.id()+": "+format, a...)) }
	spec := o.Map["spec"].(map[string]any)
	if l := dig(spec, "selector", "matchLabels"); !selectsGateway(l) {
		bad("selector must select %s: %s", gatewayLabelK, gatewayLabelV)
	}
	pname := dig(spec, "provider")["name"]
	if pname != providerName && pname != grpcProviderName {
		bad("provider %v, want %s (or %s over gRPC)", pname, providerName, grpcProviderName)
	}
	if pname == grpcProviderName {
		gp, err := declaredGRPCProvider()
		switch {
		case err != nil:
			bad("%v", err)
		case gp.GetService() != serviceDNS || int32(gp.GetPort()) != servicePortFor(svc, "grpc"):
			bad("the mesh provider calls %s:%d, not the gRPC check port", gp.GetService(), gp.GetPort())
		case gp.GetFailOpen():
			bad("the mesh provider fails open")
		}
	}
	prov, err := declaredProvider()
	if pname == grpcProviderName {
		// no header lists over gRPC
	} else if err != nil {
		bad("%v", err)
	} else {
		if prov.Service != serviceDNS || int32(prov.Port) != servicePortFor(svc, "http-api") {
			bad("the mesh provider calls %s:%d, not the check port", prov.Service, prov.Port)
		}
		var req, up, ok, deny []string
		req = append(req, prov.IncludeRequestHeadersInCheck...)
		up = append(up, prov.HeadersToUpstreamOnAllow...)
		ok = append(ok, prov.HeadersToDownstreamOnAllow...)
		deny = append(deny, prov.HeadersToDownstreamOnDeny...)
		errs = append(errs, checkHeaderSets(name+": mesh provider", s, req, up, ok, deny)...)
	}
	// Which requests reach the check.
	want := []struct {
		r     request
		check bool
		why   string
	}{
		{request{path: "/"}, true, "the dashboard needs a session"},
		{request{path: "/jupyter/"}, true, "applications need a session"},
		{request{path: s.redirectPath()}, true, "the login callback is answered by the check"},
		{request{path: s.prefix() + "logout"}, true, "logout is answered by the check"},
		{request{path: s.prefix() + "logout", authorization: true}, true, "dashboards before 1.10 log out with Authorization: Bearer"},
		{request{path: "/dex/auth"}, !skipsDex(s), "Dex's pages (SKIP_AUTH_URLS) need no session; without Dex nothing is exempt"},
	}
	for _, w := range want {
		got, err := policyApplies(spec, w.r)
		if err != nil {
			bad("%v", err)
			return errs
		}
		if got != w.check {
			bad("%+v: checked=%v, want %v (%s)", w.r, got, w.check, w.why)
		}
	}
	return errs
}

func checkDenyPolicy(name string, o *object, custom []*object, s settings) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(name+": "+o.id()+": "+format, a...)) }
	spec := o.Map["spec"].(map[string]any)
	if l := dig(spec, "selector", "matchLabels"); !selectsGateway(l) {
		bad("selector must select %s: %s", gatewayLabelK, gatewayLabelV)
	}
	want := []struct {
		r    request
		deny bool
		why  string
	}{
		{request{path: "/"}, true, "no JWT: denied"},
		{request{path: "/", principal: true}, false, "a validated JWT passes"},
		{request{path: "/pipeline/apis/v2beta1/runs", authorization: true}, true, "an unvalidated bearer token is denied"},
		{request{path: "/dex/auth"}, false, "Dex's login pages carry no token"},
		{request{path: s.prefix() + "site/after_logout"}, false, "the service's pages carry no token"},
		{request{path: s.prefix() + "oidc/backchannel-logout"}, false, "back-channel logout comes from the provider"},
	}
	for _, w := range want {
		got, err := policyApplies(spec, w.r)
		if err != nil {
			bad("%v", err)
			return errs
		}
		if got != w.deny {
			bad("%+v: denied=%v, want %v (%s)", w.r, got, w.deny, w.why)
		}
	}
	return errs
}

func checkRequestAuthentication(name string, o *object, svc *corev1.Service, s settings) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(name+": "+o.id()+": "+format, a...)) }
	spec := o.Map["spec"].(map[string]any)
	if l := dig(spec, "selector", "matchLabels"); !selectsGateway(l) {
		bad("selector must select %s: %s", gatewayLabelK, gatewayLabelV)
	}
	if s.get("UPSTREAM_TOKEN") != "issued" {
		bad("a RequestAuthentication for the service's tokens, but UPSTREAM_TOKEN=%q", s.get("UPSTREAM_TOKEN"))
	}
	rules, _ := spec["jwtRules"].([]any)
	if len(rules) != 1 {
		bad("one jwtRule expected")
		return errs
	}
	jr := rules[0].(map[string]any)
	iss := s.get("UPSTREAM_TOKEN_ISSUER")
	if jr["issuer"] != iss {
		bad("issuer %v, want UPSTREAM_TOKEN_ISSUER %s", jr["issuer"], iss)
	}
	if jr["jwksUri"] != strings.TrimSuffix(iss, "/")+"/.well-known/jwks.json" {
		bad("jwksUri %v, want <issuer>/.well-known/jwks.json", jr["jwksUri"])
	}
	if h, p, err := hostPort(fmt.Sprint(jr["jwksUri"])); err != nil || h != serviceDNS || p != servicePortFor(svc, "http-web") {
		bad("jwksUri must reach the web port %s:%d", serviceDNS, servicePortFor(svc, "http-web"))
	}
	if a, _ := jr["audiences"].([]any); len(a) != 1 || a[0] != s.get("UPSTREAM_TOKEN_AUDIENCE") {
		bad("audiences %v, want [%s]", jr["audiences"], s.get("UPSTREAM_TOKEN_AUDIENCE"))
	}
	if jr["forwardOriginalToken"] != false {
		bad("forwardOriginalToken must be false: the upstream must not receive a token this gateway accepts")
	}
	claims := map[string]string{}
	for _, c := range jr["outputClaimToHeaders"].([]any) {
		m := c.(map[string]any)
		claims[m["header"].(string)] = m["claim"].(string)
	}
	// The issued token's sub is the user id header's value; groups_csv its
	// groups comma-joined (Envoy's jwt_authn writes the groups list as
	// base64 JSON: test/extauthz, TestEnvoyClaimToHeadersListClaim).
	if claims[s.get("USERID_HEADER")] != "sub" || claims[s.get("GROUPS_HEADER")] != "groups_csv" {
		bad("outputClaimToHeaders %v, want %s<-sub and %s<-groups_csv", claims, s.get("USERID_HEADER"), s.get("GROUPS_HEADER"))
	}
	return errs
}

func checkVirtualService(name string, o *object, svc *corev1.Service, s settings) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(name+": "+o.id()+": "+format, a...)) }
	spec := o.Map["spec"].(map[string]any)
	if g := toStrings(spec["gateways"]); !slices.Equal(g, []string{"kubeflow/kubeflow-gateway"}) {
		bad("gateways %v", g)
	}
	http, _ := spec["http"].([]any)
	if len(http) != 1 {
		bad("one http route expected")
		return errs
	}
	route := http[0].(map[string]any)
	m := route["match"].([]any)
	if len(m) != 1 || dig(m[0].(map[string]any), "uri")["prefix"] != s.prefix() {
		bad("match must be the prefix %s (AUTHSERVICE_URL_PREFIX)", s.prefix())
	}
	dst := route["route"].([]any)
	if len(dst) != 1 {
		bad("one destination expected")
		return errs
	}
	d := dig(dst[0].(map[string]any), "destination")
	port, _ := dig(d, "port")["number"].(float64)
	// The pages (web port) on Service authservice, or, in oauth2-proxy's
	// place, the check port behind Service oauth2-proxy, where the callback,
	// login start and logout arrive as ordinary requests.
	dns := svc.Name + "." + svc.Namespace + ".svc.cluster.local"
	target := "http-web"
	if svc.Name == "oauth2-proxy" {
		target = "http-api"
	}
	if d["host"] != dns || int32(port) != servicePortFor(svc, target) {
		bad("destination %v:%v, want the %s port %s:%d", d["host"], port, strings.TrimPrefix(target, "http-"), dns, servicePortFor(svc, target))
	}
	return errs
}

func checkNetworkPolicy(name string, o *object, d *appsv1.Deployment, s settings, ns string) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(name+": "+o.id()+": "+format, a...)) }
	np := typed[networkingv1.NetworkPolicy](o)
	u, err := url.Parse(s.get("OIDC_PROVIDER"))
	if err != nil {
		return []error{err}
	}
	host, port, _ := net.SplitHostPort(u.Host)
	// The policy guards the provider: Dex at <svc>.<namespace>.svc...
	if parts := strings.Split(host, "."); len(parts) < 2 || parts[1] != np.Namespace {
		bad("namespace %s is not the provider's (%s)", np.Namespace, host)
	}
	admitted := false
	for _, in := range np.Spec.Ingress {
		portOK := len(in.Ports) == 0
		for _, p := range in.Ports {
			portOK = portOK || p.Port.String() == port
		}
		for _, from := range in.From {
			nsOK := from.NamespaceSelector != nil && selects(from.NamespaceSelector, map[string]string{"kubernetes.io/metadata.name": ns})
			if nsOK && portOK && from.PodSelector != nil && selects(from.PodSelector, d.Spec.Template.Labels) {
				admitted = true
			}
		}
	}
	if !admitted {
		bad("does not admit the service's pods to port %s", port)
	}
	return errs
}
