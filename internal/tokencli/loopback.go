package tokencli

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// callback is what the browser brought back to the loopback redirect.
type callback struct {
	code string
	err  error
	// done receives the outcome of the exchange, for the page shown.
	done chan error
}

// loopbackLogin runs the authorization code flow with PKCE, state and
// nonce on a redirect to http://127.0.0.1:<port>/ (RFC 8252 §7.3): it
// listens there, opens the browser on the authorization URL and exchanges
// the code that comes back.
func (c *command) loopbackLogin(ctx context.Context, p *provider) (*oauth2.Token, string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.o.ListenPort)))
	if err != nil {
		return nil, "", fmt.Errorf("cannot listen on 127.0.0.1:%d for the login's redirect: %v (choose another --listen-port)", c.o.ListenPort, err)
	}
	conf := p.conf
	conf.RedirectURL = fmt.Sprintf("http://127.0.0.1:%d/", l.Addr().(*net.TCPAddr).Port)
	state, nonce, verifier := randomString(), randomString(), oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce))

	results := make(chan callback, 1)
	srv := &http.Server{
		Handler:           &redirectHandler{state: state, results: results},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      c.o.Timeout,
		IdleTimeout:       30 * time.Second,
	}
	go srv.Serve(l)
	defer func() {
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()

	c.say("To log in, open this page in a browser on this machine (it returns to %s):\n\n    %s\n", conf.RedirectURL, authURL)
	if !c.o.NoBrowser {
		if err := c.open(authURL); err != nil {
			c.say("(No browser could be opened: %v. Open the page yourself.)", err)
		} else {
			c.say("(A browser was opened on this page.)")
		}
	}
	c.say("Waiting for the login ...")
	var cb callback
	select {
	case <-ctx.Done():
		return nil, "", ctx.Err()
	case cb = <-results:
	}
	if cb.err != nil {
		cb.done <- cb.err
		return nil, "", cb.err
	}
	xctx, cancel := context.WithTimeout(ctx, c.o.RequestTimeout)
	defer cancel()
	tok, err := conf.Exchange(p.ctx(xctx), cb.code, oauth2.VerifierOption(verifier))
	if err != nil {
		err = fmt.Errorf("the provider refused the login's code (%s): run the command again", oauthError(err))
	}
	cb.done <- err
	return tok, nonce, err
}

// redirectHandler serves the loopback redirect: the first request with this
// login's state ends the wait; others get an error page and change nothing.
type redirectHandler struct {
	state   string
	results chan<- callback
	taken   atomic.Bool
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>oidc-authservice token</title></head>
<body style="font-family: sans-serif; margin: 3em"><h1>{{.Title}}</h1><p>{{.Text}}</p></body></html>
`))

func (h *redirectHandler) show(w http.ResponseWriter, status int, title, text string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	page.Execute(w, struct{ Title, Text string }{title, text})
}

func (h *redirectHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(h.state)) != 1 {
		h.show(w, http.StatusBadRequest, "Not this login", "This page does not belong to the login the command is waiting for. Run the command again.")
		return
	}
	cb := callback{code: q.Get("code"), done: make(chan error, 1)}
	if e := q.Get("error"); e != "" {
		msg := e
		if d := q.Get("error_description"); d != "" {
			msg += ": " + d
		}
		cb.err = fmt.Errorf("the provider ended the login with an error (%.200s): run the command again", msg)
	} else if cb.code == "" {
		cb.err = errors.New("the provider's redirect carried no code: run the command again")
	}
	if !h.taken.CompareAndSwap(false, true) {
		h.show(w, http.StatusConflict, "Already done", "This login has already been answered. Return to the terminal.")
		return
	}
	h.results <- cb
	var err error
	select {
	case err = <-cb.done:
	case <-r.Context().Done():
		return
	}
	if err != nil {
		h.show(w, http.StatusUnauthorized, "Login failed", err.Error())
		return
	}
	h.show(w, http.StatusOK, "Logged in", "You can close this window and return to the terminal.")
}

// randomString is 32 random bytes, base64url.
func randomString() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
