package manifests

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
)

// The session keys of a layout: given (SESSION_KEYS, SESSION_KEYS_FILE) and
// none published, or kept by the service in its Secret
// (SESSION_KEYS_SECRET) with exactly the privileges that needs.

const (
	keySecretComponent = "components/session-keys"
	keyRoleName        = "authservice-session-keys"
	keyPolicyName      = "oidc-authservice-session-keys"
)

// checkSessionKeys is part of checkConsistency.
func checkSessionKeys(r *rendering, s settings, pod corev1.PodSpec, ns string) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(r.Name+": "+format, a...)) }
	for i, k := range splitKeys(s.env["SESSION_KEYS"]) {
		if !validSessionKey(k) {
			bad("SESSION_KEYS key %d: need at least 32 bytes (raw) or base64 of at least 32 bytes", i+1)
		}
		if why := config.Published(k); why != "" {
			bad("SESSION_KEYS key %d is published (%s): no shipped key may work anywhere", i+1, why)
		}
	}
	secretName := s.get("SESSION_KEYS_SECRET")
	given := s.env["SESSION_KEYS"] != "" || s.get("SESSION_KEYS_FILE") != ""
	if !given && secretName == "" {
		bad("no session keys: neither SESSION_KEYS, SESSION_KEYS_FILE nor SESSION_KEYS_SECRET")
	}
	token := pod.AutomountServiceAccountToken != nil && *pod.AutomountServiceAccountToken
	if secretName == "" {
		return errs
	}
	// The service reads or creates its Secret, and checks the guard, with
	// its own token: the Role, the binding, the policy and the token.
	if !token {
		bad("SESSION_KEYS_SECRET=%s needs the pod's token (automountServiceAccountToken: true, %s)", secretName, keySecretComponent)
	}
	errs = append(errs, checkKeyPrivileges(r, secretName, pod.ServiceAccountName, ns)...)
	return errs
}

func splitKeys(v string) []string {
	var out []string
	for _, k := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == '\n' }) {
		if k = strings.TrimSpace(k); k != "" {
			out = append(out, k)
		}
	}
	return out
}

// checkKeyPrivileges: the service's account may get its Secret and create
// Secrets in its namespace, nothing else on Secrets anywhere, and the
// admission policy confines its creates to that Secret, type Opaque, with
// no service-account annotation.
func checkKeyPrivileges(r *rendering, secretName, sa, ns string) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(r.Name+": "+format, a...)) }
	bound := func(subjects []rbacv1.Subject, bindingNS string) bool {
		for _, s := range subjects {
			sns := s.Namespace
			if sns == "" {
				sns = bindingNS
			}
			if s.Kind == "ServiceAccount" && s.Name == sa && sns == ns {
				return true
			}
		}
		return false
	}
	var getOwn, create bool
	grants := func(where string, rules []rbacv1.PolicyRule) {
		for _, rule := range rules {
			if !slices.Contains(rule.APIGroups, "") && !slices.Contains(rule.APIGroups, "*") {
				continue
			}
			if !slices.Contains(rule.Resources, "secrets") && !slices.Contains(rule.Resources, "*") {
				continue
			}
			for _, v := range rule.Verbs {
				switch {
				case v == "get" && slices.Equal(rule.ResourceNames, []string{secretName}) && where == "Role "+ns+"/"+keyRoleName:
					getOwn = true
				case v == "create" && len(rule.ResourceNames) == 0 && where == "Role "+ns+"/"+keyRoleName:
					create = true
				default:
					bad("%s grants %s on secrets %v to the service's account: only get on %s and create are needed", where, v, rule.ResourceNames, secretName)
				}
			}
		}
	}
	for _, o := range r.all("RoleBinding") {
		b := typed[rbacv1.RoleBinding](o)
		if !bound(b.Subjects, o.Namespace) {
			continue
		}
		role := r.findIn("ClusterRole", "", b.RoleRef.Name)
		if b.RoleRef.Kind == "Role" {
			role = r.findIn("Role", o.Namespace, b.RoleRef.Name)
		}
		if role != nil {
			grants(role.Kind+" "+role.Namespace+"/"+role.Name, typed[rbacv1.ClusterRole](role).Rules)
		}
	}
	for _, o := range r.all("ClusterRoleBinding") {
		b := typed[rbacv1.ClusterRoleBinding](o)
		if !bound(b.Subjects, "") {
			continue
		}
		if role := r.findIn("ClusterRole", "", b.RoleRef.Name); role != nil {
			grants("ClusterRole "+role.Name, typed[rbacv1.ClusterRole](role).Rules)
		}
	}
	if !getOwn || !create {
		bad("the service's account needs get on secrets/%s and create on secrets in %s (Role %s of %s)", secretName, ns, keyRoleName, keySecretComponent)
	}
	// The policy and its binding, naming the account and the Secret.
	p, pb := r.findIn("ValidatingAdmissionPolicy", "", keyPolicyName), r.findIn("ValidatingAdmissionPolicyBinding", "", keyPolicyName)
	if p == nil || pb == nil {
		bad("ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding %s are required: RBAC cannot confine create to one name (%s)", keyPolicyName, keySecretComponent)
		return errs
	}
	spec := p.Map["spec"].(map[string]any)
	if spec["failurePolicy"] != "Fail" {
		bad("ValidatingAdmissionPolicy %s: failurePolicy must be Fail", keyPolicyName)
	}
	var conds, rules []string
	for _, c := range asList(spec["matchConditions"]) {
		conds = append(conds, fmt.Sprint(c.(map[string]any)["expression"]))
	}
	for _, v := range asList(spec["validations"]) {
		rules = append(rules, fmt.Sprint(v.(map[string]any)["expression"]))
	}
	all := strings.Join(rules, "\n")
	if len(conds) != 1 || !strings.Contains(conds[0], `":`+sa+`"`) || !strings.Contains(conds[0], "request.userInfo.username") {
		bad("ValidatingAdmissionPolicy %s must match ServiceAccount %s (got %q)", keyPolicyName, sa, conds)
	}
	for _, want := range []string{`object.metadata.name == "` + secretName + `"`, `object.type == "Opaque"`, `"kubernetes.io/service-account.name" in object.metadata.annotations`} {
		if !strings.Contains(all, want) {
			bad("ValidatingAdmissionPolicy %s lacks the rule %s", keyPolicyName, want)
		}
	}
	bs := pb.Map["spec"].(map[string]any)
	if bs["policyName"] != keyPolicyName || !slices.Contains(asList(bs["validationActions"]), any("Deny")) {
		bad("ValidatingAdmissionPolicyBinding %s must bind %s with Deny", keyPolicyName, keyPolicyName)
	}
	return errs
}

