package authn

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// Provider tells the login provider's tokens apart (ACCESS_TOKEN_AUTHN=jwt,
// ACCEPT_PROVIDER_ID_TOKENS). The provider signs its ID tokens and its JWT
// access tokens with the same keys, so a signature says nothing about what
// a token is for. What does:
//
//   - the JOSE header typ at+jwt (RFC 9068): an access token, never taken
//     for an ID token;
//   - otherwise the audience: a token for a client of this deployment
//     (IDAudiences: PROVIDER_ID_TOKEN_AUDIENCES, default CLIENT_ID) is an
//     ID token, judged as one (accepted only with ACCEPT_PROVIDER_ID_TOKENS,
//     or by the AUTHENTICATION_CONFIG_FILE entry of the provider's issuer),
//     never as an access token; a token for an audience of
//     AccessAudiences is an access token.
//
// Dex's access tokens carry the ID token's claims, its type and its
// audience (the client): they cannot be told apart, and are ID tokens here.
type Provider struct {
	Issuer      string
	IDAudiences []string
	// Access is the mapping of access tokens; nil: access tokens are not
	// accepted (ACCESS_TOKEN_AUTHN is off or opaque).
	Access *JWTAuthenticator
	// Stats counts access-token verifications by result ("ok",
	// "rejected"): metrics.AccessTokenStats; nil counts nothing.
	Stats Stats
}

// Stats records results (metrics.AccessTokenStats).
type Stats interface{ Result(result string) }

// providerIssuer is Provider compiled, on the provider's issuer.
type providerIssuer struct {
	idAudiences []string
	access      *compiled // nil: no access tokens
	stats       Stats
}

func (p *providerIssuer) count(result string) {
	if p.stats != nil {
		p.stats.Result(result)
	}
}

// AccessTokenEntry is the mapping of the provider's JWT access tokens:
// audience one of audiences, user id and groups from USERID_CLAIM and
// GROUPS_CLAIM, as the predecessor read them.
func AccessTokenEntry(issuerURL string, audiences []string, userClaim, groupsClaim string) JWTAuthenticator {
	return ProviderEntry(issuerURL, audiences, userClaim, groupsClaim)
}

// accessTyped reports whether a compact JWS's header says typ at+jwt (or
// application/at+jwt, RFC 9068 section 2.1; media types compare without case).
func accessTyped(raw string) bool {
	head, _, ok := strings.Cut(raw, ".")
	if !ok || len(head) > 4096 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return false
	}
	var h struct {
		Typ string `json:"typ"`
	}
	if json.Unmarshal(b, &h) != nil {
		return false
	}
	t := strings.ToLower(h.Typ)
	return t == "at+jwt" || t == "application/at+jwt"
}

// profile chooses how a verified token of the provider's issuer is judged:
// as an ID token (is.c, which may be nil when ID tokens are not accepted)
// or as an access token. access reports the latter.
func (p *providerIssuer) profile(raw string, aud []string, id *compiled) (c *compiled, access bool, err error) {
	switch typed := accessTyped(raw); {
	case typed && p.access == nil:
		return nil, false, fmt.Errorf("%w: a token typed at+jwt is an access token, not an ID token (ACCESS_TOKEN_AUTHN=jwt accepts access tokens)", ErrInvalidToken)
	case typed:
		return p.access, true, nil
	case audienceMatches(aud, p.idAudiences) || (id != nil && audienceMatches(aud, id.Issuer.Audiences)) || p.access == nil:
		if id == nil {
			return nil, false, fmt.Errorf("%w: an ID token of the provider (audience %q), and ID tokens are not accepted (ACCEPT_PROVIDER_ID_TOKENS)", ErrInvalidToken, aud)
		}
		return id, false, nil
	}
	return p.access, true, nil
}
