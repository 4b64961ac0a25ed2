// Package bpf will hold the XDP program that steers xdproxy's TCP packets into
// AF_XDP sockets, with its maps, loader and BPF_PROG_TEST_RUN fixtures.
// Not built yet: see the README's Status section.
package bpf
