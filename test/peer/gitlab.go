package peer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// GitLabOptions configure the GitLab-shaped provider (test/gitlabop).
type GitLabOptions struct {
	Profile                string // "gitlab" (default) or "full" (RP-initiated and back-channel logout)
	ClientID, ClientSecret string
	RedirectURIs           []string
	PostLogoutURIs         []string
	BackchannelLogoutURI   string
	IDTokenTTL             time.Duration // default 120 s, GitLab's
	AccessTokenTTL         time.Duration
	Port                   int
	// Accounts replace the default accounts (alice, bob, mallory), by
	// login: sub, email, name, groups_direct (ID token), groups (userinfo).
	Accounts map[string]GitLabAccount
	// AccessTokenAudience makes access tokens RFC 9068 JWTs (typ at+jwt)
	// for this audience, with the user's email and groups_direct; empty:
	// opaque, as GitLab's.
	AccessTokenAudience string
}

// GitLabAccount is one account of the GitLab-shaped provider.
type GitLabAccount struct {
	Sub          string   `json:"sub"`
	Email        string   `json:"email"`
	Name         string   `json:"name"`
	GroupsDirect []string `json:"groups_direct"`
	Groups       []string `json:"groups"`
}

// CLIRedirect is a redirect URI every GitLab-shaped provider accepts for
// its client, for tests that play a command-line client (Tokens).
const CLIRedirect = "http://127.0.0.1:1/cli-callback"

// GitLab is a running GitLab-shaped provider.
type GitLab struct {
	Issuer string
	Port   int
	Opts   GitLabOptions
	proc   *process
	t      testing.TB
}

var (
	npmOnce sync.Once
	npmErr  error
)

func gitlabDir() string { return filepath.Join(RepoRoot(), "test", "gitlabop") }

// StartGitLab installs node-oidc-provider once (npm ci) and starts it.
func StartGitLab(t testing.TB, o GitLabOptions) *GitLab {
	t.Helper()
	npmOnce.Do(func() { npmErr = installGitLabProvider(gitlabDir()) })
	Require(t, "gitlab-shaped provider (node-oidc-provider)", npmErr)
	if o.ClientID == "" {
		o.ClientID, o.ClientSecret = "kubeflow", "kubeflow-secret"
	}
	g := &GitLab{Issuer: fmt.Sprintf("http://127.0.0.1:%d", o.Port), Port: o.Port, Opts: o, t: t}
	t.Cleanup(g.Stop)
	if o.Port != 0 {
		g.Start()
		return g
	}
	// On a port of its choosing: again on another if it was taken.
	OnFreePorts(t, "gitlab-shaped provider", 1, func(ports []int) error {
		g.Port, g.Opts.Port = ports[0], ports[0]
		g.Issuer = fmt.Sprintf("http://127.0.0.1:%d", g.Port)
		return g.start()
	})
	return g
}

// Start (re)starts the provider on its port. Its state (sessions, tokens)
// lives in memory and does not survive a restart.
func (g *GitLab) Start() {
	g.t.Helper()
	Require(g.t, "gitlab-shaped provider", g.start())
}

func (g *GitLab) start() error {
	o := g.Opts
	cmd := exec.Command("node", "server.mjs")
	cmd.Dir = gitlabDir()
	env := []string{
		"PORT=" + strconv.Itoa(g.Port), "ISSUER=" + g.Issuer, "PROFILE=" + o.Profile,
		"CLIENT_ID=" + o.ClientID, "CLIENT_SECRET=" + o.ClientSecret,
		"REDIRECT_URIS=" + strings.Join(append(append([]string{}, o.RedirectURIs...), CLIRedirect), ","),
		"ACCESS_TOKEN_AUDIENCE=" + o.AccessTokenAudience,
		"POST_LOGOUT_REDIRECT_URIS=" + strings.Join(o.PostLogoutURIs, ","),
		"BACKCHANNEL_LOGOUT_URI=" + o.BackchannelLogoutURI,
	}
	if o.IDTokenTTL > 0 {
		env = append(env, "ID_TOKEN_TTL="+strconv.Itoa(int(o.IDTokenTTL/time.Second)))
	}
	if o.AccessTokenTTL > 0 {
		env = append(env, "ACCESS_TOKEN_TTL="+strconv.Itoa(int(o.AccessTokenTTL/time.Second)))
	}
	if o.Accounts != nil {
		b, _ := json.Marshal(o.Accounts)
		file := filepath.Join(g.t.TempDir(), "accounts.json")
		if err := os.WriteFile(file, b, 0o644); err != nil {
			g.t.Fatal(err)
		}
		env = append(env, "ACCOUNTS_FILE="+file)
	}
	cmd.Env = append(os.Environ(), env...)
	stdout, _ := cmd.StdoutPipe()
	var also io.Writer
	if testing.Verbose() {
		also = os.Stderr
	}
	p, err := startProcess(g.t, cmd, "", also, syscall.SIGTERM)
	if err != nil {
		return err
	}
	g.proc = p
	if err := waitLine(stdout, "gitlabop ready", 30*time.Second); err != nil {
		select {
		case <-p.done:
			err = p.exited("gitlab-shaped provider")
		case <-time.After(time.Second):
		}
		g.Stop()
		return err
	}
	return nil
}

