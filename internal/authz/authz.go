// Package authz owns the decision whether an authenticated identity may pass:
// GROUPS_ALLOWLIST, as the predecessor had it, then the rules of
// AUTHORIZATION_RULES_FILE, for browser sessions and bearer tokens alike.
//
// Rules are tried in order; the first whose host, path prefix and method
// match decides. A request no rule matches gets the file's default (allow
// unless it says deny).
//
//	rules:
//	- name: pipelines-ci
//	  host: kubeflow.example.com        # optional; "*.example.com" matches sub-domains
//	  pathPrefix: /pipeline/            # segment-aware, like SKIP_AUTH_URLS
//	  methods: [GET, POST]              # optional
//	  allow:
//	    users: ["gitlab-ci:project_path:foo/bar:ref_type:branch:ref:main"]
//	    groups: ["gitlab:acme"]
//	    emailDomains: [example.com]
//	    authenticated: false            # true: anybody authenticated
//	default: allow
package authz

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/oidc-authservice/oidc-authservice/internal/logtext"
	"github.com/oidc-authservice/oidc-authservice/internal/urlpath"
)

// RulesFile is the format of AUTHORIZATION_RULES_FILE.
type RulesFile struct {
	Rules   []Rule `json:"rules"`
	Default string `json:"default,omitempty"`
}

// Rule matches requests and says who may make them.
type Rule struct {
	Name       string   `json:"name,omitempty"`
	Host       string   `json:"host,omitempty"`
	PathPrefix string   `json:"pathPrefix,omitempty"`
	Methods    []string `json:"methods,omitempty"`
	Allow      Subjects `json:"allow"`
}

// Subjects are who a rule allows.
type Subjects struct {
	Users         []string `json:"users,omitempty"`
	Groups        []string `json:"groups,omitempty"`
	EmailDomains  []string `json:"emailDomains,omitempty"`
	Authenticated bool     `json:"authenticated,omitempty"`
}

// ErrRules wraps every problem of the rules file.
var ErrRules = errors.New("invalid authorization rules")

// Policy decides about identities.
type Policy struct {
	allowAll    bool
	groups      map[string]struct{}
	rules       []Rule
	defaultDeny bool
}

// Options configure the policy.
type Options struct {
	AllowAll  bool     // GROUPS_ALLOWLIST is *
	Groups    []string // GROUPS_ALLOWLIST
	RulesFile string   // AUTHORIZATION_RULES_FILE; optional
}

// New builds the policy from the allowlist and the rules file, if any.
func New(o Options) (*Policy, error) {
	p := &Policy{allowAll: o.AllowAll, groups: map[string]struct{}{}}
	for _, g := range o.Groups {
		p.groups[g] = struct{}{}
	}
	if o.RulesFile == "" {
		return p, nil
	}
	b, err := os.ReadFile(o.RulesFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRules, err)
	}
	return p, p.parse(b)
}

func (p *Policy) parse(b []byte) error {
	var f RulesFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return fmt.Errorf("%w: %v", ErrRules, err)
	}
	var errs []error
	switch f.Default {
	case "", "allow":
	case "deny":
		p.defaultDeny = true
	default:
		errs = append(errs, fmt.Errorf("%w: default %q: want allow or deny", ErrRules, f.Default))
	}
	for i, r := range f.Rules {
		if r.Name == "" {
			f.Rules[i].Name = fmt.Sprintf("rules[%d]", i)
		}
		if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
			errs = append(errs, fmt.Errorf("%w: %s: pathPrefix must start with /", ErrRules, f.Rules[i].Name))
		}
		a := r.Allow
		if !a.Authenticated && len(a.Users)+len(a.Groups)+len(a.EmailDomains) == 0 {
			errs = append(errs, fmt.Errorf("%w: %s: allows nobody (set users, groups, emailDomains or authenticated)", ErrRules, f.Rules[i].Name))
		}
		for j, m := range r.Methods {
			f.Rules[i].Methods[j] = strings.ToUpper(m)
		}
		f.Rules[i].Host = strings.ToLower(r.Host)
	}
	p.rules = f.Rules
	return errors.Join(errs...)
}

// Request is what the policy looks at.
type Request struct {
	Host, Method string
	// Path is the canonical path (urlpath.Canonical); RawPath the path as
	// the gateway passes it on, when it differs. The rules judge both and
	// the request passes only when both pass: the strictest reading.
	Path, RawPath string
	User          string
	Groups        []string
}

// Decide reports whether the request may pass, and when not, why (naming
// the rule).
func (p *Policy) Decide(q Request) (bool, string) {
	if !p.allowAll && !p.inAllowlist(q.Groups) {
		return false, "none of the user's groups is in GROUPS_ALLOWLIST"
	}
	ok, why := p.decidePath(q, q.Path)
	if ok && q.RawPath != "" && q.RawPath != q.Path {
		if ok, why = p.decidePath(q, q.RawPath); !ok {
			why += " (path as sent: " + logtext.Bound(q.RawPath, 128) + ")"
		}
	}
	return ok, why
}

func (p *Policy) decidePath(q Request, path string) (bool, string) {
	q.Path = path
	for _, r := range p.rules {
		if !r.matches(q) {
			continue
		}
		if r.Allow.allows(q) {
			return true, ""
		}
		return false, "not allowed by rule " + r.Name
	}
	if p.defaultDeny {
		return false, "no authorization rule matches and the default is deny"
	}
	return true, ""
}

func (p *Policy) inAllowlist(groups []string) bool {
	for _, g := range groups {
		if _, ok := p.groups[g]; ok {
			return true
		}
	}
	return false
}

func (r Rule) matches(q Request) bool {
	if r.Host != "" {
		host := strings.ToLower(q.Host)
		if h, _, ok := strings.Cut(host, ":"); ok {
			host = h
		}
		if !(host == r.Host || (strings.HasPrefix(r.Host, "*.") && strings.HasSuffix(host, r.Host[1:]))) {
			return false
		}
	}
	if r.PathPrefix != "" && !urlpath.Under(q.Path, r.PathPrefix) {
		return false
	}
	if len(r.Methods) > 0 {
		ok := false
		for _, m := range r.Methods {
			ok = ok || m == q.Method
		}
		if !ok {
			return false
		}
	}
	return true
}

func (s Subjects) allows(q Request) bool {
	if s.Authenticated {
		return true
	}
	for _, u := range s.Users {
		if u == q.User {
			return true
		}
	}
	for _, g := range s.Groups {
		for _, have := range q.Groups {
			if g == have {
				return true
			}
		}
	}
	if at := strings.LastIndexByte(q.User, '@'); at >= 0 {
		domain := strings.ToLower(q.User[at+1:])
		for _, d := range s.EmailDomains {
			if strings.ToLower(d) == domain {
				return true
			}
		}
	}
	return false
}

// NamedGroups lists every group the allowlist and the rules name, each with
// where it is named first ("GROUPS_ALLOWLIST", "rule <name>"), so that the
// composition root can refuse a GROUPS_FILTER that removes one of them.
func (p *Policy) NamedGroups() [][2]string {
	var out [][2]string
	seen := map[string]bool{}
	add := func(g, where string) {
		if !seen[g] {
			seen[g] = true
			out = append(out, [2]string{g, where})
		}
	}
	if !p.allowAll {
		for _, g := range slices.Sorted(maps.Keys(p.groups)) {
			add(g, "GROUPS_ALLOWLIST")
		}
	}
	for _, r := range p.rules {
		for _, g := range r.Allow.Groups {
			add(g, "rule "+r.Name)
		}
	}
	return out
}
