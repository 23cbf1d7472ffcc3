package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/oidc-authservice/oidc-authservice/internal/jwks"
)

// Refresh redeems a refresh token. The new tokens replace the session's; an
// ID token in the answer is verified (no nonce: refresh answers carry none)
// and must name the same subject.
func (p *Provider) Refresh(ctx context.Context, refreshToken, subject string) (_ *oauth2.Token, err error) {
	ctx, span := p.span(ctx, "refresh")
	defer func() { endSpan(span, err) }()
	d := p.d.Load()
	if d == nil {
		return nil, ErrNotReady
	}
	ctx = p.ctx(ctx)
	tok, err := d.oauth.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken, Expiry: time.Unix(1, 0)}).Token()
	if err != nil {
		return nil, classify("refresh", err)
	}
	if raw, _ := tok.Extra("id_token").(string); raw != "" {
		idt, err := d.verifier.Verify(jwks.MayWait(ctx), raw)
		if err != nil {
			return nil, fmt.Errorf("%w: refreshed ID token: %v", ErrInvalidToken, err)
		}
		if idt.Subject != subject {
			return nil, fmt.Errorf("%w: refreshed ID token names another subject", ErrInvalidToken)
		}
	}
	return tok, nil
}

// Validate asks userinfo whether an access token is still good: nil when it
// is, ErrRejected when the provider refuses it (revoked, expired),
// ErrUnavailable when the provider cannot say.
func (p *Provider) Validate(ctx context.Context, accessToken string) (err error) {
	ctx, span := p.span(ctx, "strict validation")
	defer func() { endSpan(span, err) }()
	d := p.d.Load()
	if d == nil {
		return ErrNotReady
	}
	if !d.userinfo {
		return fmt.Errorf("%w: provider has no userinfo endpoint", ErrUnavailable)
	}
	_, err = d.oidc.UserInfo(p.ctx(ctx), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: accessToken, TokenType: "Bearer"}))
	if err != nil {
		return classify("userinfo", err)
	}
	return nil
}

// ErrNoUserinfo: the provider has no userinfo endpoint.
var ErrNoUserinfo = errors.New("provider has no userinfo endpoint")

// UserInfo asks the userinfo endpoint who an access token belongs to and
// returns the answer's claims: ErrRejected when the provider refuses the
// token (401, 403), ErrUnavailable when it cannot say, ErrNoUserinfo when it
// has no such endpoint, ErrNotReady before discovery. Its span is "access
// token lookup" (the userinfo call is its child).
func (p *Provider) UserInfo(ctx context.Context, accessToken string) (_ map[string]any, err error) {
	ctx, span := p.span(ctx, "access token lookup")
	defer func() { endSpan(span, err) }()
	d := p.d.Load()
	switch {
	case d == nil:
		return nil, ErrNotReady
	case !d.userinfo:
		return nil, ErrNoUserinfo
	}
	ui, err := d.oidc.UserInfo(p.ctx(ctx), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: accessToken, TokenType: "Bearer"}))
	if err != nil {
		return nil, classify("userinfo", err)
	}
	claims := map[string]any{}
	if err := ui.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: userinfo claims: %v", ErrUnavailable, err)
	}
	if s, _ := claims["sub"].(string); s == "" {
		return nil, fmt.Errorf("%w: userinfo answer without sub", ErrUnavailable)
	}
	return claims, nil
}

// HasUserinfo reports whether the provider advertises a userinfo endpoint.
func (p *Provider) HasUserinfo() bool {
	d := p.d.Load()
	return d != nil && d.userinfo
}

// Revoke revokes a token at the provider's RFC 7009 endpoint. It does
// nothing when the provider has none.
func (p *Provider) Revoke(ctx context.Context, token, hint string) (err error) {
	ctx, span := p.span(ctx, "token revocation")
	defer func() { endSpan(span, err) }()
	d := p.d.Load()
	if d == nil || d.revocation == "" || token == "" {
		return nil
	}
	form := url.Values{"token": {token}, "token_type_hint": {hint}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.revocation, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(p.opts.ClientID), url.QueryEscape(p.opts.ClientSecret))
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: revocation: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusOK:
		return nil
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusServiceUnavailable:
		return fmt.Errorf("%w: revocation: HTTP %d", ErrUnavailable, resp.StatusCode)
	default:
		return fmt.Errorf("%w: revocation: HTTP %d", ErrRejected, resp.StatusCode)
	}
}

