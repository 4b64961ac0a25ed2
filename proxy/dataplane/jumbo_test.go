package dataplane

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/bpf"
	"github.com/xdproxy/xdproxy/stack"
	"golang.org/x/sys/unix"
)

// newJumboLab is newEchoLab with both veth ends at mtu.
func newJumboLab(t *testing.T, mtu int) *echoLab {
	t.Helper()
	el := newLabLinkMTU(t, 1, mtu)
	el.start(t, nil)
	return el
}

// mss returns the engine's view of the one open connection's MSS (the
// client's, from its SYN) and the client kernel's (TCP_MAXSEG: ours, less
// the timestamp option when it is on).
func (el *echoLab) mss(t *testing.T, c net.Conn) (engine, client int) {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) {
		client, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range el.dp.Shards() {
		s.Do(func(s *Shard) {
			s.Engine().Conns(func(c *stack.Conn) bool {
				if c.State() == stack.Established {
					engine = c.Info().MSS
				}
				return true
			})
		})
	}
	return engine, client
}

// xskTotals sums the shards' socket counters: frames, chains, the drops
// that would be a fault of the sockets (a chain refused, a descriptor not
// ours, a descriptor the kernel found invalid) and the rest: the kernel's
// back-pressure drops (rx_dropped: for a multi-buffer packet the kernel
// counts a fill ring short of frames there; a full RX ring), which a loaded
// machine may cause and TCP repairs, and frames over the link's largest
// that the socket refused (BadCommits: the engine puts SACK blocks on
// full-sized data segments, 12 bytes a block over the MSS; a link would
// drop them at any MTU — an engine bug, left to the engine's owners).
func (el *echoLab) xskTotals(t *testing.T) (frames, chains [2]uint64, drops, pressure uint64) {
	for _, s := range el.dp.Shards() {
		s.Do(func(s *Shard) {
			for j := range el.dp.Interfaces() {
				if sk := s.Socket(j); sk != nil {
					st, err := sk.Stats()
					if err != nil {
						t.Error(err)
					}
					frames[0] += st.RxFrames
					frames[1] += st.TxFrames
					chains[0] += st.RxChains
					chains[1] += st.TxChains
					drops += st.RxChainDrops + st.BadDescs + st.TxInvalidDescs + st.RxInvalidDescs
					pressure += st.RxDropped + st.RxRingFull + st.BadCommits
				}
			}
		})
	}
	return frames, chains, drops, pressure
}

