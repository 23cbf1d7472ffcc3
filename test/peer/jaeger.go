package peer

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Jaeger is a running Jaeger v2 (bin/jaeger, built by `make bin/jaeger`
// from test/jaeger: github.com/jaegertracing/jaeger v1.75.0's cmd/jaeger)
// with in-memory storage: OTLP receivers over HTTP and gRPC, and the query
// API.
type Jaeger struct {
	OTLPHTTP string // http://127.0.0.1:<port>: OTEL_EXPORTER_OTLP_ENDPOINT for http/protobuf
	OTLPGRPC string // http://127.0.0.1:<port>: OTEL_EXPORTER_OTLP_ENDPOINT for grpc
	Query    string // http://127.0.0.1:<port>: /api/traces/<trace id>
}

// JaegerBinary is $JAEGER or bin/jaeger.
func JaegerBinary() (string, error) {
	p := os.Getenv("JAEGER")
	if p == "" {
		p = filepath.Join(RepoRoot(), "bin", "jaeger")
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s is missing: run `make bin/jaeger`", p)
	}
	return p, nil
}

// StartJaeger runs Jaeger on free ports of 127.0.0.1 until the test ends.
func StartJaeger(t testing.TB) *Jaeger {
	t.Helper()
	bin, err := JaegerBinary()
	Require(t, "jaeger (bin/jaeger)", err)
	dir := t.TempDir()
	var j *Jaeger
	OnFreePorts(t, "jaeger", 5, func(ports []int) error {
		grpcPort, httpPort, queryPort, queryGRPC, health := ports[0], ports[1], ports[2], ports[3], ports[4]
		cfg := fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:%d
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
      http:
        endpoint: 127.0.0.1:%d
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, health, queryPort, queryGRPC, grpcPort, httpPort)
		file := filepath.Join(dir, "jaeger.yaml")
		if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := startProcess(t, exec.Command(bin, "--config", file), "jaeger.log", nil, syscall.SIGTERM)
		if err != nil {
			return err
		}
		ready := func() error {
			if err := answers200(fmt.Sprintf("http://127.0.0.1:%d/status", health))(); err != nil {
				return err
			}
			for _, port := range []int{grpcPort, httpPort, queryPort} {
				if err := dialable(fmt.Sprintf("127.0.0.1:%d", port))(); err != nil {
					return err
				}
			}
			return nil
		}
		if err := p.waitReady("jaeger", ready, 60*time.Second, ports...); err != nil {
			return err
		}
		j = &Jaeger{OTLPHTTP: fmt.Sprintf("http://127.0.0.1:%d", httpPort), OTLPGRPC: fmt.Sprintf("http://127.0.0.1:%d", grpcPort),
			Query: fmt.Sprintf("http://127.0.0.1:%d", queryPort)}
		return nil
	})
	return j
}

// JaegerSpan is a span as Jaeger's query API returns it.
type JaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
	ProcessID string `json:"processID"`
	Service   string `json:"-"` // the process's service name
}

// Parent is the span id this span is a child of, or "".
func (s JaegerSpan) Parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Tag is the value of a tag, as text, or "".
func (s JaegerSpan) Tag(key string) string {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

// Trace reads a trace through the query API (GET /api/traces/<id>); no
// trace yet is no spans.
func (j *Jaeger) Trace(traceID string) ([]JaegerSpan, error) {
	resp, err := http.Get(j.Query + "/api/traces/" + traceID)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/traces/%s: HTTP %d", traceID, resp.StatusCode)
	}
	var body struct {
		Data []struct {
			Spans     []JaegerSpan `json:"spans"`
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
			} `json:"processes"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	var out []JaegerSpan
	for _, d := range body.Data {
		for _, s := range d.Spans {
			s.Service = d.Processes[s.ProcessID].ServiceName
			out = append(out, s)
		}
	}
	return out, nil
}
