package manifests

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// meshSource is one place the manifests declare mesh configuration.
type meshSource struct {
	Name string
	Mesh *meshv1alpha1.MeshConfig
	Err  error
}

// decodeMesh decodes YAML mesh configuration strictly into Istio's MeshConfig
// (unknown fields are errors).
func decodeMesh(y []byte) (*meshv1alpha1.MeshConfig, error) {
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		return nil, err
	}
	var mc meshv1alpha1.MeshConfig
	if err := protojson.Unmarshal(j, &mc); err != nil {
		return nil, err
	}
	return &mc, nil
}

// fakeIstio is the part of an Istio installation the kubeflow-jwt/mesh
// component patches: the istio ConfigMap and the istiod Deployment.
const fakeIstio = `apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |-
    rootNamespace: istio-system
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: istiod
  namespace: istio-system
spec:
  selector:
    matchLabels:
      app: istiod
  template:
    metadata:
      labels:
        app: istiod
    spec:
      containers:
      - name: discovery
        image: docker.io/istio/pilot
        env:
        - name: REVISION
          value: default
`

var (
	meshOnce    sync.Once
	meshSources []meshSource
	meshIstiod  *object
	// grpcMeshSources: the gRPC overlay's (istio-extension-provider-grpc).
	grpcMeshSources []meshSource
)

func loadMeshSources() []meshSource {
	meshOnce.Do(func() {
		add := func(name string, y []byte, err error) {
			ms := meshSource{Name: name, Err: err}
			if err == nil {
				ms.Mesh, ms.Err = decodeMesh(y)
			}
			meshSources = append(meshSources, ms)
		}
		addGRPC := func(name string, y []byte, err error) {
			ms := meshSource{Name: name, Err: err}
			if err == nil {
				ms.Mesh, ms.Err = decodeMesh(y)
			}
			grpcMeshSources = append(grpcMeshSources, ms)
		}
		sub := func(file string, keys ...string) ([]byte, error) {
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, err
			}
			var m map[string]any
			if err := yaml.Unmarshal(b, &m); err != nil {
				return nil, err
			}
			var v any = m
			for _, k := range keys {
				mm, _ := v.(map[string]any)
				if v = mm[k]; v == nil {
					return nil, fmt.Errorf("%s: no %v", file, keys)
				}
			}
			return json.Marshal(v)
		}
		dir := deployDir("overlays", "istio-extension-provider", "mesh")
		y, err := sub(filepath.Join(dir, "istiod-values.yaml"), "meshConfig")
		add("istio-extension-provider/mesh/istiod-values.yaml", y, err)
		y, err = sub(filepath.Join(dir, "istio-operator.yaml"), "spec", "meshConfig")
		add("istio-extension-provider/mesh/istio-operator.yaml", y, err)
		dir = deployDir("overlays", "istio-extension-provider-grpc", "mesh")
		y, err = sub(filepath.Join(dir, "istiod-values.yaml"), "meshConfig")
		addGRPC("istio-extension-provider-grpc/mesh/istiod-values.yaml", y, err)
		y, err = sub(filepath.Join(dir, "istio-operator.yaml"), "spec", "meshConfig")
		addGRPC("istio-extension-provider-grpc/mesh/istio-operator.yaml", y, err)

		// The kubeflow-jwt/mesh component, applied to a stand-in for Istio.
		y, err = func() ([]byte, error) {
			base, err := os.MkdirTemp("", "istio-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(base)
			if err := os.WriteFile(filepath.Join(base, "istio.yaml"), []byte(fakeIstio), 0o644); err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(base, "kustomization.yaml"), []byte("resources:\n- istio.yaml\n"), 0o644); err != nil {
				return nil, err
			}
			h, err := writeHarness([]string{base}, []string{deployDir("overlays", "kubeflow-jwt", "mesh")})
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(h)
			objs, err := kustomize(h)
			if err != nil {
				return nil, err
			}
			var mesh []byte
			for _, o := range objs {
				switch o.Kind {
				case "ConfigMap":
					mesh = []byte(typed[corev1.ConfigMap](o).Data["mesh"])
				case "Deployment":
					meshIstiod = o
				}
			}
			return mesh, nil
		}()
		add("kubeflow-jwt/mesh (istio ConfigMap)", y, err)
	})
	return meshSources
}

// declaredProvider is the extension provider "oidc-authservice" as the mesh
// snippets declare it (TestMeshConfig checks they agree).
func declaredProvider() (*meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationHttpProvider, error) {
	for _, ms := range loadMeshSources() {
		if ms.Err != nil {
			return nil, fmt.Errorf("%s: %w", ms.Name, ms.Err)
		}
		for _, p := range ms.Mesh.GetExtensionProviders() {
			if p.GetName() == providerName && p.GetEnvoyExtAuthzHttp() != nil {
				return p.GetEnvoyExtAuthzHttp(), nil
			}
		}
	}
	return nil, fmt.Errorf("no mesh snippet declares the extension provider %s", providerName)
}

