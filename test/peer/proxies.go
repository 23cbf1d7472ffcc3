package peer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// ForwardAuthTargets are where a forward-auth proxy sends what.
type ForwardAuthTargets struct {
	Service  string // host:port of the check server (verify, start, callback, logout)
	Dex      string // host:port of Dex, routed at /dex/
	Upstream string // host:port of the application
	// IngressNginx makes StartNginx call the verify endpoint exactly as
	// ingress-nginx's auth-url does (its template's headers, Host set to
	// the service, every client header passed through) instead of the
	// recipe of docs/forward-auth.md.
	IngressNginx bool
}

// StartCaddy runs Debian's Caddy with forward_auth in front of the upstream,
// as docs/forward-auth.md configures it, and returns its URL.
func StartCaddy(t testing.TB, tg ForwardAuthTargets) string {
	t.Helper()
	bin, err := exec.LookPath("caddy")
	Require(t, "caddy (apt-get install caddy)", err)
	port := FreePort(t)
	dir := t.TempDir()
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
		reverse_proxy %s
	}
	handle {
		forward_auth %s {
			uri /authservice/verify
			copy_headers Kubeflow-Userid Kubeflow-Groups Cookie
		}
		reverse_proxy %s
	}
}
`, port, tg.Dex, tg.Service, tg.Service, tg.Upstream)
	file := filepath.Join(dir, "Caddyfile")
	os.WriteFile(file, []byte(conf), 0o644)
	cmd := exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd.Stdout, cmd.Stderr = logFile(t, "caddy.log"), logFile(t, "caddy.log")
	Require(t, "caddy", cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	Require(t, "caddy", waitPort(port))
	return url
}

// StartNginx runs Debian's nginx with auth_request and the error_page 401
// login pattern, as docs/forward-auth.md configures it.
func StartNginx(t testing.TB, tg ForwardAuthTargets) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin, err = exec.LookPath("/usr/sbin/nginx")
	}
	Require(t, "nginx (apt-get install nginx-light)", err)
	port := FreePort(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	// The verify subrequest: docs/forward-auth.md's recipe, or what
	// ingress-nginx's template generates for nginx.ingress.kubernetes.io/auth-url.
	verify := fmt.Sprintf(`		location = /_oidc_verify {
			internal;
			proxy_pass http://%[1]s/authservice/verify;
			proxy_pass_request_body off;
			proxy_set_header Content-Length "";
			proxy_set_header Host $http_host;
			proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
			proxy_set_header X-Original-Method $request_method;
		}`, tg.Service)
	if tg.IngressNginx {
		verify = fmt.Sprintf(`		location = /_oidc_verify {
			internal;
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
			proxy_pass http://%[1]s/authservice/verify;
		}`, tg.Service)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
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
			proxy_pass http://%[5]s;
			proxy_set_header Host $http_host;
			proxy_set_header X-Forwarded-Proto $scheme;
		}
%[7]s
		location @oidc_login {
			return 302 /authservice/start?rd=$scheme://$http_host$request_uri;
		}
		location / {
			auth_request /_oidc_verify;
			auth_request_set $kf_user $upstream_http_kubeflow_userid;
			auth_request_set $kf_groups $upstream_http_kubeflow_groups;
			auth_request_set $kf_cookie $upstream_http_cookie;
			error_page 401 = @oidc_login;
			proxy_set_header Kubeflow-Userid $kf_user;
			proxy_set_header Kubeflow-Groups $kf_groups;
			proxy_set_header Cookie $kf_cookie;
			proxy_set_header Host $http_host;
			proxy_pass http://%[6]s;
		}
	}
}
`, user, dir, port, tg.Dex, tg.Service, tg.Upstream, verify)
	file := filepath.Join(dir, "nginx.conf")
	os.WriteFile(file, []byte(conf), 0o644)
	cmd := exec.Command(bin, "-c", file, "-p", dir)
	cmd.Stdout, cmd.Stderr = logFile(t, "nginx.log"), logFile(t, "nginx.log")
	Require(t, "nginx", cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	Require(t, "nginx", waitPort(port))
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

func logFile(t testing.TB, name string) *os.File {
	f, err := os.OpenFile(filepath.Join(ArtifactsDir(t), name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func waitPort(port int) error {
	return WaitTCP(fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
}
