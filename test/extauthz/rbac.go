package extauthz

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
)

// RBAC (envoy.extensions.filters.http.rbac.v3.RBAC) with Envoy's engine
// (source/extensions/filters/common/rbac): a policy matches when one of its
// permissions and one of its principals match; policies are tried in the
// order of their names. The shadow rules decide nothing: their result and
// the matched policy go to the dynamic metadata envoy.filters.http.rbac as
// <shadow_rules_stat_prefix>shadow_engine_result and
// <shadow_rules_stat_prefix>shadow_effective_policy_id, where Istio's CUSTOM
// action has its ext_authz filter look (filter_enabled_metadata). The
// enforced rules answer 403 "RBAC: access denied": ALLOW when no policy
// matches, DENY when one does.

type rbacRules struct {
	Action   string                 `json:"action,omitempty"`
	Policies map[string]*rbacPolicy `json:"policies,omitempty"`
}

type rbacPolicy struct {
	Permissions []*permission `json:"permissions"`
	Principals  []*principal  `json:"principals"`
}

type permissionSet struct {
	Rules []*permission `json:"rules"`
}

type permission struct {
	Any                 bool             `json:"any,omitempty"`
	AndRules            *permissionSet   `json:"andRules,omitempty"`
	OrRules             *permissionSet   `json:"orRules,omitempty"`
	NotRule             *permission      `json:"notRule,omitempty"`
	Header              *headerMatcher   `json:"header,omitempty"`
	URLPath             *pathMatcher     `json:"urlPath,omitempty"`
	DestinationIP       *cidrRange       `json:"destinationIp,omitempty"`
	DestinationPort     *int             `json:"destinationPort,omitempty"`
	Metadata            *metadataMatcher `json:"metadata,omitempty"`
	RequestedServerName *stringMatcher   `json:"requestedServerName,omitempty"`
}

type principalSet struct {
	IDs []*principal `json:"ids"`
}

type principal struct {
	Any           bool          `json:"any,omitempty"`
	AndIDs        *principalSet `json:"andIds,omitempty"`
	OrIDs         *principalSet `json:"orIds,omitempty"`
	NotID         *principal    `json:"notId,omitempty"`
	Authenticated *struct {
		PrincipalName *stringMatcher `json:"principalName,omitempty"`
	} `json:"authenticated,omitempty"`
	SourceIP       *cidrRange       `json:"sourceIp,omitempty"`
	DirectRemoteIP *cidrRange       `json:"directRemoteIp,omitempty"`
	RemoteIP       *cidrRange       `json:"remoteIp,omitempty"`
	Header         *headerMatcher   `json:"header,omitempty"`
	URLPath        *pathMatcher     `json:"urlPath,omitempty"`
	Metadata       *metadataMatcher `json:"metadata,omitempty"`
}

type rbacConfig struct {
	Rules                 *rbacRules `json:"rules,omitempty"`
	ShadowRules           *rbacRules `json:"shadowRules,omitempty"`
	ShadowRulesStatPrefix string     `json:"shadowRulesStatPrefix,omitempty"`
	RulesStatPrefix       string     `json:"rulesStatPrefix,omitempty"`
}

type rbacFilter struct{ cfg rbacConfig }

func newRBACFilter(raw json.RawMessage) (*rbacFilter, error) {
	f := &rbacFilter{}
	if err := decodeKnown(raw, &f.cfg, "@type"); err != nil {
		return nil, fmt.Errorf("rbac: %w", err)
	}
	for _, rules := range []*rbacRules{f.cfg.Rules, f.cfg.ShadowRules} {
		if rules == nil {
			continue
		}
		switch rules.Action {
		case "", "ALLOW", "DENY", "LOG":
		default:
			return nil, fmt.Errorf("rbac: action %s", rules.Action)
		}
		for name, p := range rules.Policies {
			if len(p.Permissions) == 0 || len(p.Principals) == 0 {
				return nil, fmt.Errorf("rbac policy %s: permissions and principals are required", name)
			}
			for _, x := range p.Permissions {
				if err := x.compile(); err != nil {
					return nil, fmt.Errorf("rbac policy %s: %w", name, err)
				}
			}
			for _, x := range p.Principals {
				if err := x.compile(); err != nil {
					return nil, fmt.Errorf("rbac policy %s: %w", name, err)
				}
			}
		}
	}
	return f, nil
}

func (f *rbacFilter) name() string { return "envoy.filters.http.rbac" }

func (f *rbacFilter) decodeHeaders(s *stream) bool {
	if f.cfg.ShadowRules != nil {
		allowed, id := f.cfg.ShadowRules.allowed(s)
		result := "allowed"
		if !allowed {
			result = "denied"
		}
		fields := map[string]any{f.cfg.ShadowRulesStatPrefix + "shadow_engine_result": result}
		if id != "" {
			fields[f.cfg.ShadowRulesStatPrefix+"shadow_effective_policy_id"] = id
		}
		s.setMetadata("envoy.filters.http.rbac", fields)
	}
	if f.cfg.Rules != nil {
		if allowed, _ := f.cfg.Rules.allowed(s); !allowed {
			s.localReply(http.StatusForbidden, "RBAC: access denied", nil)
			return false
		}
	}
	return true
}

