//lint:file-ignore ST1005 Envoy's jwt_authn answers 401 with these capitalized messages; the emulation repeats them verbatim.

package extauthz

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"context"

	"github.com/go-jose/go-jose/v4"
	"sigs.k8s.io/yaml"
)

// IstioConfig configures an Istio ingress gateway from rendered objects, as
// istiod would: the mesh configuration's extension providers (ConfigMap
// istio-system/istio, key mesh), AuthorizationPolicies (CUSTOM, DENY, ALLOW),
// RequestAuthentications, VirtualServices and ext_authz EnvoyFilters.
//
// The gateway runs, for each request, what Envoy's filter chain on an Istio
// gateway does, in its order:
//
//  1. the CUSTOM policies: when one matches, the ext_authz check of its
//     provider (includeRequestHeadersInCheck, headersToUpstreamOnAllow,
//     headersToDownstreamOnAllow/OnDeny, timeout, failOpen, statusOnError),
//     with the HTTP ext_authz semantics of Proxy;
//  2. jwt_authn for the RequestAuthentications: the headers of
//     outputClaimToHeaders are removed, a token found in a rule's fromHeaders
//     is verified (issuer; signature against the rule's keys: its inline
//     jwks, else its jwksUri, else its issuer's discovery; exp and nbf
//     with Envoy's 60 s clock skew; audiences when set); an invalid token or
//     one of an unknown issuer is a 401; a valid one yields the request
//     principal <iss>/<sub>, its string, number and boolean claims are copied
//     to the outputClaimToHeaders headers (Istio copies no list claims), and
//     it is removed unless forwardOriginalToken;
//  3. the DENY policies (403), then the ALLOW policies (403 unless one
//     matches, when any applies to the gateway);
//  4. the ext_authz filter of an EnvoyFilter (inserted before the router);
//  5. the route of the VirtualServices (most specific prefix first).
type IstioConfig struct {
	// Objects are the rendered objects, as JSON maps.
	Objects []map[string]any
	// Gateway are the ingress gateway's pod labels.
	Gateway map[string]string
	// Addresses maps cluster addresses (host:port) to local base URLs
	// (http://127.0.0.1:port): Services, providers, issuers and JWKS URIs
	// are all mapped the same way, as cluster DNS would resolve them.
	Addresses map[string]string
	// Default serves routes to Services that Addresses does not map (the
	// Kubeflow applications: a demo upstream).
	Default string
	// Now is the clock of jwt_authn (default time.Now).
	Now func() time.Time
}

// Istio is the gateway.
type Istio struct {
	cfg       IstioConfig
	providers map[string]*Proxy // CUSTOM providers by name
	custom    []policy
	deny      []policy
	allow     []policy
	jwtRules  []jwtRule
	claimHdrs []string
	filter    *Proxy // an EnvoyFilter's ext_authz
	routes    []route
	client    *http.Client
	upstreams map[string]*httputil.ReverseProxy

	mu   sync.Mutex
	jwks map[string]*jose.JSONWebKeySet
}

type policy struct {
	name     string
	provider string
	rules    []any // nil: no rules
}

type jwtRule struct {
	issuer, jwksURI string
	audiences       []string
	forward         bool
	fromHeaders     []fromHeader
	claims          map[string]string // header -> claim
}

type fromHeader struct{ name, prefix string }

type route struct {
	prefix, exact string
	regex         *regexp.Regexp
	upstream      string
}

