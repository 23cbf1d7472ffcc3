package authn

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/ext"
)

// The CEL environments of the API server's structured authentication:
// claim mappings and claim rules see `claims`, user rules see `user`. The
// options are those of kube-apiserver's base environment (v1.37) that
// cel-go itself provides: optional types (claims.?x.orValue(y)), the
// strings, sets, lists and two-variable comprehension extensions,
// homogeneous literals, UTC as the default time zone and literal
// validation. Kubernetes' own libraries (url, regex find, quantity, ip,
// cidr, format, semver, authz, the k8s list functions) are not available.
var (
	claimsEnv = mustEnv(cel.Variable("claims", cel.MapType(cel.StringType, cel.AnyType)))
	userEnv   = mustEnv(ext.NativeTypes(reflect.TypeFor[UserInfo](), ext.ParseStructTags(true)),
		cel.Variable("user", cel.ObjectType("authn.UserInfo")))
)

// UserInfo is `user` in userValidationRules: typed as the API server types
// it, so that an unknown field or a wrong type is refused when the file is
// loaded, not per token.
type UserInfo struct {
	Username string              `cel:"username"`
	UID      string              `cel:"uid"`
	Groups   []string            `cel:"groups"`
	Extra    map[string][]string `cel:"extra"`
}

func mustEnv(opts ...cel.EnvOption) *cel.Env {
	// The variables (and a native type provider) come after the libraries,
	// which register their types with the default provider.
	env, err := cel.NewEnv(append([]cel.EnvOption{
		cel.HomogeneousAggregateLiterals(),
		cel.EagerlyValidateDeclarations(true),
		cel.DefaultUTCTimeZone(true),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		ext.Strings(ext.StringsVersion(2)),
		ext.Sets(),
		ext.TwoVarComprehensions(),
		ext.Lists(ext.ListsVersion(3)),
		cel.ASTValidators(
			cel.ValidateDurationLiterals(),
			cel.ValidateTimestampLiterals(),
			cel.ValidateRegexLiterals(),
			cel.ValidateHomogeneousAggregateLiterals(),
		),
	}, opts...)...)
	if err != nil {
		panic(err)
	}
	return env
}

// costLimit bounds what one expression may compute per token.
const costLimit = 1_000_000

func compileExpr(env *cel.Env, expr string) (cel.Program, error) {
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, iss.Err()
	}
	return env.Program(ast, cel.CostLimit(costLimit), cel.EvalOptions(cel.OptOptimize))
}

// compileRule compiles a validation rule, which must be typed bool: like
// the API server, a rule such as claims.admin (typed any) is refused when
// the file is loaded; write claims.admin == true.
func compileRule(env *cel.Env, expr string) (cel.Program, error) {
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, iss.Err()
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("must evaluate to bool, not %s", t)
	}
	return env.Program(ast, cel.CostLimit(costLimit), cel.EvalOptions(cel.OptOptimize))
}

// eval runs p with each variable wrapped so that escaped names
// (claims.example__dot__com) find the claim "example.com", as the API
// server's environment does.
func eval(p cel.Program, vars map[string]any) (ref.Val, error) {
	act := make(map[string]any, len(vars))
	for k, v := range vars {
		rv, ok := v.(ref.Val)
		if !ok {
			rv = types.DefaultTypeAdapter.NativeToValue(v)
		}
		act[k] = unescaping(rv)
	}
	v, _, err := p.Eval(act)
	return v, err
}

// unescaping wraps maps and lists, at any depth, so that a key written in
// CEL's escaped form is looked up by its real name.
func unescaping(v ref.Val) ref.Val {
	switch x := v.(type) {
	case traits.Mapper:
		return unescapeMap{x}
	case traits.Lister:
		return unescapeList{x}
	}
	return v
}

type unescapeMap struct{ traits.Mapper }

func (m unescapeMap) Find(key ref.Val) (ref.Val, bool) {
	if s, ok := key.(types.String); ok {
		if name, ok := unescape(string(s)); ok && name != string(s) {
			key = types.String(name)
		}
	}
	v, ok := m.Mapper.Find(key)
	return unescaping(v), ok
}

type unescapeList struct{ traits.Lister }

func (l unescapeList) Get(i ref.Val) ref.Val { return unescaping(l.Lister.Get(i)) }

// celReserved are the words an escaped name may spell as __word__.
var celReserved = map[string]bool{"true": true, "false": true, "null": true, "in": true, "as": true, "break": true,
	"const": true, "continue": true, "else": true, "for": true, "function": true, "if": true, "import": true, "let": true,
	"loop": true, "package": true, "namespace": true, "return": true, "var": true, "void": true, "while": true}

var escapedPart = regexp.MustCompile(`(_{2}[^_]+_{2})`)

// unescape undoes Kubernetes' CEL escaping of property names: __dot__ is
// ".", __dash__ "-", __slash__ "/", __underscores__ "__", and __<reserved
// word>__ the word alone. Anything else between double underscores makes
// the name invalid.
func unescape(name string) (string, bool) {
	if !strings.Contains(name, "__") {
		return name, true
	}
	ok := true
	out := escapedPart.ReplaceAllStringFunc(name, func(s string) string {
		switch w := s[2 : len(s)-2]; w {
		case "underscores":
			return "__"
		case "dot":
			return "."
		case "dash":
			return "-"
		case "slash":
			return "/"
		default:
			if celReserved[w] {
				if len(s) != len(name) {
					ok = false
				}
				return w
			}
			ok = false
			return ""
		}
	})
	return out, ok
}

// asString converts a CEL result to a string.
func asString(v ref.Val) (string, error) {
	if s, ok := v.(types.String); ok {
		return string(s), nil
	}
	return "", fmt.Errorf("expression returned %s, want string", v.Type().TypeName())
}

// asStrings converts a CEL result to a list as the API server does for
// groups and extra: a string, a list of strings or null; "" and empty
// elements count as absent, so an empty result is nil.
func asStrings(v ref.Val) ([]string, error) {
	switch x := v.(type) {
	case types.String:
		if x == "" {
			return nil, nil
		}
		return []string{string(x)}, nil
	case types.Null:
		return nil, nil
	case traits.Lister:
		var out []string
		it := x.Iterator()
		for it.HasNext() == types.True {
			s, ok := it.Next().(types.String)
			if !ok {
				return nil, fmt.Errorf("expression must return a string or a list of strings")
			}
			if s != "" {
				out = append(out, string(s))
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("expression returned %s, want a string or a list of strings", v.Type().TypeName())
}

func asBool(v ref.Val) (bool, error) {
	if b, ok := v.(types.Bool); ok {
		return bool(b), nil
	}
	return false, fmt.Errorf("expression returned %s, want bool", v.Type().TypeName())
}
