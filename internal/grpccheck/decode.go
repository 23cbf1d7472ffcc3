package grpccheck

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/encoding/protowire"
)

// The field numbers of envoy.service.auth.v3 (attribute_context.proto,
// external_auth.proto) and envoy.config.core.v3 (base.proto) the front
// reads; everything else is skipped.
const (
	fieldCheckAttributes = 1 // CheckRequest.attributes

	fieldAttrRequest = 4 // AttributeContext.request

	fieldRequestHTTP = 2 // AttributeContext.Request.http

	fieldHTTPMethod    = 2  // HttpRequest.method
	fieldHTTPHeaders   = 3  // HttpRequest.headers (map<string, string>)
	fieldHTTPPath      = 4  // HttpRequest.path, with the query
	fieldHTTPHost      = 5  // HttpRequest.host
	fieldHTTPScheme    = 6  // HttpRequest.scheme
	fieldHTTPHeaderMap = 13 // HttpRequest.header_map (encode_raw_headers)

	fieldMapKey   = 1 // a map entry's key
	fieldMapValue = 2 // and value

	fieldHeaderMapHeaders = 1 // HeaderMap.headers
	fieldHeaderKey        = 1 // HeaderValue.key
	fieldHeaderValue      = 2 // HeaderValue.value
	fieldHeaderRawValue   = 3 // HeaderValue.raw_value
)

// errWire is a message that is not protobuf: a gRPC error (the reader
// follows exactly the five levels above; the server bounds the size).
var errWire = errors.New("malformed protobuf")

// input is a CheckRequest as the front reads it: the HTTP request it
// describes, and the first reason it cannot be translated (status, why).
// The header is built fresh for every check (the request keeps it); the
// rest is reused.
type input struct {
	method, path, host, scheme string
	header                     http.Header

	status int    // 0: translated; 400 or 431: refused, why says why
	why    string // for the log line and the answer's body

	fromMap, fromRaw []field // header fields as read, pointing into the message
	limits           limits

	trace traceCarrier // the check's trace context (service.go)
}

// field is one header field as the message carries it.
type field struct {
	name, value []byte
	raw         bool // header_map's raw_value: bytes, not a proto3 string
}

// limits are the HTTP check port's: the same header is accepted or
// refused on both ports.
type limits struct {
	headerBytes int // name + value + 4 per field, and the request line
	fields      int
}

func (in *input) reset(l limits) {
	*in = input{fromMap: in.fromMap[:0], fromRaw: in.fromRaw[:0], limits: l}
}

// refuse records the first reason the request cannot be translated.
func (in *input) refuse(status int, format string, args ...any) {
	if in.status == 0 {
		in.status, in.why = status, fmt.Sprintf(format, args...)
	}
}

// decode reads a CheckRequest message, then translates it. Whatever it
// says that cannot be translated is recorded for a definite refusal; a
// message that is not protobuf at all is an error.
func (in *input) decode(b []byte) error {
	var method, path, host, scheme []byte
	seen := false
	err := walk(b, func(num protowire.Number, v []byte) error {
		if num != fieldCheckAttributes {
			return nil
		}
		return walk(v, func(num protowire.Number, v []byte) error {
			if num != fieldAttrRequest {
				return nil
			}
			return walk(v, func(num protowire.Number, v []byte) error {
				if num != fieldRequestHTTP {
					return nil
				}
				seen = true
				return walk(v, func(num protowire.Number, v []byte) error {
					switch num {
					case fieldHTTPMethod:
						method = v
					case fieldHTTPPath:
						path = v
					case fieldHTTPHost:
						host = v
					case fieldHTTPScheme:
						scheme = v
					case fieldHTTPHeaders:
						return in.mapEntry(v)
					case fieldHTTPHeaderMap:
						return walk(v, func(num protowire.Number, v []byte) error {
							if num != fieldHeaderMapHeaders {
								return nil
							}
							return in.headerValue(v)
						})
					}
					return nil
				})
			})
		})
	})
	if err != nil {
		return err
	}
	if !seen {
		in.refuse(http400, "attributes.request.http missing")
	}
	in.method = in.attribute("method", method)
	in.path = in.attribute("path", path)
	in.host = in.attribute("host", host)
	// What the HTTP server refuses with 400 in a request line or Host.
	if in.method != "" && (method[0] == ':' || !validName(method)) {
		in.refuse(http400, "attributes.request.http.method %q is not a method", truncate(method))
	}
	if in.host != "" && !httpguts.ValidHostHeader(in.host) {
		in.refuse(http400, "attributes.request.http.host %q is not a host", truncate(host))
	}
	if len(scheme) > 0 {
		in.scheme = strings.ToLower(in.attribute("scheme", scheme))
	}
	in.translate()
	return nil
}

