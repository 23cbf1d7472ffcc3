// Command dex-runner runs a real Dex server (the github.com/dexidp/dex
// server library with in-memory storage) configured like Kubeflow's Dex: a
// password login form, one static client, static users. It exists for the
// integration tests and `make run`; see README.md beside it.
//
// With -public-client-id it also registers a public client for command-line
// tools (oidc-authservice token): no secret, the device authorization grant
// and loopback redirects. -trusted-peer lets such a client ask for tokens
// whose audience is the static client (Dex's cross-client trust). With
// -signing-key it signs with a fixed key (test/keys: the key istiod inlined
// into the generated gateway configuration) instead of a random one; with
// -replicas N it runs N Dex servers on one shared storage behind one port,
// taking turns, as Kubeflow's Dex Deployment with replicas on Kubernetes
// storage does. A
// test-only endpoint, POST /__test/revoke-refresh, deletes every refresh
// token, as an administrator revoking a user's grants would.
package main

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	gosundheit "github.com/AppsFlyer/go-sundheit"
	"github.com/dexidp/dex/server"
	"github.com/dexidp/dex/server/signer"
	"github.com/dexidp/dex/server/tokens"
	"github.com/dexidp/dex/storage"
	"github.com/dexidp/dex/storage/memory"
	"github.com/go-jose/go-jose/v4"
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
		groupsFile   = flag.String("groups-file", "", "file of more groups of the static user, one per line (thousands of them do not fit a command line)")
		idTTL        = flag.Duration("id-token-ttl", 24*time.Hour, "lifetime of ID and access tokens")
		backchannel  = flag.String("backchannel-logout-uri", "", "client's back-channel logout URI")
		publicID     = flag.String("public-client-id", "", "id of a public client (no secret) for command-line tools; empty: none")
		refreshTTL   = flag.String("refresh-token-absolute-lifetime", "", "absolute lifetime of refresh tokens (Go duration; empty: unlimited)")
		redirects    list
		postLogout   list
		extraUsers   list
		publicURIs   list
		trusted      list
		signingKey   = flag.String("signing-key", "", "PEM file of a fixed RSA signing key (PKCS #8); its kid is base64url(SHA-256(PKIX public key)[:12])")
		replicas     = flag.Int("replicas", 1, "Dex servers sharing one storage, taking turns")
	)
	flag.Var(&redirects, "redirect-uri", "registered redirect URI, repeatable (default /authservice/oidc/callback; relative URIs are compared literally, as Kubeflow's Dex does)")
	flag.Var(&postLogout, "post-logout-redirect-uri", "registered post-logout redirect URI, repeatable")
	flag.Var(&extraUsers, "extra-user", "another static user as email:password[:group1;group2], repeatable")
	flag.Var(&publicURIs, "public-redirect-uri", "redirect URI of the public client, repeatable (default <issuer path>/device/callback, which the device grant needs; "+
		"Dex then accepts only the listed URIs, so a loopback redirect needs its exact port listed)")
	flag.Var(&trusted, "trusted-peer", "client id the static client trusts to ask for tokens with its audience (scope audience:server:client_id:<static client>), repeatable")
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
	if *groupsFile != "" {
		b, err := os.ReadFile(*groupsFile)
		if err != nil {
			return err
		}
		for _, g := range strings.Split(string(b), "\n") {
			if g = strings.TrimSpace(g); g != "" {
				users[0].Groups = append(users[0].Groups, g)
			}
		}
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

	clients := []storage.Client{{
		ID: *clientID, Secret: *clientSecret, Name: "oidc-authservice",
		RedirectURIs: redirects, PostLogoutRedirectURIs: postLogout, BackchannelLogoutURI: *backchannel,
		TrustedPeers: trusted,
	}}
	if *publicID != "" {
		if len(publicURIs) == 0 {
			u, err := url.Parse(*issuer)
			if err != nil {
				return fmt.Errorf("-issuer: %v", err)
			}
			// The device grant's browser step redirects to the issuer's
			// path + /device/callback, which Dex checks like any redirect URI.
			publicURIs = list{strings.TrimSuffix(u.Path, "/") + "/device/callback"}
		}
		clients = append(clients, storage.Client{ID: *publicID, Name: "Kubeflow CLI", Public: true, RedirectURIs: publicURIs})
	}
	store := memory.New(logger)
	store = storage.WithStaticClients(store, clients)
	store = storage.WithStaticPasswords(store, users, logger)
	store = storage.WithStaticConnectors(store, []storage.Connector{{ID: "local", Type: "local", Name: "Email"}})
	store = unlockedRefresh{store}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if *signingKey != "" {
		if err := fixKey(ctx, store, *signingKey); err != nil {
			return err
		}
	}
	if *replicas < 1 {
		return fmt.Errorf("-replicas %d", *replicas)
	}
	var servers []http.Handler
	for i := 0; i < *replicas; i++ {
		sig, err := (&signer.LocalConfig{KeysRotationPeriod: "6h"}).Open(ctx, store, *idTTL, time.Now, logger)
		if err != nil {
			return err
		}
		// Refresh tokens rotate, as with Dex's default configuration: each
		// refresh answers a new one and the used one is refused from then on
		// (no reuse interval). The second parameter is Dex's DisableRotation
		// (expiry.refreshTokens.disableRotation), whatever its name says.
		refresh, err := tokens.NewRefreshTokenPolicy(logger, false, "", *refreshTTL, "")
		if err != nil {
			return err
		}
		srv, err := server.NewServer(ctx, server.Config{
			Issuer:             *issuer,
			Storage:            store,
			SkipApprovalScreen: true,
			IDTokensValidFor:   *idTTL,
			RefreshTokenPolicy: refresh,
			Now:                time.Now,
			Logger:             logger.With("replica", i),
			Signer:             sig,
			HealthChecker:      gosundheit.New(),
		})
		if err != nil {
			return err
		}
		servers = append(servers, srv)
	}
	var turn atomic.Uint64
	srv := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		servers[(turn.Add(1)-1)%uint64(len(servers))].ServeHTTP(w, r)
	})
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", srv)
	mux.HandleFunc("POST /__test/revoke-refresh", func(w http.ResponseWriter, r *http.Request) {
		n, err := revokeRefreshTokens(r.Context(), store)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "revoked %d refresh tokens\n", n)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
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

// revokeRefreshTokens deletes every refresh token and offline session, so
// the next refresh is refused with invalid_grant.
func revokeRefreshTokens(ctx context.Context, store storage.Storage) (int, error) {
	rts, err := store.ListRefreshTokens(ctx)
	if err != nil {
		return 0, err
	}
	for _, rt := range rts {
		if err := store.DeleteRefresh(ctx, rt.ID); err != nil {
			return 0, err
		}
		if err := store.DeleteOfflineSessions(ctx, rt.Claims.UserID, rt.ConnectorID); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return 0, err
		}
	}
	return len(rts), nil
}

