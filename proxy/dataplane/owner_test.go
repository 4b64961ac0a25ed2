package dataplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// TestClientFlowOwner: on an unstable-queue link the engines record the
// client flows they hold and owner sends every segment of such a flow to
// the holder, whatever queue it lands on, IPv4 and IPv6, VLAN tags or not;
// a flow nobody holds stays where it landed; backend legs (source ports)
// go by port; a release by another shard does not drop the holder's entry.
func TestClientFlowOwner(t *testing.T) {
	d := &Dataplane{portLo: 20000, portHi: 59999, hashClients: true, shards: make([]*Shard, 2)}
	frame := func(src, dst netip.AddrPort, vlan uint16) []byte {
		f := wire.TCPFrame{Src: src.Addr(), Dst: dst.Addr(),
			TCP: wire.TCPHeader{SrcPort: src.Port(), DstPort: dst.Port(), Flags: wire.FlagACK}}
		b := make([]byte, wire.TCPFrameLen(&f, 0))
		if n := wire.EncodeTCP(b, &f, nil, nil); n == 0 {
			t.Fatal("encode failed")
		}
		if vlan != 0 { // an 802.1Q tag after the MAC addresses
			tag := []byte{0x81, 0x00, byte(vlan >> 8), byte(vlan)}
			b = append(b[:12:12], append(tag, b[12:]...)...)
		}
		return b
	}
	for _, c := range []struct {
		name          string
		client, local netip.AddrPort
	}{
		{"IPv4", netip.MustParseAddrPort("10.0.0.7:40001"), netip.MustParseAddrPort("10.10.1.1:8080")},
		{"IPv6", netip.MustParseAddrPort("[fd00::7]:40001"), netip.MustParseAddrPort("[fd00:1::1]:8080")},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := stack.FlowKey{LocalAddr: c.local.Addr(), RemoteAddr: c.client.Addr(), LocalPort: c.local.Port(), RemotePort: c.client.Port()}
			owner1 := &clientFlowOwner{d: d, shard: 1}
			owner0 := &clientFlowOwner{d: d, shard: 0}
			for _, vlan := range []uint16{0, 42} {
				if o := d.owner(frame(c.client, c.local, vlan), 0); o != 0 {
					t.Fatalf("a flow nobody holds, landing on shard 0: owner %d, want 0", o)
				}
			}
			owner1.FlowHeld(k)
			for _, vlan := range []uint16{0, 42} {
				for self := range 2 {
					if o := d.owner(frame(c.client, c.local, vlan), self); o != 1 {
						t.Fatalf("vlan %d, landing on shard %d: owner %d, want 1 (the holder)", vlan, self, o)
					}
				}
			}
			owner0.FlowReleased(k) // not shard 0's to release
			if o := d.owner(frame(c.client, c.local, 0), 0); o != 1 {
				t.Fatalf("after another shard's release: owner %d, want 1", o)
			}
			owner1.FlowReleased(k)
			if o := d.owner(frame(c.client, c.local, 0), 0); o != 0 {
				t.Fatalf("after the holder's release: owner %d, want 0", o)
			}
			// A backend leg (our source port in the range) goes by port,
			// and the engines' observer leaves it out of the table.
			back := netip.AddrPortFrom(c.local.Addr(), 30001)
			kb := stack.FlowKey{LocalAddr: back.Addr(), RemoteAddr: c.client.Addr(), LocalPort: back.Port(), RemotePort: c.client.Port()}
			owner0.FlowHeld(kb)
			if o := d.owner(frame(c.client, back, 0), 0); o != 30001%2 {
				t.Fatalf("backend leg to port 30001: owner %d, want %d", o, 30001%2)
			}
			n := 0
			d.clientFlows.Range(func(any, any) bool { n++; return true })
			if n != 0 {
				t.Fatalf("%d entries left in the client flow table", n)
			}
		})
	}
}

// TestLabTwoQueuesStrays: on a 2-queue veth a client's segments land on
// the queue its kernel picks for each transmission — by the socket's hash,
// which Linux draws anew on a retransmission timeout, or by the sending
// CPU where XPS is set. Here XPS sends from CPU 0 on queue 0 and from CPU 1
// on queue 1, and each client connects from one CPU and writes from the
// other: its segments stray to the shard that does not hold its flow. They
// must reach the engine that holds them (the client flow table, a
// hand-off), not be reset by the other shard's engine, which knows nothing
// of them.
func TestLabTwoQueuesStrays(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Fatalf("needs 2 CPUs, have %d", runtime.NumCPU())
	}
	el := newEchoLab(t, 2, nil)
	for q, mask := range []string{"1", "2"} {
		path := fmt.Sprintf("/sys/class/net/%s/queues/tx-%d/xps_cpus", el.veth.A.Name, q)
		if out, err := el.client.Run(context.Background(), "sh", "-c", "echo "+mask+" > "+path); err != nil {
			t.Fatalf("XPS: %v: %s", err, out)
		}
	}
	// onCPU runs fn on a thread pinned to cpu.
	onCPU := func(cpu int, fn func() error) error {
		errc := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // the thread ends with the goroutine, pinned
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				errc <- err
				return
			}
			errc <- fn()
		}()
		return <-errc
	}
	const conns = 32
	cs := make([]net.Conn, conns)
	buf := make([]byte, 1)
	echo := func(c net.Conn, b byte) error {
		if _, err := c.Write([]byte{b}); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, buf); err != nil || buf[0] != b {
			return fmt.Errorf("echo %q, got %q: %v", b, buf, err)
		}
		return nil
	}
	for i := range cs {
		err := onCPU(i%2, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var err error
			if cs[i], err = el.client.DialTCP(ctx, echoAddr.String()); err != nil {
				return err
			}
			cs[i].SetDeadline(time.Now().Add(20 * time.Second))
			return echo(cs[i], 'x')
		})
		if err != nil {
			t.Fatalf("connection %d from CPU %d: %v", i, i%2, err)
		}
		defer cs[i].Close()
	}
	handoffs := func() (n uint64) {
		for _, s := range el.dp.Shards() {
			n += s.Stats().HandoffsOut.Load()
		}
		return n
	}
	before := handoffs()
	for i, c := range cs {
		if err := onCPU(1-i%2, func() error { return echo(c, 'y') }); err != nil {
			t.Fatalf("connection %d, writing from CPU %d: %v", i, 1-i%2, err)
		}
	}
	crossed := handoffs() - before
	t.Logf("%d connections written from the other CPU: %d segments handed to the shard holding their flow", conns, crossed)
	if crossed == 0 {
		t.Error("no segment crossed shards: XPS did not move the clients' segments to the other queue, so the test showed nothing")
	}
}
