//lint:file-ignore ST1005 Envoy's jwt_authn answers 401 with these capitalized messages; the emulation repeats them verbatim.

package extauthz

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// jwt_authn (envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication),
// as Envoy's source does it (source/extensions/filters/http/jwt_authn:
// filter.cc, verifier.cc, authenticator.cc, extractor.cc, and
// jwt_verify_lib):
//
//   - the first rule whose route match matches the request gives the
//     requirement; no rule: nothing is verified. A CORS preflight passes
//     when bypass_cors_preflight.
//   - requires_any: each provider in turn removes the headers it writes
//     (claim_to_headers, forward_payload_header), extracts its tokens
//     (from_headers: every value of the header that contains the prefix,
//     the token starting at the first base64url character after it;
//     from_params; none configured: Authorization "Bearer " and the
//     access_token parameter) and verifies every one of them: iss must be
//     the provider's issuer, then exp/nbf with clock_skew_seconds (60 by
//     default), audiences, then the signature against the provider's key
//     set (a key is tried when neither it nor the token has a kid, or the
//     kids are equal, and its alg, if set, is the token's). The first
//     provider that succeeds ends the verification: providers after it do
//     not run and do not remove their headers. When none succeeds, the
//     status is the first error other than "missing" and "unknown issuer"
//     (else "unknown issuer", else "missing"); allow_missing turns
//     "missing" into success.
//   - a verified token: forward_payload_header gets the payload; each
//     claim_to_headers header is added with the claim: a string as is, a
//     number as an integer (or C's %f for a fraction), a boolean as
//     true/false, a list or an object as its JSON, base64-encoded (Envoy
//     ≥ 1.29, authenticator.cc addJWTClaimToHeader; so a "groups" list
//     reaches kubeflow-groups as base64 of ["a","b"]); the header of the
//     token is removed unless forward; the payload goes to the dynamic
//     metadata envoy.filters.http.jwt_authn[payload_in_metadata], where
//     RBAC's request principals and claims read it.
//   - a failure: 401 with the status text and WWW-Authenticate: Bearer
//     realm="<url>", error="invalid_token" (403 for a wrong audience).

type jwtHeaderLoc struct {
	Name        string `json:"name"`
	ValuePrefix string `json:"valuePrefix,omitempty"`
}

type jwtClaimToHeader struct {
	HeaderName string `json:"headerName"`
	ClaimName  string `json:"claimName"`
}

type dataSource struct {
	InlineString string `json:"inlineString,omitempty"`
}

type jwtProvider struct {
	Issuer               string              `json:"issuer,omitempty"`
	Audiences            []string            `json:"audiences,omitempty"`
	LocalJwks            *dataSource         `json:"localJwks,omitempty"`
	Forward              bool                `json:"forward,omitempty"`
	FromHeaders          []*jwtHeaderLoc     `json:"fromHeaders,omitempty"`
	FromParams           []string            `json:"fromParams,omitempty"`
	ForwardPayloadHeader string              `json:"forwardPayloadHeader,omitempty"`
	PayloadInMetadata    string              `json:"payloadInMetadata,omitempty"`
	ClaimToHeaders       []*jwtClaimToHeader `json:"claimToHeaders,omitempty"`
	// ClearRouteCache: the route is chosen again after the claim headers
	// are added; the router here chooses it after every filter anyway.
	ClearRouteCache            bool        `json:"clearRouteCache,omitempty"`
	ClockSkewSeconds           json.Number `json:"clockSkewSeconds,omitempty"`
	NormalizePayloadInMetadata *struct {
		SpaceDelimitedClaims []string `json:"spaceDelimitedClaims,omitempty"`
	} `json:"normalizePayloadInMetadata,omitempty"`

	name string
	keys *jose.JSONWebKeySet
}

type jwtRequirementList struct {
	Requirements []*jwtRequirement `json:"requirements"`
}

type jwtRequirement struct {
	ProviderName         string              `json:"providerName,omitempty"`
	RequiresAny          *jwtRequirementList `json:"requiresAny,omitempty"`
	RequiresAll          *jwtRequirementList `json:"requiresAll,omitempty"`
	AllowMissing         *struct{}           `json:"allowMissing,omitempty"`
	AllowMissingOrFailed *struct{}           `json:"allowMissingOrFailed,omitempty"`
}

type jwtRule struct {
	Match    *routeMatch     `json:"match"`
	Requires *jwtRequirement `json:"requires,omitempty"`
}

