// Package grpccheck is the gRPC front of the check: Envoy's
// envoy.service.auth.v3.Authorization/Check (ext_authz with grpc_service,
// Istio's envoyExtAuthzGrpc), served on GRPC_PORT beside the HTTP check.
//
// A front translates; it never decides. A CheckRequest becomes the
// *http.Request the HTTP check port would have received for the same
// request (attributes.request.http: method, path with query, host, the
// headers — the headers map or header_map with raw_value bytes; the
// pseudo-headers Envoy puts among them are the attributes again and are
// left out), check.Handler.ServeGRPC takes the same classify → decide →
// answer as an HTTP check, and the recorded HTTP answer becomes the
// CheckResponse:
//
//	HTTP answer of the check                 CheckResponse
//	---------------------------------------  ----------------------------------------------------------
//	200                                      status OK, ok_response:
//	  identity headers, Cookie (without        headers, OVERWRITE_IF_EXISTS_OR_ADD (a client's copy is
//	  the service's cookies), Authorization    overwritten)
//	  X-Envoy-Auth-Headers-To-Remove           headers_to_remove (client-sent identity, Cookie, a bearer)
//	  Set-Cookie (a renewed session)           response_headers_to_add, APPEND_IF_EXISTS_OR_ADD: no
//	                                           SESSION_RENEW_REDIRECT needed
//	any other status (302, 401, 403, ...)    status UNAUTHENTICATED (401), INVALID_ARGUMENT (400, 405,
//	                                         431) or PERMISSION_DENIED, denied_response: the status,
//	                                         every header (each Set-Cookie), the body
//	5xx, or none                             a gRPC error (UNAVAILABLE, INTERNAL): status_on_error
//	every answer                             dynamic_metadata (filter namespace
//	                                         envoy.filters.http.ext_authz): decision, reason, and for a
//	                                         principal user_id (USERID_HEADER's value) and groups
//
// A CheckRequest that cannot be translated — an attribute missing (method,
// path, host), a string that is not UTF-8 (proto3 forbids it; Envoy's
// headers map replaces such bytes, header_map's raw_value carries them as
// bytes and they are accepted as an HTTP server accepts them), a malformed
// header name or value, more header than the HTTP port reads — gets a
// definite denied answer (400, or 431 for too much header) through the
// same writer, with a log line. A failure of the service itself (a panic,
// no answer written) is a gRPC error (INTERNAL), and a 5xx answer one too
// (UNAVAILABLE), as Envoy's HTTP client takes a 5xx for an error: never OK,
// never the page; Envoy then answers status_on_error on both protocols.
//
// The request is read straight from the message's bytes (protowire), not
// through the generated CheckRequest: the generated decoder refuses a whole
// message for one non-UTF-8 byte (a gRPC error, not a deny), and reading
// into the http.Header the check reads saves the intermediate map.
package grpccheck
