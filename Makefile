# vmd — build, test and run. `make help` lists the targets.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(CURDIR)/bin:$(PATH)

GO        ?= go
BIN       := $(CURDIR)/bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE      ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS   := -X github.com/vmdhq/vmd/internal/version.Version=$(VERSION) \
             -X github.com/vmdhq/vmd/internal/version.GitCommit=$(COMMIT) \
             -X github.com/vmdhq/vmd/internal/version.BuildDate=$(DATE)
GOLANGCI_VERSION := v2.7.2
# Fuzz budgets are execution counts, not durations: a duration races the
# fuzz coordinator's deadline on a loaded machine and fails with a spurious
# "context deadline exceeded" (golang/go#75804, fixed only in Go 1.27).
FUZZTIME  ?= 20000x
PREFIX    ?= /usr/local

generate: ## regenerate derived files (JSON Schemas)
	$(GO) generate ./api/...

.PHONY: generate help deps build test integration e2e lint fuzz bench bench-boot install demo demo-stop check ci clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## install build and test dependencies (Debian 12, as root)
	bash hack/deps.sh

build: ## build bin/vmd and bin/vmctl
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/vmd ./cmd/vmd
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/vmctl ./cmd/vmctl

test: ## unit tier: no root, no libvirtd (includes the whole-daemon test with fakes)
	$(GO) test -race -count=1 ./...

integration: ## integration tier: adapters against the real thing (root)
	$(GO) test -tags integration -count=1 ./internal/...

e2e: ## e2e tier: real guests in a throwaway network namespace (root, qemu)
	$(GO) test -tags e2e -count=1 -timeout 40m -v ./test/e2e/...

lint: $(BIN)/golangci-lint ## gofmt, go vet, golangci-lint
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/...
	$(BIN)/golangci-lint run ./...

$(BIN)/golangci-lint:
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)

fuzz: ## run every fuzz target for FUZZTIME executions (default 20000x)
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

bench: ## benchmarks; figures go to docs/benchmarks.md (as root, bench-boot too)
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...
	@if [ "$$(id -u)" -eq 0 ]; then $(MAKE) --no-print-directory bench-boot; \
	else echo "bench: not root, skipping bench-boot (VMInstance boot benchmark)"; fi

# The boot benchmark boots the lab's debian12 image 3*(BENCH_ROUNDS+1) times (about a minute
# each under TCG), so it is not part of e2e/check; its markdown table goes to BENCH_BOOT_OUT.
BENCH_ROUNDS   ?= 3
BENCH_BOOT_OUT ?= $(BIN)/bench-boot.md
bench-boot: ## VMInstance boot: vmd vs virsh vs virt-install in the e2e lab (root)
	bash hack/deps.sh --bench
	@mkdir -p $(dir $(BENCH_BOOT_OUT))
	VMD_BENCH=1 VMD_BENCH_ROUNDS=$(BENCH_ROUNDS) VMD_BENCH_OUT=$(BENCH_BOOT_OUT) \
	  $(GO) test -tags e2e -count=1 -run '^TestBootBenchmark$$' -v -timeout 90m ./test/e2e/
	@echo "== $(BENCH_BOOT_OUT)"; cat $(BENCH_BOOT_OUT)

install: build ## install vmd and vmctl into PREFIX/bin
	install -D -m 0755 $(BIN)/vmd $(DESTDIR)$(PREFIX)/bin/vmd
	install -D -m 0755 $(BIN)/vmctl $(DESTDIR)$(PREFIX)/bin/vmctl

demo: deps build ## start vmd with its embedded default config and apply examples/
	bash hack/demo.sh

demo-stop: ## stop the vmd started by make demo
	bash hack/demo.sh stop

check: deps build lint test integration fuzz e2e ## every test tier, lint and fuzz: what CI runs

ci: check

clean:
	rm -rf $(BIN)
