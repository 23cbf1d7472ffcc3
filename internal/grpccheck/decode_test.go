package grpccheck

import (
	"net/http"
	"net/textproto"
	"reflect"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var testLimits = limits{headerBytes: 64<<10 + 4<<10, fields: 1000}

// reference is what the front must read from a CheckRequest, derived from
// the generated message: the attributes, and the header as the HTTP server
// would hold it (canonical names; pseudo-headers and host left out;
// header_map in preference to the headers map; X-Forwarded-Proto from the
// scheme when the header is absent; a cookie line the map joined with ","
// split again).
func reference(c *authv3.CheckRequest) (method, path, host string, hd http.Header) {
	h := c.GetAttributes().GetRequest().GetHttp()
	hd = http.Header{}
	add := func(k, v string) {
		if strings.HasPrefix(k, ":") || k == "host" {
			return
		}
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if ck == "Cookie" && strings.Contains(v, ",") {
			for _, p := range strings.Split(v, ",") {
				hd[ck] = append(hd[ck], strings.TrimSpace(p))
			}
			return
		}
		hd[ck] = append(hd[ck], v)
	}
	if hm := h.GetHeaderMap().GetHeaders(); len(hm) > 0 {
		for _, v := range hm {
			val := v.Value
			if len(v.RawValue) > 0 {
				val = string(v.RawValue)
			}
			add(v.Key, val)
		}
	} else {
		for k, v := range h.GetHeaders() {
			add(k, v)
		}
	}
	if _, ok := hd["X-Forwarded-Proto"]; !ok && h.GetScheme() != "" {
		hd["X-Forwarded-Proto"] = []string{strings.ToLower(h.GetScheme())}
	}
	return h.GetMethod(), h.GetPath(), h.GetHost(), hd
}

func sameHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w := b[k]
		if len(v) != len(w) {
			return false
		}
		seen := map[string]int{}
		for _, x := range v {
			seen[x]++
		}
		for _, x := range w {
			seen[x]--
		}
		for _, n := range seen {
			if n != 0 {
				return false
			}
		}
	}
	return true
}

// A CheckRequest as Envoy builds it (every attribute the filter fills, peer
// addresses, metadata, context extensions, a timestamp), with the headers
// map and with header_map.
func envoyRequest(raw bool) *authv3.CheckRequest {
	headers := map[string]string{":authority": "kubeflow.example.com", ":path": "/notebook/ns/nb/lab?x=1&y=%2F", ":method": "GET",
		":scheme": "https", "cookie": "_ga=GA1; authservice_session=abc", "accept": "text/html", "user-agent": "Mozilla/5.0",
		"x-forwarded-proto": "https", "x-request-id": "0b8d2f7e", "x-forwarded-for": "10.0.0.1", "x-envoy-external-address": "10.0.0.1",
		"x-custom-thing": "value with spaces and \t tab", "kubeflow-userid": "mallory"}
	c := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}}, Principal: "spiffe://cluster.local/ns/x/sa/y"},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "10.0.0.2", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}}}}},
		Request: &authv3.AttributeContext_Request{Time: timestamppb.Now(), Http: &authv3.AttributeContext_HttpRequest{
			Id: "12345", Method: "GET", Path: "/notebook/ns/nb/lab?x=1&y=%2F", Host: "kubeflow.example.com", Scheme: "https",
			Size: -1, Protocol: "HTTP/2", Headers: headers}},
		ContextExtensions: map[string]string{"virtual_host": "kubeflow"},
		MetadataContext:   &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: map[string]*structpb.Value{"x": structpb.NewStringValue("y")}}}},
	}}
	if raw {
		hr := c.Attributes.Request.Http
		hm := &corev3.HeaderMap{}
		for k, v := range hr.Headers {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
		}
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: "cookie", RawValue: []byte("second=line")})
		hr.Headers, hr.HeaderMap = nil, hm
	}
	return c
}

