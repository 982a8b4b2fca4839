# cpvrefresh — two commands: `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := bin
AZURITE := deploy/azurite/node_modules/.bin/azurite
LINT := deploy/dockerfile-lint/node_modules/.bin/dockerfile-utils
SBPEER := deploy/sbpeer/node_modules/rhea/package.json
TEST_TIMEOUT ?= 60m

.PHONY: all deps chromium build bench-fleet faults-full lint test unit fuzz bench demo docs clean

all: build

## deps: Go modules and the pinned Azurite (npm ci from the lockfile)
deps: $(AZURITE) $(LINT) $(SBPEER) chromium
	$(GO) mod download

## chromium: Debian's Chromium for the UI's browser test (installed with apt-get when missing; never downloaded by a test tool)
chromium:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

$(AZURITE): deploy/azurite/package.json deploy/azurite/package-lock.json
	cd deploy/azurite && npm ci --no-audit --no-fund --loglevel=error
	@touch $(AZURITE)

$(SBPEER): deploy/sbpeer/package.json deploy/sbpeer/package-lock.json
	cd deploy/sbpeer && npm ci --no-audit --no-fund --loglevel=error
	@touch $(SBPEER)

$(LINT): deploy/dockerfile-lint/package.json deploy/dockerfile-lint/package-lock.json
	cd deploy/dockerfile-lint && npm ci --no-audit --no-fund --loglevel=error
	@touch $(LINT)

## build: the three binaries into bin/
build:
	$(GO) build -o $(BIN)/ ./cmd/...

## lint: gofmt, a tidy go.mod, golangci-lint (pinned in go.mod; .golangci.yml holds the architecture's import rules)
lint:
	@files=$$(git ls-files '*.go') && [ -n "$$files" ] || { echo "lint: no tracked .go files (not a git checkout?)"; exit 1; }; \
	  unformatted=$$(gofmt -l $$files) || exit 1; \
	  if [ -n "$$unformatted" ]; then echo "gofmt -l: run gofmt -w on:"; echo "$$unformatted"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) tool golangci-lint run ./...

## test: vet + every test with the race detector; first installs what the tests need (make deps: the pinned npm
## packages, and Debian's chromium with apt-get when it is missing). Azurite and the simulator start by themselves.
test: deps
	$(GO) vet ./...
	$(GO) test -race -timeout $(TEST_TIMEOUT) ./...

## unit: quick tests without the race detector
unit: deps
	$(GO) test -timeout 20m ./...

## fuzz: run each fuzz target for FUZZTIME
FUZZTIME ?= 30s
fuzz: deps
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

## bench: the benchmarks at CI-friendly sizes (results: docs/benchmarks.md)
bench: deps
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 1x -timeout 60m ./...

## bench-fleet: the fleet rows of docs/benchmarks.md, one go test per row, then its tables (about 80 minutes on 2 cores)
BENCH_OUT ?= bench-fleet.jsonl
BENCH_ROWS ?= $(foreach n,1000 10000,$(foreach f,correct new,$(foreach l,0s 50ms,$(foreach w,1 2 4,n=$(n),fleet=$(f),latency=$(l),workers=$(w)))) \
  n=$(n),fleet=correct,latency=0s,workers=2,warm=true n=$(n),fleet=correct,latency=0s,workers=2,staged=true) \
  n=1000,fleet=correct,latency=50ms,workers=2,warm=true n=1000,fleet=drifted,latency=0s,workers=2 n=1000,fleet=mixed,latency=0s,workers=2 \
  n=10000,fleet=correct,latency=0s,workers=2,warm=true,staged=true
bench-fleet: deps
	@set -e; for r in $(BENCH_ROWS); do \
	  echo "== $$r"; \
	  BENCH_FLEET="$$r" BENCH_OUT="$(abspath $(BENCH_OUT))" \
	    $(GO) test ./bench -run '^$$' -bench '^BenchmarkFleet$$' -benchtime 1x -timeout 60m; \
	done
	$(GO) run ./bench/report $(BENCH_OUT)

## faults-full: the fault scenarios at full size (10,000 tenants; 500 new tenants at Partner Center's 50/s)
faults-full: deps
	BENCH_FULL=1 $(GO) test ./bench -run '^TestFaults$$' -v -parallel 1 -timeout 180m

## demo: Azurite + the Microsoft 365 simulator + dispatcher + two workers, a refresh of the whole fleet, a results table
demo: deps build
	$(GO) run ./deploy/demo

## docs: regenerate docs/configuration.md from the code's config structs
docs:
	$(GO) run ./deploy/gen > docs/configuration.md

clean:
	rm -rf $(BIN) .demo