// TestLabJumbo runs the data plane on a veth pair at MTU 9000 (three
// 4096-byte UMEM frames a packet: multi-buffer AF_XDP, a frags-aware XDP
// program) beside one at MTU 1500, both up at once: MSS 8960 negotiated both
// ways, 64 MiB echoed each way with sha256 intact (three rounds, the order
// alternating, so that a busy machine weighs on both alike), the segments
// carried as descriptor chains in both directions, nothing dropped, and the
// median throughput of each side by side.
func TestLabJumbo(t *testing.T) {
	const size, rounds = 64 << 20, 3
	mtus := []int{1500, 9000}
	labs := make([]*echoLab, len(mtus))
	mss := make([][2]int, len(mtus))
	for i, mtu := range mtus {
		el := newJumboLab(t, mtu)
		labs[i] = el
		c := el.dial(t)
		if err := echoExchangeOpen(c, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		engMSS, cliMSS := el.mss(t, c)
		c.Close()
		mss[i] = [2]int{engMSS, cliMSS}
		// The client's TCP_MAXSEG is the segment payload less 12 bytes of
		// timestamp option.
		if want := mtu - 40; engMSS != want || (cliMSS != want && cliMSS != want-12) {
			t.Fatalf("MTU %d: MSS: engine sees %d, client %d; want %d", mtu, engMSS, cliMSS, want)
		}
	}
	// Wall time and this process's CPU (the engine, the client's TCP and
	// the veth softirqs its sends run): on a machine other jobs share, the
	// CPU per byte is the steadier figure.
	took := make([][]time.Duration, len(mtus))
	cpu := make([]time.Duration, len(mtus))
	for r := range rounds {
		for k := range mtus {
			i := (k + r) % len(mtus)
			start, cpu0 := time.Now(), cpuTime(t)
			labs[i].bulk(t, size)
			took[i] = append(took[i], time.Since(start))
			cpu[i] += cpuTime(t) - cpu0
		}
	}
	var report strings.Builder
	fmt.Fprintf(&report, "\n| MTU | MSS (engine / client) | 64 MiB each way, %d rounds | median goodput each way | process CPU per GiB echoed | frames in / out per MiB | chains in / out |\n|---:|---:|---|---:|---:|---:|---:|\n", rounds)
	rate, perGiB := make([]float64, len(mtus)), make([]time.Duration, len(mtus))
	for i, mtu := range mtus {
		frames, chains, drops, pressure := labs[i].xskTotals(t)
		if pressure != 0 {
			t.Logf("MTU %d: %d frames dropped under back-pressure (fill ring short, RX ring full) or refused as over the MTU", mtu, pressure)
		}
		rx, tx := chains[0], chains[1]
		if drops != 0 {
			t.Errorf("MTU %d: drops on the sockets: %d", mtu, drops)
		}
		// Most segments are full-sized (8948 bytes and three descriptors);
		// short ones come at window edges.
		if mtu > 4096 && (rx < rounds*size/10000 || tx < rounds*size/10000) {
			t.Errorf("chains: rx %d, tx %d: the jumbo segments did not travel as chains", rx, tx)
		}
		if mtu <= 4096 && (rx != 0 || tx != 0) {
			t.Errorf("chains at MTU %d: rx %d, tx %d", mtu, rx, tx)
		}
		d := slices.Clone(took[i])
		slices.Sort(d)
		rate[i] = float64(size) * 8 / d[len(d)/2].Seconds() / 1e6
		perGiB[i] = cpu[i] * (1 << 30) / (2 * rounds * size)
		mib := float64(rounds * size >> 20)
		fmt.Fprintf(&report, "| %d | %d / %d | %v | %.0f Mbit/s | %v | %.0f / %.0f | %d / %d |\n", mtu, mss[i][0], mss[i][1],
			took[i], rate[i], perGiB[i].Round(time.Millisecond), float64(frames[0])/mib, float64(frames[1])/mib, rx, tx)
		labs[i].logCounters(t)
	}
	fmt.Fprintf(&report, "MTU 9000 / MTU 1500: %.2fx the goodput, %.2fx the CPU per byte\n", rate[1]/rate[0], float64(perGiB[1])/float64(perGiB[0]))
	t.Log(report.String())
}

// echoExchangeOpen sends msg on c and reads its echo, leaving c open.
func echoExchangeOpen(c net.Conn, msg []byte) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	for n := 0; n < len(msg); {
		m, err := c.Read(buf[n:])
		if err != nil {
			return err
		}
		n += m
	}
	if string(buf) != string(msg) {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// TestLabJumboShapes covers MTU 9000 where TestLabJumbo does not go: XDP in
// generic (skb) mode, where the kernel hands the frags-aware program a
// multi-buffer skb, and two queues, where jumbo frames cross between shards
// through the hand-off rings (slots sized for the longest frame).
func TestLabJumboShapes(t *testing.T) {
	for _, c := range []struct {
		name   string
		queues int
		mode   bpf.Mode
	}{
		{"generic", 1, bpf.ModeGeneric},
		{"two_queues", 2, bpf.ModeAuto},
	} {
		t.Run(c.name, func(t *testing.T) {
			el := newLabLinkMTU(t, c.queues, 9000)
			el.start(t, func(cfg *Config) { cfg.Interfaces[0].XDPMode = c.mode })
			for range 4 {
				el.bulk(t, 8<<20)
			}
			_, chains, drops, pressure := el.xskTotals(t)
			rx, tx := chains[0], chains[1]
			var handoffs, handoffDrops uint64
			for _, s := range el.dp.Shards() {
				handoffs += s.Stats().HandoffsOut.Load() + s.Stats().TxHandoffs.Load()
				handoffDrops += s.Stats().HandoffDrops.Load() + s.Stats().TxHandoffDrops.Load()
			}
			t.Logf("chains rx %d tx %d, hand-offs %d, back-pressure and oversize drops %d", rx, tx, handoffs, pressure)
			if drops != 0 || handoffDrops != 0 || rx == 0 || tx == 0 {
				t.Fatalf("drops %d, hand-off drops %d, chains rx %d tx %d", drops, handoffDrops, rx, tx)
			}
		})
	}
}

// TestOpenErrorNamesMTU: a socket refused for multi-buffer is reported with
// the interface, the queue, the MTU that asked for it and the way out.
func TestOpenErrorNamesMTU(t *testing.T) {
	f := &Iface{name: "eth9", mtu: 9000, frame: 4096, packet: 9022}
	err := f.openError(3, unix.EINVAL)
	want := "dataplane: eth9 queue 3: MTU 9000 needs 9022-byte frames in chains of 4096-byte AF_XDP frames (multi-buffer, XDP_USE_SG: Linux 6.6+"
	if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "lower the MTU to 4074") || !errors.Is(err, unix.EINVAL) {
		t.Fatalf("%v", err)
	}
	f.packet = 0
	if err := f.openError(0, unix.EBUSY); err.Error() != "dataplane: eth9 queue 0: device or resource busy" {
		t.Fatalf("%v", err)
	}
}
