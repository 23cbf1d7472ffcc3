package tokencli

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
)

// terminalSafe replaces the control characters of s (but newlines and tabs)
// with '?': messages carry text the provider chose (user codes, URLs, error
// descriptions), which must not move the cursor or retitle the terminal.
func terminalSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || (r >= 0x20 && r != 0x7f && (r < 0x80 || r > 0x9f)) {
			return r
		}
		return '?'
	}, s)
}

// terminalWriter writes through terminalSafe.
type terminalWriter struct{ w io.Writer }

func (t terminalWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(t.w, terminalSafe(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// open hands a URL the provider chose to the browser, only if it is an
// absolute http(s) URL: a file: or javascript: URL is never opened.
func (c *command) open(u string) error {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" || u != terminalSafe(u) ||
		strings.ContainsAny(u, "\n\t") {
		return errors.New("not an http(s) URL")
	}
	return c.env.OpenBrowser(u)
}

// safeError is err with its message through terminalSafe.
func safeError(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s", terminalSafe(err.Error()))
}
