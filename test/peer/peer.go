// Package peer starts the real programs the integration and end-to-end
// tests talk to (Dex, the GitLab-shaped node-oidc-provider, ...), each on
// 127.0.0.1 with a free port, stopped by the test's cleanup.
//
// A peer that cannot be started fails the test when CI is set and skips it
// with an explicit message otherwise.
package peer

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Require stops the test when a peer could not be started: a failure in CI,
// a skip (with the reason) on a developer's machine.
func Require(t testing.TB, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("peer %s could not be started (CI requires it; .ci/run installs it): %v", what, err)
	}
	t.Skipf("SKIPPED: peer %s could not be started here: %v", what, err)
}

// RandomKey is a new session key, as `openssl rand -base64 32` prints one.
func RandomKey() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// RandomSecret is a new client secret: 24 random bytes in hex.
func RandomSecret() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// RepoRoot is the folder holding the main go.mod.
func RepoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "test", "dex", "go.mod")); err == nil {
			return d
		}
	}
	return dir
}

// WaitHTTP polls url until it answers 200 or the timeout passes.
func WaitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second}
	var last error
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s: %v", timeout, last)
}

// waitLine reads r until a line starts with prefix; an error when r ends
// first (the program exited) or the timeout passes.
func waitLine(r io.Reader, prefix string, timeout time.Duration) error {
	found := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), prefix) {
				found <- nil
				io.Copy(io.Discard, r)
				return
			}
		}
		found <- fmt.Errorf("the output ended without a %q line", prefix)
	}()
	select {
	case err := <-found:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("no %q line after %s", prefix, timeout)
	}
}

var formAction = regexp.MustCompile(`(?is)<form[^>]*method="post"[^>]*action="([^"]*)"|<form[^>]*action="([^"]*)"[^>]*method="post"`)

var hiddenInput = regexp.MustCompile(`(?i)<input[^>]*type="hidden"[^>]*name="([^"]*)"[^>]*value="([^"]*)"`)

// SubmitForm finds the first POST form in the page of resp, fills fields and
// posts it with c, following redirects as c's policy says.
func SubmitForm(c *http.Client, resp *http.Response, fields url.Values) (*http.Response, error) {
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	m := formAction.FindSubmatch(body)
	if m == nil {
		return nil, fmt.Errorf("no POST form at %s (HTTP %d): %.300s", resp.Request.URL, resp.StatusCode, body)
	}
	action := string(m[1])
	if action == "" {
		action = string(m[2])
	}
	action = strings.ReplaceAll(action, "&amp;", "&")
	// Hidden inputs of the form travel with the submitted fields.
	all := url.Values{}
	for _, h := range hiddenInput.FindAllSubmatch(body, -1) {
		all.Set(string(h[1]), string(h[2]))
	}
	for k, v := range fields {
		all[k] = v
	}
	fields = all
	target, err := resp.Request.URL.Parse(action)
	if err != nil {
		return nil, err
	}
	return c.PostForm(target.String(), fields)
}

// ErrNoForm reports a page without the expected form.
var ErrNoForm = errors.New("no login form")
