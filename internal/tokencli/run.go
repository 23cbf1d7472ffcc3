package tokencli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"golang.org/x/oauth2"
)

// command is one run of the token command.
type command struct {
	o   Options
	env Env
}

// say writes a message for the user on stderr. It never carries a token.
func (c *command) say(format string, a ...any) {
	fmt.Fprintf(c.env.Stderr, format+"\n", a...)
}

func (c *command) run(ctx context.Context) error {
	c.warnPlainHTTP()
	ca, err := openCache(c.o)
	if err != nil {
		return err
	}
	// The lock is held through a login, so a second run waits for the
	// first one's login instead of starting its own: bound by --timeout.
	lockCtx, cancel := context.WithTimeout(ctx, c.o.Timeout+2*c.o.RequestTimeout)
	defer cancel()
	unlock, err := lock(lockCtx, ca.path+".lock", func() {
		c.say("Waiting for another oidc-authservice token run with the same cache to finish ...")
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("another oidc-authservice token run held the cache lock %s.lock for longer than --timeout: end it and try again", ca.path)
		}
		return fmt.Errorf("cannot lock the token cache: %v", err)
	}
	defer unlock()

	var cached *entry
	if !c.o.Force {
		if cached, err = ca.load(); err != nil {
			return err
		}
		if cached != nil && (cached.Issuer != c.o.Issuer || cached.ClientID != c.o.ClientID) {
			cached = nil
		}
		if cached != nil && cached.IDToken != "" && c.env.Now().Add(c.o.MinValidity).Before(cached.Expiry) {
			return c.print(cached)
		}
	}

	p, err := c.discover(ctx)
	if err != nil {
		return err
	}
	var e *entry
	if cached != nil && cached.RefreshToken != "" {
		if e, err = c.refresh(ctx, p, cached); err != nil {
			return err
		}
	}
	if e == nil {
		if e, err = c.login(ctx, p); err != nil {
			return err
		}
	}
	if err := ca.save(e); err != nil {
		c.say("Warning: %v; the token is not cached, the next run logs in again.", err)
	}
	return c.print(e)
}

// refresh renews the cached tokens. A refresh the provider refuses
// (revoked, expired, already used) returns no entry and no error, so that
// the caller logs in again; a provider that cannot be reached is an error.
func (c *command) refresh(ctx context.Context, p *provider, cached *entry) (*entry, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*c.o.RequestTimeout)
	defer cancel()
	// An expiry in the past makes the token source refresh at once.
	src := p.conf.TokenSource(p.ctx(ctx), &oauth2.Token{RefreshToken: cached.RefreshToken, Expiry: time.Unix(1, 0)})
	tok, err := src.Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			c.say("The provider refused to renew the cached login (%s): logging in again.", oauthError(err))
			return nil, nil
		}
		return nil, fmt.Errorf("cannot renew the cached login at %s: %v. Check your network, or run with --force to log in again",
			p.conf.Endpoint.TokenURL, reason(err))
	}
	e, err := c.entryOf(ctx, p, tok, "")
	if err != nil {
		c.say("The renewed token was not usable (%v): logging in again.", err)
		return nil, nil
	}
	if cached.Subject != "" && e.Subject != cached.Subject {
		c.say("The renewed token names another user than the cached login: logging in again.")
		return nil, nil
	}
	return e, nil
}

// login runs the device grant or the loopback flow, as --flow and the
// provider allow.
func (c *command) login(ctx context.Context, p *provider) (*entry, error) {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	var (
		tok   *oauth2.Token
		nonce string
		err   error
	)
	switch {
	case c.o.Flow == "device" && !p.device:
		return nil, errors.New("the provider offers no device authorization grant (no device_authorization_endpoint in its discovery): use --flow loopback")
	case c.o.Flow == "device" || (c.o.Flow == "auto" && p.device && c.o.ProviderURL == ""):
		// With --provider-url the issuer's own host is unreachable from
		// here, and so, most likely, from the user's browser, which the
		// device grant's pages send there (Dex redirects to <issuer>/auth).
		tok, err = c.deviceLogin(ctx, p)
	default:
		tok, nonce, err = c.loopbackLogin(ctx, p)
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("the login did not finish within --timeout %s: run the command again", c.o.Timeout)
		}
		if errors.Is(err, context.Canceled) {
			return nil, errors.New("the login was cancelled")
		}
		return nil, err
	}
	e, err := c.entryOf(ctx, p, tok, nonce)
	if err != nil {
		return nil, err
	}
	c.say("Logged in; token valid until %s.", e.Expiry.Local().Format(time.RFC1123))
	return e, nil
}

// entryOf verifies the ID token of a token response and makes the cache
// entry.
func (c *command) entryOf(ctx context.Context, p *provider, tok *oauth2.Token, nonce string) (*entry, error) {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, errors.New("the provider's answer holds no ID token: is openid among --scopes?")
	}
	idt, err := p.verify(ctx, raw, nonce)
	if err != nil {
		return nil, err
	}
	return &entry{Issuer: c.o.Issuer, ClientID: c.o.ClientID, IDToken: raw, RefreshToken: tok.RefreshToken,
		Expiry: idt.Expiry, Subject: idt.Subject}, nil
}

// warnPlainHTTP warns when the provider is reached without TLS anywhere but on
// this machine: the tokens would cross the network in clear.
func (c *command) warnPlainHTTP() {
	s := c.o.Issuer
	if c.o.ProviderURL != "" {
		s = c.o.ProviderURL
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" {
		return
	}
	if h := u.Hostname(); h != "127.0.0.1" && h != "localhost" && h != "::1" {
		c.say("Warning: %s is plain http: tokens cross the network unencrypted.", s)
	}
}
