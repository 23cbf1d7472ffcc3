package authn

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/google/cel-go/cel"
	"sigs.k8s.io/yaml"
)

// AuthenticationConfiguration is Kubernetes' structured authentication
// configuration; only its jwt authenticators are used.
type AuthenticationConfiguration struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	JWT        []JWTAuthenticator `json:"jwt"`
	// Anonymous is read so that the API server's own file can be given
	// unchanged, and ignored: an anonymous user has no meaning here.
	Anonymous *AnonymousConfig `json:"anonymous,omitempty"`
}

// AnonymousConfig is the API server's anonymous-access setting.
type AnonymousConfig struct {
	Enabled    bool `json:"enabled"`
	Conditions []struct {
		Path string `json:"path"`
	} `json:"conditions,omitempty"`
}

// JWTAuthenticator is one issuer and how its tokens map to identities.
type JWTAuthenticator struct {
	// AllowUnverifiedEmail (not part of Kubernetes' format) lets a token
	// whose username claim is email pass with email_verified false; set
	// only on the login provider's entry, from ALLOW_UNVERIFIED_EMAIL.
	AllowUnverifiedEmail bool                  `json:"-"`
	Issuer               Issuer                `json:"issuer"`
	ClaimValidationRules []ClaimValidationRule `json:"claimValidationRules,omitempty"`
	ClaimMappings        ClaimMappings         `json:"claimMappings"`
	UserValidationRules  []UserValidationRule  `json:"userValidationRules,omitempty"`
}

// Issuer says where tokens come from and for whom they must be.
type Issuer struct {
	URL                  string   `json:"url"`
	DiscoveryURL         string   `json:"discoveryURL,omitempty"`
	CertificateAuthority string   `json:"certificateAuthority,omitempty"`
	Audiences            []string `json:"audiences"`
	AudienceMatchPolicy  string   `json:"audienceMatchPolicy,omitempty"`
	// DiscoveryTokenFile is an oidc-authservice extension: a bearer token
	// file sent with discovery and JWKS requests, for issuers whose keys are
	// not public (a Kubernetes API server without anonymous discovery: use
	// the pod's /var/run/secrets/kubernetes.io/serviceaccount/token).
	DiscoveryTokenFile string `json:"discoveryTokenFile,omitempty"`
	// CertificateAuthorityFile is an extension: the CA bundle as a file
	// (e.g. the pod's service-account ca.crt) instead of inline PEM.
	CertificateAuthorityFile string `json:"certificateAuthorityFile,omitempty"`
	// EgressSelectorType is read so that the API server's own file can be
	// given unchanged, and ignored: it picks the API server's network path,
	// the service always connects directly.
	EgressSelectorType string `json:"egressSelectorType,omitempty"`
}

// ClaimValidationRule: claim must equal requiredValue, or expression must
// be true.
type ClaimValidationRule struct {
	Claim         string `json:"claim,omitempty"`
	RequiredValue string `json:"requiredValue,omitempty"`
	Expression    string `json:"expression,omitempty"`
	Message       string `json:"message,omitempty"`
}

// ClaimMappings turn claims into a user.
type ClaimMappings struct {
	Username PrefixedClaimOrExpression `json:"username"`
	Groups   PrefixedClaimOrExpression `json:"groups,omitempty"`
	UID      ClaimOrExpression         `json:"uid,omitempty"`
	Extra    []ExtraMapping            `json:"extra,omitempty"`
}

// PrefixedClaimOrExpression is either claim (+ prefix) or a CEL expression.
type PrefixedClaimOrExpression struct {
	Claim      string  `json:"claim,omitempty"`
	Prefix     *string `json:"prefix,omitempty"`
	Expression string  `json:"expression,omitempty"`
}

// ClaimOrExpression is either a claim or a CEL expression.
type ClaimOrExpression struct {
	Claim      string `json:"claim,omitempty"`
	Expression string `json:"expression,omitempty"`
}

// ExtraMapping maps a CEL expression to an extra attribute.
type ExtraMapping struct {
	Key             string `json:"key"`
	ValueExpression string `json:"valueExpression"`
}

// UserValidationRule: expression over `user` must be true.
type UserValidationRule struct {
	Expression string `json:"expression"`
	Message    string `json:"message,omitempty"`
}

