package bpf

// The generated xdp_bpfel.go and xdp_bpfel.o are committed: building and
// testing need no clang. `make generate` rebuilds them (clang, llvm-strip and
// libbpf-dev's headers required).
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -type listener_key -type owned_range -type steer_settings -type steer_counters -type cookie_key -type cookie_settings -type cookie_flow -type cookie_flow_state xdp xdp.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
