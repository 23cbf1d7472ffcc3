package manifests

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// What reaches an upstream (issue 21): in Kubeflow an upstream may be a
// colleague's notebook server running its owner's code, so no upstream may
// receive a credential the gateway would accept from someone else; and who
// may talk to the service at all.

// checkUpstreamCredentials: no token the gateway accepts goes on to the
// upstream. Every RequestAuthentication of the gateway removes the token it
// verified (forwardOriginalToken: false); a token the service hands upstream
// (UPSTREAM_TOKEN) is verified, and so removed, by one; a client's bearer
// token the service leaves in place (UPSTREAM_BEARER=keep) is too.
func checkUpstreamCredentials(v *kubeflowView) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	stripped := map[string]bool{} // issuers whose tokens the gateway verifies and removes
	for _, o := range v.r.all("RequestAuthentication") {
		if !v.appliesToGateway(o) {
			continue
		}
		for _, jr := range asList(dig(o.Map, "spec")["jwtRules"]) {
			rule := jr.(map[string]any)
			if rule["forwardOriginalToken"] == true {
				bad("%s forwards the token it verified (issuer %v) to the upstream, which could present it to the gateway: set forwardOriginalToken: false", o.id(), rule["issuer"])
				continue
			}
			stripped[fmt.Sprint(rule["issuer"])] = true
		}
	}
	s := v.settings
	switch s.Upstream.Mode {
	case "id_token":
		if !stripped[s.Provider.Issuer] {
			bad("UPSTREAM_TOKEN=id_token, but no RequestAuthentication of the gateway removes the ID token (issuer %s) before the upstream", s.Provider.Issuer)
		}
	case "issued":
		if !stripped[s.Upstream.Issuer] {
			bad("UPSTREAM_TOKEN=issued, but no RequestAuthentication of the gateway removes the issued token (issuer %s) before the upstream", s.Upstream.Issuer)
		}
	}
	if s.Upstream.KeepBearer {
		if s.Bearer.TokenReview {
			bad("UPSTREAM_BEARER=keep with TokenReview: the cluster's tokens would reach the upstream")
		}
		accepted, err := v.acceptedBearers()
		if err != nil {
			return append(errs, err)
		}
		for iss := range accepted {
			if !stripped[iss] {
				bad("UPSTREAM_BEARER=keep, but no RequestAuthentication of the gateway removes the tokens of issuer %s the service accepts", iss)
			}
		}
	}
	return errs
}

// exposure lists what of the user's credentials still reaches every upstream
// because the gateway does not let the service rewrite it: "cookie" where
// the provider (or EnvoyFilter) that checks sessions does not set the
// upstream's Cookie header from the allow answer, so the browser's whole
// Cookie header, session cookie included, goes on (Kubeflow's own mesh
// configuration: the compatible layouts, docs/security.md). Empty: nothing.
func (v *kubeflowView) exposure() []string {
	var up [][]string
	for _, o := range v.policies("CUSTOM") {
		if ok, err := policyApplies(o.Map["spec"].(map[string]any), request{path: "/jupyter/"}); err != nil || !ok {
			continue
		}
		name := fmt.Sprint(dig(o.Map, "spec", "provider")["name"])
		if p := v.provider(name); p != nil {
			up = append(up, lower(p.GetHeadersToUpstreamOnAllow()))
		}
		if v.grpcProvider(name) != nil {
			up = append(up, []string{"cookie"}) // over gRPC every header of the answer is applied
		}
	}
	for _, o := range v.extAuthzFilters() {
		value := dig(asList(dig(o.Map, "spec")["configPatches"])[0].(map[string]any), "patch", "value")
		if ea, _ := decodeExtAuthz(value); ea != nil {
			if ea.GetGrpcService() != nil {
				up = append(up, []string{"cookie"})
				continue
			}
			h, _ := exactHeaders("", ea.GetHttpService().GetAuthorizationResponse().GetAllowedUpstreamHeaders())
			up = append(up, h)
		}
	}
	for _, h := range up {
		if !slices.Contains(h, "cookie") {
			return []string{"cookie"}
		}
	}
	return nil
}

