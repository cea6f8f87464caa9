# packer-plugin-wsgi. `make help` lists the targets.

NAME            := wsgi
BINARY          := packer-plugin-$(NAME)
PLUGIN_SOURCE   := github.com/wsgi-ami/$(NAME)
PACKER_VERSION  := v1.12.0
BIN             := $(CURDIR)/bin
PACKER          := $(BIN)/packer
PACKER_SDC      := $(BIN)/packer-sdc
# python3-django and strace: the wsgi-migrate unit tests run the helper with the Django Debian
# ships and count its syncs.
HOST_PACKAGES   := systemd systemd-container nginx cloud-init mmdebstrap zstd dnsmasq-base nftables iproute2 wrk git curl ca-certificates postgresql python3-django strace
E2E_TIMEOUT     ?= 75m
E2E_RUN         ?= .
# The Debian releases every e2e test runs on (harness.Releases); the first is the default.
E2E_RELEASES    ?= trixie bookworm
# e2e packages run side by side: each machine has its own subnet, name and nft table, moto
# its own port, and the image cache its own locks; two fit the 2-core machine.
E2E_PARALLEL    ?= 2

export PACKER_CHECKPOINT_DISABLE := 1

.PHONY: help build dev generate docs testacc release-check test unit validate vet plugin-check packer deps validate-example e2e e2e-images e2e-builder demo bench-firstboot bench-stack bench-ami-calls clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build the plugin binary ./packer-plugin-wsgi
	go build -o $(BINARY) .

dev: build packer ## build, then install the plugin into the local Packer (packer plugins install --path)
	$(PACKER) plugins install --path $(CURDIR)/$(BINARY) $(PLUGIN_SOURCE)

# packer-sdc at the version go.mod pins, on PATH for `go generate`.
$(PACKER_SDC): go.mod go.sum
	go build -o $@ github.com/hashicorp/packer-plugin-sdk/cmd/packer-sdc

generate: $(PACKER_SDC) ## regenerate *.hcl2spec.go and the docs (checked in; CI fails when stale)
	PATH="$(BIN):$$PATH" go generate ./...
	$(MAKE) docs

docs: $(PACKER_SDC) ## regenerate docs-partials/ (from the config structs' comments) and .web-docs/ (from docs/)
	PACKER_SDC=$(PACKER_SDC) .web-docs/scripts/generate.sh

testacc: dev ## real-AWS acceptance tests: PACKER_ACC=1, AWS credentials, WSGI_ACC_APP_URL (docs/ACCEPTANCE.md)
	PATH="$(BIN):$$PATH" PACKER_ACC=1 go test -count=1 -v -timeout 120m -run TestAcc ./acceptance/

release-check: ## cross-build the six release targets with .goreleaser.yml's flags; describe, plugin-check, packer install
	go test -tags release -count=1 -v -timeout 60m ./release/

test: unit validate ## unit tests, then the real validators with their figures

unit: ## go test ./... (fast, no root tools needed)
	go test -count=1 ./...

validate: ## systemd-analyze verify/security, nginx -t, cloud-init schema on every rendered file (verbose)
	@# Verbose for the figures (exposure scores, files checked), without the RUN lines; the
	@# exit status is go test's, not the filter's.
	@out=$$(mktemp); go test -count=1 -v -run 'Validators' ./internal/image/ ./cloudinit/... >"$$out" 2>&1; rc=$$?; \
	grep -Ev '^=== (RUN|PAUSE|CONT)' "$$out"; rm -f "$$out"; exit $$rc

vet: ## go vet, with and without the e2e build tag
	go vet ./...
	go vet -tags e2e ./...

plugin-check: build $(PACKER_SDC) ## the Packer plugin conformance check
	$(PACKER_SDC) plugin-check $(BINARY)

packer: $(PACKER) ## build the pinned Packer into bin/packer

