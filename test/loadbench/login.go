package main

import (
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// login signs in once through a system's real login flow, as a browser
// would: start at startURL on the system (a 302 to Dex, whose URL may be
// relative to the gateway, here Dex itself), submit Dex's form, follow Dex
// back to the system's callback, and return the Cookie header the browser
// then sends: the cookies whose names start with session.
func login(system, startURL, dexBase, user, password, session string) (string, error) {
	jar, _ := cookiejar.New(nil)
	sys, _ := url.Parse(startURL)
	dex, _ := url.Parse(dexBase)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(u *url.URL) (*http.Response, string, error) {
		req, _ := http.NewRequest(http.MethodGet, u.String(), nil)
		req.Header.Set("Accept", "text/html")
		resp, err := c.Do(req)
		if err != nil {
			return nil, "", err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b), nil
	}
	// A relative Location is relative to the gateway host, which serves
	// Dex under /dex and the system everywhere else.
	resolve := func(from *url.URL, loc string) *url.URL {
		u, _ := from.Parse(loc)
		if !strings.HasPrefix(loc, "/") {
			return u
		}
		base := sys
		if strings.HasPrefix(u.Path, "/dex") {
			base = dex
		}
		u.Scheme, u.Host = base.Scheme, base.Host
		return u
	}
	u := sys
	var body string
	for hops := 0; ; hops++ {
		if hops > 20 {
			return "", fmt.Errorf("%s: too many redirects", system)
		}
		resp, b, err := get(u)
		if err != nil {
			return "", fmt.Errorf("%s: %w", system, err)
		}
		if resp.StatusCode/100 == 3 {
			u = resolve(u, resp.Header.Get("Location"))
			continue
		}
		if resp.StatusCode == http.StatusOK && strings.Contains(b, `name="password"`) {
			body = b
			break
		}
		return "", fmt.Errorf("%s: no Dex login form at %s (HTTP %d)", system, u, resp.StatusCode)
	}
	action := regexp.MustCompile(`<form[^>]*action="([^"]*)"`).FindStringSubmatch(body)
	if action == nil {
		return "", fmt.Errorf("%s: Dex's form has no action", system)
	}
	post := resolve(u, html.UnescapeString(action[1]))
	resp, err := c.PostForm(post.String(), url.Values{"login": {user}, "password": {password}})
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	u = post
	for hops := 0; resp.StatusCode/100 == 3; hops++ {
		if hops > 20 {
			return "", fmt.Errorf("%s: too many redirects after the form", system)
		}
		u = resolve(u, resp.Header.Get("Location"))
		if u.Host == sys.Host && !strings.Contains(u.Path, "callback") {
			break // back at the system, past its callback: signed in
		}
		if resp, _, err = get(u); err != nil {
			return "", err
		}
	}
	var parts []string
	for _, ck := range jar.Cookies(sys) {
		if strings.HasPrefix(ck.Name, session) && !strings.HasSuffix(ck.Name, "_csrf") && ck.Value != "" {
			parts = append(parts, ck.Name+"="+ck.Value)
		}
	}
	if len(parts) == 0 {
		return "", errors.New(system + ": signed in, but no session cookie was set")
	}
	return strings.Join(parts, "; "), nil
}
