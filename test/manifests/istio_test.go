package manifests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"k8s.io/kube-openapi/pkg/validation/strfmt"
	"k8s.io/kube-openapi/pkg/validation/validate"
	"sigs.k8s.io/yaml"
)

// crdFiles are the vendored CRDs objects of deploy/ are validated against:
// Istio's bundle, from the istio.io/api module (testdata/istio/README.md),
// and the Prometheus Operator's PrometheusRule and PodMonitor
// (testdata/prometheus-operator/README.md).
var crdFiles = []string{
	filepath.Join("testdata", "istio", "customresourcedefinitions.gen.yaml"),
	filepath.Join("testdata", "prometheus-operator", "monitoring.coreos.com_prometheusrules.yaml"),
	filepath.Join("testdata", "prometheus-operator", "monitoring.coreos.com_podmonitors.yaml"),
}

// crdVersion is one served version of a CRD: its schema, both as the
// validator's type and as plain JSON for the walks below.
type crdVersion struct {
	GVK    string
	Schema *spec.Schema
	Raw    map[string]any
}

var (
	crdOnce sync.Once
	crds    map[string]*crdVersion
	crdErr  error
)

func loadCRDs() (map[string]*crdVersion, error) {
	crdOnce.Do(func() {
		crds = map[string]*crdVersion{}
		for _, file := range crdFiles {
			if crdErr = loadCRDFile(file); crdErr != nil {
				return
			}
		}
	})
	return crds, crdErr
}

