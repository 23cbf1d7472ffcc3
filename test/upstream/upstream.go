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
<style>body{font:15px/1.5 sans-serif;margin:2rem;max-width:60rem}td{border-bottom:1px solid #ddd;padding:.2rem .6rem;vertical-align:top}code{word-break:break-all}</style>
</head><body>
<h1>oidc-authservice demo upstream</h1>
<p>kubeflow-userid: <strong id="userid">{{.UserID}}</strong></p>
<p>kubeflow-groups: <strong id="groups">{{.Groups}}</strong></p>
<p>path: <code id="path">{{.Path}}</code></p>
<p><a id="logout-link" href="{{.Prefix}}logout">Log out</a> (GET navigation, Kubeflow dashboard ≥ 1.10)
 · <button id="logout-old" type="button">Log out (old dashboard)</button> <span id="logout-status"></span></p>
<table>{{range .Headers}}<tr><td>{{.Name}}</td><td><code>{{.Value}}</code></td></tr>{{end}}</table>
<script>
document.getElementById('logout-old').addEventListener('click', async () => {
  const status = document.getElementById('logout-status');
  const m = document.cookie.split('; ').find(c => c.startsWith('authservice_session='));
  if (!m) { status.textContent = 'no readable authservice_session cookie'; return; }
  const resp = await fetch('{{.Prefix}}logout', {method: 'POST', headers: {Authorization: 'Bearer ' + m.substring('authservice_session='.length)}});
  status.textContent = 'status ' + resp.status;
  if (resp.status === 201) { const body = await resp.json(); window.location.href = body.afterLogoutURL; }
});
</script>
</body></html>`))

type header struct{ Name, Value string }

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
				hs = append(hs, header{strings.ToLower(k), v})
			}
		}
		sort.Slice(hs, func(i, j int) bool { return hs[i].Name < hs[j].Name })
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		page.Execute(w, map[string]any{
			"UserID": r.Header.Get("Kubeflow-Userid"), "Groups": r.Header.Get("Kubeflow-Groups"),
			"Path": r.URL.RequestURI(), "Headers": hs, "Prefix": prefix,
		})
	})
}
