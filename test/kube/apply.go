package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
)

// Objects decodes a multi-document YAML stream into objects.
func Objects(data []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// Client creates objects of any kind the API server serves, finding each
// kind's resource by discovery (refreshed when a kind is unknown, e.g.
// right after its CRD was installed).
type Client struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

// Client is the admin's dynamic client.
func (a *APIServer) Client(t testing.TB) *Client {
	t.Helper()
	dyn, err := dynamic.NewForConfig(a.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &Client{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(a.Admin.Discovery()))}
}

// Create creates o; with dryRun the API server validates, defaults and
// admits it (schemas, CEL rules, admission) without storing it.
func (c *Client) Create(ctx context.Context, o *unstructured.Unstructured, dryRun bool) error {
	gvk := o.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", gvk, err)
	}
	var r dynamic.ResourceInterface = c.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := o.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		r = c.dyn.Resource(m.Resource).Namespace(ns)
	}
	opts := metav1.CreateOptions{FieldValidation: "Strict"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = r.Create(ctx, o, opts)
	if dryRun && apierrors.IsAlreadyExists(err) {
		// An object that exists already (a Namespace several renderings
		// share, created for the others): validate it as an apply instead.
		data, merr := o.MarshalJSON()
		if merr != nil {
			return merr
		}
		force := true
		_, err = r.Patch(ctx, o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{DryRun: []string{metav1.DryRunAll},
			FieldManager: "dry-run", FieldValidation: "Strict", Force: &force})
	}
	return err
}

// Apply creates every object of the YAML stream (those that exist are
// left alone); any other error fails the test.
func (a *APIServer) Apply(t testing.TB, manifest string) {
	t.Helper()
	objs, err := Objects([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	c := a.Client(t)
	for _, o := range objs {
		if err := c.Create(context.Background(), o, false); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}
