package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshconfig "istio.io/api/mesh/v1alpha1"
	corev1 "k8s.io/api/core/v1"

	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/networking/core"
	kubereg "istio.io/istio/pilot/pkg/serviceregistry/kube"
	"istio.io/istio/pkg/cluster"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/log"
)

// The gateway pod as the harness sees it.
const (
	gatewayIP  = "10.244.0.10"
	gatewayID  = "istio-ingressgateway-0.istio-system"
	clusterID  = cluster.ID("Kubernetes")
	domain     = "cluster.local"
	gatewayNS  = "istio-system"
	gatewayApp = "istio-ingressgateway"
)

// output is what the checked-in file holds.
type output struct {
	Layout string `json:"layout"`
	// Translation is the istio.io/istio module that translated.
	Translation string `json:"translation"`
	// Istiod and Proxy are the versions the rendered Deployments run (the
	// proxy's is its node metadata ISTIO_VERSION, which EnvoyFilter
	// proxyVersion matches read).
	Istiod string `json:"istiod"`
	Proxy  string `json:"proxy"`
	// Listeners, Routes and Clusters are protojson (camelCase names, as
	// Envoy's JSON configuration accepts them); Clusters are only those the
	// listeners and routes name.
	Listeners []json.RawMessage `json:"listeners"`
	Routes    []json.RawMessage `json:"routes"`
	Clusters  []json.RawMessage `json:"clusters"`
}

// failer is the harness's test.Failer outside a test: a failure stops
// the translation.
type failer struct{ cleanups []func() }

type failure struct{ msg string }