// NewIstio builds the gateway from the rendered objects.
func NewIstio(cfg IstioConfig) (*Istio, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := &Istio{cfg: cfg, providers: map[string]*Proxy{}, client: &http.Client{Timeout: 5 * time.Second},
		upstreams: map[string]*httputil.ReverseProxy{}, jwks: map[string]*jose.JSONWebKeySet{}}
	var errs []error
	for _, o := range cfg.Objects {
		kind, _ := o["kind"].(string)
		md, _ := o["metadata"].(map[string]any)
		ns, _ := md["namespace"].(string)
		name, _ := md["name"].(string)
		spec, _ := o["spec"].(map[string]any)
		switch kind {
		case "ConfigMap":
			if ns == "istio-system" && name == "istio" {
				errs = append(errs, g.addProviders(o))
			}
		case "AuthorizationPolicy":
			if !g.appliesToGateway(ns, spec) {
				continue
			}
			p := policy{name: ns + "/" + name}
			if rules, ok := spec["rules"].([]any); ok {
				p.rules = rules
			}
			switch spec["action"] {
			case "CUSTOM":
				p.provider = fmt.Sprint(mapAt(spec, "provider")["name"])
				g.custom = append(g.custom, p)
			case "DENY":
				g.deny = append(g.deny, p)
			case nil, "ALLOW":
				g.allow = append(g.allow, p)
			default:
				errs = append(errs, fmt.Errorf("%s: action %v not emulated", p.name, spec["action"]))
			}
		case "RequestAuthentication":
			if !g.appliesToGateway(ns, spec) {
				continue
			}
			for _, r := range list(spec["jwtRules"]) {
				errs = append(errs, g.addJWTRule(r.(map[string]any)))
			}
		case "VirtualService":
			for _, h := range list(spec["http"]) {
				errs = append(errs, g.addRoutes(h.(map[string]any)))
			}
		case "EnvoyFilter":
			errs = append(errs, g.addEnvoyFilter(ns+"/"+name, spec))
		}
	}
	for _, p := range g.custom {
		if g.providers[p.provider] == nil {
			errs = append(errs, fmt.Errorf("CUSTOM policy %s: provider %q is not declared in the mesh configuration", p.name, p.provider))
		}
	}
	// Most specific first; Kubeflow's dashboard routes "/" last.
	sort.SliceStable(g.routes, func(i, j int) bool {
		return len(g.routes[i].prefix)+len(g.routes[i].exact) > len(g.routes[j].prefix)+len(g.routes[j].exact)
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *Istio) appliesToGateway(ns string, spec map[string]any) bool {
	if ns != "istio-system" { // the root namespace, the gateway's namespace
		return false
	}
	for k, v := range mapAt(spec, "selector", "matchLabels") {
		if g.cfg.Gateway[k] != v {
			return false
		}
	}
	return true
}

// mapURL maps a URL's host:port through Addresses, keeping its path.
func (g *Istio) mapURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return raw
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	base, ok := g.cfg.Addresses[u.Hostname()+":"+port]
	if !ok {
		return raw
	}
	// The path as it is: an issuer without one ("http://host:8082") stays
	// without one, as the iss of its tokens.
	out := strings.TrimSuffix(base, "/") + u.EscapedPath()
	if u.RawQuery != "" {
		out += "?" + u.RawQuery
	}
	return out
}

func (g *Istio) address(host string, port int) (string, bool) {
	base, ok := g.cfg.Addresses[host+":"+strconv.Itoa(port)]
	return base, ok
}

func (g *Istio) addProviders(cm map[string]any) error {
	var mesh struct {
		ExtensionProviders []struct {
			Name              string `json:"name"`
			EnvoyExtAuthzHTTP *struct {
				Service                      string   `json:"service"`
				Port                         int      `json:"port"`
				Timeout                      string   `json:"timeout"`
				PathPrefix                   string   `json:"pathPrefix"`
				FailOpen                     bool     `json:"failOpen"`
				StatusOnError                string   `json:"statusOnError"`
				IncludeRequestHeadersInCheck []string `json:"includeRequestHeadersInCheck"`
				HeadersToUpstreamOnAllow     []string `json:"headersToUpstreamOnAllow"`
				HeadersToDownstreamOnAllow   []string `json:"headersToDownstreamOnAllow"`
				HeadersToDownstreamOnDeny    []string `json:"headersToDownstreamOnDeny"`
			} `json:"envoyExtAuthzHttp"`
		} `json:"extensionProviders"`
	}
	raw, _ := mapAt(cm, "data")["mesh"].(string)
	if err := yamlToJSON(raw, &mesh); err != nil {
		return fmt.Errorf("mesh configuration: %w", err)
	}
	for _, p := range mesh.ExtensionProviders {
		h := p.EnvoyExtAuthzHTTP
		if h == nil {
			continue
		}
		check, ok := g.address(h.Service, h.Port)
		if !ok {
			return fmt.Errorf("provider %s: no address for %s:%d", p.Name, h.Service, h.Port)
		}
		c := Config{
			CheckURL:                      check,
			PathPrefix:                    h.PathPrefix,
			Timeout:                       10 * time.Minute, // Istio's default when unset
			AllowedHeaders:                lowerAll(h.IncludeRequestHeadersInCheck),
			AllowedUpstreamHeaders:        lowerAll(h.HeadersToUpstreamOnAllow),
			AllowedClientHeaders:          lowerAll(h.HeadersToDownstreamOnDeny),
			AllowedClientHeadersOnSuccess: lowerAll(h.HeadersToDownstreamOnAllow),
			FailureModeAllow:              h.FailOpen,
		}
		if h.Timeout != "" {
			d, err := time.ParseDuration(h.Timeout)
			if err != nil {
				return fmt.Errorf("provider %s: timeout %q", p.Name, h.Timeout)
			}
			c.Timeout = d
		}
		if h.StatusOnError != "" {
			n, err := strconv.Atoi(h.StatusOnError)
			if err != nil {
				return fmt.Errorf("provider %s: statusOnError %q", p.Name, h.StatusOnError)
			}
			c.StatusOnError = n
		}
		px, err := New(c)
		if err != nil {
			return err
		}
		g.providers[p.Name] = px
	}
	return nil
}

func (g *Istio) addJWTRule(r map[string]any) error {
	jr := jwtRule{claims: map[string]string{}}
	jr.issuer = g.mapURL(fmt.Sprint(r["issuer"]))
	if u, ok := r["jwksUri"].(string); ok {
		jr.jwksURI = g.mapURL(u)
	}
	// Inline keys win over jwksUri, as in Istio (Kubeflow 1.9.0's CronJob
	// writes the API server's keys there for a self-signed issuer).
	if inline, ok := r["jwks"].(string); ok {
		var set jose.JSONWebKeySet
		if err := json.Unmarshal([]byte(inline), &set); err != nil {
			return fmt.Errorf("jwtRule %s: jwks: %w", jr.issuer, err)
		}
		jr.jwksURI = "inline:" + jr.issuer
		g.jwks[jr.jwksURI] = &set
	}
	for _, a := range list(r["audiences"]) {
		jr.audiences = append(jr.audiences, a.(string))
	}
	jr.forward, _ = r["forwardOriginalToken"].(bool)
	for _, h := range list(r["fromHeaders"]) {
		m := h.(map[string]any)
		p, _ := m["prefix"].(string)
		jr.fromHeaders = append(jr.fromHeaders, fromHeader{name: fmt.Sprint(m["name"]), prefix: p})
	}
	if len(jr.fromHeaders) == 0 {
		jr.fromHeaders = []fromHeader{{name: "Authorization", prefix: "Bearer "}}
	}
	if _, ok := r["fromParams"]; ok {
		return fmt.Errorf("jwtRule %s: fromParams not emulated", jr.issuer)
	}
	for _, c := range list(r["outputClaimToHeaders"]) {
		m := c.(map[string]any)
		h := strings.ToLower(fmt.Sprint(m["header"]))
		jr.claims[h] = fmt.Sprint(m["claim"])
		g.claimHdrs = append(g.claimHdrs, h)
	}
	g.jwtRules = append(g.jwtRules, jr)
	return nil
}

func (g *Istio) addRoutes(h map[string]any) error {
	var upstream string
	if routes := list(h["route"]); len(routes) > 0 { // one destination is enough here
		dst := mapAt(routes[0].(map[string]any), "destination")
		port, _ := mapAt(dst, "port")["number"].(float64)
		host := fmt.Sprint(dst["host"])
		if base, ok := g.address(host, int(port)); ok {
			upstream = base
		} else {
			upstream = g.cfg.Default
		}
	}
	if upstream == "" {
		return nil
	}
	matches := list(h["match"])
	if len(matches) == 0 {
		g.routes = append(g.routes, route{prefix: "/", upstream: upstream})
	}
	for _, m := range matches {
		uri := mapAt(m.(map[string]any), "uri")
		r := route{upstream: upstream}
		switch {
		case uri["prefix"] != nil:
			r.prefix = fmt.Sprint(uri["prefix"])
		case uri["exact"] != nil:
			r.exact = fmt.Sprint(uri["exact"])
		case uri["regex"] != nil:
			re, err := regexp.Compile("^(?:" + fmt.Sprint(uri["regex"]) + ")$")
			if err != nil {
				return err
			}
			r.regex = re
		default:
			r.prefix = "/"
		}
		g.routes = append(g.routes, r)
	}
	return nil
}

func (g *Istio) addEnvoyFilter(name string, spec map[string]any) error {
	for _, p := range list(spec["configPatches"]) {
		value := mapAt(p.(map[string]any), "patch", "value")
		if value["name"] != "envoy.filters.http.ext_authz" {
			continue
		}
		tc := mapAt(value, "typed_config")
		hs := mapAt(tc, "http_service")
		su := mapAt(hs, "server_uri")
		u, err := url.Parse(fmt.Sprint(su["uri"]))
		if err != nil {
			return fmt.Errorf("EnvoyFilter %s: %w", name, err)
		}
		port := 80
		if parts := strings.Split(fmt.Sprint(su["cluster"]), "|"); len(parts) == 4 {
			port, _ = strconv.Atoi(parts[1]) // Istio routes by the cluster's port
		}
		check, ok := g.address(u.Hostname(), port)
		if !ok {
			return fmt.Errorf("EnvoyFilter %s: no address for %s:%d", name, u.Hostname(), port)
		}
		c := Config{CheckURL: check, PathPrefix: fmt.Sprint(orEmpty(hs["path_prefix"])), Timeout: 200 * time.Millisecond}
		if t, ok := su["timeout"].(string); ok {
			if c.Timeout, err = time.ParseDuration(t); err != nil {
				return fmt.Errorf("EnvoyFilter %s: timeout %q", name, t)
			}
		}
		c.AllowedHeaders = patterns(firstOf(mapAt(tc, "allowed_headers"), mapAt(hs, "authorization_request", "allowed_headers")))
		resp := mapAt(hs, "authorization_response")
		c.AllowedUpstreamHeaders = patterns(mapAt(resp, "allowed_upstream_headers"))
		c.AllowedUpstreamHeadersToAppend = patterns(mapAt(resp, "allowed_upstream_headers_to_append"))
		c.AllowedClientHeaders = patterns(mapAt(resp, "allowed_client_headers"))
		c.AllowedClientHeadersOnSuccess = patterns(mapAt(resp, "allowed_client_headers_on_success"))
		c.FailureModeAllow, _ = tc["failure_mode_allow"].(bool)
		if code, ok := mapAt(tc, "status_on_error")["code"].(float64); ok {
			c.StatusOnError = int(code)
		}
		px, err := New(c)
		if err != nil {
			return err
		}
		g.filter = px
	}
	return nil
}

// patterns turns Envoy's ListStringMatcher into the Proxy's matcher list
// (exact names; prefix matches end in "*").
func patterns(m map[string]any) []string {
	var out []string
	for _, p := range list(m["patterns"]) {
		pm := p.(map[string]any)
		switch {
		case pm["exact"] != nil:
			out = append(out, strings.ToLower(fmt.Sprint(pm["exact"])))
		case pm["prefix"] != nil:
			out = append(out, strings.ToLower(fmt.Sprint(pm["prefix"]))+"*")
		}
	}
	return out
}

// ServeHTTP runs the filter chain described on IstioConfig.
func (g *Istio) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	upstream, ok := g.route(r.URL.Path)
	if !ok {
		http.Error(w, "no route", http.StatusNotFound)
		return
	}
	for _, p := range g.custom {
		m, err := policyMatches(p.rules, r, "")
		if err != nil {
			http.Error(w, "policy "+p.name+": "+err.Error(), http.StatusInternalServerError)
			return
		}
		if m {
			if !g.providers[p.provider].check(w, r) {
				return
			}
			break // one provider per workload
		}
	}
	principal, status, why := g.authenticate(r)
	if status != 0 {
		http.Error(w, why, status)
		return
	}
	for _, p := range g.deny {
		m, err := policyMatches(p.rules, r, principal)
		if err != nil {
			http.Error(w, "policy "+p.name+": "+err.Error(), http.StatusInternalServerError)
			return
		}
		if m {
			http.Error(w, "RBAC: access denied", http.StatusForbidden)
			return
		}
	}
	if len(g.allow) > 0 {
		allowed := false
		for _, p := range g.allow {
			m, err := policyMatches(p.rules, r, principal)
			if err != nil {
				http.Error(w, "policy "+p.name+": "+err.Error(), http.StatusInternalServerError)
				return
			}
			allowed = allowed || m
		}
		if !allowed {
			http.Error(w, "RBAC: access denied", http.StatusForbidden)
			return
		}
	}
	if g.filter != nil && !g.filter.check(w, r) {
		return
	}
	g.upstream(upstream).ServeHTTP(w, r)
}

