package peer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// Binary builds cmd/oidc-authservice once per test process and returns its
// path.
func Binary(t testing.TB) string {
	t.Helper()
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "oidc-authservice-bin")
		if err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(dir, "oidc-authservice")
		cmd := exec.Command("go", "build", "-o", binaryPath, "./cmd/oidc-authservice")
		cmd.Dir = RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			binaryErr = fmt.Errorf("building cmd/oidc-authservice: %v: %s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// TokenCommand is one run of `oidc-authservice token` whose user the test
// plays: it reads the URLs the command prints for the user on stderr.
type TokenCommand struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	mu     sync.Mutex
	stderr bytes.Buffer
	urls   chan string
	done   chan error
}

// StartToken runs bin token args with exactly env (plus PATH), without a
// browser.
func StartToken(t testing.TB, bin string, env []string, args ...string) *TokenCommand {
	t.Helper()
	c := &TokenCommand{urls: make(chan string, 8), done: make(chan error, 1)}
	c.cmd = exec.Command(bin, append([]string{"token"}, args...)...)
	c.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	c.cmd.Stdout = &c.stdout
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Killing an ended process is a harmless error.
	t.Cleanup(func() { c.cmd.Process.Kill() })
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.stderr.WriteString(line + "\n")
			c.mu.Unlock()
			if u := strings.TrimSpace(line); strings.HasPrefix(line, "    ") && strings.HasPrefix(u, "http") {
				c.urls <- u
			}
		}
		io.Copy(io.Discard, stderr)
		c.done <- c.cmd.Wait()
		close(c.urls)
	}()
	return c
}

// URL waits for the next URL the command asks the user to open.
func (c *TokenCommand) URL(timeout time.Duration) (string, error) {
	select {
	case u, ok := <-c.urls:
		if !ok {
			return "", fmt.Errorf("the command ended without asking for a login; stderr:\n%s", c.Stderr())
		}
		return u, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("no URL after %s; stderr so far:\n%s", timeout, c.Stderr())
	}
}

// Stderr is what the command wrote on stderr so far.
func (c *TokenCommand) Stderr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

// Wait waits for the command and returns its stdout; err is the exit error.
func (c *TokenCommand) Wait(timeout time.Duration) (stdout string, err error) {
	select {
	case err = <-c.done:
	case <-time.After(timeout):
		c.cmd.Process.Kill()
		return "", errors.New("the token command did not finish in time; stderr:\n" + c.Stderr())
	}
	return c.stdout.String(), err
}
