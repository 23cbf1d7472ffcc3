// Command kube-peer is a real Kubernetes API server for tests: the
// kube-apiserver of k8s.io/kubernetes (the release this module pins) over an
// embedded etcd, in one process, on 127.0.0.1. There is no controller-manager,
// scheduler or kubelet: objects are stored and validated, tokens minted and
// reviewed, nothing runs.
//
//	kube-peer -etcd-port 2379 -- --secure-port=6443 --tls-cert-file=... [kube-apiserver flags]
//	kube-peer version
//
// Everything after "--" goes to kube-apiserver unchanged; --etcd-servers is
// added. The package test/kube (StartAPIServer) writes the certificates, keys
// and flags; see docs/development.md.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"time"
	_ "time/tzdata" // as cmd/kube-apiserver

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // as cmd/kube-apiserver
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // as cmd/kube-apiserver
	_ "k8s.io/component-base/metrics/prometheus/version"  // as cmd/kube-apiserver
	"k8s.io/component-base/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "version" {
		fmt.Println(version.Get().GitVersion)
		return
	}
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("kube-peer", flag.ContinueOnError)
	etcdDir := fs.String("etcd-dir", "", "etcd data directory (default: a new temporary one, removed at exit)")
	etcdPort := fs.Int("etcd-port", 0, "etcd client port on 127.0.0.1 (required)")
	etcdPeerPort := fs.Int("etcd-peer-port", 0, "etcd peer port on 127.0.0.1 (default: client port + 1)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *etcdPort == 0 {
		fmt.Fprintln(os.Stderr, "kube-peer: -etcd-port is required")
		return 2
	}
	if *etcdPeerPort == 0 {
		*etcdPeerPort = *etcdPort + 1
	}
	if *etcdDir == "" {
		d, err := os.MkdirTemp("", "kube-peer-etcd-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "kube-peer:", err)
			return 1
		}
		defer os.RemoveAll(d)
		*etcdDir = d
	}

	etcd, err := startEtcd(*etcdDir, *etcdPort, *etcdPeerPort)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube-peer: etcd:", err)
		return 1
	}
	defer etcd.Close()

	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(append([]string{"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(*etcdPort)}, fs.Args()...))
	return cli.Run(cmd)
}

// startEtcd runs a single-member etcd for the API server's storage. Nothing
// survives the process, so fsync is off.
func startEtcd(dir string, clientPort, peerPort int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.Name = "kube-peer"
	client := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(clientPort)}
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(peerPort)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("not ready after 60s")
	}
}
