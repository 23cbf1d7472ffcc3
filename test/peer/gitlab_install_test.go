package peer

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGitLabInstallAcrossProcesses: go test runs the packages that start the
// GitLab-shaped provider as separate processes at once. Each used to run
// npm ci when node_modules/oidc-provider was missing, and npm ci deletes
// node_modules first: one process's install removed another's files, or one
// found oidc-provider half extracted and node failed with
// ERR_MODULE_NOT_FOUND (CI of stop 29). Four processes now install into one
// fresh directory at once; each must return with oidc-provider complete.
func TestGitLabInstallAcrossProcesses(t *testing.T) {
	if dir := os.Getenv("GITLABOP_INSTALL_DIR"); dir != "" {
		if err := installGitLabProvider(dir); err != nil {
			t.Fatal(err)
		}
		// What node resolves when server.mjs imports oidc-provider.
		out, err := exec.Command("node", "--input-type=module", "-e",
			`import(process.argv[1]).then(m => { if (typeof m.default !== "function") process.exit(3) })`,
			filepath.Join(dir, "node_modules", "oidc-provider", "lib", "index.js")).CombinedOutput()
		if err != nil {
			t.Fatalf("oidc-provider not complete after install: %v: %s", err, out)
		}
		return
	}
	if _, err := exec.LookPath("npm"); err != nil {
		Require(t, "npm", err)
	}
	dir := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(gitlabDir(), f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const n = 4
	cmds := make([]*exec.Cmd, n)
	outs := make([]*bytes.Buffer, n)
	for i := range cmds {
		outs[i] = &bytes.Buffer{}
		cmds[i] = exec.Command(os.Args[0], "-test.run=^TestGitLabInstallAcrossProcesses$", "-test.count=1", "-test.v")
		cmds[i].Env = append(os.Environ(), "GITLABOP_INSTALL_DIR="+dir)
		cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("process %d: %v\n%s", i, err, outs[i].String())
		}
	}
}
