// Package check owns the decision Envoy's ext_authz filter asks for on every
// request, and the login and logout flows that arrive through the same check
// (Kubeflow sets no path prefix, so the service sees the original request).
//
// Envoy lets a request through only on 200; every other status, with its
// headers and body, goes to the browser; a 5xx becomes a bare 403. So every
// page or redirect here is a non-200 answer, and nothing answers 5xx.
//
// The decision, in the order it is taken (Handler.ServeHTTP):
//
//	request                                   answer
//	----------------------------------------  ------------------------------------------------------
//	path = path of REDIRECT_URL                callback: 302 to the original URL and a session
//	                                           cookie; 400 bad/replayed/expired state; 401 provider
//	                                           error or rejected code; 403 unusable claims or user
//	                                           not in GROUPS_ALLOWLIST
//	path = <prefix>logout, GET/HEAD            302 to AFTER_LOGOUT_URL, session cookie cleared
//	path = <prefix>logout, POST                201 {"afterLogoutURL": ...} with a valid session
//	                                           (cookie or Authorization: Bearer <cookie value>), else 401
//	path under SKIP_AUTH_URLS or <prefix>site/ 200, x-envoy-auth-headers-to-remove: identity headers
//	valid session (cookie or bearer)           200 with USERID_HEADER and GROUPS_HEADER; 403 page or
//	                                           JSON when the user is not in GROUPS_ALLOWLIST
//	OPTIONS and ALLOW_UNAUTHENTICATED_OPTIONS  200, identity headers removed
//	no valid session, browser navigation       302 to the provider (PKCE, state, nonce) and a
//	  (GET/HEAD, not XHR, Accept takes HTML,   login-state cookie
//	  not under API_PATH_PREFIXES)
//	no valid session, anything else            401 JSON with WWW-Authenticate
//
// A cookie that fails to open (forged, unknown key, expired, truncated) is
// treated as no session and cleared in the answer; the reason is logged.
package check
