package authn

import (
	"fmt"
	"reflect"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
)

// The CEL environments of the API server's structured authentication:
// claim mappings and claim rules see `claims`, user rules see `user`.
var (
	claimsEnv = mustEnv(cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)))
	userEnv   = mustEnv(cel.Variable("user", cel.MapType(cel.StringType, cel.DynType)))
)

func mustEnv(opts ...cel.EnvOption) *cel.Env {
	env, err := cel.NewEnv(append(opts, cel.CrossTypeNumericComparisons(true))...)
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

func eval(p cel.Program, vars map[string]any) (ref.Val, error) {
	v, _, err := p.Eval(vars)
	return v, err
}

// asString converts a CEL result to a string.
func asString(v ref.Val) (string, error) {
	if s, ok := v.(types.String); ok {
		return string(s), nil
	}
	return "", fmt.Errorf("expression returned %s, want string", v.Type().TypeName())
}

// asStrings converts a CEL result (a string or a list of strings) to a list.
func asStrings(v ref.Val) ([]string, error) {
	if s, ok := v.(types.String); ok {
		return []string{string(s)}, nil
	}
	native, err := v.ConvertToNative(reflect.TypeOf([]string{}))
	if err != nil {
		return nil, fmt.Errorf("expression returned %s, want string or list of strings", v.Type().TypeName())
	}
	return native.([]string), nil
}

func asBool(v ref.Val) (bool, error) {
	if b, ok := v.(types.Bool); ok {
		return bool(b), nil
	}
	return false, fmt.Errorf("expression returned %s, want bool", v.Type().TypeName())
}