# `go install pkg@version` refuses modules with replace directives, so the module is copied
# out of the module cache and built in place.
$(PACKER):
	@mkdir -p $(BIN)
	@set -e; dir=$$(cd / && go mod download -json github.com/hashicorp/packer@$(PACKER_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	test -n "$$dir" || { echo "could not download github.com/hashicorp/packer@$(PACKER_VERSION)" >&2; exit 1; }; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cp -r "$$dir/." "$$tmp"; chmod -R u+w "$$tmp"; \
	echo "building packer $(PACKER_VERSION)"; \
	cd "$$tmp" && go build -trimpath -o $(PACKER) .
	@$(PACKER) version

deps: ## install the host packages the validators and the e2e harness need (Debian, as root)
	@command -v apt-get >/dev/null || { echo "deps: apt-get not found; install: $(HOST_PACKAGES)" >&2; exit 1; }
	@# Keep package installs from starting daemons (NGINX) on this machine.
	@[ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d; }
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(HOST_PACKAGES) >/dev/null

# release.pkr.hcl is validated without -evaluate-datasources: its wsgi-golden-image data source
# asks EC2 for the newest golden image, which needs AWS. Its e2e test runs it against moto.
validate-example: build packer ## packer validate example.pkr.hcl and release.pkr.hcl with the plugin installed in a scratch Packer config
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	export PACKER_CONFIG_DIR="$$tmp" PACKER_PLUGIN_PATH="$$tmp/plugins"; \
	$(PACKER) plugins install --path $(CURDIR)/$(BINARY) $(PLUGIN_SOURCE) >/dev/null; \
	$(PACKER) fmt -check example.pkr.hcl; \
	$(PACKER) fmt -check release.pkr.hcl; \
	$(PACKER) validate example.pkr.hcl; \
	$(PACKER) validate -evaluate-datasources example.pkr.hcl; \
	$(PACKER) validate -var app_ref=v0.0.0 release.pkr.hcl

# The packages with e2e tests: the harness, wsgi-stack, first boot and the demo (e2e), the
# launch-template chain (e2e/launchtemplate), the builder's fault table against moto (builder) and
# the acceptance suite's clean-up sweep against moto (acceptance).
E2E_PACKAGES := ./e2e/... ./builder/ ./acceptance/

e2e: build packer e2e-images ## end to end on each of E2E_RELEASES: real packer, nspawn machines, moto (root)
	WSGI_E2E_RELEASES="$(E2E_RELEASES)" go test -tags e2e -count=1 -v -p $(E2E_PARALLEL) -timeout $(E2E_TIMEOUT) -run '$(E2E_RUN)' $(E2E_PACKAGES)

e2e-images: ## build (or find cached) the base image of each of E2E_RELEASES, side by side, with their times
	WSGI_E2E_RELEASES="$(E2E_RELEASES)" go test -tags e2e -count=1 -v -timeout 30m -run '^TestBaseImages$$' ./e2e/harness/

e2e-builder: build packer ## the builder against moto: full builds, the fault table, SIGINT in every step
	go test -tags e2e -count=1 -v -timeout $(E2E_TIMEOUT) -run TestMoto ./builder/

clean:
	rm -rf $(BINARY) $(BIN) dist

demo: build packer ## the whole path on this machine: moto, a local machine as the instance, the real packer (root; KEEP=1 keeps the instance)
	go run ./e2e/demo/cmd/demo $(if $(KEEP),-keep)

bench-firstboot: build packer ## first boot vs the floor: Flask (golden + payload, stock image) and Django with requirements (wheelhouse, boot-time index, old path); -set via ARGS (root; Markdown)
	go run ./bench/firstboot $(ARGS)

bench-ami-calls: packer ## EC2 calls of one bake, wsgi-ami vs amazon-ebs v1.8.2 built outside the repo, against moto (prints Markdown)
	sh bench/amicalls/run.sh

bench-stack: build packer ## serving benchmark on the golden image vs an EB-style setup (root; prints Markdown)
	go run ./bench/stackbench
