# knockwatch — make help lists the targets.

GO        ?= go
CLANG     ?= clang-19
STRIP     ?= llvm-strip-19
BIN       ?= bin/knockwatch
FUZZTIME  ?= 20s
BENCHTIME ?= 1s
STATICCHECK_VERSION ?= v0.8.2

.DEFAULT_GOAL := help

.PHONY: help build demo demo-restart demo-deps demo-cluster test test-short bench bench-replay soak fuzz generate check-generate lint clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/knockwatch (no clang needed: the BPF objects are committed)
	$(GO) build -o $(BIN) ./cmd/knockwatch

demo: build demo-deps ## run the lab: namespaces, real TCP, a knock, a firewall event, the alert (root; LAB_ARGS=--restart to kill -9 the sensor mid-attack)
	$(BIN) lab $(LAB_ARGS)

demo-restart: build demo-deps ## the lab with the sensor killed (kill -9) after the event's 202 and restarted: the alert still comes once (root)
	$(BIN) lab --restart=event

demo-cluster: build ## issue 14's case 1 on one machine: two taps, a fake Kafka cluster (kfake, a dev tool), knockwatch in roles: a knock on tap A, the connection on tap B, the Windows event through a raw topic (kcat), one high alert (root)
	@command -v kcat >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "demo-cluster: installing kcat"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kcat iproute2 >/dev/null; \
	  else echo "demo-cluster: please install kcat (Debian: apt-get install kcat)"; exit 1; fi; }
	$(GO) build -o bin/demo-cluster ./internal/clusterlab/cmd/demo-cluster
	bin/demo-cluster --knockwatch $(BIN)

demo-deps: ## install what the lab runs if missing (Debian: iproute2, nftables, knockd for knock/knockd)
	@missing=""; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v nft >/dev/null || missing="$$missing nftables"; \
	command -v knockd >/dev/null || missing="$$missing knockd"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "demo: installing$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "demo: please install$$missing (the lab needs them; run make demo as root on Debian to install them)"; exit 1; \
	  fi; \
	fi

test: ## run every test, including BPF and network-namespace tests (root)
	$(GO) test -count=1 -timeout 30m ./...

test-short: ## run the tests that need no root
	KNOCKWATCH_REQUIRE_PRIVILEGED= $(GO) test -count=1 -short ./...

bench: ## run every benchmark with the settings its BENCHMARKS.md row was measured with (root for XDP)
	$(GO) test -run '^$$' -bench . -benchtime 50000x ./loader/
	$(GO) test -run '^$$' -bench . -benchmem -cpu 1 ./correlate/ ./winevents/
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./winevents/intake/ ./alert/ ./pipeline/
	$(GO) test -run '^$$' -bench 'BenchmarkEngine|BenchmarkRun' -benchtime $(BENCHTIME) ./replay/
	$(GO) test -run '^$$' -bench . -benchtime 300000x ./evidence/
	$(GO) test -run '^$$' -bench 'BenchmarkEndToEnd' -benchtime 20000x -timeout 20m ./scaleout/
	$(GO) test -run '^$$' -bench 'BenchmarkFlaggedPairs' -benchtime 200000x ./scaleout/

bench-replay: ## replay of a generated 10M-packet capture per engine beside tshark (several minutes)
	$(GO) test -run '^$$' -bench BenchmarkReplay -benchtime 1x -timeout 60m ./replay/

survival: ## measure knock survival against SYN-flood rate (200 trials per rate; ~10 min; docs/benchmarks/survival.md)
	KNOCKWATCH_SURVIVAL_CURVE=1 $(GO) test -count=1 -timeout 60m -v -run '^TestFloodSurvivalCurve$$' ./gotwin

soak: ## long reliability runs (root): 30 s intake load per listener, 60 s webhook outage, 2M-SYN lab flood, 10M-packet BPF flood, full-flood survival on XDP
	KNOCKWATCH_SOAK_SECONDS=30 KNOCKWATCH_OUTAGE_SECONDS=60 KNOCKWATCH_LAB_FLOOD_PACKETS=2000000 $(GO) test -count=1 -timeout 20m -v -run 'TestIntakeLoadHTTP|TestIntakeLoadBeats|TestWebhookOutageThroughPipeline|TestLabFloodWithKnock' ./reliability
	KNOCKWATCH_FLOOD_PACKETS=10000000 $(GO) test -count=1 -timeout 20m -v -run '^TestFloodWithKnock$$' ./loader
	KNOCKWATCH_SOAK_FLOOD=1 $(GO) test -count=1 -timeout 20m -v -run '^TestFloodFilterExact$$' ./gotwin

fuzz: ## run every fuzz target for FUZZTIME each
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$target"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

generate: ## regenerate the bpf2go objects from bpf/ with the pinned clang-19
	BPF2GO_CC=$(CLANG) BPF2GO_STRIP=$(STRIP) $(GO) generate ./loader/...

check-generate: generate ## fail if the committed BPF objects differ from bpf/ sources
	@git diff --exit-code -- loader/ || { echo "generated BPF files are stale: run make generate and commit"; exit 1; }

lint: ## gofmt, go vet, staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

clean: ## remove build output
	rm -rf bin
