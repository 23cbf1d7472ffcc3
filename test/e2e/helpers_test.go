//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"testing"
	"time"
)

// client is a cookie-keeping HTTP client that records the URLs it visits;
// rewrite, when set, may change the URL of each redirect it follows.
type client struct {
	*http.Client
	visited []*url.URL
	rewrite func(*url.URL)
}

func newClient() *client {
	jar, _ := cookiejar.New(nil)
	c := &client{}
	c.Client = &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: func(r *http.Request, via []*http.Request) error {
		if c.rewrite != nil {
			// Connect elsewhere, keep the Host header: another replica
			// behind the same hostname.
			r.Host = r.URL.Host
			c.rewrite(r.URL)
		}
		c.visited = append(c.visited, r.URL)
		if len(via) > 15 {
			return fmt.Errorf("too many redirects")
		}
		return nil
	}}
	return c
}

// noFollow returns the client's first answer without following redirects.
func (c *client) noFollow() *http.Client {
	cp := *c.Client
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cp
}

// cookie returns the value of a cookie the client holds for u.
func (c *client) cookie(u, name string) string {
	pu, _ := url.Parse(u)
	for _, ck := range c.Jar.Cookies(pu) {
		if ck.Name == name {
			return ck.Value
		}
	}
	return ""
}

type echo struct {
	Path, Query string
	Headers     map[string][]string
}

func readEcho(t *testing.T, resp *http.Response, err error) echo {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP %d at %s: %.400s", resp.StatusCode, resp.Request.URL, b)
	}
	var e echo
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("not the upstream's answer at %s: %.300s", resp.Request.URL, b)
	}
	return e
}

func header(e echo, name string) string {
	if v := e.Headers[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// status fetches u and returns the status (no redirects followed).
func status(t *testing.T, c *http.Client, u string, hdr map[string]string) (int, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}
