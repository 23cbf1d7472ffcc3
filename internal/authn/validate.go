package authn

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
)

// validateAsAPIServer refuses what kube-apiserver's validation of the file
// refuses beyond compiling it, so that a file loads here exactly when it
// loads there (test/kube compares both). The https-only issuer URL is the
// exception: plain http stays allowed for issuers inside a trusted network.
func validateAsAPIServer(j JWTAuthenticator) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if d := j.Issuer.DiscoveryURL; d != "" && strings.TrimRight(d, "/") == strings.TrimRight(j.Issuer.URL, "/") {
		bad("issuer.discoveryURL must be different from issuer.url")
	}
	seen := map[string]bool{}
	for i, a := range j.Issuer.Audiences {
		switch {
		case a == "":
			bad("issuer.audiences[%d] is empty", i)
		case seen[a]:
			bad("issuer.audiences[%d]: %q twice", i, a)
		}
		seen[a] = true
	}

	claims, exprs := map[string]bool{}, map[string]bool{}
	for i, r := range j.ClaimValidationRules {
		if r.Claim != "" && r.Message != "" {
			bad("claimValidationRules[%d].message may not be set with claim", i)
		}
		if r.Claim != "" && claims[r.Claim] {
			bad("claimValidationRules[%d].claim %q twice", i, r.Claim)
		}
		if r.Expression != "" && exprs[r.Expression] {
			bad("claimValidationRules[%d].expression twice", i)
		}
		claims[r.Claim], exprs[r.Expression] = true, true
	}
	exprs = map[string]bool{}
	for i, r := range j.UserValidationRules {
		if r.Expression == "" {
			bad("userValidationRules[%d].expression is required", i)
		} else if exprs[r.Expression] {
			bad("userValidationRules[%d].expression twice", i)
		}
		exprs[r.Expression] = true
	}

	keys := map[string]bool{}
	for i, x := range j.ClaimMappings.Extra {
		if domain, _, _ := strings.Cut(x.Key, "/"); domain == "kubernetes.io" || strings.HasSuffix(domain, ".kubernetes.io") ||
			domain == "k8s.io" || strings.HasSuffix(domain, ".k8s.io") {
			bad("claimMappings.extra[%d].key %q: k8s.io, kubernetes.io and their subdomains are reserved for Kubernetes", i, x.Key)
		}
		if !domainPrefixedPath.MatchString(x.Key) {
			bad("claimMappings.extra[%d].key %q must be a domain-prefixed path (example.com/name)", i, x.Key)
		}
		if keys[x.Key] {
			bad("claimMappings.extra[%d].key %q twice", i, x.Key)
		}
		keys[x.Key] = true
		if x.ValueExpression == "" {
			bad("claimMappings.extra[%d].valueExpression is required", i)
		}
	}

	// A username made from claims.email must look at email_verified
	// somewhere, as username.claim: email does implicitly.
	if u := j.ClaimMappings.Username.Expression; u != "" && usesClaim(u, "email") {
		verified := usesClaim(u, "email_verified")
		for _, x := range j.ClaimMappings.Extra {
			verified = verified || usesClaim(x.ValueExpression, "email_verified")
		}
		for _, r := range j.ClaimValidationRules {
			verified = verified || (r.Expression != "" && usesClaim(r.Expression, "email_verified"))
		}
		if !verified {
			bad("claimMappings.username.expression uses claims.email: claims.email_verified must be used in it, in claimMappings.extra[*].valueExpression or in claimValidationRules[*].expression")
		}
	}
	return errs
}

// domainPrefixedPath is a DNS subdomain, a slash and a non-empty path.
var domainPrefixedPath = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[^/].*$`)

// usesClaim reports whether a claims expression selects claims.<name>
// (or claims.?<name>), as the API server's check does: an index
// (claims["email"]) does not count.
func usesClaim(expr, name string) bool {
	parsed, iss := claimsEnv.Parse(expr)
	if iss.Err() != nil {
		return false
	}
	isClaims := func(e ast.Expr) bool { return e.Kind() == ast.IdentKind && e.AsIdent() == "claims" }
	found := ast.MatchDescendants(ast.NavigateAST(parsed.NativeRep()), func(e ast.NavigableExpr) bool {
		switch e.Kind() {
		case ast.SelectKind:
			s := e.AsSelect()
			return s.FieldName() == name && isClaims(s.Operand())
		case ast.CallKind:
			c := e.AsCall()
			if c.FunctionName() != operators.OptSelect || len(c.Args()) != 2 || !isClaims(c.Args()[0]) {
				return false
			}
			l := c.Args()[1]
			return l.Kind() == ast.LiteralKind && l.AsLiteral().Value() == name
		}
		return false
	})
	return len(found) > 0
}