// Stop ends the provider; safe to call twice.
func (g *GitLab) Stop() {
	if g.proc != nil {
		g.proc.stop()
		g.proc = nil
	}
}

// Revoke revokes every grant and token of the subject, as a GitLab user
// revoking the application does.
func (g *GitLab) Revoke(sub string) error {
	return g.admin("/__test/revoke?sub=" + url.QueryEscape(sub))
}

// Backchannel makes the provider send a back-channel logout token for the
// subject and provider session id.
func (g *GitLab) Backchannel(sub, sid string) error {
	return g.admin("/__test/backchannel?sub=" + url.QueryEscape(sub) + "&sid=" + url.QueryEscape(sid))
}

// SetGroupsDirect sets the direct groups of the account login, as an
// administrator adding the user to groups: the ID tokens issued from then
// on, refreshed ones too, carry them (groups_direct).
func (g *GitLab) SetGroupsDirect(login string, groups []string) error {
	b, _ := json.Marshal(groups)
	return g.adminWith("/__test/groups?login="+url.QueryEscape(login), string(b))
}

func (g *GitLab) admin(path string) error { return g.adminWith(path, "") }

func (g *GitLab) adminWith(path, body string) error {
	resp, err := http.Post(g.Issuer+path, "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: HTTP %d", path, resp.StatusCode)
	}
	return nil
}

// Counts are how many requests each of the provider's endpoints got
// (userinfo, token, revocation) since it started.
func (g *GitLab) Counts() (map[string]int, error) {
	resp, err := http.Get(g.Issuer + "/__test/counts")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var c map[string]int
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return nil, err
	}
	return c, nil
}

// Userinfo is how many userinfo requests the provider got.
func (g *GitLab) Userinfo(t testing.TB) int {
	t.Helper()
	c, err := g.Counts()
	if err != nil {
		t.Fatal(err)
	}
	return c["userinfo"]
}

// Tokens plays a command-line client of the provider (the client of Opts,
// CLIRedirect): a code flow with PKCE for login, as a user holding a GitLab
// OAuth token has one.
func (g *GitLab) Tokens(t testing.TB, login string) *oauth2.Token {
	t.Helper()
	ctx := context.Background()
	op, err := oidc.NewProvider(ctx, g.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	conf := oauth2.Config{ClientID: g.Opts.ClientID, ClientSecret: g.Opts.ClientSecret, Endpoint: op.Endpoint(), RedirectURL: CLIRedirect,
		Scopes: []string{"openid", "profile", "email"}}
	jar, _ := cookiejar.New(nil)
	var code string
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if r.URL.Host == "127.0.0.1:1" {
			code = r.URL.Query().Get("code")
			return http.ErrUseLastResponse
		}
		return nil
	}}
	verifier := oauth2.GenerateVerifier()
	resp, err := GitLabLogin(c, conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier), oidc.Nonce("n")), login)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code == "" {
		t.Fatalf("no code; the login ended at %s (HTTP %d)", resp.Request.URL, resp.StatusCode)
	}
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// GitLabLogin follows authURL to the provider's login form and submits it
// with login (any password). It returns c's final response.
func GitLabLogin(c *http.Client, authURL, login string) (*http.Response, error) {
	resp, err := c.Get(authURL)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(resp.Request.URL.Path, "/interaction/") {
		return resp, fmt.Errorf("%w: ended at %s (HTTP %d)", ErrNoForm, resp.Request.URL, resp.StatusCode)
	}
	return SubmitForm(c, resp, url.Values{"login": {login}, "password": {"any"}})
}

// installGitLabProvider runs npm ci in dir (test/gitlabop) unless a completed
// install of the same package-lock.json is there. go test runs the packages
// that start this provider as separate processes at the same time, and npm ci
// begins by deleting node_modules: an exclusive lock on a file beside it
// serialises the installs across processes, and a stamp written only after a
// successful npm ci (holding the lock file's hash) tells a finished install
// from one still extracting or one of another lock file.
func installGitLabProvider(dir string) error {
	if _, err := exec.LookPath("node"); err != nil {
		return fmt.Errorf("node not found (apt-get install nodejs npm): %v", err)
	}
	lockfile, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(lockfile)
	want := hex.EncodeToString(sum[:])
	stamp := filepath.Join(dir, "node_modules", ".oidc-authservice-installed")
	lock, err := os.OpenFile(filepath.Join(dir, ".npm-install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("locking test/gitlabop for npm ci: %v", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == want {
		return nil
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in test/gitlabop: %v: %s", err, out)
	}
	return os.WriteFile(stamp, []byte(want+"\n"), 0o644)
}
