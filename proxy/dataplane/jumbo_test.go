package dataplane

import (
	"fmt"
	"net"
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

// xskChains sums the shards' sockets' chains and drops.
func (el *echoLab) xskChains(t *testing.T) (rx, tx, drops uint64) {
	for _, s := range el.dp.Shards() {
		s.Do(func(s *Shard) {
			for j := range el.dp.Interfaces() {
				if sk := s.Socket(j); sk != nil {
					st, err := sk.Stats()
					if err != nil {
						t.Error(err)
					}
					rx += st.RxChains
					tx += st.TxChains
					drops += st.RxChainDrops + st.BadCommits + st.RxDropped + st.TxInvalidDescs
				}
			}
		})
	}
	return rx, tx, drops
}

// TestLabJumbo runs the data plane on a veth pair at MTU 9000 (three
// 4096-byte UMEM frames a packet: multi-buffer AF_XDP, a frags-aware XDP
// program) and, in the same run, at MTU 1500: MSS 8960 negotiated both
// ways, 64 MiB echoed each way with sha256 intact, the segments carried as
// descriptor chains in both directions, nothing dropped, and the
// throughput of both side by side.
func TestLabJumbo(t *testing.T) {
	const size = 64 << 20
	var report strings.Builder
	fmt.Fprintf(&report, "\n| MTU | MSS (engine / client) | 64 MiB each way | goodput each way | rx chains | tx chains |\n|---:|---:|---:|---:|---:|---:|\n")
	for _, mtu := range []int{1500, 9000} {
		t.Run(fmt.Sprint("mtu", mtu), func(t *testing.T) {
			el := newJumboLab(t, mtu)
			c := el.dial(t)
			if err := echoExchangeOpen(c, []byte("hello")); err != nil {
				t.Fatal(err)
			}
			engMSS, cliMSS := el.mss(t, c)
			c.Close()
			wantMSS := mtu - 40
			// The client's TCP_MAXSEG is the segment payload less 12 bytes
			// of timestamp option.
			if engMSS != wantMSS || (cliMSS != wantMSS && cliMSS != wantMSS-12) {
				t.Fatalf("MSS: engine sees %d, client %d; want %d", engMSS, cliMSS, wantMSS)
			}
			start := time.Now()
			el.bulk(t, size)
			d := time.Since(start)
			rx, tx, drops := el.xskChains(t)
			if drops != 0 {
				t.Errorf("drops on the sockets: %d", drops)
			}
			// Most segments are full-sized (8948 bytes and three
			// descriptors); short ones come at window edges.
			if mtu > 4096 && (rx < size/10000 || tx < size/10000) {
				t.Errorf("chains: rx %d, tx %d: the jumbo segments did not travel as chains", rx, tx)
			}
			if mtu <= 4096 && (rx != 0 || tx != 0) {
				t.Errorf("chains at MTU %d: rx %d, tx %d", mtu, rx, tx)
			}
			fmt.Fprintf(&report, "| %d | %d / %d | %v | %.0f Mbit/s | %d | %d |\n", mtu, engMSS, cliMSS,
				d.Round(time.Millisecond), float64(size)*8/d.Seconds()/1e6, rx, tx)
			el.logCounters(t)
		})
	}
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
			rx, tx, drops := el.xskChains(t)
			var handoffs, handoffDrops uint64
			for _, s := range el.dp.Shards() {
				handoffs += s.Stats().HandoffsOut.Load() + s.Stats().TxHandoffs.Load()
				handoffDrops += s.Stats().HandoffDrops.Load() + s.Stats().TxHandoffDrops.Load()
			}
			t.Logf("chains rx %d tx %d, hand-offs %d", rx, tx, handoffs)
			if drops != 0 || handoffDrops != 0 || rx == 0 || tx == 0 {
				t.Fatalf("drops %d, hand-off drops %d, chains rx %d tx %d", drops, handoffDrops, rx, tx)
			}
		})
	}
}
