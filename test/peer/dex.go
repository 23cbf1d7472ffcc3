package peer

import (
	"fmt"
	"io"
	"net/http"
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
)

// DexOptions configure a Dex runner (test/dex).
type DexOptions struct {
	ClientID, ClientSecret string
	RedirectURIs           []string // default: the relative /authservice/oidc/callback, as Kubeflow's Dex
	PostLogoutURIs         []string
	BackchannelLogoutURI   string
	User, Password, Groups string // default user@example.com / 12341234
	// GroupList are more groups of User, any number (passed in a file).
	GroupList  []string
	ExtraUsers []string // email:password[:group;group]
	IDTokenTTL time.Duration
	Port       int // 0: a free port
	// PublicClientID registers a public client (no secret) for command-line
	// tools, e.g. kubeflow-cli; its redirect URIs default to the device
	// grant's <issuer path>/device/callback.
	PublicClientID     string
	PublicRedirectURIs []string
	// TrustedPeers may ask for tokens whose audience is ClientID.
	TrustedPeers []string
	// Issuer overrides the issuer URL (default http://127.0.0.1:<port>/dex),
	// e.g. Kubeflow's in-cluster http://dex.auth.svc.cluster.local:5556/dex,
	// which names the tokens while Dex is reached at URL.
	Issuer string
	// SigningKey is a PEM file of a fixed signing key (test/keys/dex.pem:
	// the key istiod inlined into the generated gateway configuration).
	SigningKey string
	// Replicas Dex servers share one storage and take turns (Kubeflow
	// master runs two).
	Replicas int
}

// Dex is a running Dex.
type Dex struct {
	Issuer string
	URL    string // where it is reached: http://127.0.0.1:<port>/dex
	Port   int
	Opts   DexOptions
	proc   *process
	t      testing.TB
}

var (
	dexBuild    sync.Once
	dexBinary   string
	dexBuildErr error
)

// DexBinary builds test/dex once per test process (or uses $DEX_RUNNER).
func DexBinary() (string, error) {
	dexBuild.Do(func() {
		if p := os.Getenv("DEX_RUNNER"); p != "" {
			if _, err := os.Stat(p); err == nil {
				dexBinary = p
				return
			}
		}
		root := RepoRoot()
		dexBinary = filepath.Join(root, "bin", "dex-runner")
		cmd := exec.Command("go", "build", "-o", dexBinary, ".")
		cmd.Dir = filepath.Join(root, "test", "dex")
		if out, err := cmd.CombinedOutput(); err != nil {
			dexBuildErr = fmt.Errorf("building test/dex: %v: %s", err, out)
		}
	})
	return dexBinary, dexBuildErr
}

// NewDex prepares a Dex (binary built, port chosen) without starting it.
func NewDex(t testing.TB, o DexOptions) *Dex {
	t.Helper()
	if o.ClientID == "" {
		o.ClientID = "kubeflow-oidc-authservice"
	}
	if o.ClientSecret == "" {
		// Random: Kubeflow's published secret draws a warning (tests that
		// need Kubeflow's exact setup pass it).
		o.ClientSecret = RandomSecret()
	}
	if o.User == "" {
		o.User, o.Password = "user@example.com", "12341234"
	}
	if o.Port == 0 {
		o.Port = FreePort(t)
	}
	_, err := DexBinary()
	Require(t, "dex", err)
	url := fmt.Sprintf("http://127.0.0.1:%d/dex", o.Port)
	d := &Dex{Issuer: url, URL: url, Port: o.Port, Opts: o, t: t}
	if o.Issuer != "" {
		d.Issuer = o.Issuer
	}
	t.Cleanup(d.Stop)
	return d
}

// StartDex starts a Dex and waits for its discovery document. On a port
// it chose (o.Port 0) it starts Dex again on another when that one was
// taken meanwhile.
func StartDex(t testing.TB, o DexOptions) *Dex {
	t.Helper()
	d := NewDex(t, o)
	if o.Port != 0 {
		d.Start()
		return d
	}
	OnFreePorts(t, "dex", 1, func(ports []int) error {
		d.Port, d.Opts.Port = ports[0], ports[0]
		d.URL = fmt.Sprintf("http://127.0.0.1:%d/dex", d.Port)
		if o.Issuer == "" {
			d.Issuer = d.URL
		}
		return d.start()
	})
	return d
}

// Start runs the prepared Dex (again: on the same port).
func (d *Dex) Start() {
	d.t.Helper()
	Require(d.t, "dex", d.start())
}