func (g *Istio) route(path string) (string, bool) {
	for _, rt := range g.routes {
		switch {
		case rt.exact != "" && path == rt.exact,
			rt.prefix != "" && strings.HasPrefix(path, rt.prefix),
			rt.regex != nil && rt.regex.MatchString(path):
			return rt.upstream, true
		}
	}
	return "", false
}

func (g *Istio) upstream(target string) *httputil.ReverseProxy {
	g.mu.Lock()
	defer g.mu.Unlock()
	if rp := g.upstreams[target]; rp != nil {
		return rp
	}
	u, _ := url.Parse(target)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "upstream connect error", http.StatusServiceUnavailable)
		},
	}
	g.upstreams[target] = rp
	return rp
}

// authenticate is jwt_authn: it returns the request principal ("" without
// a token) or the status and body of the refusal.
func (g *Istio) authenticate(r *http.Request) (string, int, string) {
	for _, h := range g.claimHdrs {
		r.Header.Del(h)
	}
	for _, rule := range g.jwtRules {
		for _, fh := range rule.fromHeaders {
			// As Envoy's extractor: a header without the prefix (header
			// values carry no trailing space, so "Bearer " is "Bearer")
			// holds no token; the token ends at the first character a JWT
			// cannot contain.
			v := strings.TrimSpace(r.Header.Get(fh.name))
			i := strings.Index(v, fh.prefix)
			if v == "" || i < 0 {
				continue
			}
			raw := v[i+len(fh.prefix):]
			if end := strings.IndexFunc(raw, notJWTChar); end >= 0 {
				raw = raw[:end]
			}
			claims, err := g.verify(raw)
			if err != nil {
				return "", http.StatusUnauthorized, err.Error()
			}
			iss, _ := claims["iss"].(string)
			sub, _ := claims["sub"].(string)
			for _, jr := range g.jwtRules {
				if jr.issuer != iss {
					continue
				}
				for h, c := range jr.claims {
					if s, ok := claimString(claims, c); ok {
						r.Header.Set(h, s)
					}
				}
				if !jr.forward {
					r.Header.Del(fh.name)
				}
				break
			}
			return iss + "/" + sub, 0, ""
		}
	}
	return "", 0, ""
}

