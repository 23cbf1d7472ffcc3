// Package upstream is a demo application for tests and `make run`: it shows
// the identity headers and everything else it received, and offers both
// Kubeflow dashboard logout flows.
package upstream

import (
	"encoding/json"
	"html/template"
	"net/http"
	"sort"
	"strings"
)

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>oidc-authservice demo upstream</title>
<link rel="icon" href="data:,">
<style>body{font:15px/1.5 sans-serif;margin:2rem;max-width:60rem}td{border-bottom:1px solid #ddd;padding:.2rem .6rem;vertical-align:top}code{word-break:break-all}.id td{background:#eef4ff}</style>
</head><body>
<h1>oidc-authservice demo upstream</h1>
<p>kubeflow-userid: <strong id="userid">{{.UserID}}</strong></p>
<p>kubeflow-groups: <strong id="groups">{{.Groups}}</strong></p>
<p>request: <code id="method">{{.Method}}</code> <code id="path">{{.Path}}</code></p>
<p><a id="logout-link" href="{{.Prefix}}logout">Log out</a> (a GET navigation, as Kubeflow's dashboard ≥ 1.10 does)
 · <button id="logout-old" type="button">Log out (POST, dashboard &lt; 1.10)</button> <span id="logout-status"></span></p>
<p><small>The dashboard before 1.10 sends <code>POST {{.Prefix}}logout</code> from its script with
<code>Authorization: Bearer</code> and the value of the <code>authservice_session</code> cookie, and goes where the 201
answer's <code>afterLogoutURL</code> says. The script can read that cookie only with <code>SESSION_HTTP_ONLY=false</code>;
with the default HttpOnly cookie the browser sends the cookie with the same-origin POST itself, and the service
accepts the session from either.</small></p>
<h2>Every header the upstream received</h2>
<table id="headers">{{range .Headers}}<tr{{if .Identity}} class="id"{{end}}><td>{{.Name}}</td><td><code>{{.Value}}</code></td></tr>{{end}}</table>
<script>
document.getElementById('logout-old').addEventListener('click', async () => {
  const status = document.getElementById('logout-status');
  const m = document.cookie.split('; ').find(c => c.startsWith('authservice_session='));
  const headers = m ? {Authorization: 'Bearer ' + m.substring('authservice_session='.length)} : {};
  const resp = await fetch('{{.Prefix}}logout', {method: 'POST', credentials: 'same-origin', headers});
  status.textContent = 'HTTP ' + resp.status + (m ? ' (the cookie\'s value as a bearer token)' : ' (the HttpOnly cookie, sent by the browser)');
  if (resp.status === 201) { const body = await resp.json(); window.location.href = body.afterLogoutURL; }
});
</script>
</body></html>`))

type header struct {
	Name, Value string
	Identity    bool // set by the auth service
}

// Handler answers every request with what it received. prefix is the auth
// service's URL prefix (default /authservice/), used for the logout links.
func Handler(prefix string) http.Handler {
	if prefix == "" {
		prefix = "/authservice/"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("format") == "json" || strings.Contains(r.Header.Get("Accept"), "application/json") {
			hs := map[string][]string{}
			for k, v := range r.Header {
				hs[strings.ToLower(k)] = v
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery, "host": r.Host, "headers": hs})
			return
		}
		var hs []header
		for k, vs := range r.Header {
			for _, v := range vs {
				name := strings.ToLower(k)
				hs = append(hs, header{name, v, name == "kubeflow-userid" || name == "kubeflow-groups" || strings.HasPrefix(name, "x-auth-request-")})
			}
		}
		sort.Slice(hs, func(i, j int) bool { return hs[i].Name < hs[j].Name })
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		page.Execute(w, map[string]any{
			"UserID": r.Header.Get("Kubeflow-Userid"), "Groups": r.Header.Get("Kubeflow-Groups"),
			"Method": r.Method, "Path": r.URL.RequestURI(), "Headers": hs, "Prefix": prefix,
		})
	})
}