// declaredGRPCProvider is the extension provider "oidc-authservice-grpc"
// as the gRPC overlay's mesh snippets declare it (TestGRPCMeshConfig checks
// they agree).
func declaredGRPCProvider() (*meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider, error) {
	loadMeshSources()
	for _, ms := range grpcMeshSources {
		if ms.Err != nil {
			return nil, fmt.Errorf("%s: %w", ms.Name, ms.Err)
		}
		for _, p := range ms.Mesh.GetExtensionProviders() {
			if p.GetName() == grpcProviderName && p.GetEnvoyExtAuthzGrpc() != nil {
				return p.GetEnvoyExtAuthzGrpc(), nil
			}
		}
	}
	return nil, fmt.Errorf("no mesh snippet declares the extension provider %s", grpcProviderName)
}

// TestGRPCMeshConfig: the gRPC overlay's mesh snippets decode strictly and
// declare the same gRPC provider: closed, 10 s, no request body.
func TestGRPCMeshConfig(t *testing.T) {
	loadMeshSources()
	if len(grpcMeshSources) != 2 {
		t.Fatalf("%d gRPC mesh snippets, want 2", len(grpcMeshSources))
	}
	var first *meshv1alpha1.MeshConfig_ExtensionProvider
	for _, ms := range grpcMeshSources {
		if ms.Err != nil {
			t.Errorf("%s: %v", ms.Name, ms.Err)
			continue
		}
		ps := ms.Mesh.GetExtensionProviders()
		if len(ps) != 1 || ps[0].GetName() != grpcProviderName || ps[0].GetEnvoyExtAuthzGrpc() == nil {
			t.Errorf("%s: want one envoyExtAuthzGrpc provider %s", ms.Name, grpcProviderName)
			continue
		}
		p := ps[0].GetEnvoyExtAuthzGrpc()
		if p.GetFailOpen() || p.GetTimeout().AsDuration().Seconds() != 10 || p.GetIncludeRequestBodyInCheck() != nil || p.GetPort() != 9000 ||
			p.GetService() != serviceDNS {
			t.Errorf("%s: %v, want %s:9000, closed, 10 s, no body", ms.Name, p, serviceDNS)
		}
		if first == nil {
			first = ps[0]
		} else if !proto.Equal(first, ps[0]) {
			t.Errorf("%s: the provider differs from %s's", ms.Name, grpcMeshSources[0].Name)
		}
	}
}

// TestMeshConfig: every mesh snippet decodes strictly into Istio's MeshConfig
// and declares the same provider.
func TestMeshConfig(t *testing.T) {
	var first *meshv1alpha1.MeshConfig_ExtensionProvider
	for _, ms := range loadMeshSources() {
		if ms.Err != nil {
			t.Errorf("%s: %v", ms.Name, ms.Err)
			continue
		}
		var mine []*meshv1alpha1.MeshConfig_ExtensionProvider
		for _, p := range ms.Mesh.GetExtensionProviders() {
			if p.GetName() == providerName {
				mine = append(mine, p)
			}
		}
		if len(mine) != 1 || mine[0].GetEnvoyExtAuthzHttp() == nil {
			t.Errorf("%s: want one envoyExtAuthzHttp provider %s", ms.Name, providerName)
			continue
		}
		p := mine[0].GetEnvoyExtAuthzHttp()
		if p.GetFailOpen() {
			t.Errorf("%s: failOpen must be false", ms.Name)
		}
		if p.GetTimeout().AsDuration().Seconds() != 10 {
			t.Errorf("%s: timeout %v, want 10s", ms.Name, p.GetTimeout().AsDuration())
		}
		if p.GetPathPrefix() != "" || len(p.GetIncludeHeadersInCheck()) > 0 {
			t.Errorf("%s: no pathPrefix, and includeRequestHeadersInCheck rather than the deprecated includeHeadersInCheck", ms.Name)
		}
		if first == nil {
			first = mine[0]
		} else if !proto.Equal(first, mine[0]) {
			t.Errorf("%s: the provider differs from %s's", ms.Name, loadMeshSources()[0].Name)
		}
	}
	if meshIstiod == nil {
		t.Fatal("kubeflow-jwt/mesh: no istiod Deployment rendered")
	}
	if errs := validateObject(meshIstiod); len(errs) > 0 {
		t.Errorf("istiod: %v", errs)
	}
	var env []string
	for _, c := range typed[appsv1.Deployment](meshIstiod).Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	if !slices.Contains(env, "PILOT_JWT_PUB_KEY_REFRESH_INTERVAL=1m") || !slices.Contains(env, "REVISION=default") {
		t.Errorf("istiod env %v: the patch must add PILOT_JWT_PUB_KEY_REFRESH_INTERVAL=1m and keep the rest", env)
	}
	b, err := os.ReadFile(filepath.Join(deployDir("overlays", "istio-extension-provider", "mesh"), "istio-operator.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var op struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(b, &op); err != nil || op.APIVersion != "install.istio.io/v1alpha1" || op.Kind != "IstioOperator" {
		t.Errorf("istio-operator.yaml: %s %s %v", op.APIVersion, op.Kind, err)
	}
}
