package bench

// Helpers shared by the benchmarks: the lab namespaces, the raw pieces of
// package rawxsk opened for a benchmark (a failure fails it, the cleanup
// closes them), and the statistics the benchmarks report.

import (
	"io"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/bench/rawxsk"
	"github.com/xdproxy/xdproxy/internal/lab"
)

// newNS creates a lab namespace with IPv6 off, so that router solicitations
// and MLD reports stay off the links being measured.
func newNS(b *testing.B, l *lab.Lab, name string) *lab.NS {
	b.Helper()
	ns, err := l.NS(name)
	if err != nil {
		b.Fatal(err)
	}
	err = ns.Do(func() error {
		for _, f := range []string{"all", "default"} {
			p := "/proc/sys/net/ipv6/conf/" + f + "/disable_ipv6"
			if err := os.WriteFile(p, []byte("1"), 0o644); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatalf("%s: disabling IPv6: %v", ns.Name, err)
	}
	return ns
}

// closed returns v, to be closed at cleanup, or fails b with err.
func closed[T io.Closer](b *testing.B, v T, err error) T {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { v.Close() })
	return v
}

// closedFD returns fd, to be closed at cleanup, or fails b with err.
func closedFD(b *testing.B, fd int, err error) int {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	return fd
}

// attachXDP attaches prog in driver mode to ifindex in ns, detached at
// cleanup (or earlier by closing the link).
func attachXDP(b *testing.B, ns *lab.NS, prog *ebpf.Program, ifindex int) link.Link {
	b.Helper()
	lk, err := rawxsk.AttachXDP(ns, prog, ifindex)
	return closed(b, lk, err)
}

// udpSocket opens a UDP socket in ns bound to local and, when remote is
// valid, connected to it; closed at cleanup.
func udpSocket(b *testing.B, ns *lab.NS, local, remote netip.AddrPort) int {
	b.Helper()
	fd, err := rawxsk.UDPSocket(ns, local, remote)
	return closedFD(b, fd, err)
}

// packetSocket opens an AF_PACKET socket on ifindex in ns (see
// rawxsk.PacketSocket); closed at cleanup.
func packetSocket(b *testing.B, ns *lab.NS, ifindex int) int {
	b.Helper()
	fd, err := rawxsk.PacketSocket(ns, ifindex)
	return closedFD(b, fd, err)
}

// percentile returns the p-th percentile (0 < p < 100) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)) * p / 100)
	return sorted[min(i, len(sorted)-1)]
}

// reportLatency sorts the sample and reports its p50 and p99 in µs.
func reportLatency(b *testing.B, sample []time.Duration) {
	slices.Sort(sample)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	b.ReportMetric(us(percentile(sample, 50)), "p50-µs")
	b.ReportMetric(us(percentile(sample, 99)), "p99-µs")
}
