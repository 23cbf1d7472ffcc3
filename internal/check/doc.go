// Package check owns the decision Envoy's ext_authz filter asks for on every
// request (and forward-auth proxies, through the verify endpoint), and the
// login and logout flows that arrive through the same check (Kubeflow sets
// no path prefix, so the service sees the original request).
//
// Envoy lets a request through only on 200; every other status, with its
// headers and body, goes to the browser; a 5xx becomes a bare 403. So every
// page or redirect here is a non-200 answer, and nothing answers 5xx.
//
// Every request is read the same way (handler.go): classify it once
// (request.go: mode, https, navigation or API, both readings of the path,
// the credential), authenticate the credential (authenticate.go, with
// package credential), authorize the principal, and hand the verdict — a
// value — to the one writer (verdict.go, allow.go).
//
//	request                                   answer
//	----------------------------------------  ------------------------------------------------------
//	path = path of REDIRECT_URL                callback: 302 to the original URL and a session
//	                                           cookie; 400 bad/replayed/expired state or missing
//	                                           code; 401 provider error, rejected code, invalid ID
//	                                           token, provider unreachable; 403 unusable claims
//	                                           (e-mail not verified), or not authorized; 403
//	                                           identity_too_large page: groups, session, ID token
//	                                           or forward-auth answers past the limits
//	                                           (limits.go); 405 method
//	path = <prefix>logout, Sec-Fetch-Site      403 "Sign out?" page or JSON; nothing ended
//	  not exactly same-origin or none
//	path = <prefix>logout, GET/HEAD            302 to AFTER_LOGOUT_URL (or the provider's end
//	                                           session), session ended and its cookie cleared
//	path = <prefix>logout, POST                201 {"afterLogoutURL": ...} with a session (cookie
//	                                           or Authorization: Bearer <cookie value>), else 401
//	                                           (either logout: 400 as below for Authorization)
//	path = VERIFY_AUTH_URL (forward auth)      the rows below for the original request the proxy
//	                                           describes (FORWARD_AUTH_PROXY), from a trusted
//	                                           proxy; 400 when its headers are missing or conflict,
//	                                           or its URL has a raw #, space, control or non-ASCII byte;
//	                                           401 instead of a login redirect unless
//	                                           FORWARD_AUTH_REDIRECT; allow answers carry Cookie
//	                                           and the upstream's Authorization, empty for none,
//	                                           and a renewed session in one Set-Cookie (renew.go)
//	path = <prefix>start?rd=<url>              302 to rd when signed in, else a login redirect to
//	                                           it; 400 rd not allowed; 405 method
//	path = back-channel logout, POST + body    the delivery itself: 200 done, 400 invalid
//	path with a control character (decoded)    400
//	path under SKIP_AUTH_URLS or <prefix>site/ 200, identity headers removed
//	  (both readings), or the back-channel
//	  logout path (Envoy's check of it)
//	Authorization with more than one           400, never one of them judged and the other
//	  credential (two lines, or merged)        passed on (request.go)
//	valid session (cookie or its value as      200 with USERID_HEADER and GROUPS_HEADER, Cookie
//	  bearer): not revoked, not idle,          without the service's cookies, a renewed cookie when
//	  refreshed or validated when due          refreshed or re-sealed; 403 page or JSON when the
//	                                           policy refuses (rules see the canonical path), then
//	                                           when the external authorizer refuses or cannot
//	                                           decide (EXTERNAL_AUTHZ_URL; Retry-After); 403
//	                                           identity_too_large, cookie cleared, when its groups
//	                                           (sealed under other settings) or its renewal do
//	                                           not fit (cookies; behind nginx, the verify and
//	                                           start answers within FORWARD_AUTH_ANSWER_MAX_BYTES):
//	                                           the session ends (behind nginx a navigation gets
//	                                           401, and the start endpoint shows the page);
//	                                           forward auth, a renewal the answer cannot carry
//	                                           (several cookies): a navigation's 307 (Caddy,
//	                                           Traefik) or 401 to the start endpoint (nginx),
//	                                           renew.go
//	session past STRICT_SESSION_VALIDATION     401 "provider unreachable" page; the cookie is kept
//	  _GRACE while the provider is down
//	bearer JWT of a trusted issuer (the        200 with the identity headers (never a cookie);
//	  provider's ID and access tokens told     403 when the policy or the external authorizer
//	  apart), or the provider's opaque access  refuses, or JSON identity_too_large for groups
//	  token (ACCESS_TOKEN_AUTHN=opaque)        past the limits; a provider token of a session
//	                                           that ended (logout, back-channel) is invalid
//	OPTIONS and ALLOW_UNAUTHENTICATED_OPTIONS  200, identity headers removed
//	invalid bearer token                       401 JSON with WWW-Authenticate (and Retry-After when
//	                                           new opaque tokens' lookups are exhausted)
//	no valid session, browser navigation       302 to the provider (PKCE, state, nonce) and a
//	  (GET/HEAD, not XHR, Accept takes HTML,   login-state cookie; 401 page with Retry-After when
//	  not under API_PATH_PREFIXES)             the provider is not discovered yet
//	no valid session, anything else            401 JSON with WWW-Authenticate
//
// A cookie that fails to open (forged, unknown key, expired, truncated) or
// a session that ended is treated as no session and cleared in the answer;
// the reason is logged.
package check
