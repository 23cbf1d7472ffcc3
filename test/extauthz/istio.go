package extauthz

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
)

// The gateway takes its configuration from the Envoy configuration Istio's
// translation produces (envoy.go). What remains here reads Istio's YAML
// for test/manifests' static checks of the rendered compositions: whether an
// AuthorizationPolicy's rules match a request, with the semantics Istio's
// translation gives them (test/istio/testdata/envoy shows each): "*" in a
// request.headers condition is a presence match (an empty header is
// present); a request principal "*" needs a JWT with non-empty iss and sub
// (the principal here is "<iss>/<sub>", "" without one); paths are compared
// as given (the caller passes the path the gateway's HCM would produce).

// PolicyMatches evaluates the rules of an AuthorizationPolicy's spec for a
// request from outside the mesh whose validated JWT (if any) has the
// request principal principal ("" for none). test/manifests simulates the
// rendered policies with it.
func PolicyMatches(spec map[string]any, r *http.Request, principal string) (bool, error) {
	rules, _ := spec["rules"].([]any)
	return policyMatches(rules, r, principal)
}

// policyMatches evaluates an AuthorizationPolicy's rules as Istio does: rules are
// ORed; within a rule from, to and when are ANDed; a policy without rules
// matches nothing, a rule without fields matches everything.
func policyMatches(rules []any, r *http.Request, principal string) (bool, error) {
	for _, ru := range rules {
		rule, _ := ru.(map[string]any)
		ok := true
		for k, v := range rule {
			var m bool
			var err error
			switch k {
			case "from":
				m, err = anyOf(v, func(x map[string]any) (bool, error) { return source(mapAt(x, "source"), principal) })
			case "to":
				m, err = anyOf(v, func(x map[string]any) (bool, error) { return operation(mapAt(x, "operation"), r) })
			case "when":
				m = true
				for _, c := range list(v) {
					cm, cerr := condition(c.(map[string]any), r, principal)
					if cerr != nil {
						return false, cerr
					}
					m = m && cm
				}
			default:
				return false, fmt.Errorf("rule field %s not emulated", k)
			}
			if err != nil {
				return false, err
			}
			ok = ok && m
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

func anyOf(v any, f func(map[string]any) (bool, error)) (bool, error) {
	for _, x := range list(v) {
		m, err := f(x.(map[string]any))
		if err != nil || m {
			return m, err
		}
	}
	return false, nil
}

func source(s map[string]any, principal string) (bool, error) {
	ok := true
	for k, v := range s {
		switch k {
		case "requestPrincipals":
			ok = ok && matchAnyString(strs(v), principal)
		case "notRequestPrincipals":
			ok = ok && !matchAnyString(strs(v), principal)
		case "principals", "namespaces":
			// Requests from outside the mesh have no peer identity.
			ok = ok && matchAnyString(strs(v), "")
		case "notPrincipals", "notNamespaces":
			ok = ok && !matchAnyString(strs(v), "")
		default:
			return false, fmt.Errorf("source field %s not emulated", k)
		}
	}
	return ok, nil
}

func operation(o map[string]any, r *http.Request) (bool, error) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ok := true
	for k, v := range o {
		switch k {
		case "paths":
			ok = ok && matchAnyString(strs(v), r.URL.Path)
		case "notPaths":
			ok = ok && !matchAnyString(strs(v), r.URL.Path)
		case "methods":
			ok = ok && matchAnyString(strs(v), r.Method)
		case "notMethods":
			ok = ok && !matchAnyString(strs(v), r.Method)
		case "hosts":
			ok = ok && (matchAnyFold(strs(v), r.Host) || matchAnyFold(strs(v), host))
		case "notHosts":
			ok = ok && !matchAnyFold(strs(v), r.Host) && !matchAnyFold(strs(v), host)
		default:
			return false, fmt.Errorf("operation field %s not emulated", k)
		}
	}
	return ok, nil
}

var headerKey = regexp.MustCompile(`^request\.headers\[([^\]]+)\]$`)

func condition(c map[string]any, r *http.Request, principal string) (bool, error) {
	key := fmt.Sprint(c["key"])
	var value string
	present := true
	switch {
	case headerKey.MatchString(key):
		vals, ok := r.Header[http.CanonicalHeaderKey(headerKey.FindStringSubmatch(key)[1])]
		value, present = strings.Join(vals, ","), ok
	case key == "request.auth.principal":
		value, present = principal, principal != ""
	default:
		return false, fmt.Errorf("condition key %s not emulated", key)
	}
	match := func(patterns []string) bool {
		for _, p := range patterns {
			// Istio translates "*" into a presence match: a header sent
			// empty is present.
			if p == "*" && present {
				return true
			}
			if p != "*" && present && matchAnyString([]string{p}, value) {
				return true
			}
		}
		return false
	}
	ok := true
	if v, has := c["values"]; has {
		ok = ok && match(strs(v))
	}
	if v, has := c["notValues"]; has {
		ok = ok && !match(strs(v))
	}
	return ok, nil
}

// matchAnyString is Istio's string match: "*" (present), "abc*" (prefix),
// "*abc" (suffix), else exact. An empty value is absent.
func matchAnyString(patterns []string, v string) bool {
	for _, p := range patterns {
		switch {
		case p == "*":
			if v != "" {
				return true
			}
		case strings.HasSuffix(p, "*"):
			if strings.HasPrefix(v, strings.TrimSuffix(p, "*")) {
				return true
			}
		case strings.HasPrefix(p, "*"):
			if strings.HasSuffix(v, strings.TrimPrefix(p, "*")) {
				return true
			}
		case p == v:
			return true
		}
	}
	return false
}

func matchAnyFold(patterns []string, v string) bool {
	return matchAnyString(lowerAll(patterns), strings.ToLower(v))
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func strs(v any) []string {
	var out []string
	for _, x := range list(v) {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func mapAt(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		m, _ = m[k].(map[string]any)
	}
	return m
}

func lowerAll(l []string) []string {
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = strings.ToLower(s)
	}
	return out
}