// ErrConfig wraps every configuration problem.
var ErrConfig = errors.New("invalid authentication configuration")

// LoadFile reads and validates an AuthenticationConfiguration file,
// compiling every expression. The error lists every problem with its entry.
func LoadFile(path string) (*AuthenticationConfiguration, []*compiled, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return Parse(b)
}

// Parse is LoadFile on bytes.
func Parse(b []byte) (*AuthenticationConfiguration, []*compiled, error) {
	var c AuthenticationConfiguration
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	var errs []error
	if c.Kind != "AuthenticationConfiguration" {
		errs = append(errs, fmt.Errorf("%w: kind %q, want AuthenticationConfiguration", ErrConfig, c.Kind))
	}
	switch c.APIVersion {
	case "apiserver.config.k8s.io/v1beta1", "apiserver.config.k8s.io/v1", "apiserver.config.k8s.io/v1alpha1":
	default:
		errs = append(errs, fmt.Errorf("%w: apiVersion %q, want apiserver.config.k8s.io/v1beta1 or v1", ErrConfig, c.APIVersion))
	}
	var out []*compiled
	seen := map[string]bool{}
	for i, j := range c.JWT {
		where := fmt.Sprintf("jwt[%d] (issuer %s)", i, j.Issuer.URL)
		comp, err := compile(j)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: %v", ErrConfig, where, err))
			continue
		}
		if seen[j.Issuer.URL] {
			errs = append(errs, fmt.Errorf("%w: %s: duplicate issuer url", ErrConfig, where))
		}
		seen[j.Issuer.URL] = true
		out = append(out, comp)
	}
	return &c, out, errors.Join(errs...)
}

// compiled is a validated authenticator with its CEL programs.
type compiled struct {
	JWTAuthenticator
	username, groups, uid celValue
	extra                 []extraProgram
	claimRules            []claimRule
	userRules             []userRule
}

type extraProgram struct {
	key string
	p   cel.Program
}

type claimRule struct {
	claim, required, message string
	p                        cel.Program
}

type userRule struct {
	message string
	p       cel.Program
}

// celValue is a claim (with prefix) or a compiled expression.
type celValue struct {
	claim  string
	prefix string
	p      cel.Program
}

func compile(j JWTAuthenticator) (*compiled, error) {
	var errs []error
	u, err := url.Parse(j.Issuer.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		errs = append(errs, fmt.Errorf("issuer.url must be an http(s) URL without query, fragment or user info"))
	}
	if len(j.Issuer.Audiences) == 0 {
		errs = append(errs, fmt.Errorf("issuer.audiences: at least one audience is required"))
	}
	if len(j.Issuer.Audiences) > 1 && j.Issuer.AudienceMatchPolicy != "MatchAny" {
		errs = append(errs, fmt.Errorf("issuer.audienceMatchPolicy must be MatchAny when several audiences are given"))
	}
	if j.Issuer.AudienceMatchPolicy != "" && j.Issuer.AudienceMatchPolicy != "MatchAny" {
		errs = append(errs, fmt.Errorf("issuer.audienceMatchPolicy %q: only MatchAny exists", j.Issuer.AudienceMatchPolicy))
	}
	errs = append(errs, validateAsAPIServer(j)...)
	c := &compiled{JWTAuthenticator: j}
	var e error
	if c.username, e = compilePrefixed("claimMappings.username", j.ClaimMappings.Username, true); e != nil {
		errs = append(errs, e)
	}
	if c.groups, e = compilePrefixed("claimMappings.groups", j.ClaimMappings.Groups, false); e != nil {
		errs = append(errs, e)
	}
	if c.uid, e = compilePlain("claimMappings.uid", j.ClaimMappings.UID); e != nil {
		errs = append(errs, e)
	}
	for i, x := range j.ClaimMappings.Extra {
		if x.Key == "" || strings.ToLower(x.Key) != x.Key || !strings.Contains(x.Key, "/") {
			errs = append(errs, fmt.Errorf("claimMappings.extra[%d].key %q must be a lower-case domain-prefixed path", i, x.Key))
		}
		p, err := compileExpr(claimsEnv, x.ValueExpression)
		if err != nil {
			errs = append(errs, fmt.Errorf("claimMappings.extra[%d].valueExpression: %v", i, err))
			continue
		}
		c.extra = append(c.extra, extraProgram{key: x.Key, p: p})
	}
	for i, r := range j.ClaimValidationRules {
		switch {
		case r.Expression != "" && (r.Claim != "" || r.RequiredValue != ""):
			errs = append(errs, fmt.Errorf("claimValidationRules[%d]: claim/requiredValue and expression are exclusive", i))
		case r.Expression != "":
			p, err := compileRule(claimsEnv, r.Expression)
			if err != nil {
				errs = append(errs, fmt.Errorf("claimValidationRules[%d].expression: %v", i, err))
				continue
			}
			c.claimRules = append(c.claimRules, claimRule{message: r.Message, p: p})
		case r.Claim != "":
			c.claimRules = append(c.claimRules, claimRule{claim: r.Claim, required: r.RequiredValue, message: r.Message})
		default:
			errs = append(errs, fmt.Errorf("claimValidationRules[%d]: claim or expression required", i))
		}
	}
	for i, r := range j.UserValidationRules {
		p, err := compileRule(userEnv, r.Expression)
		if err != nil {
			errs = append(errs, fmt.Errorf("userValidationRules[%d].expression: %v", i, err))
			continue
		}
		c.userRules = append(c.userRules, userRule{message: r.Message, p: p})
	}
	return c, errors.Join(errs...)
}

