// Command oidc-authservice is the ext_authz service: see README.md.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/oidc-authservice/oidc-authservice/internal/checkconfig"
	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/server"
	"github.com/oidc-authservice/oidc-authservice/internal/tokencli"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "oidc-authservice:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "--help", "help":
			fmt.Fprintf(stdout, "oidc-authservice %s: OpenID Connect ext_authz service for Kubeflow.\n\n"+
				"Usage: oidc-authservice [version | check-config | token | --help]\n\n"+
				"  check-config  validate the environment, reach the provider, print what the service will do;\n"+
				"                exit status 1 on any problem\n"+
				"  token         on a user's machine: log in and print an ID token or a kubectl ExecCredential\n"+
				"                (oidc-authservice token --help)\n\nConfigured by environment variables:\n\n%s", version, config.Usage())
			return nil
		case "version", "--version":
			fmt.Fprintln(stdout, version)
			return nil
		case "check-config":
			return checkConfig(stdout)
		case "token":
			return tokencli.Main(args[1:], stdout, os.Stderr)
		default:
			return fmt.Errorf("unknown argument %q (see --help)", args[0])
		}
	}
	s, err := config.Load(os.Environ)
	if err != nil {
		return err
	}
	log, err := newLogger(s.Servers.LogLevel, s.Servers.LogFormat)
	if err != nil {
		return err
	}
	defer log.Sync()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if s.Servers.LogFormat != "console" {
		// Every JSON line names the build; the console's start-up line does.
		log = log.With(zap.String("version", version))
	}
	return server.Run(ctx, s, version, log)
}

// checkConfig is the check-config command.
func checkConfig(stdout io.Writer) error {
	s, err := config.Load(os.Environ)
	if err != nil {
		return fmt.Errorf("%d problem(s) found", checkconfig.Invalid(stdout, err))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if r := checkconfig.Run(ctx, s, stdout); len(r.Problems) > 0 {
		return fmt.Errorf("%d problem(s) found", len(r.Problems))
	}
	return nil
}

// newLogger is zap's production logger (JSON, one object per line), or
// with LOG_FORMAT=console its console encoder: tab-separated time, level
// and message, then the fields, for a person at a terminal.
func newLogger(level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	c := zap.NewProductionConfig()
	c.Level = zap.NewAtomicLevelAt(lvl)
	c.Sampling = nil
	c.EncoderConfig.TimeKey = "time"
	c.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	if format == "console" {
		c.Encoding = "console"
		c.DisableCaller = true
		c.DisableStacktrace = true
		c.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
		c.EncoderConfig.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
	}
	return c.Build()
}
