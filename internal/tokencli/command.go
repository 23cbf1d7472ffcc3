package tokencli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// DefaultClientID is the public client Kubeflow's Dex registers for
// command-line tools.
const DefaultClientID = "kubeflow-cli"

// Options are the command's flags.
type Options struct {
	Issuer         string
	ProviderURL    string
	DeviceAuthURL  string // when discovery does not advertise one (GitLab)
	ClientID       string
	ClientSecret   string
	Scopes         []string // explicit; nil: openid profile email + groups, offline_access when advertised
	Audiences      []string
	CABundle       string
	Force          bool
	Output         string // token, exec-credential or json
	NoBrowser      bool
	Flow           string // auto, device or loopback
	ListenPort     int
	Timeout        time.Duration // the whole interactive login
	RequestTimeout time.Duration // each call to the provider
	MinValidity    time.Duration
	CacheDir       string
}

// Env is what the command takes from its process; tests replace parts of it.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	Now            func() time.Time
	// OpenBrowser opens a URL for the user; nil: the system's browser
	// (BROWSER, open, xdg-open, ...).
	OpenBrowser func(string) error
}

const usageHead = `Usage: oidc-authservice token --issuer URL [flags]

Obtains an ID token from the OpenID Connect provider and prints it on standard
output, for the Kubeflow Pipelines SDK, curl or kubectl:

  TOKEN=$(oidc-authservice token --issuer https://kubeflow.example.com/dex)
  curl -H "Authorization: Bearer $TOKEN" https://kubeflow.example.com/pipeline/apis/v2beta1/pipelines

Logs in with the device authorization grant (RFC 8628) when the provider offers
it (Dex does): open the printed URL on any device and confirm the code. Otherwise
with the authorization code flow and PKCE on a loopback redirect
(http://127.0.0.1:<port>/), opening the browser. Tokens are cached per issuer,
client, scopes and audiences in %s (mode 0600),
reused while valid and renewed with the refresh token; --force logs in again.

As a kubectl credential plugin (users: entry of a kubeconfig):

  exec:
    apiVersion: client.authentication.k8s.io/v1
    command: oidc-authservice
    args: [token, --issuer, https://kubeflow.example.com/dex, --output, exec-credential]
    interactiveMode: IfAvailable

See docs/programmatic-access.md.

Flags:
`

// Main runs the command with the process's environment; Ctrl-C cancels a
// login in progress.
func Main(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return safeError(Run(ctx, args, Env{Stdout: stdout, Stderr: stderr}))
}

// Run runs the command: parse args, then print a token from the cache, a
// refresh or a login.
func Run(ctx context.Context, args []string, env Env) error {
	if env.Stdout == nil {
		env.Stdout = io.Discard
	}
	if env.Stderr == nil {
		env.Stderr = io.Discard
	}
	env.Stderr = terminalWriter{env.Stderr}
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.OpenBrowser == nil {
		env.OpenBrowser = func(u string) error { return openBrowser(u, env.Getenv) }
	}
	o, err := parse(args, env)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	return (&command{o: o, env: env}).run(ctx)
}