type jwtAuthnConfig struct {
	Providers           map[string]*jwtProvider `json:"providers"`
	Rules               []*jwtRule              `json:"rules,omitempty"`
	BypassCorsPreflight bool                    `json:"bypassCorsPreflight,omitempty"`
}

type jwtAuthnFilter struct {
	cfg jwtAuthnConfig
	now func() time.Time
}

func newJWTAuthn(raw json.RawMessage, now func() time.Time) (*jwtAuthnFilter, error) {
	f := &jwtAuthnFilter{now: now}
	if err := decodeKnown(raw, &f.cfg, "@type"); err != nil {
		return nil, fmt.Errorf("jwt_authn: %w", err)
	}
	for name, p := range f.cfg.Providers {
		p.name = name
		if p.LocalJwks == nil {
			return nil, fmt.Errorf("jwt_authn provider %s: only inline local_jwks is emulated (istiod inlines the key set)", name)
		}
		var set jose.JSONWebKeySet
		if err := json.Unmarshal([]byte(p.LocalJwks.InlineString), &set); err != nil {
			return nil, fmt.Errorf("jwt_authn provider %s: local_jwks: %w", name, err)
		}
		p.keys = &set
	}
	for _, r := range f.cfg.Rules {
		if err := r.Match.compile(); err != nil {
			return nil, fmt.Errorf("jwt_authn rule: %w", err)
		}
		if err := f.checkRequirement(r.Requires); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func (f *jwtAuthnFilter) checkRequirement(r *jwtRequirement) error {
	switch {
	case r == nil:
	case r.ProviderName != "":
		if f.cfg.Providers[r.ProviderName] == nil {
			return fmt.Errorf("jwt_authn: requirement names provider %q, which is not configured", r.ProviderName)
		}
	case r.RequiresAny != nil, r.RequiresAll != nil:
		l := r.RequiresAny
		if l == nil {
			l = r.RequiresAll
		}
		for _, c := range l.Requirements {
			if err := f.checkRequirement(c); err != nil {
				return err
			}
		}
	case r.AllowMissing != nil, r.AllowMissingOrFailed != nil:
	default:
		return errors.New("jwt_authn: requirement not emulated")
	}
	return nil
}

func (f *jwtAuthnFilter) name() string { return "envoy.filters.http.jwt_authn" }

// jwt_verify_lib's statuses.
type jwtStatus int

const (
	jwtOK jwtStatus = iota
	jwtMissed
	jwtUnknownIssuer
	jwtBadFormat
	jwtHeaderBadBase64
	jwtHeaderBadJSON
	jwtHeaderBadAlg
	jwtPayloadBadBase64
	jwtPayloadBadJSON
	jwtPayloadBadClaim
	jwtSignatureBadBase64
	jwtExpired
	jwtNotYetValid
	jwtAudienceNotAllowed
	jwtVerificationFail
	jwksKidAlgMismatch
	jwksNoneValid
)

var jwtStatusText = map[jwtStatus]string{
	jwtMissed:             "Jwt is missing",
	jwtUnknownIssuer:      "Jwt issuer is not configured",
	jwtBadFormat:          "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
	jwtHeaderBadBase64:    "Jwt header is an invalid Base64url encoded",
	jwtHeaderBadJSON:      "Jwt header is an invalid JSON",
	jwtHeaderBadAlg:       "Jwt header [alg] field is required and must be a supported algorithm",
	jwtPayloadBadBase64:   "Jwt payload is an invalid Base64url encoded",
	jwtPayloadBadJSON:     "Jwt payload is an invalid JSON",
	jwtPayloadBadClaim:    "Jwt payload has a claim of the wrong type",
	jwtSignatureBadBase64: "Jwt signature is an invalid Base64url encoded",
	jwtExpired:            "Jwt is expired",
	jwtNotYetValid:        "Jwt not yet valid",
	jwtAudienceNotAllowed: "Audiences in Jwt are not allowed",
	jwtVerificationFail:   "Jwt verification fails",
	jwksKidAlgMismatch:    "Jwks doesn't have key to match kid or alg from Jwt",
	jwksNoneValid:         "Jwks doesn't have any valid public key",
}

// token is a parsed JWT.
type token struct {
	raw     string
	alg     string
	kid     string
	claims  map[string]any
	payload string // base64url, as sent
}

// parseJWT is jwt_verify_lib's Jwt::parseFromString.
func parseJWT(raw string) (*token, jwtStatus) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, jwtBadFormat
	}
	hb, err := b64url(parts[0])
	if err != nil {
		return nil, jwtHeaderBadBase64
	}
	var hdr map[string]any
	if json.Unmarshal(hb, &hdr) != nil {
		return nil, jwtHeaderBadJSON
	}
	alg, _ := hdr["alg"].(string)
	switch alg {
	case "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA", "HS256", "HS384", "HS512":
	default:
		return nil, jwtHeaderBadAlg
	}
	t := &token{raw: raw, alg: alg, payload: parts[1]}
	if k, ok := hdr["kid"]; ok {
		if t.kid, ok = k.(string); !ok {
			return nil, jwtHeaderBadJSON
		}
	}
	pb, err := b64url(parts[1])
	if err != nil {
		return nil, jwtPayloadBadBase64
	}
	if json.Unmarshal(pb, &t.claims) != nil || t.claims == nil {
		return nil, jwtPayloadBadJSON
	}
	for _, c := range []string{"iss", "sub", "jti"} {
		if v, ok := t.claims[c]; ok {
			if _, ok := v.(string); !ok {
				return nil, jwtPayloadBadClaim
			}
		}
	}
	for _, c := range []string{"iat", "nbf", "exp"} {
		if v, ok := t.claims[c]; ok {
			if f, ok := v.(float64); !ok || f < 0 {
				return nil, jwtPayloadBadClaim
			}
		}
	}
	if _, err := b64url(parts[2]); err != nil {
		return nil, jwtSignatureBadBase64
	}
	return t, jwtOK
}