func notJWTChar(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == '=' || r == '+' || r == '/')
}

const clockSkew = 60 // seconds: Envoy's default clock_skew_seconds

// verify checks a token against the rule of its issuer.
func (g *Istio) verify(raw string) (map[string]any, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, errors.New("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, errors.New("Jwt payload is an invalid Base64URL")
	}
	var unverified map[string]any
	if json.Unmarshal(payload, &unverified) != nil {
		return nil, errors.New("Jwt payload is an invalid JSON")
	}
	iss, _ := unverified["iss"].(string)
	var rule *jwtRule
	for i := range g.jwtRules {
		if g.jwtRules[i].issuer == iss {
			rule = &g.jwtRules[i]
			break
		}
	}
	if rule == nil {
		return nil, errors.New("Jwt issuer is not configured")
	}
	sig, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.EdDSA})
	if err != nil {
		return nil, errors.New("Jwt verification fails")
	}
	keys, err := g.keys(rule)
	if err != nil {
		return nil, errors.New("Jwks remote fetch is failed")
	}
	var verified []byte
	for _, k := range keys.Keys {
		if kid := sig.Signatures[0].Header.KeyID; kid != "" && k.KeyID != kid {
			continue
		}
		if b, err := sig.Verify(k.Key); err == nil {
			verified = b
			break
		}
	}
	if verified == nil {
		return nil, errors.New("Jwt verification fails")
	}
	var claims map[string]any
	dec := json.NewDecoder(strings.NewReader(string(verified)))
	dec.UseNumber()
	if dec.Decode(&claims) != nil {
		return nil, errors.New("Jwt payload is an invalid JSON")
	}
	now := g.cfg.Now().Unix()
	if exp, ok := number(claims["exp"]); ok && now > exp+clockSkew {
		return nil, errors.New("Jwt is expired")
	}
	if nbf, ok := number(claims["nbf"]); ok && now+clockSkew < nbf {
		return nil, errors.New("Jwt not yet valid")
	}
	if len(rule.audiences) > 0 {
		ok := false
		for _, a := range audiences(claims["aud"]) {
			for _, want := range rule.audiences {
				ok = ok || a == want
			}
		}
		if !ok {
			return nil, errors.New("Audiences in Jwt are not allowed")
		}
	}
	return claims, nil
}