// parse reads the flags; --help prints the usage on stdout and returns
// flag.ErrHelp.
func parse(args []string, env Env) (Options, error) {
	o := Options{}
	fs := flag.NewFlagSet("oidc-authservice token", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var scopes, audiences string
	fs.StringVar(&o.Issuer, "issuer", "", "issuer URL of the provider, exactly as its tokens name it (required)")
	fs.StringVar(&o.ProviderURL, "provider-url", "", "where this machine reaches the issuer, when that differs from the issuer URL (Kubeflow's Dex\nwith issuer http://dex.auth.svc.cluster.local:5556/dex, reached at https://kubeflow.example.com/dex);\nthe provider's endpoints under the issuer URL are rewritten to it")
	fs.StringVar(&o.DeviceAuthURL, "device-authorization-url", "", "device authorization endpoint, for providers that offer the grant without advertising it in\ntheir discovery (GitLab 17.1+: https://gitlab.example.com/oauth/authorize_device)")
	fs.StringVar(&o.ClientID, "client-id", DefaultClientID, "OAuth client id: a public client registered at the provider for command-line tools")
	fs.StringVar(&o.ClientSecret, "client-secret", "", "client secret, for providers that give native applications one (it is not a secret there)")
	fs.StringVar(&scopes, "scopes", "", "scopes, comma- or space-separated; openid is always added (default: openid profile email,\nplus groups and offline_access when the provider advertises them)")
	fs.StringVar(&audiences, "audience", "", "comma-separated client ids the token must also be for (Dex cross-client trust: adds the scope\naudience:server:client_id:<id>; that client must list --client-id in its trustedPeers)")
	fs.StringVar(&o.CABundle, "ca-bundle", "", "PEM file of CA certificates trusted for the provider, added to the system's")
	fs.BoolVar(&o.Force, "force", false, "ignore the cached token and log in again")
	fs.StringVar(&o.Output, "output", "token", "token (the ID token and a newline), exec-credential (a client.authentication.k8s.io ExecCredential\nfor kubectl; the default when KUBERNETES_EXEC_INFO is set) or json")
	fs.BoolVar(&o.NoBrowser, "no-browser", false, "do not open a browser: print the URL to visit")
	fs.StringVar(&o.Flow, "flow", "auto", "auto (the device grant when the provider offers it and --provider-url is not set, else loopback),\ndevice or loopback")
	fs.IntVar(&o.ListenPort, "listen-port", 0, "port of the loopback redirect http://127.0.0.1:<port>/ (0: a free port; use a fixed one\nwhen the provider compares redirect URIs literally, as Dex does for clients with registered URIs)")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "longest wait for the login to finish in the browser")
	fs.DurationVar(&o.RequestTimeout, "request-timeout", 30*time.Second, "timeout of each call to the provider")
	fs.DurationVar(&o.MinValidity, "min-validity", time.Minute, "a cached token valid for less than this is renewed")
	fs.StringVar(&o.CacheDir, "cache-dir", "", "folder of the token cache (default <user cache dir>/oidc-authservice/tokens)")
	fs.Usage = func() {
		fmt.Fprintf(env.Stdout, usageHead, defaultCacheDirText())
		fs.SetOutput(env.Stdout)
		fs.PrintDefaults()
		fs.SetOutput(env.Stderr)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("%v (see oidc-authservice token --help)", err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (see oidc-authservice token --help)", fs.Arg(0))
	}
	outputSet := false
	fs.Visit(func(f *flag.Flag) { outputSet = outputSet || f.Name == "output" })
	if !outputSet && env.Getenv("KUBERNETES_EXEC_INFO") != "" {
		// client-go sets it when it runs a credential plugin.
		o.Output = "exec-credential"
	}
	if scopes != "" {
		o.Scopes = splitList(scopes)
		if !slices.Contains(o.Scopes, "openid") {
			o.Scopes = append([]string{"openid"}, o.Scopes...)
		}
	}
	o.Audiences = splitList(audiences)
	return o, o.validate()
}

func (o *Options) validate() error {
	var errs []error
	if o.Issuer == "" {
		errs = append(errs, errors.New("--issuer is required: the provider's issuer URL, e.g. https://kubeflow.example.com/dex"))
	} else if err := checkURL(o.Issuer); err != nil {
		errs = append(errs, fmt.Errorf("--issuer: %v", err))
	}
	if o.ProviderURL != "" {
		if err := checkURL(o.ProviderURL); err != nil {
			errs = append(errs, fmt.Errorf("--provider-url: %v", err))
		}
	}
	if o.DeviceAuthURL != "" {
		if err := checkURL(o.DeviceAuthURL); err != nil {
			errs = append(errs, fmt.Errorf("--device-authorization-url: %v", err))
		}
	}
	if o.ClientID == "" {
		errs = append(errs, errors.New("--client-id must not be empty"))
	}
	switch o.Output {
	case "token", "exec-credential", "json":
	default:
		errs = append(errs, fmt.Errorf("--output %q: want token, exec-credential or json", o.Output))
	}
	switch o.Flow {
	case "auto", "device", "loopback":
	default:
		errs = append(errs, fmt.Errorf("--flow %q: want auto, device or loopback", o.Flow))
	}
	if o.ListenPort < 0 || o.ListenPort > 65535 {
		errs = append(errs, fmt.Errorf("--listen-port %d: want 0 to 65535", o.ListenPort))
	}
	if o.Timeout <= 0 || o.RequestTimeout <= 0 {
		errs = append(errs, errors.New("--timeout and --request-timeout must be positive"))
	}
	if o.MinValidity < 0 {
		errs = append(errs, errors.New("--min-validity must not be negative"))
	}
	for _, s := range append(append([]string{}, o.Scopes...), o.Audiences...) {
		if strings.ContainsAny(s, "\"\\") {
			errs = append(errs, fmt.Errorf("scope or audience %q: quotes and backslashes are not allowed", s))
		}
	}
	return errors.Join(errs...)
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q must be an http(s) URL without query, fragment or user info", s)
	}
	return nil
}

// splitList splits on commas and white space, dropping empty items.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// defaultCacheDir is <user cache dir>/oidc-authservice/tokens.
func defaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache folder for the token cache (%v): set XDG_CACHE_HOME or HOME, or pass --cache-dir", err)
	}
	return filepath.Join(d, "oidc-authservice", "tokens"), nil
}

func defaultCacheDirText() string {
	if d, err := defaultCacheDir(); err == nil {
		return d
	}
	return "<user cache dir>/oidc-authservice/tokens"
}