// b64url decodes base64url with or without padding.
func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func (t *token) str(c string) string { s, _ := t.claims[c].(string); return s }

func (t *token) num(c string) (float64, bool) { f, ok := t.claims[c].(float64); return f, ok }

func (t *token) audiences() []string {
	switch a := t.claims["aud"].(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, x := range a {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// sanitizeAudience is jwt_verify_lib's CheckAudience: no scheme, no
// trailing slash.
func sanitizeAudience(a string) string {
	a = strings.TrimPrefix(strings.TrimPrefix(a, "https://"), "http://")
	return strings.TrimSuffix(a, "/")
}

// location is where a token was found, to remove it when not forwarded.
type location struct {
	header string // "" for a query parameter
	issuer []string
	tok    string
}

// extract is a provider's (or, for allow_missing, every provider's)
// Extractor: header locations in the order of their (name+prefix) key.
func extract(s *stream, providers []*jwtProvider) []location {
	type spec struct {
		name, prefix string
		issuers      []string
	}
	headers := map[string]*spec{}
	params := map[string][]string{}
	for _, p := range providers {
		locs := p.FromHeaders
		ps := p.FromParams
		if len(locs) == 0 && len(ps) == 0 {
			locs = []*jwtHeaderLoc{{Name: "Authorization", ValuePrefix: "Bearer "}}
			ps = []string{"access_token"}
		}
		for _, l := range locs {
			k := strings.ToLower(l.Name) + l.ValuePrefix
			if headers[k] == nil {
				headers[k] = &spec{name: strings.ToLower(l.Name), prefix: l.ValuePrefix}
			}
			headers[k].issuers = append(headers[k].issuers, p.Issuer)
		}
		for _, q := range ps {
			params[q] = append(params[q], p.Issuer)
		}
	}
	var keys []string
	for k := range headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []location
	for _, k := range keys {
		sp := headers[k]
		for _, v := range s.r.Header.Values(sp.name) {
			if sp.prefix != "" {
				i := strings.Index(v, sp.prefix)
				if i < 0 {
					continue
				}
				v = extractJWT(v, i+len(sp.prefix))
			}
			out = append(out, location{header: sp.name, issuer: sp.issuers, tok: v})
		}
	}
	if len(params) > 0 {
		_, q, _ := strings.Cut(s.path, "?")
		vals, _ := url.ParseQuery(q)
		var names []string
		for n := range params {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if v := vals[n]; len(v) > 0 {
				out = append(out, location{issuer: params[n], tok: v[0]})
			}
		}
	}
	return out
}

// extractJWT is the extractor's: from the first base64url character (or
// dot) after the prefix to the end; the value as is when there is none.
func extractJWT(v string, after int) string {
	const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
	i := strings.IndexAny(v[after:], chars)
	if i < 0 {
		return v
	}
	return v[after+i:]
}

func (l location) issuerAllowed(iss string) bool {
	for _, i := range l.issuer {
		if i == "" || i == iss {
			return true
		}
	}
	return false
}

// sanitize removes the headers a provider writes.
func (p *jwtProvider) sanitize(h http.Header) {
	if p.ForwardPayloadHeader != "" {
		h.Del(p.ForwardPayloadHeader)
	}
	for _, c := range p.ClaimToHeaders {
		h.Del(c.HeaderName)
	}
}

func (f *jwtAuthnFilter) decodeHeaders(s *stream) bool {
	if f.cfg.BypassCorsPreflight && s.r.Method == http.MethodOptions && s.r.Header.Get("Origin") != "" &&
		s.r.Header.Get("Access-Control-Request-Method") != "" {
		return true
	}
	var req *jwtRequirement
	matched := false
	for _, r := range f.cfg.Rules {
		if r.Match.matches(s) {
			req, matched = r.Requires, true
			break
		}
	}
	if !matched || req == nil {
		return true
	}
	st := f.verify(s, req)
	if st == jwtOK {
		return true
	}
	code := http.StatusUnauthorized
	if st == jwtAudienceNotAllowed {
		code = http.StatusForbidden
	}
	realm := "http://" + s.r.Host + s.path
	if len(realm) > 256 {
		realm = realm[:256]
	}
	v := `Bearer realm="` + realm + `"`
	if st != jwtMissed {
		v += `, error="invalid_token"`
	}
	s.localReply(code, jwtStatusText[st], http.Header{"Www-Authenticate": {v}})
	return false
}

// verify is the Verifier tree of one requirement.
func (f *jwtAuthnFilter) verify(s *stream, r *jwtRequirement) jwtStatus {
	switch {
	case r.ProviderName != "":
		p := f.cfg.Providers[r.ProviderName]
		p.sanitize(s.r.Header)
		return f.authenticate(s, extract(s, []*jwtProvider{p}), p, false, false)
	case r.RequiresAny != nil:
		allowMissing, allowFailed := false, false
		var children []*jwtRequirement
		for _, c := range r.RequiresAny.Requirements {
			switch {
			case c.AllowMissingOrFailed != nil:
				allowFailed = true
			case c.AllowMissing != nil:
				allowMissing = true
			default:
				children = append(children, c)
			}
		}
		if len(children) == 0 {
			return f.verify(s, &jwtRequirement{AllowMissing: boolStruct(allowMissing && !allowFailed), AllowMissingOrFailed: boolStruct(allowFailed)})
		}
		// AnyVerifierImpl: the first child that succeeds ends it; else
		// the statuses are aggregated.
		final := jwtMissed
		for _, c := range children {
			st := f.verify(s, c)
			if st == jwtOK {
				return jwtOK
			}
			if (st != jwtMissed && st != jwtUnknownIssuer) || final == jwtMissed {
				final = st
			}
		}
		if allowFailed || (allowMissing && final == jwtMissed) {
			return jwtOK
		}
		return final
	case r.RequiresAll != nil:
		// AllVerifierImpl: the first child that fails ends it.
		for _, c := range r.RequiresAll.Requirements {
			if st := f.verify(s, c); st != jwtOK {
				return st
			}
		}
		return jwtOK
	case r.AllowMissing != nil, r.AllowMissingOrFailed != nil:
		var all []*jwtProvider
		var names []string
		for n := range f.cfg.Providers {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			all = append(all, f.cfg.Providers[n])
			f.cfg.Providers[n].sanitize(s.r.Header)
		}
		return f.authenticate(s, extract(s, all), nil, r.AllowMissingOrFailed != nil, true)
	}
	return jwtOK
}

func boolStruct(b bool) *struct{} {
	if b {
		return &struct{}{}
	}
	return nil
}

// authenticate is the Authenticator: every token must verify (the last
// one found first); a provider-less one (allow_missing) picks the provider
// by the token's issuer.
func (f *jwtAuthnFilter) authenticate(s *stream, locs []location, p *jwtProvider, allowFailed, allowMissing bool) jwtStatus {
	if len(locs) == 0 {
		if allowFailed || allowMissing {
			return jwtOK
		}
		return jwtMissed
	}
	for i := len(locs) - 1; i >= 0; i-- {
		st := f.verifyOne(s, locs[i], p)
		if st != jwtOK && !allowFailed && !allowMissing {
			return st
		}
		if st != jwtOK && !allowFailed {
			return st
		}
	}
	return jwtOK
}

func (f *jwtAuthnFilter) verifyOne(s *stream, loc location, p *jwtProvider) jwtStatus {
	t, st := parseJWT(loc.tok)
	if st != jwtOK {
		return st
	}
	iss := t.str("iss")
	if !loc.issuerAllowed(iss) {
		return jwtUnknownIssuer
	}
	if p == nil {
		var names []string
		for n, q := range f.cfg.Providers {
			if q.Issuer == iss {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		if len(names) == 0 {
			return jwtUnknownIssuer
		}
		p = f.cfg.Providers[names[0]]
	}
	skew := int64(60)
	if n, err := p.ClockSkewSeconds.Int64(); err == nil && n > 0 {
		skew = n
	}
	now := f.now().Unix()
	if nbf, ok := t.num("nbf"); ok && float64(now+skew) < nbf {
		return jwtNotYetValid
	}
	if exp, ok := t.num("exp"); ok && exp != 0 && float64(now) > exp+float64(skew) {
		return jwtExpired
	}
	if len(p.Audiences) > 0 {
		ok := false
		for _, a := range t.audiences() {
			for _, want := range p.Audiences {
				ok = ok || sanitizeAudience(a) == sanitizeAudience(want)
			}
		}
		if !ok {
			return jwtAudienceNotAllowed
		}
	}
	if st := verifySignature(t, p.keys); st != jwtOK {
		return st
	}
	f.handleGood(s, t, loc, p)
	return jwtOK
}

// verifySignature is jwt_verify_lib's verifyJwtWithoutTimeChecking.
func verifySignature(t *token, set *jose.JSONWebKeySet) jwtStatus {
	if set == nil || len(set.Keys) == 0 {
		return jwksNoneValid
	}
	sig, err := jose.ParseSigned(t.raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(t.alg)})
	if err != nil {
		return jwtVerificationFail
	}
	tried := false
	for _, k := range set.Keys {
		if t.kid != "" && k.KeyID != "" && k.KeyID != t.kid {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != t.alg {
			continue
		}
		if !keyFitsAlg(k.Key, t.alg) {
			continue
		}
		tried = true
		if _, err := sig.Verify(k.Key); err == nil {
			return jwtOK
		}
	}
	if !tried {
		return jwksKidAlgMismatch
	}
	return jwtVerificationFail
}

func keyFitsAlg(k any, alg string) bool {
	switch k.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		return strings.HasPrefix(alg, "ES")
	case ed25519.PublicKey:
		return alg == "EdDSA"
	case []byte:
		return strings.HasPrefix(alg, "HS")
	}
	return false
}

// handleGood is handleGoodJwt.
func (f *jwtAuthnFilter) handleGood(s *stream, t *token, loc location, p *jwtProvider) {
	if p.ForwardPayloadHeader != "" {
		s.r.Header.Add(p.ForwardPayloadHeader, t.payload)
	}
	for _, c := range p.ClaimToHeaders {
		if v, ok := claimHeaderValue(t.claims, c.ClaimName); ok {
			s.r.Header.Add(c.HeaderName, v)
		}
	}
	if !p.Forward {
		if loc.header != "" {
			s.r.Header.Del(loc.header)
		} else {
			s.removeQueryParamToken = true
		}
	}
	if p.PayloadInMetadata != "" {
		payload := map[string]any{}
		for k, v := range t.claims {
			payload[k] = v
		}
		if p.NormalizePayloadInMetadata != nil {
			for _, c := range p.NormalizePayloadInMetadata.SpaceDelimitedClaims {
				if str, ok := t.claims[c].(string); ok {
					var l []any
					for _, e := range strings.Fields(str) {
						l = append(l, e)
					}
					payload[c] = l
				}
			}
		}
		s.setMetadata("envoy.filters.http.jwt_authn", map[string]any{p.PayloadInMetadata: payload})
	}
}

// claimHeaderValue is addJWTClaimToHeader's conversion; claim names nest
// with "." (StructUtils::GetValue).
func claimHeaderValue(claims map[string]any, name string) (string, bool) {
	var v any = claims
	for _, part := range strings.Split(name, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		if v, ok = m[part]; !ok {
			return "", false
		}
	}
	var out string
	switch x := v.(type) {
	case string:
		out = x
	case float64: // convertClaimDoubleToString: std::to_string for the rest
		if _, frac := math.Modf(x); x < 0 || x >= math.Pow(2, 64) || frac != 0 {
			out = strconv.FormatFloat(x, 'f', 6, 64)
		} else {
			out = strconv.FormatUint(uint64(x), 10)
		}
	case bool:
		out = strconv.FormatBool(x)
	case []any, map[string]any:
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if enc.Encode(x) != nil {
			return "", false
		}
		out = base64.StdEncoding.EncodeToString(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
	}
	return out, out != ""
}