// allowed is the engine's decision and the first matching policy's name.
func (r *rbacRules) allowed(s *stream) (bool, string) {
	var names []string
	for n := range r.Policies {
		names = append(names, n)
	}
	sort.Strings(names)
	matched := ""
	for _, n := range names {
		if r.Policies[n].matches(s) {
			matched = n
			break
		}
	}
	switch r.Action {
	case "DENY":
		return matched == "", matched
	case "LOG":
		return true, matched
	}
	return matched != "", matched
}

func (p *rbacPolicy) matches(s *stream) bool {
	perm := false
	for _, x := range p.Permissions {
		if x.matches(s) {
			perm = true
			break
		}
	}
	if !perm {
		return false
	}
	for _, x := range p.Principals {
		if x.matches(s) {
			return true
		}
	}
	return false
}

func (x *permission) compile() error {
	switch {
	case x.AndRules != nil:
		for _, r := range x.AndRules.Rules {
			if err := r.compile(); err != nil {
				return err
			}
		}
	case x.OrRules != nil:
		for _, r := range x.OrRules.Rules {
			if err := r.compile(); err != nil {
				return err
			}
		}
	case x.NotRule != nil:
		return x.NotRule.compile()
	case x.Header != nil:
		return x.Header.compile()
	case x.URLPath != nil:
		return x.URLPath.compile()
	case x.Metadata != nil:
		return x.Metadata.compile()
	case x.RequestedServerName != nil:
		return x.RequestedServerName.compile()
	case x.Any, x.DestinationIP != nil, x.DestinationPort != nil:
	default:
		return fmt.Errorf("a permission of a kind not emulated")
	}
	return nil
}

func (x *permission) matches(s *stream) bool {
	switch {
	case x.Any:
		return true
	case x.AndRules != nil:
		for _, r := range x.AndRules.Rules {
			if !r.matches(s) {
				return false
			}
		}
		return true
	case x.OrRules != nil:
		for _, r := range x.OrRules.Rules {
			if r.matches(s) {
				return true
			}
		}
		return false
	case x.NotRule != nil:
		return !x.NotRule.matches(s)
	case x.Header != nil:
		return x.Header.match(s.view())
	case x.URLPath != nil:
		return x.URLPath.match(s.path)
	case x.DestinationIP != nil:
		return x.DestinationIP.contains("10.244.0.10") // the gateway pod's address (test/istio)
	case x.DestinationPort != nil:
		return *x.DestinationPort == s.g.listener
	case x.Metadata != nil:
		return x.Metadata.match(s.metadata)
	case x.RequestedServerName != nil:
		return x.RequestedServerName.match("") // no TLS: no SNI
	}
	return false
}

func (x *principal) compile() error {
	switch {
	case x.AndIDs != nil:
		for _, r := range x.AndIDs.IDs {
			if err := r.compile(); err != nil {
				return err
			}
		}
	case x.OrIDs != nil:
		for _, r := range x.OrIDs.IDs {
			if err := r.compile(); err != nil {
				return err
			}
		}
	case x.NotID != nil:
		return x.NotID.compile()
	case x.Header != nil:
		return x.Header.compile()
	case x.URLPath != nil:
		return x.URLPath.compile()
	case x.Metadata != nil:
		return x.Metadata.compile()
	case x.Authenticated != nil:
		if x.Authenticated.PrincipalName != nil {
			return x.Authenticated.PrincipalName.compile()
		}
	case x.Any, x.SourceIP != nil, x.DirectRemoteIP != nil, x.RemoteIP != nil:
	default:
		return fmt.Errorf("a principal of a kind not emulated")
	}
	return nil
}

func (x *principal) matches(s *stream) bool {
	switch {
	case x.Any:
		return true
	case x.AndIDs != nil:
		for _, r := range x.AndIDs.IDs {
			if !r.matches(s) {
				return false
			}
		}
		return true
	case x.OrIDs != nil:
		for _, r := range x.OrIDs.IDs {
			if r.matches(s) {
				return true
			}
		}
		return false
	case x.NotID != nil:
		return !x.NotID.matches(s)
	case x.Authenticated != nil:
		return false // plain HTTP: no peer certificate
	case x.SourceIP != nil:
		return x.SourceIP.contains(s.remoteIP)
	case x.DirectRemoteIP != nil:
		return x.DirectRemoteIP.contains(s.remoteIP)
	case x.RemoteIP != nil:
		return x.RemoteIP.contains(s.remoteIP)
	case x.Header != nil:
		return x.Header.match(s.view())
	case x.URLPath != nil:
		return x.URLPath.match(s.path)
	case x.Metadata != nil:
		return x.Metadata.match(s.metadata)
	}
	return false
}