const (
	http400 = http.StatusBadRequest
	http431 = http.StatusRequestHeaderFieldsTooLarge
)

// walk calls f for every length-delimited field of a message (the only
// wire type the front reads) and skips the others; a second occurrence of
// a field is handed to f again, as protobuf merges it.
func walk(b []byte, f func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errWire
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errWire
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return errWire
		}
		b = b[n:]
		if err := f(num, v); err != nil {
			return err
		}
	}
	return nil
}

// mapEntry reads one entry of HttpRequest.headers.
func (in *input) mapEntry(b []byte) error {
	var f field
	err := walk(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fieldMapKey:
			f.name = v
		case fieldMapValue:
			f.value = v
		}
		return nil
	})
	if err == nil && in.count() {
		in.fromMap = append(in.fromMap, f)
	}
	return err
}

// headerValue reads one HeaderValue of HttpRequest.header_map.
func (in *input) headerValue(b []byte) error {
	var f field
	err := walk(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fieldHeaderKey:
			f.name = v
		case fieldHeaderValue:
			if !f.raw {
				f.value = v
			}
		case fieldHeaderRawValue:
			f.value, f.raw = v, true
		}
		return nil
	})
	if err == nil && in.count() {
		in.fromRaw = append(in.fromRaw, f)
	}
	return err
}

// count reports whether one more header field is within the limit.
func (in *input) count() bool {
	if len(in.fromMap)+len(in.fromRaw) >= in.limits.fields {
		in.refuse(http431, "more than %d header fields", in.limits.fields)
		return false
	}
	return true
}

// attribute is a string attribute: present, UTF-8 (proto3 strings are)
// and free of control characters and spaces (none of them can be in a
// request line).
func (in *input) attribute(name string, v []byte) string {
	switch {
	case len(v) == 0:
		in.refuse(http400, "attributes.request.http.%s missing", name)
		return ""
	case !utf8.Valid(v):
		in.refuse(http400, "attributes.request.http.%s is not UTF-8", name)
		return ""
	}
	for _, c := range v {
		if c <= ' ' || c == 0x7f {
			in.refuse(http400, "attributes.request.http.%s has a space or a control character", name)
			return ""
		}
	}
	return string(v)
}

// translate builds the header from the fields read: header_map when Envoy
// sent it (encode_raw_headers), else the headers map. Names become
// canonical, as the HTTP server makes them; the pseudo-headers and host
// are the attributes again and are left out.
func (in *input) translate() {
	fields := in.fromMap
	if len(in.fromRaw) > 0 {
		fields = in.fromRaw
	}
	size := len(in.method) + len(in.path) + len(" HTTP/1.1\r\n")
	for _, f := range fields {
		size += len(f.name) + len(f.value) + len(": \r\n")
	}
	if size > in.limits.headerBytes {
		in.refuse(http431, "%d bytes of header, more than %d", size, in.limits.headerBytes)
	}
	if in.status == 0 {
		in.build(fields)
	}
	if in.status != 0 {
		// A refusal is logged with the request id when there is one.
		in.header = requestID(fields)
	}
}