// unlockedRefresh works around a deadlock of this Dex version: with
// sessions off, the refresh grant reads the user's offline session from
// inside UpdateRefreshToken's updater, while the in-memory storage holds its
// (not reentrant) lock, so every refresh hangs. Here the updater runs outside
// the lock and its result is applied only if the token did not change
// meanwhile (else it runs again), which keeps rotation single-use.
type unlockedRefresh struct{ storage.Storage }

func (s unlockedRefresh) UpdateRefreshToken(ctx context.Context, id string, updater func(storage.RefreshToken) (storage.RefreshToken, error)) error {
	for {
		old, err := s.Storage.GetRefresh(ctx, id)
		if err != nil {
			return err
		}
		updated, err := updater(old)
		if err != nil {
			return err
		}
		changed := false
		err = s.Storage.UpdateRefreshToken(ctx, id, func(cur storage.RefreshToken) (storage.RefreshToken, error) {
			if cur.Token != old.Token || cur.ObsoleteToken != old.ObsoleteToken || !cur.LastUsed.Equal(old.LastUsed) {
				changed = true
				return cur, nil
			}
			return updated, nil
		})
		if err != nil || !changed {
			return err
		}
	}
}

// fixKey stores a fixed signing key whose rotation is a century away, so
// every replica signs with it.
func fixKey(ctx context.Context, store storage.Storage, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return fmt.Errorf("%s: no PEM block", file)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	priv, ok := k.(*rsa.PrivateKey)
	if !ok {
		return fmt.Errorf("%s: not an RSA key", file)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(der)
	kid := base64.RawURLEncoding.EncodeToString(sum[:12])
	return store.UpdateKeys(ctx, func(storage.Keys) (storage.Keys, error) {
		return storage.Keys{
			SigningKey:    &jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: "RS256", Use: "sig"},
			SigningKeyPub: &jose.JSONWebKey{Key: &priv.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"},
			NextRotation:  time.Now().AddDate(100, 0, 0),
		}, nil
	})
}
