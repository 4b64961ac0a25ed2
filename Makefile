# xdproxy — see README.md. Every target installs what it needs itself.
GO        ?= go
PKGS      := ./...
# Tests too slow under the race detector (the network simulations, which are
# single-goroutine anyway) run without it.
NORACE    := ^TestSim
FUZZTIME  ?= 30s
BIN       := bin/xdproxy

.PHONY: all build test vet bench fuzz generate demo deps clean

all: build

deps:
	@scripts/deps.sh

build: deps
	$(GO) build -o $(BIN) ./cmd/xdproxy

vet: deps
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet $(PKGS)

test: vet
	$(GO) test -race -count=1 -skip '$(NORACE)' $(PKGS)
	$(GO) test -count=1 -run '$(NORACE)' $(PKGS)

bench: deps
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# Runs each fuzz target for FUZZTIME (their seed corpora already run in `make test`).
fuzz: deps
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# bpf/ runs bpf2go: clang, llvm-strip and libbpf's headers (Debian: clang llvm libbpf-dev).
generate: deps
	@scripts/deps.sh clang:clang llvm-strip:llvm
	@test -e /usr/include/bpf/bpf_helpers.h || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libbpf-dev >/dev/null; }
	$(GO) generate ./...

demo: build
	@scripts/demo.sh

clean:
	rm -rf bin