// keys fetches (once) the JWKS of a rule: its inline jwks (cached at
// start), its jwksUri or its issuer's discovery document.
func (g *Istio) keys(rule *jwtRule) (*jose.JSONWebKeySet, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	uri := rule.jwksURI
	if uri == "" {
		var d struct {
			JWKS string `json:"jwks_uri"`
		}
		if err := g.getJSON(strings.TrimSuffix(rule.issuer, "/")+"/.well-known/openid-configuration", &d); err != nil {
			return nil, err
		}
		uri = d.JWKS
	}
	if set := g.jwks[uri]; set != nil {
		return set, nil
	}
	var set jose.JSONWebKeySet
	if err := g.getJSON(uri, &set); err != nil {
		return nil, err
	}
	g.jwks[uri] = &set
	return &set, nil
}

func (g *Istio) getJSON(u string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
}

// PolicyMatches evaluates the rules of an AuthorizationPolicy's spec for a
// request from outside the mesh whose validated JWT (if any) has the
// request principal principal ("" for none). test/manifests simulates the
// rendered policies with it.
func PolicyMatches(spec map[string]any, r *http.Request, principal string) (bool, error) {
	rules, _ := spec["rules"].([]any)
	return policyMatches(rules, r, principal)
}

// policyMatches evaluates an AuthorizationPolicy's rules as Istio does: rules are
// ORed; within a rule from, to and when are ANDed; a policy without rules
// matches nothing, a rule without fields matches everything.
func policyMatches(rules []any, r *http.Request, principal string) (bool, error) {
	for _, ru := range rules {
		rule, _ := ru.(map[string]any)
		ok := true
		for k, v := range rule {
			var m bool
			var err error
			switch k {
			case "from":
				m, err = anyOf(v, func(x map[string]any) (bool, error) { return source(mapAt(x, "source"), principal) })
			case "to":
				m, err = anyOf(v, func(x map[string]any) (bool, error) { return operation(mapAt(x, "operation"), r) })
			case "when":
				m = true
				for _, c := range list(v) {
					cm, cerr := condition(c.(map[string]any), r, principal)
					if cerr != nil {
						return false, cerr
					}
					m = m && cm
				}
			default:
				return false, fmt.Errorf("rule field %s not emulated", k)
			}
			if err != nil {
				return false, err
			}
			ok = ok && m
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

func anyOf(v any, f func(map[string]any) (bool, error)) (bool, error) {
	for _, x := range list(v) {
		m, err := f(x.(map[string]any))
		if err != nil || m {
			return m, err
		}
	}
	return false, nil
}

func source(s map[string]any, principal string) (bool, error) {
	ok := true
	for k, v := range s {
		switch k {
		case "requestPrincipals":
			ok = ok && matchAnyString(strs(v), principal)
		case "notRequestPrincipals":
			ok = ok && !matchAnyString(strs(v), principal)
		case "principals", "namespaces":
			// Requests from outside the mesh have no peer identity.
			ok = ok && matchAnyString(strs(v), "")
		case "notPrincipals", "notNamespaces":
			ok = ok && !matchAnyString(strs(v), "")
		default:
			return false, fmt.Errorf("source field %s not emulated", k)
		}
	}
	return ok, nil
}

func operation(o map[string]any, r *http.Request) (bool, error) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ok := true
	for k, v := range o {
		switch k {
		case "paths":
			ok = ok && matchAnyString(strs(v), r.URL.Path)
		case "notPaths":
			ok = ok && !matchAnyString(strs(v), r.URL.Path)
		case "methods":
			ok = ok && matchAnyString(strs(v), r.Method)
		case "notMethods":
			ok = ok && !matchAnyString(strs(v), r.Method)
		case "hosts":
			ok = ok && (matchAnyFold(strs(v), r.Host) || matchAnyFold(strs(v), host))
		case "notHosts":
			ok = ok && !matchAnyFold(strs(v), r.Host) && !matchAnyFold(strs(v), host)
		default:
			return false, fmt.Errorf("operation field %s not emulated", k)
		}
	}
	return ok, nil
}

var headerKey = regexp.MustCompile(`^request\.headers\[([^\]]+)\]$`)

func condition(c map[string]any, r *http.Request, principal string) (bool, error) {
	key := fmt.Sprint(c["key"])
	var value string
	switch {
	case headerKey.MatchString(key):
		value = strings.Join(r.Header.Values(headerKey.FindStringSubmatch(key)[1]), ",")
	case key == "request.auth.principal":
		value = principal
	default:
		return false, fmt.Errorf("condition key %s not emulated", key)
	}
	ok := true
	if v, has := c["values"]; has {
		ok = ok && matchAnyString(strs(v), value)
	}
	if v, has := c["notValues"]; has {
		ok = ok && !matchAnyString(strs(v), value)
	}
	return ok, nil
}

// matchAnyString is Istio's string match: "*" (present), "abc*" (prefix),
// "*abc" (suffix), else exact. An empty value is absent.
func matchAnyString(patterns []string, v string) bool {
	for _, p := range patterns {
		switch {
		case p == "*":
			if v != "" {
				return true
			}
		case strings.HasSuffix(p, "*"):
			if strings.HasPrefix(v, strings.TrimSuffix(p, "*")) {
				return true
			}
		case strings.HasPrefix(p, "*"):
			if strings.HasSuffix(v, strings.TrimPrefix(p, "*")) {
				return true
			}
		case p == v:
			return true
		}
	}
	return false
}

func matchAnyFold(patterns []string, v string) bool {
	return matchAnyString(lowerAll(patterns), strings.ToLower(v))
}

// claimString is a claim (nested with ".") as Istio copies it to a header:
// strings, integers and booleans; lists and objects are not copied.
func claimString(claims map[string]any, name string) (string, bool) {
	var v any = claims
	for _, part := range strings.Split(name, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		v = m[part]
	}
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return strconv.FormatInt(n, 10), true
		}
	}
	return "", false
}

func number(v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	return int64(f), err == nil
}

func audiences(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		return strs(x)
	}
	return nil
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func strs(v any) []string {
	var out []string
	for _, x := range list(v) {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func mapAt(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		m, _ = m[k].(map[string]any)
	}
	return m
}

func firstOf(ms ...map[string]any) map[string]any {
	for _, m := range ms {
		if len(m) > 0 {
			return m
		}
	}
	return nil
}

func orEmpty(v any) any {
	if v == nil {
		return ""
	}
	return v
}

func lowerAll(l []string) []string {
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = strings.ToLower(s)
	}
	return out
}

// yamlToJSON decodes YAML (the mesh configuration is a YAML string) into v.
func yamlToJSON(y string, v any) error {
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		return err
	}
	return json.Unmarshal(j, v)
}
