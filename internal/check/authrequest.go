package check

import (
	"net/http"
	"strings"
)

// oauth2-proxy's identity headers (set_xauthrequest), which Kubeflow 1.9.1+
// lists in its provider's headersToUpstreamOnAllow: AUTH_REQUEST_HEADERS.
const (
	authRequestUser   = "X-Auth-Request-User"
	authRequestEmail  = "X-Auth-Request-Email"
	authRequestGroups = "X-Auth-Request-Groups"
)

// authRequestNames are the lowercase names, for x-envoy-auth-headers-to-remove.
var authRequestNames = []string{"x-auth-request-user", "x-auth-request-email", "x-auth-request-groups"}

// noValue is a header without a value (never written to an answer).
var noValue = []string{""}

// setAuthRequestHeaders adds oauth2-proxy's identity headers to an allow
// answer. Envoy only overwrites a client-sent header when the answer carries
// it, so a header without a value is named in x-envoy-auth-headers-to-remove
// instead: a client's copy never reaches the upstream.
func setAuthRequestHeaders(hd http.Header, a *authed) {
	var remove []string
	// The principal's own header values, shared as the identity headers
	// share them: nothing allocated per check but the e-mail's slice.
	set := func(name, lower string, v []string) {
		if v[0] == "" {
			remove = append(remove, lower)
			return
		}
		hd[name] = v
	}
	email := noValue
	if a.live != nil && a.live.Session.Email != "" {
		email = []string{a.live.Session.Email}
	}
	set(authRequestUser, authRequestNames[0], a.UserHeader)
	set(authRequestEmail, authRequestNames[1], email)
	set(authRequestGroups, authRequestNames[2], a.GroupsHeader)
	if len(remove) == 0 {
		return
	}
	if prev := hd.Get("X-Envoy-Auth-Headers-To-Remove"); prev != "" {
		remove = append([]string{prev}, remove...)
	}
	hd["X-Envoy-Auth-Headers-To-Remove"] = []string{strings.Join(remove, ",")}
}