func (d *Dex) start() error {
	o := d.Opts
	args := []string{"-addr", "127.0.0.1:" + strconv.Itoa(d.Port), "-issuer", d.Issuer,
		"-client-id", o.ClientID, "-client-secret", o.ClientSecret, "-user", o.User, "-password", o.Password}
	if o.Groups != "" {
		args = append(args, "-groups", o.Groups)
	}
	if len(o.GroupList) > 0 {
		file := filepath.Join(d.t.TempDir(), "groups.txt")
		if err := os.WriteFile(file, []byte(strings.Join(o.GroupList, "\n")), 0o644); err != nil {
			d.t.Fatal(err)
		}
		args = append(args, "-groups-file", file)
	}
	for _, u := range o.RedirectURIs {
		args = append(args, "-redirect-uri", u)
	}
	for _, u := range o.PostLogoutURIs {
		args = append(args, "-post-logout-redirect-uri", u)
	}
	if o.BackchannelLogoutURI != "" {
		args = append(args, "-backchannel-logout-uri", o.BackchannelLogoutURI)
	}
	for _, u := range o.ExtraUsers {
		args = append(args, "-extra-user", u)
	}
	if o.IDTokenTTL > 0 {
		args = append(args, "-id-token-ttl", o.IDTokenTTL.String())
	}
	if o.PublicClientID != "" {
		args = append(args, "-public-client-id", o.PublicClientID)
	}
	for _, u := range o.PublicRedirectURIs {
		args = append(args, "-public-redirect-uri", u)
	}
	for _, p := range o.TrustedPeers {
		args = append(args, "-trusted-peer", p)
	}
	if o.SigningKey != "" {
		args = append(args, "-signing-key", o.SigningKey)
	}
	if o.Replicas > 1 {
		args = append(args, "-replicas", strconv.Itoa(o.Replicas))
	}
	bin, _ := DexBinary()
	cmd := exec.Command(bin, args...)
	stdout, _ := cmd.StdoutPipe()
	var also io.Writer
	if testing.Verbose() {
		also = os.Stderr
	}
	p, err := startProcess(d.t, cmd, "", also, syscall.SIGTERM)
	if err != nil {
		return err
	}
	d.proc = p
	if err := waitLine(stdout, "dex-runner ready", 60*time.Second); err != nil {
		select {
		case <-p.done:
			err = p.exited("dex")
		case <-time.After(time.Second):
		}
		d.Stop()
		return err
	}
	return WaitHTTP(d.URL+"/.well-known/openid-configuration", 30*time.Second)
}

// Stop ends the Dex process; safe to call twice.
func (d *Dex) Stop() {
	if d.proc != nil {
		d.proc.stop()
		d.proc = nil
	}
}

// DexLogin follows url (through a gateway or straight to Dex) to Dex's
// login form and submits it. It returns the final response of c, whose
// redirect policy decides where following stops.
func DexLogin(c *http.Client, authURL, user, password string) (*http.Response, error) {
	resp, err := c.Get(authURL)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(resp.Request.URL.Path, "/auth/") && !strings.Contains(resp.Request.URL.Path, "/login") {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: ended at %s (HTTP %d)", ErrNoForm, resp.Request.URL, resp.StatusCode)
	}
	return SubmitForm(c, resp, url.Values{"login": {user}, "password": {password}})
}

// RevokeRefreshTokens deletes every refresh token Dex has issued (the
// runner's test endpoint), as an administrator revoking grants would.
func (d *Dex) RevokeRefreshTokens() error {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Post(fmt.Sprintf("http://127.0.0.1:%d/__test/revoke-refresh", d.Port), "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revoke-refresh: HTTP %d", resp.StatusCode)
	}
	return nil
}

// DexDeviceLogin plays the user of a device authorization grant: it opens
// the verification URL (with the user code, as printed by the device), sends
// the code form, logs in and returns Dex's final page ("Login Successful").
func DexDeviceLogin(c *http.Client, verificationURL, user, password string) (string, error) {
	resp, err := c.Get(verificationURL)
	if err != nil {
		return "", err
	}
	code, _ := url.Parse(verificationURL)
	resp, err = SubmitForm(c, resp, url.Values{"user_code": {code.Query().Get("user_code")}})
	if err != nil {
		return "", fmt.Errorf("device code form: %w", err)
	}
	resp, err = SubmitForm(c, resp, url.Values{"login": {user}, "password": {password}})
	if err != nil {
		return "", fmt.Errorf("login form: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("device login ended with HTTP %d at %s", resp.StatusCode, resp.Request.URL)
	}
	return string(body), nil
}
