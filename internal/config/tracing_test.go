package config

import (
	"strings"
	"testing"
)

// TestTracing: OpenTelemetry's standard variables with the specification's
// meanings: off without an endpoint or with OTEL_SDK_DISABLED; the base
// endpoint gets /v1/traces over HTTP, the traces endpoint is used as is,
// gRPC keeps only scheme, host and port; the samplers and their ratio; the
// service name and resource attributes.
func TestTracing(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want Tracing
	}{
		{"off by default", nil, Tracing{Protocol: "http/protobuf", Sampler: "parentbased_always_on", SamplerArg: 1, ServiceName: "oidc-authservice"}},
		{"base endpoint over HTTP", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
			Tracing{Endpoint: "http://collector:4318/v1/traces", Protocol: "http/protobuf", Sampler: "parentbased_always_on", SamplerArg: 1, ServiceName: "oidc-authservice"}},
		{"base endpoint with a path", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otlp.example.com/tenant-a/"},
			Tracing{Endpoint: "https://otlp.example.com/tenant-a/v1/traces", Protocol: "http/protobuf", Sampler: "parentbased_always_on", SamplerArg: 1, ServiceName: "oidc-authservice"}},
		{"traces endpoint as is, over the base one", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4318/custom"},
			Tracing{Endpoint: "http://jaeger:4318/custom", Protocol: "http/protobuf", Sampler: "parentbased_always_on", SamplerArg: 1, ServiceName: "oidc-authservice"}},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317/ignored", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
			Tracing{Endpoint: "http://collector:4317", Protocol: "grpc", Sampler: "parentbased_always_on", SamplerArg: 1, ServiceName: "oidc-authservice"}},
		{"traces protocol over the general one", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector:4317",
			"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
			Tracing{Endpoint: "https://collector:4317", Protocol: "grpc", Sampler: "parentbased_always_on", SamplerArg: 1, ServiceName: "oidc-authservice"}},
		{"disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "TRUE"},
			Tracing{Protocol: "http/protobuf", Sampler: "parentbased_always_on", SamplerArg: 1, ServiceName: "oidc-authservice"}},
		{"sampler and ratio", map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			Tracing{Protocol: "http/protobuf", Sampler: "parentbased_traceidratio", SamplerArg: 0.25, ServiceName: "oidc-authservice"}},
		{"a ratio for a sampler without one is ignored", map[string]string{"OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_SAMPLER_ARG": "x"},
			Tracing{Protocol: "http/protobuf", Sampler: "always_on", SamplerArg: 1, ServiceName: "oidc-authservice"}},
		{"resource attributes, service.name among them", map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod, service.name=auth%20gw"},
			Tracing{Protocol: "http/protobuf", Sampler: "parentbased_always_on", SamplerArg: 1, ServiceName: "auth gw",
				Attributes: [][2]string{{"deployment.environment", "prod"}, {"service.name", "auth gw"}}}},
		{"OTEL_SERVICE_NAME wins", map[string]string{"OTEL_SERVICE_NAME": "authservice-eu", "OTEL_RESOURCE_ATTRIBUTES": "service.name=other"},
			Tracing{Protocol: "http/protobuf", Sampler: "parentbased_always_on", SamplerArg: 1, ServiceName: "authservice-eu",
				Attributes: [][2]string{{"service.name", "other"}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := Load(FromMap(setenv(t, c.env)))
			if err != nil {
				t.Fatal(err)
			}
			g := s.Tracing
			if g.Endpoint != c.want.Endpoint || g.Protocol != c.want.Protocol || g.Sampler != c.want.Sampler ||
				g.SamplerArg != c.want.SamplerArg || g.ServiceName != c.want.ServiceName || len(g.Attributes) != len(c.want.Attributes) {
				t.Fatalf("got %+v\nwant %+v", g, c.want)
			}
			for i := range g.Attributes {
				if g.Attributes[i] != c.want.Attributes[i] {
					t.Fatalf("attributes %v, want %v", g.Attributes, c.want.Attributes)
				}
			}
		})
	}
}

func TestTracingRefusals(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		name string
	}{
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:s3cret@collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces?x=1"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
		{map[string]string{"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER"},
		{map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG"},
		{map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, "OTEL_RESOURCE_ATTRIBUTES"},
		{map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "k=%zz"}, "OTEL_RESOURCE_ATTRIBUTES"},
	} {
		_, err := Load(FromMap(setenv(t, c.env)))
		if err == nil || !strings.Contains(err.Error(), c.name+":") {
			t.Errorf("%v: %v, want a problem naming %s", c.env, err, c.name)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error shows the URL's password: %v", err)
		}
	}
}