// upstreamReceives says, for docs/compatibility.md, what a session's
// request brings an upstream besides the browser's own headers.
func (v *kubeflowView) upstreamReceives() string {
	s := v.settings
	user, groups := strings.ToLower(s.Identity.UserHeader), strings.ToLower(s.Identity.GroupsHeader)
	// Who sets the identity headers: a RequestAuthentication mapping the
	// token the service hands upstream, or the service.
	var mapped []string
	for _, o := range v.r.all("RequestAuthentication") {
		if !v.appliesToGateway(o) {
			continue
		}
		for _, jr := range asList(dig(o.Map, "spec")["jwtRules"]) {
			rule := jr.(map[string]any)
			if iss := fmt.Sprint(rule["issuer"]); (s.Upstream.Mode == "id_token" && iss == s.Provider.Issuer) || (s.Upstream.Mode == "issued" && iss == s.Upstream.Issuer) {
				for _, m := range asList(rule["outputClaimToHeaders"]) {
					mm := m.(map[string]any)
					mapped = append(mapped, fmt.Sprintf("`%s` ← `%v`", strings.ToLower(fmt.Sprint(mm["header"])), mm["claim"]))
				}
			}
		}
	}
	var parts []string
	if len(mapped) > 0 {
		token := "the Dex ID token"
		if s.Upstream.Mode == "issued" {
			token = "the service's issued token"
		}
		// Envoy's jwt_authn writes a list claim (Dex's groups) as the
		// base64 of its JSON, a string claim as it is (test/extauthz:
		// TestEnvoyClaimToHeadersListClaim).
		note := ""
		for _, m := range mapped {
			if strings.HasSuffix(m, "← `groups`") {
				note = "; the `groups` list as the base64 of its JSON"
			}
		}
		parts = append(parts, fmt.Sprintf("identity mapped by Istio from %s (%s%s), the token then removed", token, strings.Join(mapped, ", "), note))
	} else {
		parts = append(parts, fmt.Sprintf("`%s`, `%s` set by the service", user, groups))
	}
	if s.Identity.AuthRequestHeaders {
		parts = append(parts, "`x-auth-request-*`")
	}
	if slices.Contains(v.exposure(), "cookie") {
		parts = append(parts, "**the browser's whole Cookie header, session cookie included**")
	} else {
		parts = append(parts, "the browser's cookies without the service's")
	}
	parts = append(parts, "no token")
	return strings.Join(parts, "; ")
}

// netPeer is a pod that might open a connection to the service.
type netPeer struct {
	what   string
	ns     string
	labels map[string]string
}

// Pods that must not reach the service's check or web port: a notebook
// server in a profile namespace (its owner's code), the dashboard.
var hostilePeers = []netPeer{
	{"a notebook server", "kubeflow-user-example-com", map[string]string{"app": "nb", "notebook-name": "nb", "statefulset": "nb"}},
	{"a Kubeflow application", "kubeflow", map[string]string{"app": "centraldashboard"}},
}

// admitted evaluates the NetworkPolicies of objs as Kubernetes does for a
// connection from peer to port of a pod (labels, container ports) in
// namespace ns: isolated when some policy selects the pod for ingress, ok
// when one of their rules admits the peer on that port.
func admitted(objs []*object, ns string, pod map[string]string, ports []corev1.ContainerPort, peer netPeer, port int32) (isolated, ok bool) {
	for _, o := range objs {
		if o.Kind != "NetworkPolicy" || o.Namespace != ns {
			continue
		}
		np := typed[networkingv1.NetworkPolicy](o)
		if !selectorMatches(&np.Spec.PodSelector, pod) {
			continue
		}
		ingress := len(np.Spec.PolicyTypes) == 0
		for _, pt := range np.Spec.PolicyTypes {
			ingress = ingress || pt == networkingv1.PolicyTypeIngress
		}
		if !ingress {
			continue
		}
		isolated = true
		for _, rule := range np.Spec.Ingress {
			if !portAdmitted(rule.Ports, ports, port) {
				continue
			}
			if len(rule.From) == 0 {
				ok = true
			}
			for _, f := range rule.From {
				if f.IPBlock != nil {
					continue
				}
				nsOK := (f.NamespaceSelector == nil && peer.ns == ns) ||
					(f.NamespaceSelector != nil && selectorMatches(f.NamespaceSelector, map[string]string{"kubernetes.io/metadata.name": peer.ns}))
				podOK := f.PodSelector == nil || selectorMatches(f.PodSelector, peer.labels)
				ok = ok || (nsOK && podOK)
			}
		}
	}
	return isolated, ok
}

// selectorMatches: an empty selector matches everything, as in a
// NetworkPolicy.
func selectorMatches(sel *metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(labels.Set(l))
}

func portAdmitted(rule []networkingv1.NetworkPolicyPort, ports []corev1.ContainerPort, port int32) bool {
	if len(rule) == 0 {
		return true
	}
	for _, p := range rule {
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		switch {
		case p.Port == nil:
			return true
		case p.Port.StrVal != "":
			for _, cp := range ports {
				if cp.Name == p.Port.StrVal && cp.ContainerPort == port {
					return true
				}
			}
		case p.EndPort != nil:
			if port >= p.Port.IntVal && port <= *p.EndPort {
				return true
			}
		case p.Port.IntVal == port:
			return true
		}
	}
	return false
}