// knownKeysIn lists every value of the rendered objects (Secret data
// decoded, env-file lines of ConfigMaps included) that is a key published
// anywhere — except Kubeflow's Dex client secret, which the one-line swaps
// must match and the service warns about.
func knownKeysIn(objs []*object) []error {
	var errs []error
	var walk func(where string, v any)
	check := func(where, s string) {
		for _, line := range strings.Split(s, "\n") {
			_, val, ok := strings.Cut(line, "=")
			for _, c := range []string{strings.TrimSpace(line), strings.TrimSpace(val)} {
				if c == "" || (c == val && !ok) {
					continue
				}
				if k := config.KnownKey(c); k != "" && !strings.Contains(k, "Dex client secret") {
					errs = append(errs, fmt.Errorf("%s holds %s", where, k))
				}
			}
		}
	}
	walk = func(where string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				walk(where+"."+k, e)
			}
		case []any:
			for i, e := range x {
				walk(fmt.Sprintf("%s[%d]", where, i), e)
			}
		case string:
			check(where, x)
		}
	}
	for _, o := range objs {
		m := o.Map
		if o.Kind == "Secret" {
			// data is base64: read decoded below.
			m = map[string]any{}
			for k, v := range o.Map {
				if k != "data" {
					m[k] = v
				}
			}
		}
		walk(o.id(), m)
		if o.Kind == "Secret" {
			data, _ := o.Map["data"].(map[string]any)
			for k, v := range data {
				if b, err := base64.StdEncoding.DecodeString(fmt.Sprint(v)); err == nil {
					check(o.id()+" data "+k, string(b))
				}
			}
		}
	}
	return errs
}

// TestNoPublishedKeyRendered: no rendered layout (base, overlays, components,
// Kubeflow compositions) holds a session key published anywhere, and none
// ships SESSION_KEYS at all: each installation gets its own.
func TestNoPublishedKeyRendered(t *testing.T) {
	for _, r := range renderAll(t) {
		for _, err := range knownKeysIn(r.Objects) {
			t.Errorf("%s: %v", r.Name, err)
		}
		if sec := r.find("Secret", secretName); sec != nil {
			if v, ok := typed[corev1.Secret](sec).Data["SESSION_KEYS"]; ok {
				t.Errorf("%s: Secret %s ships SESSION_KEYS (%d bytes): every installation must have its own key", r.Name, secretName, len(v))
			}
		}
	}
	for _, c := range composeAll(t) {
		for _, err := range knownKeysIn(c.Objects.Objects) {
			t.Errorf("%s: %v", c.name(), err)
		}
	}
}

// TestKnownKeysInCatchesThem: the scan of rendered objects finds a
// published key wherever a layout could carry it.
func TestKnownKeysInCatchesThem(t *testing.T) {
	placeholder := "REPLACE-ME-with-the-output-of-openssl-rand-base64-32"
	cookie := "7d16fee92f8d11b8940b081b3f8b8acb"
	objs := []*object{
		{Kind: "Secret", Name: "a", Map: map[string]any{"data": map[string]any{"SESSION_KEYS": base64.StdEncoding.EncodeToString([]byte(placeholder))}}},
		{Kind: "ConfigMap", Name: "b", Map: map[string]any{"data": map[string]any{"params.env": "X=1\nSESSION_KEYS=" + cookie + "\n"}}},
		{Kind: "Deployment", Name: "c", Map: map[string]any{"spec": map[string]any{"env": []any{map[string]any{"name": "SESSION_KEYS", "value": placeholder}}}}},
		{Kind: "Secret", Name: "d", Map: map[string]any{"stringData": map[string]any{"CLIENT_SECRET": "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok"}}},
	}
	errs := knownKeysIn(objs)
	if len(errs) != 3 {
		t.Fatalf("found %d (%v), want the three session keys and not Dex's client secret", len(errs), errs)
	}
}
