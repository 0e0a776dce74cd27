# Meshwright — build, test and demo.
#
#   make demo   start the local cluster, run the operator, apply the sample MeshInstallation
#   make test   unit, integration (envtest) and end-to-end (local cluster) tests
#
# The first run builds the local cluster's components from Go modules (≈30 minutes on 2 cores);
# they are cached per user under ~/.cache/meshwright and reused by every checkout afterwards.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

# The Go module proxy is the only registry reachable here; never fall back to fetching from VCS.
export GOPROXY := $(shell go env GOPROXY | sed -e 's/,direct$$//' -e 's/|direct$$//')
export GOFLAGS := -buildvcs=false
export CGO_ENABLED ?= 0

BIN := $(CURDIR)/bin
export MESHWRIGHT_BIN_DIR := $(BIN)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMG ?= meshwright/meshwright:$(VERSION)

K8S_VERSION := 1.37.2
KUBE_LDFLAGS := -s -w -X k8s.io/component-base/version.gitVersion=v$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37
CONTROLLER_GEN_VERSION := v0.23.0
KUSTOMIZE_VERSION := v5.8.2

# govulncheck and its database, both from Go modules (the public database cannot be reached):
# the database is built from golang.org/x/vulndb's data/osv with its own cmd/indexdb.
GOLANGCI_LINT_VERSION := v2.15.0
GOVULNCHECK_VERSION := v1.9.0
VULNDB_VERSION := v0.0.0-20261105234957-e22db6528018

