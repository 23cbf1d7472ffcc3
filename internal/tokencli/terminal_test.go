package tokencli

import (
	"bytes"
	"errors"
	"testing"
)

// Text the provider chose never reaches the terminal as control
// characters, and only http(s) URLs are handed to the browser.
func TestProviderTextIsTerminalSafe(t *testing.T) {
	var buf bytes.Buffer
	c := &command{env: Env{Stderr: terminalWriter{&buf}}}
	c.say("code %s", "AB\x1b]0;pwned\x07CD\r\u009b2J")
	if got := buf.String(); got != "code AB?]0;pwned?CD??2J\n" {
		t.Fatalf("say wrote %q", got)
	}
	if got := safeError(errors.New("refused: \x1b[2Jx")).Error(); got != "refused: ?[2Jx" {
		t.Fatalf("safeError: %q", got)
	}
	var opened []string
	c.env.OpenBrowser = func(u string) error { opened = append(opened, u); return nil }
	for _, u := range []string{"file:///etc/passwd", "javascript:alert(1)", "https://", "https://h/\x1b[2J", "//h/p", "ftp://h/"} {
		if err := c.open(u); err == nil {
			t.Errorf("open(%q) accepted", u)
		}
	}
	if err := c.open("https://dex.example.com/dex/device?user_code=ABCD-EFGH"); err != nil {
		t.Fatal(err)
	}
	if len(opened) != 1 {
		t.Fatalf("opened %q, want only the https URL", opened)
	}
}
