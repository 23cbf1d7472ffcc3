package peer

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ForwardAuthTargets are where a forward-auth proxy sends what.
type ForwardAuthTargets struct {
	Service  string // host:port of the check server (verify, start, callback, logout)
	Dex      string // host:port of Dex, routed at /dex/
	Upstream string // host:port of the application
	// IngressNginx makes StartNginx run what ingress-nginx generates for
	// docs/forward-auth.md's annotations (the verify call with its
	// template's headers, Host set to the service, every client header
	// passed through; auth-response-headers) instead of the nginx recipe.
	IngressNginx bool
	// Port is the proxy's port (0: a free one), for providers that need
	// the absolute redirect URI before the proxy exists.
	Port int
}

// StartCaddy runs Debian's Caddy with docs/forward-auth.md's recipe in
// front of the upstream, and returns its URL.
func StartCaddy(t testing.TB, tg ForwardAuthTargets) string {
	t.Helper()
	bin, err := exec.LookPath("caddy")
	Require(t, "caddy (apt-get install caddy)", err)
	dir := t.TempDir()
	doc := recipe(t, "caddy")
	sub := strings.NewReplacer("authservice:8080", tg.Service, "app:80", tg.Upstream)
	var url string
	start := func(ports []int) error {
		port := ports[0]
		conf := fmt.Sprintf(`{
	admin off
	auto_https off
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	handle /dex/* {
		reverse_proxy %s
	}
	handle /authservice/* {
%s
	}
	handle {
%s
	}
}
`, port, tg.Dex, sub.Replace(block(t, doc, "handle /authservice/* {")), sub.Replace(block(t, doc, "handle {")))
		file := filepath.Join(dir, "Caddyfile")
		os.WriteFile(file, []byte(conf), 0o644)
		cmd := exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		p, err := startProcess(t, cmd, "caddy.log", nil, syscall.SIGKILL)
		if err != nil {
			return err
		}
		url = fmt.Sprintf("http://127.0.0.1:%d", port)
		return p.waitReady("caddy", dialable(fmt.Sprintf("127.0.0.1:%d", port)), 10*time.Second, port)
	}
	OnFreePorts(t, "caddy", 1, start)
	return url
}

// StartNginx runs Debian's nginx with docs/forward-auth.md's recipe
// (auth_request and the error_page 401 login pattern), or with what
// ingress-nginx generates for the page's annotations.
func StartNginx(t testing.TB, tg ForwardAuthTargets) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin, err = exec.LookPath("/usr/sbin/nginx")
	}
	Require(t, "nginx (apt-get install nginx-light)", err)
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	doc := recipe(t, "nginx")
	sub := strings.NewReplacer("http://authservice:8080", "http://"+tg.Service, "http://app", "http://"+tg.Upstream)
	location := func(header string) string { return sub.Replace(block(t, doc, header)) }
	verify, app := location("location = /_oidc_verify {"), location("location / {")
	if tg.IngressNginx {
		// What ingress-nginx's template generates for the auth-url and
		// auth-response-headers annotations: the verify subrequest with
		// its headers, Host set to the service, every client header passed
		// through; the application's location copying each listed header.
		verify = fmt.Sprintf(`			internal;
			proxy_pass_request_body off;
			proxy_set_header Content-Length "";
			proxy_set_header X-Forwarded-Proto "";
			proxy_set_header X-Request-ID $request_id;
			proxy_set_header Host %[1]s;
			proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
			proxy_set_header X-Original-Method $request_method;
			proxy_set_header X-Sent-From "nginx-ingress-controller";
			proxy_set_header X-Real-IP $remote_addr;
			proxy_set_header X-Forwarded-For $remote_addr;
			proxy_set_header X-Auth-Request-Redirect $request_uri;
			proxy_pass_request_headers on;
			proxy_pass http://%[1]s/authservice/verify;`, tg.Service)
		app = fmt.Sprintf(`			auth_request /_oidc_verify;
%s%s			error_page 401 = @oidc_login;
			proxy_set_header Host $http_host;
			proxy_pass http://%s;`, ingressNginxSetCookie(t), ingressNginxAuthLines(ingressNginxResponseHeaders(t)), tg.Upstream)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	var url string
	start := func(ports []int) error {
		port := ports[0]
		conf := fmt.Sprintf(`%s
worker_processes 1;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 256; }
http {
	access_log off;
	client_body_temp_path %[2]s/body;
	proxy_temp_path %[2]s/proxy;
	fastcgi_temp_path %[2]s/fastcgi;
	uwsgi_temp_path %[2]s/uwsgi;
	scgi_temp_path %[2]s/scgi;
	server {
		listen 127.0.0.1:%[3]d;
		location /dex/ {
			proxy_pass http://%[4]s;
			proxy_set_header Host $http_host;
		}
		location /authservice/ {
%[5]s
		}
		location = /_oidc_verify {
%[6]s
		}
		location @oidc_login {
%[7]s
		}
		location / {
%[8]s
		}
	}
}
`, user, dir, port, tg.Dex, location("location /authservice/ {"), verify, location("location @oidc_login {"), app)
		file := filepath.Join(dir, "nginx.conf")
		os.WriteFile(file, []byte(conf), 0o644)
		// nginx writes a failed bind to its error_log.
		os.Remove(filepath.Join(dir, "error.log"))
		cmd := exec.Command(bin, "-c", file, "-p", dir)
		p, err := startProcess(t, cmd, "nginx.log", nil, syscall.SIGTERM)
		if err != nil {
			return err
		}
		if err := p.waitReady("nginx", dialable(fmt.Sprintf("127.0.0.1:%d", port)), 10*time.Second, port); err != nil {
			if b, _ := os.ReadFile(filepath.Join(dir, "error.log")); portTaken(string(b)) && !errors.Is(err, ErrPortTaken) {
				err = fmt.Errorf("%w: %v", ErrPortTaken, err)
			}
			return err
		}
		url = fmt.Sprintf("http://127.0.0.1:%d", port)
		return nil
	}
	if tg.Port != 0 {
		Require(t, "nginx", start([]int{tg.Port}))
	} else {
		OnFreePorts(t, "nginx", 1, start)
	}
	return url
}

func logFile(t testing.TB, name string) *os.File {
	f, err := os.OpenFile(filepath.Join(ArtifactsDir(t), name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil
	}
	t.Cleanup(func() { f.Close() })
	return f
}
