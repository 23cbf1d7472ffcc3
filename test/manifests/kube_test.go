package manifests

import (
	"fmt"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
)

// typedKinds are the Kubernetes kinds the manifests may contain, each with the
// k8s.io/api type it must decode into.
var typedKinds = map[string]func() any{
	"v1/ServiceAccount":                               func() any { return &corev1.ServiceAccount{} },
	"v1/Service":                                      func() any { return &corev1.Service{} },
	"v1/ConfigMap":                                    func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                                       func() any { return &corev1.Secret{} },
	"apps/v1/Deployment":                              func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget":                   func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler":          func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"networking.k8s.io/v1/NetworkPolicy":              func() any { return &networkingv1.NetworkPolicy{} },
	"v1/Namespace":                                    func() any { return &corev1.Namespace{} },
	"rbac.authorization.k8s.io/v1/ClusterRole":        func() any { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() any { return &rbacv1.ClusterRoleBinding{} },
	// Kubeflow 1.9.0's m2m issuer configurator (kept by its oauth2-proxy swap).
	"rbac.authorization.k8s.io/v1/Role":        func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding": func() any { return &rbacv1.RoleBinding{} },
	"batch/v1/CronJob":                         func() any { return &batchv1.CronJob{} },
	// components/session-keys: what confines the service's Secret writes.
	"admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy":        func() any { return &admissionregistrationv1.ValidatingAdmissionPolicy{} },
	"admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding": func() any { return &admissionregistrationv1.ValidatingAdmissionPolicyBinding{} },
}

// clusterScoped are the kinds without a namespace.
var clusterScoped = map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true}

// strictDecode decodes JSON into v the way the API server's strict field
// validation does: case-sensitive, unknown and duplicate fields are errors.
func strictDecode(data []byte, v any) []error {
	strict, err := kjson.UnmarshalStrict(data, v, kjson.DisallowUnknownFields, kjson.DisallowDuplicateFields)
	if err != nil {
		return []error{err}
	}
	return strict
}

// validateObject validates one rendered object by its kind.
func validateObject(o *object) []error {
	gvk := o.APIVersion + "/" + o.Kind
	var errs []error
	if f, ok := typedKinds[gvk]; ok {
		v := f()
		errs = append(errs, strictDecode(o.JSON, v)...)
		if len(errs) == 0 {
			errs = append(errs, checkTyped(v)...)
		}
	} else if crd := crdSchema(gvk); crd != nil {
		errs = append(errs, validateCustom(o, crd)...)
	} else {
		return []error{fmt.Errorf("%s: no validation for this kind: add it to typedKinds or vendor its CRD", gvk)}
	}
	errs = append(errs, checkMeta(o)...)
	return errs
}

// checkMeta validates names, labels and annotations as the API server does.
func checkMeta(o *object) []error {
	var errs []error
	md, _ := o.Map["metadata"].(map[string]any)
	var meta metav1.ObjectMeta
	b, _ := jsonMarshal(md)
	errs = append(errs, strictDecode(b, &meta)...)
	for _, m := range validation.IsDNS1123Subdomain(meta.Name) {
		errs = append(errs, fmt.Errorf("metadata.name: %s", m))
	}
	for _, m := range validation.IsDNS1123Label(meta.Namespace) {
		if clusterScoped[o.Kind] && meta.Namespace == "" {
			break
		}
		errs = append(errs, fmt.Errorf("metadata.namespace: %s", m))
	}
	for k, v := range meta.Labels {
		for _, m := range validation.IsQualifiedName(k) {
			errs = append(errs, fmt.Errorf("label %q: %s", k, m))
		}
		for _, m := range validation.IsValidLabelValue(v) {
			errs = append(errs, fmt.Errorf("label %q value: %s", k, m))
		}
	}
	for k := range meta.Annotations {
		for _, m := range validation.IsQualifiedName(strings.ToLower(k)) {
			errs = append(errs, fmt.Errorf("annotation %q: %s", k, m))
		}
	}
	for k := range o.Map {
		switch k {
		case "apiVersion", "kind", "metadata", "spec", "data", "stringData", "type", "automountServiceAccountToken":
		case "rules", "roleRef", "subjects": // RBAC kinds
		default:
			errs = append(errs, fmt.Errorf("top-level field %q", k))
		}
	}
	return errs
}

// checkTyped applies a few of the API server's validations that strict
// decoding does not: names of ports, keys and selectors.
func checkTyped(v any) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch x := v.(type) {
	case *corev1.ConfigMap:
		for k := range x.Data {
			for _, m := range validation.IsConfigMapKey(k) {
				bad("data key %q: %s", k, m)
			}
		}
	case *corev1.Secret:
		for k := range x.Data {
			for _, m := range validation.IsConfigMapKey(k) {
				bad("data key %q: %s", k, m)
			}
		}
	case *corev1.Service:
		for _, p := range x.Spec.Ports {
			for _, m := range validation.IsDNS1123Label(p.Name) {
				bad("port name %q: %s", p.Name, m)
			}
			if p.TargetPort.StrVal != "" {
				for _, m := range validation.IsValidPortName(p.TargetPort.StrVal) {
					bad("targetPort %q: %s", p.TargetPort.StrVal, m)
				}
			}
		}
	case *appsv1.Deployment:
		sel, err := metav1.LabelSelectorAsSelector(x.Spec.Selector)
		if err != nil {
			bad("selector: %v", err)
		} else if sel.Empty() || !sel.Matches(labels.Set(x.Spec.Template.Labels)) {
			bad("selector %s does not match the pod template's labels", sel)
		}
		for _, c := range x.Spec.Template.Spec.Containers {
			for _, p := range c.Ports {
				for _, m := range validation.IsValidPortName(p.Name) {
					bad("container port name %q: %s", p.Name, m)
				}
			}
			for _, e := range c.Env {
				for _, m := range validation.IsEnvVarName(e.Name) {
					bad("env %q: %s", e.Name, m)
				}
			}
		}
	}
	return errs
}
