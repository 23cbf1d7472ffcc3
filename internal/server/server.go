// Package server owns the process: it builds every part once from the
// settings, runs the three HTTP servers and provider discovery, and shuts
// down gracefully when its context ends.
//
//	SERVER_PORT           (8080)  the ext_authz check            package check
//	READINESS_PROBE_PORT  (8081)  /healthz alive; /metrics Prometheus; /readyz and every
//	                              other path: ready once provider discovery succeeded
//	WEB_SERVER_PORT       (8082)  pages                          package web
package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/oidc-authservice/oidc-authservice/internal/authn"
	"github.com/oidc-authservice/oidc-authservice/internal/authz"
	"github.com/oidc-authservice/oidc-authservice/internal/check"
	"github.com/oidc-authservice/oidc-authservice/internal/config"
	"github.com/oidc-authservice/oidc-authservice/internal/identity"
	"github.com/oidc-authservice/oidc-authservice/internal/issuer"
	"github.com/oidc-authservice/oidc-authservice/internal/metrics"
	"github.com/oidc-authservice/oidc-authservice/internal/pages"
	"github.com/oidc-authservice/oidc-authservice/internal/provider"
	"github.com/oidc-authservice/oidc-authservice/internal/revocation"
	"github.com/oidc-authservice/oidc-authservice/internal/session"
	"github.com/oidc-authservice/oidc-authservice/internal/web"
)

// Version is the build's version, for oidc_authservice_build_info; the
// command sets it.
var Version = "dev"

// Run serves until ctx ends, then shuts down within 10 s.
func Run(ctx context.Context, s *config.Settings, log *zap.Logger) error {
	now := time.Now
	m := metrics.New(Version)
	if s.GeneratedKeys {
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return err
		}
		s.Keys = []config.Key{config.DeriveKey(secret)}
		log.Warn("SESSION_KEYS is not set: using random keys. Sessions will NOT survive a restart and will NOT work across replicas. Set SESSION_KEYS (or SESSION_KEYS_FILE) in production.")
	}
	if len(s.Obsolete) > 0 {
		log.Warn("obsolete variables are ignored: sessions live in cookies, there is no store", zap.Strings("variables", s.Obsolete))
	}

	prov, err := provider.New(provider.Options{
		Issuer: s.Provider, AuthURL: s.AuthURL, ClientID: s.ClientID, ClientSecret: s.ClientSecret,
		RedirectURL: s.RedirectURL, Scopes: s.Scopes, CABundle: s.CABundle, Timeout: s.ProviderTimeout,
		Logger: log.Named("provider"), Now: now, Metrics: m,
	})
	if err != nil {
		return err
	}
	pg, err := pages.New(pages.Options{ClientName: s.ClientName, Theme: s.Theme, ThemesURL: s.ThemesURL,
		TemplatePath: s.TemplatePath, Context: s.TemplateContext})
	if err != nil {
		return err
	}
	var store revocation.Store
	if s.RedisURL != "" {
		rs, err := revocation.NewRedisStore(s.RedisURL, s.RedisKeyPrefix)
		if err != nil {
			return err
		}
		defer rs.Close()
		pingCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if err := rs.Ping(pingCtx); err != nil {
			log.Warn("Redis not reachable at start; revocations stay local until it is", zap.Error(err))
		}
		cancel()
		store = rs
	} else {
		log.Info("no REDIS_URL: logout and back-channel logout end sessions on this replica only; with several replicas set REDIS_URL")
	}
	policy, err := authz.New(s)
	if err != nil {
		return err
	}
	var extra []authn.JWTAuthenticator
	if s.AcceptProviderIDTokens {
		extra = append(extra, authn.ProviderEntry(s.Provider, s.ClientID, s.UserIDClaim, s.GroupsClaim))
	}
	tokens, err := authn.Load(s.AuthenticationConfigFile, extra, authn.Options{Logger: log, Now: now, Timeout: s.ProviderTimeout})
	if err != nil {
		return err
	}
	reviews, err := tokenReviews(s, log, now)
	if err != nil {
		return err
	}
	var upstream *issuer.Issuer
	if s.UpstreamToken == "issued" {
		var keys []issuer.Key
		if s.UpstreamTokenKeysFile != "" {
			if keys, err = issuer.LoadKeys(s.UpstreamTokenKeysFile); err != nil {
				return err
			}
		} else {
			k, err := issuer.GenerateKey()
			if err != nil {
				return err
			}
			keys = []issuer.Key{k}
			log.Warn("UPSTREAM_TOKEN=issued without UPSTREAM_TOKEN_KEYS_FILE: a random signing key; replicas will not agree and tokens fail validation after a restart")
		}
		if upstream, err = issuer.New(keys, s.UpstreamTokenIssuer, s.UpstreamTokenAudience, s.UpstreamTokenLifetime, now); err != nil {
			return err
		}
	}
	revocations := revocation.New(time.Duration(s.SessionMaxAge)*time.Second, store, now, log)
	checkHandler := check.New(check.Deps{
		Settings:    s,
		Logger:      log,
		Codec:       session.NewCodec(s.Keys, time.Duration(s.SessionMaxAge)*time.Second, now),
		Provider:    prov,
		Mapper:      identity.NewMapper(s),
		Policy:      policy,
		Tokens:      tokens,
		Reviews:     reviews,
		Upstream:    upstream,
		Pages:       pg,
		Revocations: revocations,
		Now:         now,
		Random:      rand.Reader,
		Metrics:     m,
	})

	servers := []*http.Server{
		newServer(s, s.Port, checkHandler, s.ProviderTimeout),
		newServer(s, s.ReadinessPort, probe(prov, m.Handler()), s.ProviderTimeout),
		newServer(s, s.WebServerPort, web.New(s, pg, checkHandler.BackchannelLogout, upstream), s.ProviderTimeout),
	}
	listeners := make([]net.Listener, len(servers))
	for i, srv := range servers {
		l, err := net.Listen("tcp", srv.Addr)
		if err != nil {
			for _, l := range listeners[:i] {
				l.Close()
			}
			return fmt.Errorf("listen %s: %w", srv.Addr, err)
		}
		listeners[i] = l
	}
	log.Info("starting", zap.String("check", listeners[0].Addr().String()),
		zap.String("probe", listeners[1].Addr().String()), zap.String("web", listeners[2].Addr().String()),
		zap.Any("config", s.Redacted()))

	discoveryCtx, stopDiscovery := context.WithCancel(ctx)
	defer stopDiscovery()
	go prov.Run(discoveryCtx)
	go revocations.Run(discoveryCtx, 30*time.Second)

	errc := make(chan error, len(servers))
	for i, srv := range servers {
		go func() {
			if err := srv.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("server %s: %w", srv.Addr, err)
			}
		}()
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, srv := range servers {
		srv.Shutdown(shutdownCtx)
	}
	return err
}

func newServer(s *config.Settings, port int, h http.Handler, providerTimeout time.Duration) *http.Server {
	return &http.Server{
		Addr:              net.JoinHostPort(s.Hostname, strconv.Itoa(port)),
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// A callback waits for the token endpoint and userinfo.
		WriteTimeout:   2*providerTimeout + 10*time.Second,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
	}
}

func probe(p *provider.Provider, metricsHandler http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			metricsHandler.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if r.URL.Path == "/healthz" {
			w.Write([]byte("ok\n"))
			return
		}
		if !p.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("provider discovery has not succeeded yet\n"))
			return
		}
		w.Write([]byte("ready\n"))
	})
}