func (f *failer) Fail()                          { panic(failure{"failed"}) }
func (f *failer) FailNow()                       { panic(failure{"failed"}) }
func (f *failer) Fatal(args ...any)              { panic(failure{fmt.Sprint(args...)}) }
func (f *failer) Fatalf(format string, a ...any) { panic(failure{fmt.Sprintf(format, a...)}) }
func (f *failer) Log(args ...any)                { fmt.Fprintln(os.Stderr, args...) }
func (f *failer) Logf(format string, a ...any)   { fmt.Fprintf(os.Stderr, format+"\n", a...) }
func (f *failer) Helper()                        {}
func (f *failer) Cleanup(fn func())              { f.cleanups = append(f.cleanups, fn) }
func (f *failer) Skip(args ...any)               { panic(failure{"skip: " + fmt.Sprint(args...)}) }
func (f *failer) TempDir() string {
	d, err := os.MkdirTemp("", "istio-config-")
	if err != nil {
		panic(failure{err.Error()})
	}
	f.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func (f *failer) done() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func translateOne(file, outFile string) (err error) {
	l, err := readLayout(file)
	if err != nil {
		return err
	}
	// Istio logs to stderr at info; the parent shows it on failure only.
	opts := log.DefaultOptions()
	opts.OutputPaths = []string{"stderr"}
	opts.ErrorOutputPaths = []string{"stderr"}
	opts.SetDefaultOutputLevel(log.OverrideScopeName, log.WarnLevel)
	_ = log.Configure(opts)

	f := &failer{}
	defer f.done()
	defer func() {
		if r := recover(); r != nil {
			if fl, ok := r.(failure); ok {
				err = fmt.Errorf("translation failed: %s", fl.msg)
				return
			}
			panic(r)
		}
	}()
	out, err := translate(f, l)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(outFile, append(b, '\n'), 0o644)
}

func translate(f *failer, l *layout) (*output, error) {
	meshCfg := mesh.DefaultMeshConfig()
	if cm := l.object("ConfigMap", "istio-system", "istio"); cm != nil {
		y, _ := mapAt(cm, "data")["mesh"].(string)
		m, err := mesh.ApplyMeshConfigDefaults(y)
		if err != nil {
			return nil, fmt.Errorf("mesh configuration: %w", err)
		}
		meshCfg = m
	}
	if err := runCronJobs(l); err != nil {
		return nil, err
	}
	var configs bytes.Buffer
	var services []*model.Service
	for _, o := range l.Objects {
		api, _ := o["apiVersion"].(string)
		group, _, _ := strings.Cut(api, "/")
		switch {
		case strings.HasSuffix(group, ".istio.io"):
			b, err := json.Marshal(o)
			if err != nil {
				return nil, err
			}
			configs.Write(b)
			configs.WriteString("\n")
		case o["kind"] == "Service" && !strings.Contains(api, "/"):
			svc, err := convertService(o, meshCfg)
			if err != nil {
				return nil, err
			}
			services = append(services, svc)
		}
	}
	gw, instances, err := gatewayProxy(l, services)
	if err != nil {
		return nil, err
	}
	cg := core.NewConfigGenTest(f, core.TestOptions{
		ConfigString: configs.String(),
		MeshConfig:   meshCfg,
		Services:     services,
		Instances:    instances,
	})
	push := cg.PushContext()
	// As istiod's discovery server does: istiod fetches each issuer's key
	// set and inlines it.
	resolver := model.NewJwksResolver(model.JwtPubKeyEvictionDuration, model.JwtPubKeyRefreshInterval,
		model.JwtPubKeyRefreshIntervalOnFailure, model.JwtPubKeyRetryInterval)
	defer resolver.Close()
	push.JwtKeyResolver = resolver
	proxy := cg.SetupProxy(gw)
	listeners := cg.Listeners(proxy)
	if len(listeners) == 0 {
		return nil, fmt.Errorf("no listener was built for the gateway (no Gateway server selects labels %v?)", proxy.Labels)
	}
	routes := cg.RoutesFromListeners(proxy, listeners)
	clusters := cg.Clusters(proxy)

	o := &output{Layout: l.Name, Translation: translationVersion(), Istiod: l.istiodVersion(), Proxy: proxy.Metadata.IstioVersion}
	named := map[string]bool{}
	for _, x := range listeners {
		b, err := stable(x)
		if err != nil {
			return nil, err
		}
		collectClusters(b, named)
		o.Listeners = append(o.Listeners, b)
	}
	sort.Slice(routes, func(i, j int) bool { return routes[i].Name < routes[j].Name })
	for _, x := range routes {
		b, err := stable(x)
		if err != nil {
			return nil, err
		}
		collectClusters(b, named)
		o.Routes = append(o.Routes, b)
	}
	sort.Slice(clusters, func(i, j int) bool { return clusters[i].Name < clusters[j].Name })
	for _, c := range clusters {
		if !named[c.Name] {
			continue
		}
		b, err := stable(c)
		if err != nil {
			return nil, err
		}
		o.Clusters = append(o.Clusters, b)
	}
	return o, nil
}

// stable is protojson with sorted keys and fixed indentation (protojson's
// own output varies its whitespace on purpose).
func stable(m proto.Message) (json.RawMessage, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// collectClusters adds the names of the clusters a configuration refers to.
func collectClusters(b []byte, named map[string]bool) {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return
	}
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if s, ok := e.(string); ok && (k == "cluster" || k == "clusterName") {
					named[s] = true
				}
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
}

func translationVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "istio.io/istio" {
				return d.Path + " " + d.Version
			}
		}
	}
	return "istio.io/istio (unknown version)"
}

func (l *layout) istiodVersion() string {
	if d := l.object("Deployment", "istio-system", "istiod"); d != nil {
		return imageTag(container(d, "discovery"))
	}
	return ""
}

func convertService(o map[string]any, m *meshconfig.MeshConfig) (*model.Service, error) {
	b, _ := json.Marshal(o)
	var svc corev1.Service
	if err := json.Unmarshal(b, &svc); err != nil {
		return nil, fmt.Errorf("Service %v: %w", mapAt(o, "metadata")["name"], err)
	}
	return kubereg.ConvertService(svc, nil, domain, clusterID, m.TrustDomain), nil
}

