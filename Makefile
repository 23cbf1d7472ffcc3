# oidc-authservice — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
# The release tag on a tagged commit (v0.1.0), git describe after one
# (v0.1.0-3-g1a2b3c4), else the version being prepared (v0.1.0-dev+1a2b3c4).
VERSION ?= $(shell git describe --tags --dirty 2>/dev/null || echo "$$(cat VERSION)-dev+$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
LDFLAGS := -s -w -X main.version=$(VERSION)
# The same command the Dockerfile's build stage runs.
BUILD := CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)"
PKGS := ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.\/-]+:.*## / {printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/oidc-authservice.
	$(BUILD) -o bin/oidc-authservice ./cmd/oidc-authservice

.PHONY: tools
tools: bin/dex-runner ## Build the test peers: Dex runner, ext_authz proxy, demo upstream.
	$(GO) build -o bin/extauthz-proxy ./test/extauthz/cmd/extauthz-proxy
	$(GO) build -o bin/demo-upstream ./test/upstream/cmd/demo-upstream

.PHONY: bin/dex-runner
bin/dex-runner: ## Build the Dex runner (test/dex, its own module) that make run and the tests use.
	cd test/dex && $(GO) build -o ../../bin/dex-runner .

# The Kubernetes API server peer (test/kube, its own module): kube-apiserver
# and an embedded etcd in one binary. Rebuilt only when its module changes:
# the cold build takes about 6 minutes and 2.9 GB on 2 cores, a warm one
# about 40 s (the link).
KUBE_VERSION := v1.37.2
KUBE_LDFLAGS := -s -w -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/component-base/version.buildDate=2026-01-01T00:00:00Z
bin/kube-peer: test/kube/go.mod test/kube/go.sum $(wildcard test/kube/cmd/kube-peer/*.go) ## Build the kube-apiserver peer of make kube-check (cold: about 6 min, 2.9 GB).
	@echo "building bin/kube-peer (kube-apiserver $(KUBE_VERSION) + etcd; cold: about 6 min on 2 cores)"
	@start=$$(date +%s); cd test/kube && $(GO) build -p=2 -ldflags "$(KUBE_LDFLAGS)" -o ../../bin/kube-peer ./cmd/kube-peer \
		&& echo "bin/kube-peer built in $$(( $$(date +%s) - start )) s"

# Jaeger v2 (github.com/jaegertracing/jaeger v1.75.0's cmd/jaeger, an
# OpenTelemetry Collector distribution with in-memory storage) for the
# traces test of make e2e; test/jaeger is a module holding only the tool
# directive, so its dependencies stay out of every other go.mod. Rebuilt
# only when that module changes.
JAEGER_VERSION := v1.75.0
bin/jaeger: test/jaeger/go.mod test/jaeger/go.sum ## Build Jaeger v2 for the traces test of make e2e (test/jaeger; cold: about 10 CPU-minutes, 2.2 GB).
	@echo "building bin/jaeger (Jaeger $(JAEGER_VERSION); cold: see docs/development.md)"
	@start=$$(date +%s); cd test/jaeger && $(GO) build -p=2 -ldflags "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$(JAEGER_VERSION)" -o ../../bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger \
		&& echo "bin/jaeger built in $$(( $$(date +%s) - start )) s"

# Istio's own translation (test/istio, its own module: istio.io/istio, pinned
# in its go.mod): the ingress gateway's Envoy configuration for every layout.
# Rebuilt only when its module changes: the cold build takes 450 CPU-seconds
# and 2.1 GB (about 4 min on 2 idle cores with -p 2; 14 min on this loaded
# machine, 17 with -p 1: test/istio/README.md), a rebuild after an edit 7-20 s.
ISTIO_CONFIG_SRC := test/istio/go.mod test/istio/go.sum $(wildcard test/istio/cmd/istio-config/*.go)
bin/istio-config: $(ISTIO_CONFIG_SRC) ## Build Istio's translation of make istio-config (test/istio; cold: 450 CPU-seconds, 2.1 GB).
	@echo "building bin/istio-config (istio.io/istio's translation; cold: 450 CPU-seconds, 2.1 GB)"
	@start=$$(date +%s); cd test/istio && $(GO) build -p=2 -o ../../bin/istio-config ./cmd/istio-config \
		&& echo "bin/istio-config built in $$(( $$(date +%s) - start )) s"

.PHONY: istio-config
istio-config: bin/istio-config ## Regenerate the gateway's Envoy configuration of every layout with Istio's translation (test/istio/testdata/envoy).
	cd test/manifests && UPDATE=1 $(GO) test -count=1 -run '^TestIstioInputs$$' .
	cd test/istio && ../../bin/istio-config -in testdata/input -out testdata/envoy -keys ../keys

# Open Policy Agent (test/opa, its own module: OPA's dependencies stay out of
# the product's go.mod), the peer of the EXTERNAL_AUTHZ_FORMAT=opa tests.
# Rebuilt only when its module changes: cold (empty module and build caches)
# 252 s on 2 busy cores (209 s of CPU, 0.75 GB of memory, 0.5 GB of build
# cache and 0.47 GB of modules), then cached.
OPA_VERSION := $(shell awk '{for (i = 1; i < NF; i++) if ($$i == "github.com/open-policy-agent/opa") print $$(i+1)}' test/opa/go.mod)
bin/opa-peer: test/opa/go.mod test/opa/go.sum $(wildcard test/opa/cmd/opa-peer/*.go) ## Build Open Policy Agent (test/opa, its own module) for the external-authorizer tests of make test (cold: 3.5 CPU-minutes, 0.75 GB).
	@echo "building bin/opa-peer (Open Policy Agent $(OPA_VERSION); cold: 3.5 CPU-minutes, about 2 min on 2 idle cores)"
	@start=$$(date +%s); cd test/opa && $(GO) build -p=2 -o ../../bin/opa-peer ./cmd/opa-peer \
		&& echo "bin/opa-peer built in $$(( $$(date +%s) - start )) s"

.PHONY: run
run: build tools ## Start Dex, the service, a demo upstream and an Envoy-faithful proxy; log in at http://127.0.0.1:8000/.
	./deploy/local/run.sh

.PHONY: test
test: bin/dex-runner bin/opa-peer ## Run vet and the whole test suite (unit and integration against a real Dex and OPA).
	$(GO) vet $(PKGS)
	DEX_RUNNER=$(CURDIR)/bin/dex-runner OPA_PEER=$(CURDIR)/bin/opa-peer $(GO) test -count=1 -timeout 15m $(PKGS)

# make e2e, not make test, runs the kube-apiserver tests: make test is the
# quick loop and needs only Go and the Dex runner, while the API server peer
# costs a 6-minute, 2.9 GB build the first time (cached afterwards). CI runs
# make e2e.
.PHONY: e2e
e2e: bin/dex-runner bin/jaeger kube-check ## Run the end-to-end scenarios (browser, GitLab-shaped provider, replicas, proxies, traces in Jaeger) and kube-check.
	cd test/e2e && DEX_RUNNER=$(CURDIR)/bin/dex-runner JAEGER=$(CURDIR)/bin/jaeger $(GO) test -count=1 -timeout 20m -tags e2e ./...

.PHONY: kube-check
kube-check: bin/kube-peer bin/dex-runner ## Tests against a real kube-apiserver (test/kube): service-account tokens, the differential table, dry-run of deploy/, the session-key Secret.
	@mkdir -p test/artifacts
	@set -o pipefail; cd test/kube && $(GO) vet ./... && KUBE_PEER=$(CURDIR)/bin/kube-peer DEX_RUNNER=$(CURDIR)/bin/dex-runner $(GO) test -count=1 -timeout 20m -v . 2>&1 \
		| tee ../artifacts/kube-check.log | grep -E '^(--- |ok |FAIL|PASS$$|panic|differential table:|configuration table:)|^    [a-z_]+_test.go:[0-9]+: [^ ]' | grep -v 'differential_test.go:[0-9]*: differential table vs'

.PHONY: soak
soak: bin/dex-runner ## The soak with provider restart and key rotations, SOAK_DURATION long (default 60s); prints figures.
	cd test/e2e && SOAK_DURATION=$${SOAK_DURATION:-60s} DEX_RUNNER=$(CURDIR)/bin/dex-runner $(GO) test -count=1 -timeout 20m -tags e2e -run Soak -v . | grep -E 'soak|^(ok|FAIL|---)'

FUZZTIME ?= 10s
FUZZ_LOG := $(or $(TMPDIR),/tmp)/oidc-authservice-fuzz.log
FUZZ_TARGETS := internal/session:FuzzOpenSession internal/session:FuzzLoginState internal/check:FuzzSafeTarget \
	internal/check:FuzzCallbackQuery internal/check:FuzzForwardedHeaders internal/check:FuzzForwardedURL internal/check:FuzzBackchannelLogoutToken \
	internal/authn:FuzzBearerToken internal/urlpath:FuzzCanonical internal/tokenreview:FuzzAdmissible \
	internal/session:FuzzWithoutOwn internal/session:FuzzDecodeSession internal/session:FuzzOpenAsSecurecookie \
	internal/grpccheck:FuzzDecodeCheckRequest internal/authorizer:FuzzAnswer

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME (default 10s) on top of its seed corpus.
	@set -e; for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg, $(FUZZTIME))"; \
		for try in 1 2; do \
			if $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) ./$$pkg > $(FUZZ_LOG) 2>&1; then cat $(FUZZ_LOG); break; fi; \
			cat $(FUZZ_LOG); \
			if [ $$try = 1 ] && grep -q 'context deadline exceeded' $(FUZZ_LOG) && ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' $(FUZZ_LOG); then \
				echo "== $$name: no failing input, only the fuzz coordinator's own -fuzztime deadline (golang/go#75804, fixed in Go 1.27): once more"; \
			else exit 1; fi; \
		done; done

# make bench and make bench-compare write their results to BENCH_OUT and
# regenerate docs/performance.md from them (test/loadbench/docgen): commit
# both after a run on a quiet machine. BENCH_ROUNDS alternating rounds of
# BENCH_DURATION per path; BENCH_PATHS narrows the paths.
BENCH_OUT ?= docs/bench
BENCH_ROUNDS ?= 5
BENCH_DURATION ?= 5s
BENCH_PATHS ?= session,login,api,sessions,tokens,tokens-first,h2c,grpc
LOADBENCH = $(GO) run ./test/loadbench -dex bin/dex-runner -rounds $(BENCH_ROUNDS) -d $(BENCH_DURATION)
DOCGEN = $(GO) run ./test/loadbench/docgen -bench $(BENCH_OUT)/bench.json -compare $(BENCH_OUT)/compare.json \
	-go $(BENCH_OUT)/go-bench.txt -out docs/performance.md

.PHONY: bench
bench: build bin/dex-runner ## In-process benchmarks, then the service under load against a bare net/http server, path by path; regenerates docs/performance.md.
	@mkdir -p $(BENCH_OUT)
	set -o pipefail; $(GO) test -p 1 -run '^$$' -bench . -benchmem ./internal/... | tee $(BENCH_OUT)/go-bench.txt
	$(LOADBENCH) -bin bin/oidc-authservice -paths $(BENCH_PATHS) -json $(BENCH_OUT)/bench.json
	$(DOCGEN)

# oauth2-proxy as Kubeflow deploys it, built from the Go module proxy into
# bin/ (never into this module's go.mod).
OAUTH2_PROXY_VERSION := v7.15.6
bin/oauth2-proxy: ## Build oauth2-proxy (Kubeflow's version) from the Go module proxy, for make bench-compare.
	GOBIN=$(CURDIR)/bin $(GO) install -ldflags "-X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=$(OAUTH2_PROXY_VERSION)" \
		github.com/oauth2-proxy/oauth2-proxy/v7@$(OAUTH2_PROXY_VERSION)

.PHONY: bench-compare
bench-compare: build bin/dex-runner bin/oauth2-proxy ## The service, oauth2-proxy (Kubeflow's configuration) and a bare server in the same rounds; regenerates docs/performance.md.
	@mkdir -p $(BENCH_OUT)
	$(LOADBENCH) -bin bin/oidc-authservice -compare bin/oauth2-proxy -paths session,login,api,tokens,tokens-first -json $(BENCH_OUT)/compare.json
	$(DOCGEN)

.PHONY: bench-profile
bench-profile: bin/dex-runner ## CPU and allocation profiles and GC traces of the service and of the bare server under load, and where they differ, in test/artifacts/profiles.
	$(GO) build -tags pprof -o bin/oidc-authservice-pprof ./cmd/oidc-authservice
	$(LOADBENCH) -bin bin/oidc-authservice-pprof -rounds 1 -paths $(BENCH_PATHS) -profile test/artifacts/profiles

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: lint
lint: ## gofmt, vet and staticcheck (pinned, run with go run) on the product and the e2e module.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)
	cd test/e2e && $(GO) vet -tags e2e ./... && $(GO) run $(STATICCHECK) -tags e2e ./...
	cd test/execcredential && $(GO) vet ./...
	cd test/kube && $(GO) vet ./...
	cd test/monitoring && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...
	cd test/opa && $(GO) vet ./...

.PHONY: docs
docs: ## Regenerate docs/configuration.md from the configuration struct.
	$(GO) run ./internal/config/gen > docs/configuration.md

.PHONY: manifests-check
manifests-check: ## Render deploy/ with kustomize and validate every object offline against Kubernetes, Istio and Envoy schemas (test/manifests).
	cd test/manifests && $(GO) vet ./... && $(GO) test -count=1 ./...

.PHONY: monitoring-check
monitoring-check: bin/dex-runner ## The dashboard and alerts of deploy/components/monitoring: promtool check/test rules, and a real Prometheus scraping the service (test/monitoring).
	cd test/monitoring && $(GO) vet ./... && DEX_RUNNER=$(CURDIR)/bin/dex-runner $(GO) test -count=1 -timeout 10m ./...

.PHONY: exec-credential-check
exec-credential-check: bin/dex-runner ## client-go's exec authenticator runs `oidc-authservice token` against an HTTPS server (test/execcredential, its own module).
	cd test/execcredential && $(GO) vet ./... && DEX_RUNNER=$(CURDIR)/bin/dex-runner $(GO) test -count=1 -timeout 10m ./...

.PHONY: image-check
image-check: ## Run the Dockerfile's build stage without Docker and check the binary (static, stamped).
	bash test/image/check.sh

DIST_PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64

.PHONY: dist
dist: ## Release binaries of oidc-authservice for linux and darwin on amd64 and arm64, and SHA256SUMS, in dist/.
	rm -rf dist && mkdir -p dist
	@set -e; for p in $(DIST_PLATFORMS); do os=$${p%/*}; arch=$${p#*/}; name=oidc-authservice_$(VERSION)_$${os}_$${arch}; \
		echo "== $$name"; mkdir -p dist/$$name; \
		GOOS=$$os GOARCH=$$arch $(BUILD) -o dist/$$name/oidc-authservice ./cmd/oidc-authservice; \
		cp README.md CHANGELOG.md dist/$$name/; \
		tar -C dist -czf dist/$$name.tar.gz $$name; rm -r dist/$$name; done
	cd dist && sha256sum *.tar.gz > SHA256SUMS

.PHONY: image
image: ## Build the container image (needs a Docker engine).
	docker build --build-arg VERSION=$(VERSION) -t oidc-authservice:$(VERSION) .

.PHONY: release-check
release-check: ## Check that VERSION, CHANGELOG.md, deploy/ and the release workflow agree (run by make image-check).
	bash test/image/release-check.sh

.PHONY: clean
clean: ## Remove build output.
	rm -rf bin dist