// build makes the header of fields, or refuses.
func (in *input) build(fields []field) {
	in.header = make(http.Header, len(fields)+1)
	values := make([]string, 0, len(fields)+1) // one backing array for the fields' values
	for _, f := range fields {
		if !validName(f.name) {
			in.refuse(http400, "header name %q is not a header name", truncate(f.name))
			return
		}
		if f.name[0] == ':' || string(f.name) == "host" {
			continue
		}
		if !f.raw && !utf8.Valid(f.value) {
			in.refuse(http400, "the value of header %s is not UTF-8", f.name)
			return
		}
		if !validValue(f.value) {
			in.refuse(http400, "the value of header %s has a control character", f.name)
			return
		}
		name := canonical(f.name)
		if name == "Cookie" && !f.raw && containsComma(f.value) {
			// Envoy joins repeated headers of the map with ","; cookies
			// never contain one (RFC 6265), so these are the lines.
			for _, c := range strings.Split(string(f.value), ",") {
				in.header["Cookie"] = append(in.header["Cookie"], strings.TrimSpace(c))
			}
			continue
		}
		values = append(values, string(f.value))
		if prev, ok := in.header[name]; ok {
			in.header[name] = append(prev, values[len(values)-1])
		} else {
			in.header[name] = values[len(values)-1 : len(values) : len(values)]
		}
	}
	// The scheme of Secure cookies is read from X-Forwarded-Proto, which
	// Envoy sets on the request (and passes to the HTTP check): the same
	// header in both protocols. The scheme attribute (:scheme) stands in
	// only when the header is absent.
	if _, ok := in.header["X-Forwarded-Proto"]; !ok && in.scheme != "" {
		switch in.scheme {
		case "https":
			in.header["X-Forwarded-Proto"] = https
		case "http":
			in.header["X-Forwarded-Proto"] = plainHTTP
		default:
			in.refuse(http400, "attributes.request.http.scheme %q is neither http nor https", truncate([]byte(in.scheme)))
		}
	}
}

var (
	https     = []string{"https"}
	plainHTTP = []string{"http"}
)

// requestID is a header with only the request id of fields, when it is
// one a log line can carry.
func requestID(fields []field) http.Header {
	for _, f := range fields {
		if string(f.name) == "x-request-id" && utf8.Valid(f.value) && validValue(f.value) {
			return http.Header{"X-Request-Id": {string(f.value)}}
		}
	}
	return http.Header{}
}

// validName reports whether n is a header name: a token, or a
// pseudo-header (":path").
func validName(n []byte) bool {
	if len(n) > 1 && n[0] == ':' {
		n = n[1:]
	}
	if len(n) == 0 || !utf8.Valid(n) {
		return false
	}
	for _, c := range n {
		if !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

// validValue is httpguts.ValidHeaderFieldValue on bytes: no control
// character but horizontal tab (bytes above 0x7f are obs-text, which an
// HTTP server accepts too).
func validValue(v []byte) bool {
	for _, c := range v {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func containsComma(v []byte) bool {
	for _, c := range v {
		if c == ',' {
			return true
		}
	}
	return false
}

// truncate bounds what a refusal quotes of the client's bytes.
func truncate(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return strings.ToValidUTF8(string(b), "?")
}

// canonical is the canonical form of a header name, as the HTTP server
// makes it; common names without allocating.
func canonical(n []byte) string {
	if c, ok := commonNames[string(n)]; ok {
		return c
	}
	return textproto.CanonicalMIMEHeaderKey(string(n))
}

// commonNames are the header names Envoy passes on most checks, lower case
// (as Envoy sends them) to canonical.
var commonNames = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control", "Connection", "Content-Length",
		"Content-Type", "Cookie", "Dnt", "If-Modified-Since", "If-None-Match", "Origin", "Pragma", "Priority", "Referer",
		"Sec-Ch-Ua", "Sec-Ch-Ua-Mobile", "Sec-Ch-Ua-Platform", "Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site",
		"Sec-Fetch-User", "Sec-Gpc", "Te", "Traceparent", "Tracestate", "Upgrade-Insecure-Requests", "User-Agent",
		"X-B3-Parentspanid", "X-B3-Sampled", "X-B3-Spanid", "X-B3-Traceid", "B3", "X-Envoy-Attempt-Count",
		"X-Envoy-External-Address", "X-Envoy-Internal", "X-Envoy-Decorator-Operation", "X-Envoy-Peer-Metadata",
		"X-Envoy-Peer-Metadata-Id", "X-Forwarded-Client-Cert", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
		"X-Forwarded-Port", "X-Real-Ip", "X-Request-Id", "X-Requested-With", "X-Auth-Token", "Kubeflow-Userid",
		"Kubeflow-Groups", "X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Groups",
	} {
		m[strings.ToLower(n)] = n
	}
	return m
}()