func compilePrefixed(field string, m PrefixedClaimOrExpression, required bool) (celValue, error) {
	switch {
	case m.Claim != "" && m.Expression != "":
		return celValue{}, fmt.Errorf("%s: claim and expression are exclusive", field)
	case m.Expression != "":
		if m.Prefix != nil {
			return celValue{}, fmt.Errorf("%s: prefix goes with claim, not expression", field)
		}
		p, err := compileExpr(claimsEnv, m.Expression)
		if err != nil {
			return celValue{}, fmt.Errorf("%s.expression: %v", field, err)
		}
		return celValue{p: p}, nil
	case m.Claim != "":
		if m.Prefix == nil {
			return celValue{}, fmt.Errorf("%s: prefix is required with claim (use \"\" for none)", field)
		}
		return celValue{claim: m.Claim, prefix: *m.Prefix}, nil
	case required:
		return celValue{}, fmt.Errorf("%s: claim or expression required", field)
	}
	return celValue{}, nil
}

func compilePlain(field string, m ClaimOrExpression) (celValue, error) {
	p := PrefixedClaimOrExpression{Claim: m.Claim, Expression: m.Expression}
	if m.Claim != "" {
		p.Prefix = ptr("")
	}
	return compilePrefixed(field, p, false)
}

func ptr(s string) *string { return &s }

// ProviderEntry is the authenticator for the login provider's own ID tokens:
// audience one of audiences (CLIENT_ID, and the public client of command-line
// tools when configured), user id and groups from USERID_CLAIM and
// GROUPS_CLAIM.
func ProviderEntry(issuerURL string, audiences []string, userClaim, groupsClaim string) JWTAuthenticator {
	empty := ""
	j := JWTAuthenticator{
		Issuer:        Issuer{URL: issuerURL, Audiences: audiences},
		ClaimMappings: ClaimMappings{Username: PrefixedClaimOrExpression{Claim: userClaim, Prefix: &empty}},
	}
	if len(audiences) > 1 {
		j.Issuer.AudienceMatchPolicy = "MatchAny"
	}
	if groupsClaim != "" {
		j.ClaimMappings.Groups = PrefixedClaimOrExpression{Claim: groupsClaim, Prefix: &empty}
	}
	return j
}

// Load builds an Authenticator from a configuration file (optional) and
// extra entries, which are skipped when the file configures their issuer.
// It returns nil when nothing is configured.
func Load(file string, extra []JWTAuthenticator, o Options) (*Authenticator, error) {
	var cfgs []*compiled
	seen := map[string]bool{}
	if file != "" {
		_, c, err := LoadFile(file)
		if err != nil {
			return nil, err
		}
		for _, x := range c {
			seen[x.Issuer.URL] = true
		}
		cfgs = c
	}
	for _, j := range extra {
		if seen[j.Issuer.URL] {
			continue
		}
		c, err := compile(j)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		cfgs = append(cfgs, c)
	}
	if len(cfgs) == 0 && (o.Provider == nil || o.Provider.Access == nil) {
		return nil, nil
	}
	return New(cfgs, o)
}