func loadCRDFile(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var crd struct {
			Kind string `json:"kind"`
			Spec struct {
				Group string `json:"group"`
				Names struct {
					Kind string `json:"kind"`
				} `json:"names"`
				Versions []struct {
					Name   string `json:"name"`
					Served bool   `json:"served"`
					Schema struct {
						OpenAPIV3Schema json.RawMessage `json:"openAPIV3Schema"`
					} `json:"schema"`
				} `json:"versions"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(doc, &crd); err != nil {
			return err
		}
		if crd.Kind != "CustomResourceDefinition" {
			continue
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served || len(v.Schema.OpenAPIV3Schema) == 0 {
				continue
			}
			cv := &crdVersion{GVK: crd.Spec.Group + "/" + v.Name + "/" + crd.Spec.Names.Kind, Schema: &spec.Schema{}}
			if err := json.Unmarshal(v.Schema.OpenAPIV3Schema, cv.Schema); err != nil {
				return fmt.Errorf("%s: %w", cv.GVK, err)
			}
			if err := json.Unmarshal(v.Schema.OpenAPIV3Schema, &cv.Raw); err != nil {
				return err
			}
			crds[cv.GVK] = cv
		}
	}
}

// crdSchema is the schema of a custom kind and version (Istio's, the
// Prometheus Operator's), nil if no vendored CRD serves it.
func crdSchema(gvk string) *crdVersion {
	m, err := loadCRDs()
	if err != nil {
		panic(err)
	}
	return m[gvk]
}

// validateCustom validates a custom object (Istio's, the Prometheus
// Operator's) as the API server would with the CRD installed: the OpenAPI schema, no field the schema does not declare
// (the API server would prune them silently: a misspelt field is lost), and
// the schema's CEL rules.
func validateCustom(o *object, crd *crdVersion) []error {
	var errs []error
	var data any
	dec := json.NewDecoder(bytes.NewReader(o.JSON))
	dec.UseNumber()
	if err := dec.Decode(&data); err != nil {
		return []error{err}
	}
	data = normalizeNumbers(data)
	res := validate.NewSchemaValidator(crd.Schema, nil, "", strfmt.Default).Validate(data)
	for _, e := range res.Errors {
		errs = append(errs, fmt.Errorf("schema: %v", e))
	}
	if _, ok := o.Map["status"]; ok {
		errs = append(errs, errors.New("status in a manifest"))
	}
	walkSchema(crd.Raw, data, "", func(path string, err error) {
		errs = append(errs, fmt.Errorf("%s: %w", path, err))
	})
	return errs
}

// normalizeNumbers turns json.Number into int64 or float64.
func normalizeNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalizeNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalizeNumbers(e)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

// walkSchema reports fields the schema does not declare, and evaluates
// x-kubernetes-validations rules, at every node of data.
func walkSchema(schema map[string]any, data any, path string, report func(string, error)) {
	if schema == nil || data == nil {
		return
	}
	if rules, ok := schema["x-kubernetes-validations"].([]any); ok {
		for _, r := range rules {
			rule, _ := r.(map[string]any)
			expr, _ := rule["rule"].(string)
			msg, _ := rule["message"].(string)
			if err := evalRule(expr, data); err != nil {
				report(pathOr(path), fmt.Errorf("x-kubernetes-validations %q (%s): %w", expr, msg, err))
			}
		}
	}
	if b, _ := schema["x-kubernetes-preserve-unknown-fields"].(bool); b {
		return
	}
	switch x := data.(type) {
	case map[string]any:
		props, _ := schema["properties"].(map[string]any)
		addl, _ := schema["additionalProperties"].(map[string]any)
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := path + "." + k
			if path == "" && k == "metadata" {
				continue // ObjectMeta, checked by checkMeta (a CRD may declare it as a bare object)
			}
			if ps, ok := props[k].(map[string]any); ok {
				walkSchema(ps, x[k], p, report)
			} else if addl != nil {
				walkSchema(addl, x[k], p, report)
			} else if props != nil || schema["type"] == "object" {
				if path == "" && (k == "apiVersion" || k == "kind") {
					continue // implicit in every CRD
				}
				report(pathOr(path), fmt.Errorf("unknown field %q (not in the CRD schema; the API server would drop it)", k))
			}
		}
	case []any:
		items, _ := schema["items"].(map[string]any)
		for i, e := range x {
			walkSchema(items, e, fmt.Sprintf("%s[%d]", path, i), report)
		}
	}
}

func pathOr(p string) string {
	if p == "" {
		return "<root>"
	}
	return strings.TrimPrefix(p, ".")
}

var (
	celOnce  sync.Once
	celEnv   *cel.Env
	celErr   error
	celMu    sync.Mutex
	celProgs = map[string]cel.Program{}
)

// evalRule evaluates a CRD validation rule with self bound to data. The
// environment is CEL's standard library, its string extensions, and the one
// Kubernetes library function Istio's rules use: url(s).getScheme().
func evalRule(expr string, data any) error {
	celOnce.Do(func() {
		celEnv, celErr = cel.NewEnv(
			cel.Variable("self", cel.DynType),
			ext.Strings(),
			cel.Function("url", cel.Overload("url_string", []*cel.Type{cel.StringType}, cel.StringType,
				cel.UnaryBinding(func(v ref.Val) ref.Val {
					s, _ := v.Value().(string)
					if u, err := url.Parse(s); err != nil || !u.IsAbs() {
						return types.NewErr("URL %q is not absolute", s)
					}
					return v
				}))),
			cel.Function("getScheme", cel.MemberOverload("string_getScheme", []*cel.Type{cel.StringType}, cel.StringType,
				cel.UnaryBinding(func(v ref.Val) ref.Val {
					s, _ := v.Value().(string)
					u, err := url.Parse(s)
					if err != nil {
						return types.NewErr("%v", err)
					}
					return types.String(u.Scheme)
				}))),
		)
	})
	if celErr != nil {
		return celErr
	}
	celMu.Lock()
	prg, ok := celProgs[expr]
	if !ok {
		ast, iss := celEnv.Compile(expr)
		if iss.Err() != nil {
			celMu.Unlock()
			return fmt.Errorf("cannot compile: %w", iss.Err())
		}
		p, err := celEnv.Program(ast)
		if err != nil {
			celMu.Unlock()
			return err
		}
		prg, celProgs[expr] = p, p
	}
	celMu.Unlock()
	out, _, err := prg.Eval(map[string]any{"self": data})
	if err != nil {
		return err
	}
	if b, ok := out.Value().(bool); !ok || !b {
		return errors.New("rule is false")
	}
	return nil
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