func decodeAndCompare(t *testing.T, b []byte) {
	var in input
	in.reset(testLimits)
	wireErr := in.decode(b)
	var c authv3.CheckRequest
	if err := proto.Unmarshal(b, &c); err != nil {
		// The generated decoder refuses it (not protobuf, or a string that
		// is not UTF-8): the front refuses it too, or reads it leniently
		// (a field it never reads may be what the generated decoder
		// refused).
		return
	}
	if wireErr != nil {
		t.Fatalf("the generated decoder reads %x, the front does not: %v", b, wireErr)
	}
	if in.status != 0 {
		return // refused: the limits and checks are the front's own (TestHostileCheckRequests)
	}
	method, path, host, hd := reference(&c)
	if in.method != method || in.path != path || in.host != host || !sameHeader(in.header, hd) {
		t.Fatalf("read %q %q %q %v, want %q %q %q %v", in.method, in.path, in.host, in.header, method, path, host, hd)
	}
}

// The front reads what Envoy's messages say, as the generated decoder does.
func TestDecodeReadsWhatEnvoySends(t *testing.T) {
	for _, raw := range []bool{false, true} {
		c := envoyRequest(raw)
		b, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		decodeAndCompare(t, b)
		var in input
		in.reset(testLimits)
		in.decode(b)
		want := http.Header{"Cookie": {"_ga=GA1; authservice_session=abc"}, "Accept": {"text/html"}, "User-Agent": {"Mozilla/5.0"},
			"X-Forwarded-Proto": {"https"}, "X-Request-Id": {"0b8d2f7e"}, "X-Forwarded-For": {"10.0.0.1"},
			"X-Envoy-External-Address": {"10.0.0.1"}, "X-Custom-Thing": {"value with spaces and \t tab"}, "Kubeflow-Userid": {"mallory"}}
		if raw {
			want["Cookie"] = append(want["Cookie"], "second=line")
		}
		if in.status != 0 || in.method != "GET" || in.path != "/notebook/ns/nb/lab?x=1&y=%2F" || in.host != "kubeflow.example.com" ||
			!sameHeader(in.header, want) {
			t.Errorf("raw %v: %d %s %q %q %q %v", raw, in.status, in.why, in.method, in.path, in.host, in.header)
		}
	}
	// The headers map joins repeated headers with ","; cookies are split.
	c := envoyRequest(false)
	c.Attributes.Request.Http.Headers["cookie"] = "a=1,authservice_session=abc, b=2"
	b, _ := proto.Marshal(c)
	var in input
	in.reset(testLimits)
	in.decode(b)
	if got := in.header["Cookie"]; !reflect.DeepEqual(got, []string{"a=1", "authservice_session=abc", "b=2"}) {
		t.Errorf("cookie lines %q", got)
	}
}

// Whatever the bytes, the front never panics, and where the generated
// decoder reads a message, the front reads the same request from it.
func FuzzDecodeCheckRequest(f *testing.F) {
	for _, raw := range []bool{false, true} {
		b, _ := proto.Marshal(envoyRequest(raw))
		f.Add(b)
	}
	b, _ := proto.Marshal(&authv3.CheckRequest{})
	f.Add(b)
	f.Add([]byte{0x0a, 0x02, 0x22, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeAndCompare(t, b)
	})
}

// Benchmark of the front's reading of Envoy's message for a navigation,
// against the generated decoder's.
func BenchmarkDecodeCheckRequest(b *testing.B) {
	msg, _ := proto.Marshal(envoyRequest(false))
	b.Run("front", func(b *testing.B) {
		var in input
		b.ReportAllocs()
		for b.Loop() {
			in.reset(testLimits)
			if err := in.decode(msg); err != nil || in.status != 0 {
				b.Fatal(err, in.why)
			}
		}
	})
	b.Run("generated", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var c authv3.CheckRequest
			if err := proto.Unmarshal(msg, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
}