CONTROLLER_GEN := $(BIN)/controller-gen-$(CONTROLLER_GEN_VERSION)
GOVULNCHECK := $(BIN)/govulncheck-$(GOVULNCHECK_VERSION)
GOLANGCI_LINT := $(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
VULNDB := $(BIN)/vulndb-$(VULNDB_VERSION)
KUSTOMIZE := $(BIN)/kustomize-$(KUSTOMIZE_VERSION)
KUBECTL ?= $(shell [ -x $(BIN)/kubectl ] && echo $(BIN)/kubectl || echo kubectl)
DEMO_DIR := $(CURDIR)/.demo

E2E_TIMEOUT ?= 30m

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and RBAC manifests from the markers in the code.
	@# What the roles of Istio's charts grant, which the operator must hold to create them (no escalate).
	go run ./hack/chartrbac > internal/controlplane/zz_generated.chartrbac.go.tmp
	@mv internal/controlplane/zz_generated.chartrbac.go.tmp internal/controlplane/zz_generated.chartrbac.go
	@# The Gateway API's standard-channel CRDs, from the module go.mod requires, for ambient mode.
	go run ./hack/gatewayapicrds > internal/gatewayapi/zz_generated.crds.yaml.tmp
	@mv internal/gatewayapi/zz_generated.crds.yaml.tmp internal/gatewayapi/zz_generated.crds.yaml
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./api/...;./controllers/...;./internal/...;./cmd/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@# The Helm chart ships the same CRDs and the same manager rules.
	@cp config/crd/bases/*.yaml charts/meshwright/crds/
	@cp config/rbac/role.yaml charts/meshwright/files/manager-role.yaml
	@# And the same alerts and dashboard.
	@cp config/prometheus/rules.yaml charts/meshwright/files/prometheus-rules.yaml
	@cp config/grafana/meshwright-dashboard.json charts/meshwright/files/grafana-dashboard.json

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate the DeepCopy methods of the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

GENERATED := api/v1alpha1/zz_generated.deepcopy.go internal/controlplane/zz_generated.chartrbac.go internal/gatewayapi/zz_generated.crds.yaml config/crd/bases/*.yaml config/rbac/role.yaml charts/meshwright/crds/*.yaml charts/meshwright/files/manager-role.yaml \
	charts/meshwright/files/prometheus-rules.yaml charts/meshwright/files/grafana-dashboard.json docs/api.md

.PHONY: docs
docs: manifests ## Write docs/api.md, the API reference, from the CRD generated from the Go types.
	go run ./hack/apidocs config/crd/bases/meshwright.io_meshinstallations.yaml > docs/api.md

.PHONY: verify-generated
verify-generated: $(CONTROLLER_GEN) ## Fail if generated files differ from what the markers produce.
	@before=$$(cat $(GENERATED) | sha256sum); \
	$(MAKE) -s manifests generate docs >/dev/null; \
	if [ "$$before" != "$$(cat $(GENERATED) | sha256sum)" ]; then \
		git --no-pager diff -- $(GENERATED); \
		echo "generated files were out of date and have been regenerated: review and commit them" >&2; exit 1; fi

.PHONY: lint
lint: $(GOLANGCI_LINT) ## golangci-lint (.golangci.yml: the defaults, gosec, errorlint, nilerr, noctx, bodyclose) on both modules: zero findings.
	$(GOLANGCI_LINT) run ./...
	cd test && $(GOLANGCI_LINT) run ./...

.PHONY: verify-vulns
verify-vulns: $(GOVULNCHECK) $(VULNDB) ## Fail on a known vulnerability reachable from the shipped binaries (offline database; allow-list in docs/security.md).
	$(GOVULNCHECK) -db file://$(VULNDB) -format json ./cmd/... | go run ./hack/vulncheck -allow docs/security.md

.PHONY: verify-kustomize
verify-kustomize: $(KUSTOMIZE) ## Fail if a kustomization under config/ does not build.
	@for k in config/default config/crd config/rbac config/manager config/samples config/prometheus config/grafana; do \
		$(KUSTOMIZE) build $$k > /dev/null || { echo "kustomize build $$k failed" >&2; exit 1; }; done

.PHONY: fmt
fmt: ## Format the Go code.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Vet every module.
	go vet ./...
	cd test && go vet ./...

.PHONY: lint-fmt
lint-fmt:
	@out=$$(git ls-files --cached --others --exclude-standard '*.go' | while read -r f; do [ ! -f "$$f" ] || echo "$$f"; done | xargs -r gofmt -l); if [ -n "$$out" ]; then echo "gofmt needed on:" $$out >&2; exit 1; fi

##@ Test

.PHONY: test
test: lint-fmt vet lint verify-generated verify-kustomize verify-vulns test-unit test-e2e ## Run every test: unit, integration (envtest) and e2e (local cluster).

.PHONY: test-unit
test-unit: cluster-bins ## Unit and integration tests (envtest on the locally built etcd and kube-apiserver).
	KUBEBUILDER_ASSETS=$(BIN) go test ./... -count=1

E2E_FILTER = grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+\.go:[0-9]+:)'
# gotestsum (a tool of the test module) runs go test and, at the end, prints the whole output of
# every test that failed, the continuation lines of its logs (the operator's, istiod's) included,
# which E2E_FILTER keeps out of the stream; E2E_FAILED shows that summary from the log $(1) on
# failure (its tail when there is none: a build that failed).
GOTESTSUM = go tool gotestsum --format standard-verbose --hide-summary skipped --no-color
E2E_FAILED = { grep -qE '^=== (Failed|Errors)$$' $(1) && sed -n -E '/^=== (Failed|Errors)$$/,$$p' $(1) || tail -n 80 $(1); }

.PHONY: test-e2e
test-e2e: cluster-bins olm-bins ## End-to-end tests on the local cluster, the OLM ones included.
	cd test && $(GOTESTSUM) -- ./... -p 1 -count=1 -timeout $(E2E_TIMEOUT) 2>&1 | tee $(BIN)/e2e.log | $(E2E_FILTER) || { $(call E2E_FAILED,$(BIN)/e2e.log); exit 1; }

.PHONY: test-olm
test-olm: cluster-bins olm-bins ## Only the OLM tests: install from the README, upgrade, uninstall, what is missing.
	cd test && $(GOTESTSUM) -- ./e2e -run '^TestOLM' -count=1 -timeout $(E2E_TIMEOUT) 2>&1 | tee $(BIN)/e2e-olm.log | $(E2E_FILTER) || { $(call E2E_FAILED,$(BIN)/e2e-olm.log); exit 1; }

CHAOS_TRIALS ?= 20

.PHONY: test-chaos
test-chaos: cluster-bins ## Kill the operator at random moments of a rollout, CHAOS_TRIALS times (a new seed each; a failure prints its E2E_SEED).
	cd test && go test ./e2e -run '^TestLadderSurvivesOperatorKills$$' -count=$(CHAOS_TRIALS) -timeout 0 -v 2>&1 | tee $(BIN)/e2e-chaos.log | grep -E '^(--- |ok|FAIL)|seed|converged after' || { tail -n 80 $(BIN)/e2e-chaos.log; exit 1; }

BENCH_RUNS ?= 3
SCALE_PODS ?= 3

# make bench runs the scale benchmark at its smallest size (a few minutes); make bench-scale runs
# every size (1,000 namespaces take about 25 minutes on two cores).
BENCH_SCALE_NAMESPACES ?= 100

.PHONY: bench
bench: cluster-bins ## Benchmarks (print figures, assert nothing): time to Ready against the floor, API requests, render cost, scale and restart cost, proxyless workloads' memory and start.
	cd test && go run ./bench/ready -runs $(BENCH_RUNS)
	go test ./internal/render -run '^$$' -bench . -benchmem
	cd test && go run ./bench/scale -namespaces $(BENCH_SCALE_NAMESPACES) -pods $(SCALE_PODS)
	cd test && go run ./bench/proxyless -pairs 3

FUZZ_TIME ?= 30s

SCALE_NAMESPACES ?= 100,300,1000

.PHONY: bench-scale
bench-scale: cluster-bins ## Scale benchmark: SCALE_NAMESPACES namespaces of SCALE_PODS pods each taken to MutualTLS; restart cost.
	cd test && go run ./bench/scale -namespaces $(SCALE_NAMESPACES) -pods $(SCALE_PODS)

.PHONY: fuzz
fuzz: ## Run every fuzzer for FUZZ_TIME each: the API's JSON round trip, the ladder's decisions and enrollment, chart values.
	go test ./api/v1alpha1 -run '^$$' -fuzz FuzzMeshInstallationRoundTrip -fuzztime $(FUZZ_TIME)
	go test ./internal/ladder -run '^$$' -fuzz FuzzDecide -fuzztime $(FUZZ_TIME)
	go test ./internal/ladder -run '^$$' -fuzz FuzzEnroll -fuzztime $(FUZZ_TIME)
	go test ./internal/render -run '^$$' -fuzz FuzzRenderValues -fuzztime $(FUZZ_TIME)

##@ Local cluster

.PHONY: cluster-bins
cluster-bins: ## Build (or take from the per-user cache) etcd, Kubernetes, kwok, cert-manager, istiod (with pilot-agent), Prometheus and the proxyless workloads' application.
	@hack/build-component.sh etcd $(BIN) "-s -w"
	@hack/build-component.sh kubernetes $(BIN) "$(KUBE_LDFLAGS)"
	@hack/build-component.sh kwok $(BIN) "-s -w"
	@hack/build-component.sh certmanager $(BIN) "-s -w"
	@hack/build-component.sh istiod $(BIN) "-s -w"
	@hack/build-component.sh prometheus $(BIN) "-s -w"
	@hack/build-component.sh meshapp $(BIN) "-s -w"
	@cd test && go build -o $(BIN)/localcluster ./cmd/localcluster

.PHONY: olm-bins
olm-bins: ## Build (or take from the cache) OLM's olm-operator and catalog-operator, its CRDs, and the catalog registry.
	@hack/build-component.sh olm $(BIN) "-s -w"
	@hack/build-component.sh registry $(BIN) "-s -w"

.PHONY: cluster-up
cluster-up: cluster-bins ## Start the local cluster in .cluster/ and print its KUBECONFIG.
	$(BIN)/localcluster up --dir .cluster

.PHONY: cluster-down
cluster-down: ## Stop the local cluster in .cluster/.
	@[ ! -x $(BIN)/localcluster ] || $(BIN)/localcluster down --dir .cluster

##@ Demo

.PHONY: demo
demo: build plugin cluster-bins ## Start the local cluster, run the operator, apply config/samples/ and show the result.
	@DEMO_DIR=$(DEMO_DIR) BIN=$(BIN) hack/demo.sh up

.PHONY: demo-down
demo-down: ## Stop the demo's operator and local cluster.
	@DEMO_DIR=$(DEMO_DIR) BIN=$(BIN) hack/demo.sh down

##@ Build

.PHONY: build
build: ## Build the operator binary.
	go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN)/manager ./cmd

.PHONY: plugin
plugin: ## Build the kubectl plugin (bin/kubectl-meshwright; with bin/ on PATH, `kubectl meshwright`).
	go build -trimpath -ldflags "-s -w" -o $(BIN)/kubectl-meshwright ./cmd/kubectl-meshwright

.PHONY: run
run: manifests generate ## Run the operator against the cluster of the current KUBECONFIG.
	go run ./cmd --metrics-bind-address=0 --health-probe-bind-address=127.0.0.1:8081

.PHONY: docker-build
docker-build: ## Build the container image (needs a container engine; there is none on the dev machines).
	docker build --build-arg VERSION=$(VERSION) -t $(IMG) .

##@ Deployment

.PHONY: install
install: manifests $(KUSTOMIZE) ## Install the CRDs into the cluster of the current KUBECONFIG.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) apply --server-side -f -

.PHONY: uninstall
uninstall: manifests $(KUSTOMIZE) ## Remove the CRDs (and with them every MeshInstallation).
	$(KUSTOMIZE) build config/crd | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests $(KUSTOMIZE) ## Deploy the operator with kustomize (config/default).
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | $(KUBECTL) apply --server-side -f -

.PHONY: build-installer
build-installer: manifests $(KUSTOMIZE) ## Write dist/install.yaml: CRDs and the operator in one file.
	mkdir -p dist
	$(KUSTOMIZE) build config/default > dist/install.yaml

.PHONY: bundle
bundle: manifests $(KUSTOMIZE) ## Regenerate bundle/ from config/manifests (IMG_DIGEST=sha256:… names the operator image by digest).
	cd test && go run ./cmd/bundlegen -root .. $(if $(IMG_DIGEST),-digest $(IMG_DIGEST))

##@ Tools

$(CONTROLLER_GEN):
	GOBIN=$(BIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	mv $(BIN)/controller-gen $@

$(GOLANGCI_LINT):
	GOBIN=$(BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(BIN)/golangci-lint $@

$(GOVULNCHECK):
	GOBIN=$(BIN) go install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)
	mv $(BIN)/govulncheck $@

$(VULNDB):
	GOBIN=$(BIN)/vulndb-tools go install golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION)
	rm -rf $@.tmp && $(BIN)/vulndb-tools/indexdb -out $@.tmp \
		-vulns "$$(go mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) | grep '"Dir"' | cut -d'"' -f4)/data/osv"
	mv $@.tmp $@

$(KUSTOMIZE):
	GOBIN=$(BIN) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	mv $(BIN)/kustomize $@
