package grpccheck_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// wire builds CheckRequest messages byte by byte, so that a test can send
// what proto.Marshal refuses to (strings that are not UTF-8) or what no
// Envoy sends (missing attributes, thousands of headers).
type wire struct {
	method, path, host, scheme string // "" leaves the attribute out
	headers                    [][2]string
	raw                        bool // header_map with raw_value instead of the headers map
	noHTTP                     bool // no attributes.request.http at all
}

func field(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func (w wire) bytes() []byte {
	var h []byte
	for _, a := range []struct {
		num protowire.Number
		v   string
	}{{2, w.method}, {4, w.path}, {5, w.host}, {6, w.scheme}} {
		if a.v != "" {
			h = field(h, a.num, []byte(a.v))
		}
	}
	h = protowire.AppendTag(h, 9, protowire.VarintType) // size, a varint: skipped
	h = protowire.AppendVarint(h, 0)
	var hm []byte
	for _, kv := range w.headers {
		if w.raw {
			hm = field(hm, 1, field(field(nil, 1, []byte(kv[0])), 3, []byte(kv[1])))
		} else {
			h = field(h, 3, field(field(nil, 1, []byte(kv[0])), 2, []byte(kv[1])))
		}
	}
	if w.raw {
		h = field(h, 13, hm)
	}
	req := field(nil, 1, []byte("2025-01-01")) // time: skipped (not a Timestamp, but a message the front never reads)
	if !w.noHTTP {
		req = field(req, 2, h)
	}
	attrs := field(nil, 1, field(nil, 1, []byte("source")))
	attrs = field(attrs, 4, req)
	return field(nil, 1, attrs)
}

// rawCodec sends a message's bytes as they are and reads answers with the
// proto codec.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}
func (rawCodec) Name() string { return "proto" }

func (e *env) send(t *testing.T, msg []byte) (*authv3.CheckResponse, error) {
	t.Helper()
	out := new(authv3.CheckResponse)
	err := e.conn.Invoke(context.Background(), authv3.Authorization_Check_FullMethodName, msg, out, grpc.ForceCodecV2(rawCodec{}))
	return out, err
}

func good(path string) wire {
	return wire{method: "GET", path: path, host: "kubeflow.example.com", scheme: "http",
		headers: [][2]string{{":authority", "kubeflow.example.com"}, {"accept", "application/json"}, {"x-request-id", "hostile-1"}}}
}

// Input no Envoy sends, or that cannot be an HTTP request, gets a definite
// denied answer with the status the HTTP port gives the same request — 400,
// or 431 for too much header — and a log line saying why; never OK, never
// a gRPC error.
func TestHostileCheckRequests(t *testing.T) {
	latin1 := string([]byte{'c', 'a', 'f', 0xe9})
	many := func(n int) [][2]string {
		h := good("/").headers
		for i := range n {
			h = append(h, [2]string{fmt.Sprintf("x-h%d", i), "v"})
		}
		return h
	}
	with := func(w wire, f func(*wire)) wire { f(&w); return w }
	rows := []struct {
		name   string
		w      wire
		status int
		log    string
	}{
		{"no attributes.request.http", wire{noHTTP: true}, 400, "attributes.request.http missing"},
		{"no method", with(good("/"), func(w *wire) { w.method = "" }), 400, "method missing"},
		{"no path", with(good("/"), func(w *wire) { w.path = "" }), 400, "path missing"},
		{"no host", with(good("/"), func(w *wire) { w.host = "" }), 400, "host missing"},
		{"method not UTF-8", with(good("/"), func(w *wire) { w.method = latin1 }), 400, "method is not UTF-8"},
		{"path not UTF-8", with(good("/"), func(w *wire) { w.path = "/" + latin1 }), 400, "path is not UTF-8"},
		{"host not UTF-8", with(good("/"), func(w *wire) { w.host = latin1 }), 400, "host is not UTF-8"},
		{"a header value not UTF-8", with(good("/"), func(w *wire) { w.headers = append(w.headers, [2]string{"x-name", latin1}) }), 400,
			"the value of header x-name is not UTF-8"},
		{"a header name not UTF-8", with(good("/"), func(w *wire) { w.headers = append(w.headers, [2]string{latin1, "v"}) }), 400,
			"is not a header name"},
		{"a cookie not UTF-8", with(good("/"), func(w *wire) { w.headers = append(w.headers, [2]string{"cookie", "a=" + latin1}) }), 400,
			"the value of header cookie is not UTF-8"},
		{"a header value with a newline", with(good("/"), func(w *wire) {
			w.headers = append(w.headers, [2]string{"x-name", "a\r\nkubeflow-userid: admin"})
		}), 400, "has a control character"},
		{"raw value with a NUL", with(good("/"), func(w *wire) {
			w.raw, w.headers = true, append(w.headers, [2]string{"x-name", "a\x00b"})
		}), 400, "has a control character"},
		{"a header name with a space", with(good("/"), func(w *wire) { w.headers = append(w.headers, [2]string{"x name", "v"}) }), 400,
			"is not a header name"},
		{"path with a space", with(good("/"), func(w *wire) { w.path = "/a b" }), 400, "space or a control character"},
		{"path not a request target", with(good("/"), func(w *wire) { w.path = "notapath" }), 400, "is not a request target"},
		{"method not a token", with(good("/"), func(w *wire) { w.method = "GE(T" }), 400, "is not a method"},
		{"host malformed", with(good("/"), func(w *wire) { w.host = "a/b" }), 400, "is not a host"},
		{"scheme neither http nor https", with(good("/"), func(w *wire) { w.scheme = "gopher" }), 400, "neither http nor https"},
		{"thousands of headers", with(good("/"), func(w *wire) { w.headers = many(5000) }), 431, "more than 1000 header fields"},
		{"thousands of raw headers", with(good("/"), func(w *wire) { w.raw, w.headers = true, many(5000) }), 431, "more than 1000 header fields"},
		{"a 70 KiB header", with(good("/"), func(w *wire) { w.headers = append(w.headers, [2]string{"cookie", strings.Repeat("a", 70<<10)}) }), 431,
			"bytes of header, more than"},
		{"a 70 KiB path", with(good("/"), func(w *wire) { w.path = "/" + strings.Repeat("a", 70<<10) }), 431, "bytes of header, more than"},
		{"not protobuf", wire{}, 400, "not a CheckRequest"},
		{"a truncated message", wire{}, 400, "not a CheckRequest"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			// A service of its own: the log lines of refusals are limited
			// to a few a second.
			e := newEnv(t, nil)
			msg := row.w.bytes()
			switch row.name {
			case "not protobuf":
				msg = []byte{0xff, 0xff, 0xff}
			case "a truncated message":
				msg = msg[:len(msg)-3]
			}
			before := e.logs.FilterMessage("refused: gRPC check request malformed").Len()
			resp, err := e.send(t, msg)
			if err != nil {
				t.Fatalf("gRPC error %v, want a denied answer", err)
			}
			d := resp.GetDeniedResponse()
			if resp.GetOkResponse() != nil || d == nil || resp.GetStatus().GetCode() != int32(codes.InvalidArgument) {
				t.Fatalf("answer %v, want denied with INVALID_ARGUMENT", resp)
			}
			if int(d.GetStatus().GetCode()) != row.status || !strings.Contains(d.Body, `"error":"bad_request"`) {
				t.Errorf("status %d body %s, want %d", d.GetStatus().GetCode(), d.Body, row.status)
			}
			logs := e.logs.FilterMessage("refused: gRPC check request malformed").All()
			if len(logs) != before+1 || !strings.Contains(logs[len(logs)-1].ContextMap()["why"].(string), row.log) {
				t.Errorf("log lines %v, want one saying %q", logs[before:], row.log)
			}
			if m := resp.GetDynamicMetadata().AsMap(); m["decision"] != "deny" || m["reason"] != "bad_request" {
				t.Errorf("metadata %v", m)
			}
		})
	}
	// The request id goes into the refusal's log line.
	e := newEnv(t, nil)
	e.send(t, with(good("/"), func(w *wire) { w.headers = append(w.headers, [2]string{"x-name", latin1}) }).bytes())
	if l := e.logs.FilterMessage("refused: gRPC check request malformed").All(); len(l) != 1 || l[0].ContextMap()["request_id"] != "hostile-1" {
		t.Errorf("refusal logged without its request id: %v", l)
	}

	// Accepted as an HTTP server accepts them: raw values with bytes above
	// 0x7f (obs-text) through header_map, an empty header value.
	for _, w := range []wire{
		with(good("/api/x"), func(w *wire) { w.raw, w.headers = true, append(w.headers, [2]string{"x-name", latin1}) }),
		with(good("/api/x"), func(w *wire) { w.headers = append(w.headers, [2]string{"x-empty", ""}) }),
	} {
		resp, err := e.send(t, w.bytes())
		if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
			t.Errorf("%v: %v %v, want the ordinary 401 of an API call without a session", w.headers[len(w.headers)-1], resp, err)
		}
	}
}