// isolation checks that the NetworkPolicies of objs admit the gateway to
// the service's check port, no hostile peer to its check or web port, and
// anyone to its probe port (the kubelet's probes on CNIs that filter them,
// Prometheus).
func isolation(objs []*object, d *appsv1.Deployment, ns string, gateway netPeer, hostile []netPeer) []error {
	var errs []error
	c := d.Spec.Template.Spec.Containers[0]
	port := func(name string) int32 {
		for _, p := range c.Ports {
			if p.Name == name {
				return p.ContainerPort
			}
		}
		return 0
	}
	pod := d.Spec.Template.Labels
	checkPort, webPort, probePort, grpcPort := port("http-api"), port("http-web"), port("http-readiness"), port("grpc")
	if isolated, ok := admitted(objs, ns, pod, c.Ports, gateway, checkPort); !isolated {
		errs = append(errs, fmt.Errorf("no NetworkPolicy selects the service's pods: any pod (a notebook server) can send the check port requests the gateway would never send"))
		return errs
	} else if !ok {
		errs = append(errs, fmt.Errorf("the NetworkPolicies do not admit the ingress gateway (%s %v) to the check port %d", gateway.ns, gateway.labels, checkPort))
	}
	if _, ok := admitted(objs, ns, pod, c.Ports, gateway, grpcPort); grpcPort != 0 && !ok {
		errs = append(errs, fmt.Errorf("the NetworkPolicies do not admit the ingress gateway (%s %v) to the gRPC check port %d", gateway.ns, gateway.labels, grpcPort))
	}
	for _, h := range hostile {
		for _, p := range []int32{checkPort, webPort, grpcPort} {
			if p == 0 {
				continue
			}
			if _, ok := admitted(objs, ns, pod, c.Ports, h, p); ok {
				errs = append(errs, fmt.Errorf("%s (%s %v) may connect to the service's port %d", h.what, h.ns, h.labels, p))
			}
		}
		if _, ok := admitted(objs, ns, pod, c.Ports, h, probePort); !ok {
			errs = append(errs, fmt.Errorf("the probe port %d is closed to %s: probes fail on CNIs that filter the kubelet's traffic, and Prometheus cannot scrape", probePort, h.what))
		}
	}
	return errs
}

// checkServiceIsolation: in a composition, with Kubeflow's own
// NetworkPolicies, the gateway reaches the check port and no notebook server
// or application reaches the check or web port.
func checkServiceIsolation(v *kubeflowView) []error {
	return isolation(v.r.Objects, v.deploy, v.ns, netPeer{"the ingress gateway", "istio-system", v.gateway}, hostilePeers)
}

// TestOverlaysIsolateTheService: every overlay that runs the service ships a
// NetworkPolicy that admits its check and web ports only from the ingress
// gateway (and, for kubeflow-jwt, istiod to the web port: the issued tokens'
// keys), and its probe port from anywhere.
func TestOverlaysIsolateTheService(t *testing.T) {
	// Istio's ingress gateway as istioctl, its Helm chart and Kubeflow
	// install it.
	gateway := netPeer{"the ingress gateway", "istio-system", map[string]string{"app": "istio-ingressgateway", "istio": "ingressgateway"}}
	hostile := append(slices.Clone(hostilePeers), netPeer{"another pod of istio-system", "istio-system", map[string]string{"app": "prometheus"}})
	n := 0
	for _, r := range renderAll(t) {
		do := r.find("Deployment", workloadName)
		if !strings.HasPrefix(r.Name, "overlays/") || do == nil {
			continue
		}
		n++
		for _, err := range isolation(r.Objects, typed[appsv1.Deployment](do), do.Namespace, gateway, hostile) {
			t.Errorf("%s: %v", r.Name, err)
		}
	}
	if n == 0 {
		t.Fatal("no overlay runs the service")
	}
}

// TestNoTokenForwardedUpstream: no RequestAuthentication that deploy/ ships
// forwards the token it verified.
func TestNoTokenForwardedUpstream(t *testing.T) {
	for _, r := range renderAll(t) {
		for _, o := range r.all("RequestAuthentication") {
			for i, jr := range asList(dig(o.Map, "spec")["jwtRules"]) {
				if f := jr.(map[string]any)["forwardOriginalToken"]; f == true {
					t.Errorf("%s: %s rule %d: forwardOriginalToken %v, want false: the upstream (a colleague's notebook server) would receive a token this gateway accepts", r.Name, o.id(), i, f)
				}
			}
		}
	}
}
