package tokencli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/oauth2"
)

// deviceLogin runs the device authorization grant (RFC 8628): the user
// opens the verification URL on any device, confirms the code and logs in,
// while this process polls the token endpoint.
func (c *command) deviceLogin(ctx context.Context, p *provider) (*oauth2.Token, error) {
	reqCtx, cancel := context.WithTimeout(ctx, c.o.RequestTimeout)
	da, err := p.conf.DeviceAuth(p.ctx(reqCtx))
	cancel()
	if err != nil {
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) {
			return nil, fmt.Errorf("cannot reach the provider's device authorization endpoint %s: %v. Check your network", p.conf.Endpoint.DeviceAuthURL, reason(err))
		}
		return nil, fmt.Errorf("the provider refused to start a device login (%s): is --client-id a client allowed to use the device grant? "+
			"Otherwise use --flow loopback", oauthError(err))
	}
	verify := da.VerificationURI
	if da.VerificationURIComplete != "" {
		verify = da.VerificationURIComplete
	}
	verify = rebase(verify, c.o.Issuer, c.providerBase())
	valid := ""
	if !da.Expiry.IsZero() {
		valid = fmt.Sprintf(" within %s", time.Until(da.Expiry).Round(time.Second))
	}
	c.say("To log in, open this page in a browser, on this or any other device, and confirm the code %s%s:\n\n    %s\n", da.UserCode, valid, verify)
	if !c.o.NoBrowser {
		if err := c.open(verify); err == nil {
			c.say("(A browser was opened on this page.)")
		}
	}
	c.say("Waiting for the login ...")
	tok, err := p.conf.DeviceAccessToken(p.ctx(ctx), da)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			switch re.ErrorCode {
			case "access_denied":
				return nil, errors.New("the login was denied at the provider: run the command again to retry")
			case "expired_token":
				return nil, errors.New("the code expired before the login finished: run the command again")
			}
			return nil, fmt.Errorf("the provider refused the device login (%s)", oauthError(err))
		}
		if ctx.Err() == nil && !da.Expiry.IsZero() && time.Now().After(da.Expiry) {
			return nil, errors.New("the code expired before the login finished: run the command again")
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("waiting for the device login at %s: %v", p.conf.Endpoint.TokenURL, reason(err))
	}
	return tok, nil
}

// providerBase is where the issuer is reached.
func (c *command) providerBase() string {
	if c.o.ProviderURL != "" {
		return c.o.ProviderURL
	}
	return c.o.Issuer
}
