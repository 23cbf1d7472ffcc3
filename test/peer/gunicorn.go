package peer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/oidc-authservice/oidc-authservice/test/groupnames"
)

// echoWSGI answers every request with what it received, as JSON in the
// shape of test/upstream's answer (method, path, query, host, headers by
// lower-case name), so the tests read both alike.
const echoWSGI = `import json

def application(environ, start_response):
    headers = {}
    for k, v in environ.items():
        if k.startswith('HTTP_'):
            headers.setdefault(k[5:].lower().replace('_', '-'), []).append(v)
    for k in ('CONTENT_TYPE', 'CONTENT_LENGTH'):
        if environ.get(k):
            headers.setdefault(k.lower().replace('_', '-'), []).append(environ[k])
    body = json.dumps({'method': environ['REQUEST_METHOD'], 'path': environ.get('PATH_INFO', ''),
                       'query': environ.get('QUERY_STRING', ''), 'host': environ.get('HTTP_HOST', ''),
                       'headers': headers}).encode()
    start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))])
    return [body]
`

// StartGunicorn runs Debian's gunicorn, with its default limits (a header
// line of at most 8,190 bytes, at most 100 header fields: Kubeflow's Python
// web apps run on it), serving an application that echoes each request as
// JSON; it returns its URL. gunicorn answers a request over its limits
// with 400 itself.
func StartGunicorn(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("gunicorn")
	if err != nil {
		bin, err = exec.LookPath("/usr/bin/gunicorn")
	}
	Require(t, "gunicorn (apt-get install gunicorn)", err)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "echo.py"), []byte(echoWSGI), 0o644); err != nil {
		t.Fatal(err)
	}
	var url string
	OnFreePorts(t, "gunicorn", 1, func(ports []int) error {
		url = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		cmd := exec.Command(bin, "--bind", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--workers", "1", "--chdir", dir,
			"--error-logfile", "-", "--access-logfile", "-", "echo:application")
		p, err := startProcess(t, cmd, "gunicorn.log", nil, syscall.SIGTERM)
		if err != nil {
			return err
		}
		// gunicorn retries a taken port for 5 s ("Connection in use"),
		// then exits.
		return p.waitReady("gunicorn", answers200(url+"/"), 20*time.Second, ports[0])
	})
	return url
}

// GroupNames, KubeflowGroups and KubeflowGroupsFilter: see test/groupnames.
var (
	GroupNames     = groupnames.List
	KubeflowGroups = groupnames.Kubeflow
)

// KubeflowGroupsFilter is the documented GROUPS_FILTER for GroupNames.
const KubeflowGroupsFilter = groupnames.Filter
