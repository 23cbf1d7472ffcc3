// Package authz owns the decision whether an authenticated identity may pass:
// GROUPS_ALLOWLIST, as the predecessor had it.
package authz

import (
	"github.com/oidc-authservice/oidc-authservice/internal/config"
)

// Policy decides about identities.
type Policy struct {
	allowAll bool
	groups   map[string]struct{}
}

// New builds the policy from the settings.
func New(s *config.Settings) *Policy {
	p := &Policy{allowAll: s.GroupsAllowAll, groups: map[string]struct{}{}}
	for _, g := range s.GroupsAllowlist {
		p.groups[g] = struct{}{}
	}
	return p
}

// Allowed reports whether a member of groups may pass, and why not.
func (p *Policy) Allowed(groups []string) (bool, string) {
	if p.allowAll {
		return true, ""
	}
	for _, g := range groups {
		if _, ok := p.groups[g]; ok {
			return true, ""
		}
	}
	return false, "none of the user's groups is in GROUPS_ALLOWLIST"
}