// EndSessionURL is the RP-initiated logout URL, or "" when the provider has
// no end_session_endpoint.
func (p *Provider) EndSessionURL(idTokenHint, postLogoutRedirect string) string {
	d := p.d.Load()
	if d == nil || d.endSession == "" {
		return ""
	}
	q := url.Values{"client_id": {p.opts.ClientID}}
	if idTokenHint != "" {
		q.Set("id_token_hint", idTokenHint)
	}
	if postLogoutRedirect != "" {
		q.Set("post_logout_redirect_uri", postLogoutRedirect)
	}
	return d.endSession + sepFor(d.endSession) + q.Encode()
}

func sepFor(u string) string {
	if strings.Contains(u, "?") {
		return "&"
	}
	return "?"
}

// LogoutToken is a verified OpenID Connect back-channel logout token.
type LogoutToken struct {
	Subject string
	SID     string
	JTI     string
	Expiry  time.Time
}

// BackchannelEvent is the events member that marks a logout token.
const BackchannelEvent = "http://schemas.openid.net/event/backchannel-logout"

// ErrLogoutToken wraps every reason a logout token is refused.
var ErrLogoutToken = errors.New("invalid logout token")

// VerifyLogoutToken checks a back-channel logout token as OpenID Connect
// Back-Channel Logout 1.0 §2.6 says: signature with the provider's keys,
// iss, aud, iat not too old nor in the future, exp when present, the
// backchannel-logout event, sub and/or sid, jti, and no nonce.
func (p *Provider) VerifyLogoutToken(ctx context.Context, raw string, maxAge time.Duration) (*LogoutToken, error) {
	d := p.d.Load()
	if d == nil {
		return nil, ErrNotReady
	}
	// Anonymous input: the shared key set answers at once for an unknown kid.
	idt, err := p.verifier(oidc.Config{ClientID: p.opts.ClientID, SkipExpiryCheck: true}).Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLogoutToken, err)
	}
	var c struct {
		SID    string                     `json:"sid"`
		JTI    string                     `json:"jti"`
		Events map[string]json.RawMessage `json:"events"`
		Nonce  *string                    `json:"nonce"`
		IAT    *int64                     `json:"iat"`
	}
	if err := idt.Claims(&c); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrLogoutToken, err)
	}
	now := p.opts.Now()
	switch {
	case c.Nonce != nil:
		return nil, fmt.Errorf("%w: has a nonce", ErrLogoutToken)
	case c.Events == nil || !isObject(c.Events[BackchannelEvent]):
		return nil, fmt.Errorf("%w: no backchannel-logout event", ErrLogoutToken)
	case idt.Subject == "" && c.SID == "":
		return nil, fmt.Errorf("%w: neither sub nor sid", ErrLogoutToken)
	case c.JTI == "":
		return nil, fmt.Errorf("%w: no jti", ErrLogoutToken)
	case c.IAT == nil:
		return nil, fmt.Errorf("%w: no iat", ErrLogoutToken)
	case now.Sub(time.Unix(*c.IAT, 0)) > maxAge || time.Unix(*c.IAT, 0).Sub(now) > time.Minute:
		return nil, fmt.Errorf("%w: iat outside the accepted window", ErrLogoutToken)
	case !idt.Expiry.IsZero() && now.After(idt.Expiry.Add(time.Minute)):
		return nil, fmt.Errorf("%w: expired", ErrLogoutToken)
	}
	return &LogoutToken{Subject: idt.Subject, SID: c.SID, JTI: c.JTI, Expiry: idt.Expiry}, nil
}

func isObject(b []byte) bool {
	s := strings.TrimSpace(string(b))
	return strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}")
}
