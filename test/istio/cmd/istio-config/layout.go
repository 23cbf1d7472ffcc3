package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// layout is one rendered composition, as test/manifests writes it: the
// objects istiod and the gateway are configured from.
type layout struct {
	Name    string           `json:"name"`
	Objects []map[string]any `json:"objects"`
}

func readLayout(file string) (*layout, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var l layout
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &l, nil
}

func (l *layout) object(kind, namespace, name string) map[string]any {
	for _, o := range l.Objects {
		md := mapAt(o, "metadata")
		if o["kind"] == kind && md["namespace"] == namespace && md["name"] == name {
			return o
		}
	}
	return nil
}

// container is a Deployment's container of that name (the first one when
// name is empty).
func container(d map[string]any, name string) map[string]any {
	for _, c := range list(mapAt(d, "spec", "template", "spec")["containers"]) {
		cm, _ := c.(map[string]any)
		if name == "" || cm["name"] == name {
			return cm
		}
	}
	return nil
}

// literalEnv are a container's variables with a literal value.
func literalEnv(c map[string]any) map[string]string {
	out := map[string]string{}
	for _, e := range list(c["env"]) {
		em, _ := e.(map[string]any)
		if v, ok := em["value"].(string); ok {
			out[fmt.Sprint(em["name"])] = v
		}
	}
	return out
}

// imageTag is the tag of a container's image (the Istio version).
func imageTag(c map[string]any) string {
	img, _ := c["image"].(string)
	if i := strings.LastIndex(img, ":"); i >= 0 && !strings.Contains(img[i:], "/") {
		return img[i+1:]
	}
	return ""
}

// istiodEnv is the rendered istiod's literal environment, without the
// variables that name files or the pod (the harness has neither).
func (l *layout) istiodEnv() map[string]string {
	d := l.object("Deployment", "istio-system", "istiod")
	if d == nil {
		return nil
	}
	env := literalEnv(container(d, "discovery"))
	for _, k := range []string{"KUBECONFIG", "POD_NAME", "POD_NAMESPACE", "SERVICE_ACCOUNT", "GOMAXPROCS", "GOMEMLIMIT", "REVISION", "PLATFORM"} {
		delete(env, k)
	}
	return env
}

func mapAt(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		m, _ = m[k].(map[string]any)
	}
	return m
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}
