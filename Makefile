# xdproxy — see README.md. Every target installs what it needs itself.
GO        ?= go
PKGS      := ./...
# Tests too slow under the race detector (the network simulations, which are
# single-goroutine anyway) run without it, and so do the BGP speaker's tests,
# which run several GoBGP servers in one process: each server's StartBgp
# writes package globals of GoBGP's (table.SelectionOptions) that the others
# read (the daemon runs one server at a time).
NORACE    := ^TestSim|^TestSpeaker
# Tests that compare latencies loaded and unloaded run last, alone, without
# the race detector (their helper processes also hold more goroutines than
# it allows).
ALONE     := ^TestMemoryBudget
FUZZTIME  ?= 30s
BIN       := bin/xdproxy

.PHONY: all build test test-deps vet bench bench-loss bench-micro fuzz generate demo deps clean

all: build

deps:
	@scripts/deps.sh

build: deps
	$(GO) build -o $(BIN) ./cmd/xdproxy

vet: deps
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet $(PKGS)

# Debian packages the lab tests and the demo use (command:package), installed
# when missing. The tests would install them one by one too; doing it first
# keeps that out of their timeouts. tshark reads back the captures of
# TestCapture; its debconf question (may non-root users capture?) is
# answered with the default, no, by DEBIAN_FRONTEND=noninteractive in
# scripts/deps.sh, so the install never waits for a terminal.
LAB_TOOLS := ip:iproute2 ss:iproute2 iptables:iptables ethtool:ethtool tcpdump:tcpdump \
	ping:iputils-ping curl:curl redis-server:redis-server redis-benchmark:redis-tools iperf3:iperf3 haproxy:haproxy \
	tshark:tshark \
	bird:bird2

test-deps:
	@if [ "$$(id -u)" = 0 ]; then scripts/deps.sh $(LAB_TOOLS); fi

# -timeout: cmd/xdproxy's TestWANClient alone may take up to 9 minutes
# before its own limits fail it (20 MiB at 50 ms RTT and 3% loss).
test: vet test-deps
	$(GO) test -race -count=1 -timeout 30m -skip '$(NORACE)|$(ALONE)' $(PKGS)
	$(GO) test -count=1 -timeout 30m -run '$(NORACE)' -skip '$(ALONE)' $(PKGS)
	$(GO) test -count=1 -timeout 30m -run '$(ALONE)' ./cmd/xdproxy/

# The side-by-side comparison (bench/cmd/sidebyside): xdproxy (dial: xdp and
# dial: kernel), HAProxy, nginx stream, a Go io.Copy proxy and the direct path
# in the lab, interleaved; needs root, installs its Debian packages, ~8 min on
# 2 cores. Writes bench/results/latest.{json,md} and latency.svg and prints the
# tables (with BENCHFLAGS='-shape two-armed': latest-two-armed.{json,md} and
# latency-two-armed.svg). BENCHFLAGS passes flags (e.g. BENCHFLAGS='-rounds 1 -d 1s').
BENCHFLAGS ?=
bench: build
	$(GO) run ./bench/cmd/sidebyside -bin $(BIN) -out bench/results $(BENCHFLAGS)

# The loss workload (issue 12; also `make bench BENCHFLAGS='-workloads loss'`):
# 50 MiB downloads through xdproxy and kernel-to-kernel over the lab's WAN
# emulator on the client leg, 0/1/3% loss each way at 1 and 50 ms RTT,
# medians of 5, each side's retransmits and RTOs. Its own lab; needs root;
# ~45 min on 2 cores with today's engine (the 50 ms lossy cells), ~4 min with
# LOSSFLAGS='-loss-repeats 1 -loss-mib 10'. Writes bench/results/loss.{json,md}.
LOSSFLAGS ?=
bench-loss: build
	$(GO) run ./bench/cmd/sidebyside -bin $(BIN) -out bench/results -workloads loss $(LOSSFLAGS)

# Every Go micro-benchmark of the engine, the checksums, the XSK rings, the
# XDP program (BPF_PROG_RUN) and bench/ (raw XSK, echo), summed up in one
# table (bench/results/micro.md; the raw output in micro.txt).
MICRO_PKGS ?= ./stack/ ./stack/wire/ ./xsk/ ./bpf/ ./bench/
bench-micro: deps
	@mkdir -p bench/results
	@bash -o pipefail -c '$(GO) test -run "^$$" -bench . -benchmem $(MICRO_PKGS) 2>&1 | tee bench/results/micro.txt'
	@$(GO) run ./bench/cmd/sidebyside microtable bench/results/micro.txt | tee bench/results/micro.md

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
	@scripts/deps.sh ip:iproute2 iptables:iptables ethtool:ethtool curl:curl
	@scripts/demo.sh

clean:
	rm -rf bin