// gatewayProxy is the ingress gateway's pod as istiod sees it: a Router in
// istio-system with the rendered Deployment's pod labels and node metadata
// (its ISTIO_META_* variables), its Istio version, and the endpoints of its
// Service (port 80 -> target 8080: an unprivileged gateway listens there).
func gatewayProxy(l *layout, services []*model.Service) (*model.Proxy, []*model.ServiceInstance, error) {
	d := l.object("Deployment", gatewayNS, gatewayApp)
	if d == nil {
		return nil, nil, fmt.Errorf("no rendered Deployment %s/%s", gatewayNS, gatewayApp)
	}
	labels := map[string]string{}
	for k, v := range mapAt(d, "spec", "template", "metadata", "labels") {
		labels[k] = fmt.Sprint(v)
	}
	c := container(d, "istio-proxy")
	if c == nil {
		return nil, nil, fmt.Errorf("the gateway Deployment has no istio-proxy container")
	}
	meta := map[string]any{}
	for k, v := range literalEnv(c) {
		if name, ok := strings.CutPrefix(k, "ISTIO_META_"); ok {
			meta[name] = v
		}
	}
	b, _ := json.Marshal(meta)
	var nm model.NodeMetadata
	if err := json.Unmarshal(b, &nm); err != nil {
		return nil, nil, fmt.Errorf("the gateway's ISTIO_META_ variables: %w", err)
	}
	nm.Namespace = gatewayNS
	nm.Labels = labels
	nm.ClusterID = clusterID
	nm.IstioVersion = imageTag(c)
	if nm.IstioVersion == "" {
		return nil, nil, fmt.Errorf("the gateway's image has no version tag")
	}
	proxy := &model.Proxy{
		Type:            model.Router,
		IPAddresses:     []string{gatewayIP},
		ID:              gatewayID,
		ConfigNamespace: gatewayNS,
		DNSDomain:       gatewayNS + ".svc." + domain,
		Labels:          labels,
		Metadata:        &nm,
	}
	var gwSvc *model.Service
	for _, s := range services {
		if s.Attributes.Name == gatewayApp && s.Attributes.Namespace == gatewayNS {
			gwSvc = s
		}
	}
	if gwSvc == nil {
		return nil, nil, fmt.Errorf("no rendered Service %s/%s", gatewayNS, gatewayApp)
	}
	svcObj := l.object("Service", gatewayNS, gatewayApp)
	var instances []*model.ServiceInstance
	for _, p := range list(mapAt(svcObj, "spec")["ports"]) {
		pm, _ := p.(map[string]any)
		port, _ := pm["port"].(float64)
		target := port
		if t, ok := pm["targetPort"].(float64); ok {
			target = t
		}
		sp, ok := gwSvc.Ports.GetByPort(int(port))
		if !ok {
			continue
		}
		instances = append(instances, &model.ServiceInstance{
			Service:     gwSvc,
			ServicePort: sp,
			Endpoint: &model.IstioEndpoint{
				Addresses:       []string{gatewayIP},
				EndpointPort:    uint32(target),
				ServicePortName: sp.Name,
				Labels:          labels,
				Namespace:       gatewayNS,
			},
		})
	}
	return proxy, instances, nil
}

// runCronJobs does what Kubeflow 1.9.0's CronJob kubeflow-m2m-oidc-configurator
// does on a cluster: it copies the API server's key set (its
// /openid/v1/jwks) into spec.jwtRules[0].jwks of the RequestAuthentication
// its ConfigMap names, because istiod cannot fetch it from the self-signed
// API server.
func runCronJobs(l *layout) error {
	for _, o := range l.Objects {
		if o["kind"] != "CronJob" {
			continue
		}
		ns, _ := mapAt(o, "metadata")["namespace"].(string)
		env := map[string]string{}
		for _, c := range list(mapAt(o, "spec", "jobTemplate", "spec", "template", "spec")["containers"]) {
			for _, ef := range list(c.(map[string]any)["envFrom"]) {
				name, _ := mapAt(ef.(map[string]any), "configMapRef")["name"].(string)
				cm := l.object("ConfigMap", ns, name)
				for k, v := range mapAt(cm, "data") {
					env[k] = fmt.Sprint(v)
				}
			}
		}
		raName, raNS := env["REQUEST_AUTHENTICATION_NAME"], env["ISTIO_ROOT_NAMESPACE"]
		if raName == "" {
			continue
		}
		ra := l.object("RequestAuthentication", raNS, raName)
		if ra == nil {
			return fmt.Errorf("CronJob %s fills RequestAuthentication %s/%s, which is not rendered", mapAt(o, "metadata")["name"], raNS, raName)
		}
		rules := list(mapAt(ra, "spec")["jwtRules"])
		if len(rules) == 0 {
			return fmt.Errorf("RequestAuthentication %s/%s has no jwtRules", raNS, raName)
		}
		rules[0].(map[string]any)["jwks"] = os.Getenv("ISTIO_CONFIG_CLUSTER_JWKS")
	}
	return nil
}
