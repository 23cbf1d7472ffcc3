package manifests

import (
	"encoding/json"
	"fmt"
	"strings"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
)

// allowedDeprecated are deprecated Envoy fields the manifests use on purpose.
var allowedDeprecated = map[protoreflect.FullName]string{
	// Its replacement, ExtAuthz.allowed_headers, is unknown to the Envoy of
	// older Istio releases (Kubeflow 1.7 ships Istio 1.16); the v3 API does not
	// remove fields, so this one works everywhere.
	"envoy.extensions.filters.http.ext_authz.v3.AuthorizationRequest.allowed_headers": "kept for older Istio",
}

// decodeExtAuthz decodes an EnvoyFilter patch value {name, typed_config} into
// Envoy's ExtAuthz message, strictly (unknown fields are errors), and applies
// Envoy's own validation rules (protoc-gen-validate).
func decodeExtAuthz(value map[string]any) (*extauthzv3.ExtAuthz, []error) {
	var errs []error
	for k := range value {
		if k != "name" && k != "typed_config" {
			errs = append(errs, fmt.Errorf("patch value: unexpected field %q", k))
		}
	}
	if value["name"] != "envoy.filters.http.ext_authz" {
		return nil, append(errs, fmt.Errorf("patch value name %v, want envoy.filters.http.ext_authz", value["name"]))
	}
	raw, err := json.Marshal(value["typed_config"])
	if err != nil {
		return nil, append(errs, err)
	}
	var a anypb.Any
	if err := (protojson.UnmarshalOptions{}).Unmarshal(raw, &a); err != nil {
		return nil, append(errs, fmt.Errorf("typed_config: %w", err))
	}
	var ea extauthzv3.ExtAuthz
	if err := a.UnmarshalTo(&ea); err != nil {
		return nil, append(errs, fmt.Errorf("typed_config is %s, not ExtAuthz: %w", a.TypeUrl, err))
	}
	if err := ea.ValidateAll(); err != nil {
		errs = append(errs, fmt.Errorf("envoy validation: %w", err))
	}
	for _, f := range deprecatedFields(ea.ProtoReflect()) {
		if _, ok := allowedDeprecated[f]; !ok {
			errs = append(errs, fmt.Errorf("deprecated Envoy field %s", f))
		}
	}
	return &ea, errs
}

// deprecatedFields lists the set fields of m (recursively) marked deprecated.
func deprecatedFields(m protoreflect.Message) []protoreflect.FullName {
	var out []protoreflect.FullName
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if opts, ok := fd.Options().(*descriptorpb.FieldOptions); ok && opts.GetDeprecated() {
			out = append(out, fd.FullName())
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				out = append(out, deprecatedFields(l.Get(i).Message())...)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				out = append(out, deprecatedFields(mv.Message())...)
				return true
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			out = append(out, deprecatedFields(v.Message())...)
		}
		return true
	})
	return out
}

// exactHeaders returns the exact-match names of a header matcher list, and
// errors for matchers that are not lowercase exact names (Envoy compares
// header names lowercase: "Cookie" would never match).
func exactHeaders(where string, l *matcherv3.ListStringMatcher) ([]string, []error) {
	var names []string
	var errs []error
	for _, p := range l.GetPatterns() {
		e := p.GetExact()
		if e == "" {
			errs = append(errs, fmt.Errorf("%s: only exact header names are expected, got %v", where, p))
			continue
		}
		if e != strings.ToLower(e) {
			errs = append(errs, fmt.Errorf("%s: header %q must be lowercase", where, e))
		}
		names = append(names, e)
	}
	return names, errs
}

// firstMatcher is the header list in effect: ExtAuthz.allowed_headers when
// set, else the deprecated AuthorizationRequest.allowed_headers.
func firstMatcher(a, b *matcherv3.ListStringMatcher) *matcherv3.ListStringMatcher {
	if len(a.GetPatterns()) > 0 {
		return a
	}
	return b
}
