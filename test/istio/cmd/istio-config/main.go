// Command istio-config turns each layout we ship, composed with Kubeflow's
// manifests and rendered by test/manifests (testdata/input/<layout>.json),
// into the Envoy configuration istiod pushes to the ingress gateway, with
// Istio's own translation code (istio.io/istio's pilot/pkg/networking/core,
// the version go.mod pins): the gateway's listeners with their HTTP filter
// chains, the route configurations they name and the clusters those name,
// as protojson with stable key order (testdata/envoy/<layout>.json).
//
//	istio-config -in testdata/input -out testdata/envoy -keys ../testdata/keys
//
// Each layout is translated in a process of its own that runs with the
// rendered istiod's environment (PILOT_ENABLE_AMBIENT and the like are read
// when Istio's packages initialise). istiod fetches each issuer's key set
// itself (discovery, then jwks_uri) and inlines it into the jwt_authn
// filter; here those fetches reach a local server through HTTP_PROXY that
// answers with the fixed test keys of ../testdata/keys (Dex's, the
// cluster's service-account issuer's, the service's upstream-token key), so
// the output is reproducible and its inlined keys are the ones the tests
// sign with. Every other fetch fails, and istiod then inlines a key set
// that fails every token, as it does on a cluster.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	in := flag.String("in", "testdata/input", "folder of rendered layouts (<layout>.json)")
	out := flag.String("out", "testdata/envoy", "folder for the Envoy configurations")
	keys := flag.String("keys", "../testdata/keys", "folder of the fixed test keys")
	one := flag.String("translate", "", "internal: translate this one layout file")
	oneOut := flag.String("to", "", "internal: where -translate writes")
	flag.Parse()
	if *one != "" {
		if err := translateOne(*one, *oneOut); err != nil {
			fmt.Fprintln(os.Stderr, "istio-config:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*in, *out, *keys); err != nil {
		fmt.Fprintln(os.Stderr, "istio-config:", err)
		os.Exit(1)
	}
}

func run(in, out, keysDir string) error {
	ks, err := loadKeys(keysDir)
	if err != nil {
		return err
	}
	srv, err := startJWKSProxy(ks)
	if err != nil {
		return err
	}
	defer srv.Close()
	files, err := filepath.Glob(filepath.Join(in, "*.json"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no layouts in %s", in)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	want := map[string]bool{}
	var failed []string
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		want[name+".json"] = true
		l, err := readLayout(f)
		if err != nil {
			return err
		}
		target := filepath.Join(out, name+".json")
		cmd := exec.Command(self, "-translate", f, "-to", target)
		cmd.Env = childEnv(l, srv.URL, ks)
		var output bytes.Buffer
		cmd.Stdout, cmd.Stderr = &output, &output
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "== %s: %v\n%s\n", name, err, lastLines(output.String(), 40))
			failed = append(failed, name)
			continue
		}
		b, err := os.ReadFile(target)
		if err != nil {
			return err
		}
		fmt.Printf("%-58s %s\n", name, summary(b))
	}
	// Outputs of layouts that no longer exist go.
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		if !want[e.Name()] {
			os.Remove(filepath.Join(out, e.Name()))
		}
	}
	if fetched := srv.fetched(); len(fetched) > 0 {
		fmt.Println("key-set fetches istiod made (answered: the fixed test keys; others failed):")
		for _, f := range fetched {
			fmt.Println("  " + f)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d layouts failed: %s", len(failed), strings.Join(failed, ", "))
	}
	return nil
}

// childEnv is the translating process's environment: the rendered istiod's
// literal variables (Istio reads its feature flags from them at start), the
// proxy for key-set fetches, and the cluster issuer's keys for the CronJob
// of Kubeflow 1.9.0 that copies them into a RequestAuthentication.
func childEnv(l *layout, proxy string, ks *testKeys) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir(),
		"HTTP_PROXY=" + proxy, "HTTPS_PROXY=" + proxy, "NO_PROXY=", "http_proxy=" + proxy, "https_proxy=" + proxy, "no_proxy=",
		"ISTIO_CONFIG_CLUSTER_JWKS=" + string(ks.jwks("serviceaccount"))}
	var names []string
	vars := l.istiodEnv()
	for k := range vars {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		env = append(env, k+"="+vars[k])
	}
	return env
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// summary names the HTTP filters of the output's first HTTP listener.
func summary(b []byte) string {
	var o struct {
		Listeners []struct {
			Name         string `json:"name"`
			FilterChains []struct {
				Filters []struct {
					TypedConfig struct {
						HTTPFilters []struct {
							Name string `json:"name"`
						} `json:"httpFilters"`
					} `json:"typedConfig"`
				} `json:"filters"`
			} `json:"filterChains"`
		} `json:"listeners"`
	}
	if json.Unmarshal(b, &o) != nil {
		return "?"
	}
	var parts []string
	for _, l := range o.Listeners {
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				var names []string
				for _, h := range f.TypedConfig.HTTPFilters {
					names = append(names, strings.TrimPrefix(strings.TrimPrefix(h.Name, "envoy.filters.http."), "istio."))
				}
				if len(names) > 0 {
					parts = append(parts, l.Name+": "+strings.Join(names, " "))
				}
			}
		}
	}
	return strings.Join(parts, "; ")
}
