// Command dex-runner runs a real Dex server (the github.com/dexidp/dex
// server library with in-memory storage) configured like Kubeflow's Dex: a
// password login form, one static client, static users. It exists for the
// integration tests and `make run`; see README.md beside it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	gosundheit "github.com/AppsFlyer/go-sundheit"
	"github.com/dexidp/dex/server"
	"github.com/dexidp/dex/server/signer"
	"github.com/dexidp/dex/server/tokens"
	"github.com/dexidp/dex/storage"
	"github.com/dexidp/dex/storage/memory"
	"golang.org/x/crypto/bcrypt"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dex-runner:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		addr         = flag.String("addr", "127.0.0.1:5556", "listen address")
		issuer       = flag.String("issuer", "http://127.0.0.1:5556/dex", "issuer URL (its path is served by Dex)")
		clientID     = flag.String("client-id", "kubeflow-oidc-authservice", "static client id")
		clientSecret = flag.String("client-secret", "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok", "static client secret")
		user         = flag.String("user", "user@example.com", "static user's email")
		password     = flag.String("password", "12341234", "static user's password")
		groups       = flag.String("groups", "", "comma-separated groups of the static user")
		idTTL        = flag.Duration("id-token-ttl", 24*time.Hour, "lifetime of ID and access tokens")
		backchannel  = flag.String("backchannel-logout-uri", "", "client's back-channel logout URI")
		redirects    list
		postLogout   list
		extraUsers   list
	)
	flag.Var(&redirects, "redirect-uri", "registered redirect URI, repeatable (default /authservice/oidc/callback; relative URIs are compared literally, as Kubeflow's Dex does)")
	flag.Var(&postLogout, "post-logout-redirect-uri", "registered post-logout redirect URI, repeatable")
	flag.Var(&extraUsers, "extra-user", "another static user as email:password[:group1;group2], repeatable")
	flag.Parse()
	if len(redirects) == 0 {
		redirects = list{"/authservice/oidc/callback"}
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	users := []storage.Password{}
	add := func(email, pw, gs string) error {
		hash, err := bcrypt.GenerateFromPassword([]byte(pw), 10)
		if err != nil {
			return err
		}
		name := strings.SplitN(email, "@", 2)[0]
		p := storage.Password{Email: email, Hash: hash, Username: name, UserID: fmt.Sprintf("%x", []byte(email))}
		if gs != "" {
			p.Groups = strings.FieldsFunc(gs, func(r rune) bool { return r == ',' || r == ';' })
		}
		users = append(users, p)
		return nil
	}
	if err := add(*user, *password, *groups); err != nil {
		return err
	}
	for _, u := range extraUsers {
		parts := strings.SplitN(u, ":", 3)
		if len(parts) < 2 {
			return fmt.Errorf("-extra-user %q: want email:password[:groups]", u)
		}
		gs := ""
		if len(parts) == 3 {
			gs = parts[2]
		}
		if err := add(parts[0], parts[1], gs); err != nil {
			return err
		}
	}

	store := memory.New(logger)
	store = storage.WithStaticClients(store, []storage.Client{{
		ID: *clientID, Secret: *clientSecret, Name: "oidc-authservice",
		RedirectURIs: redirects, PostLogoutRedirectURIs: postLogout, BackchannelLogoutURI: *backchannel,
	}})
	store = storage.WithStaticPasswords(store, users, logger)
	store = storage.WithStaticConnectors(store, []storage.Connector{{ID: "local", Type: "local", Name: "Email"}})
	store = refreshSafe{store}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	sig, err := (&signer.LocalConfig{KeysRotationPeriod: "6h"}).Open(ctx, store, *idTTL, time.Now, logger)
	if err != nil {
		return err
	}
	refresh, err := tokens.NewRefreshTokenPolicy(logger, true, "", "", "")
	if err != nil {
		return err
	}
	health := gosundheit.New()
	srv, err := server.NewServer(ctx, server.Config{
		Issuer:             *issuer,
		Storage:            store,
		SkipApprovalScreen: true,
		IDTokensValidFor:   *idTTL,
		RefreshTokenPolicy: refresh,
		Now:                time.Now,
		Logger:             logger,
		Signer:             sig,
		HealthChecker:      health,
	})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	fmt.Println("dex-runner ready", *issuer)
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return hs.Shutdown(shutdown)
}

// refreshSafe works around a deadlock of this Dex version with the memory
// storage: a refresh calls UpdateRefreshToken, whose updater (run inside the
// storage's lock) reads the offline session through the same storage, and
// the lock is not reentrant. Here the update reads, computes and writes in
// three steps, outside the lock; the tests refresh one token at a time.
type refreshSafe struct{ storage.Storage }

func (s refreshSafe) UpdateRefreshToken(ctx context.Context, id string, updater func(storage.RefreshToken) (storage.RefreshToken, error)) error {
	old, err := s.Storage.GetRefresh(ctx, id)
	if err != nil {
		return err
	}
	updated, err := updater(old)
	if err != nil {
		return err
	}
	return s.Storage.UpdateRefreshToken(ctx, id, func(storage.RefreshToken) (storage.RefreshToken, error) { return updated, nil })
}
