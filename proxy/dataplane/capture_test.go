package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdproxy/xdproxy/stack"
)

// ethFrame builds an Ethernet frame around ls.
func ethFrame(t testing.TB, et layers.EthernetType, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: et}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, append([]gopacket.SerializableLayer{eth}, ls...)...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tcp4Frame(t testing.TB, src, dst string, sport, dport uint16) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	return ethFrame(t, layers.EthernetTypeIPv4, ip, &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), ACK: true, Window: 100})
}

func tcp6Frame(t testing.TB, src, dst string, sport, dport uint16) []byte {
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	return ethFrame(t, layers.EthernetTypeIPv6, ip, &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), SYN: true})
}

func TestCaptureFilterMatch(t *testing.T) {
	web := netip.MustParseAddrPort("10.10.1.1:80")
	toWeb := tcp4Frame(t, "10.0.0.7", "10.10.1.1", 40000, 80)
	fromWeb := tcp4Frame(t, "10.10.1.1", "10.0.0.7", 80, 40000)
	backend := tcp4Frame(t, "10.10.1.1", "10.10.2.2", 20001, 8080)
	other := tcp4Frame(t, "10.10.1.1", "10.0.0.7", 81, 80) // the listener's address and port, not together
	v6 := tcp6Frame(t, "fd00::7", "fd00::1", 40000, 443)
	udp := ethFrame(t, layers.EthernetTypeIPv4, &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.ParseIP("10.0.0.7"), DstIP: net.ParseIP("10.0.0.9")}, &layers.UDP{SrcPort: 53, DstPort: 5353})
	arp := ethFrame(t, layers.EthernetTypeARP, &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
		SourceHwAddress: []byte{2, 0, 0, 0, 0, 1}, SourceProtAddress: []byte{10, 0, 0, 7},
		DstHwAddress: make([]byte, 6), DstProtAddress: []byte{10, 10, 1, 1}})
	vlan := ethFrame(t, layers.EthernetTypeDot1Q, &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.ParseIP("10.0.0.7"), DstIP: net.ParseIP("10.10.1.1")},
		&layers.TCP{SrcPort: 40000, DstPort: 80})
	fragment := bytes.Clone(toWeb)
	binary.BigEndian.PutUint16(fragment[14+6:], 100) // fragment offset 800: no TCP header here

	frames := map[string][]byte{"toWeb": toWeb, "fromWeb": fromWeb, "backend": backend, "other": other, "v6": v6,
		"udp": udp, "arp": arp, "vlan": vlan, "fragment": fragment, "short": toWeb[:20], "empty": nil}
	for _, tc := range []struct {
		filter CaptureFilter
		want   []string
	}{
		{CaptureFilter{}, []string{"toWeb", "fromWeb", "backend", "other", "v6", "udp", "arp", "vlan", "fragment", "short", "empty"}},
		{CaptureFilter{Host: netip.MustParseAddr("10.10.1.1")}, []string{"toWeb", "fromWeb", "backend", "other", "arp", "vlan", "fragment"}},
		{CaptureFilter{Host: netip.MustParseAddr("::ffff:10.0.0.7")}, []string{"toWeb", "fromWeb", "other", "udp", "arp", "vlan", "fragment"}},
		{CaptureFilter{Host: netip.MustParseAddr("fd00::1")}, []string{"v6"}},
		{CaptureFilter{Port: 80}, []string{"toWeb", "fromWeb", "other", "vlan"}},
		{CaptureFilter{Port: 5353}, []string{"udp"}},
		{CaptureFilter{Listener: web}, []string{"toWeb", "fromWeb", "vlan"}},
		{CaptureFilter{Listener: web, Host: netip.MustParseAddr("10.0.0.8")}, nil},
		{CaptureFilter{Host: netip.MustParseAddr("10.10.1.1"), Port: 8080}, []string{"backend"}},
	} {
		f := tc.filter.normalized()
		want := map[string]bool{}
		for _, n := range tc.want {
			want[n] = true
		}
		for name, fr := range frames {
			if got := f.Match(fr); got != want[name] {
				t.Errorf("filter %q on %s: %v, want %v", f, name, got, want[name])
			}
		}
	}
	if s := (CaptureFilter{Host: netip.MustParseAddr("10.0.0.1"), Port: 80, Listener: web}).String(); s != "host 10.0.0.1 and port 80 and listener 10.10.1.1:80" {
		t.Errorf("String: %q", s)
	}
	f := CaptureFilter{Listener: web}
	if n := testing.AllocsPerRun(100, func() { f.Match(toWeb); f.Match(v6) }); n != 0 {
		t.Errorf("Match allocates %v times", n)
	}
}

// TestCaptureRingFullDrops: a ring nobody reads fills up; every frame past
// that is refused at once (push never waits) and counted as dropped, and
// what was taken comes out intact and in order.
func TestCaptureRingFullDrops(t *testing.T) {
	d := Detached([]string{"p0"}, [][]int{{0}}, []*stack.Engine{nil})
	defer d.Stop()
	c, err := d.StartCapture(CaptureFilter{}, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tp := d.shards[0].tap.Load()
	frame := make([]byte, 1514) // a record of 1,536 bytes: 42 fit in 64 KiB
	start := time.Now()
	for i := range 1000 {
		binary.BigEndian.PutUint32(frame, uint32(i))
		tp.frame(stack.Time(i), 0, 3, i%2 == 1, frame)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("1,000 offers to a full ring took %v", el)
	}
	counts := c.Counts()
	if counts[0].Captured != 42 || counts[0].Dropped != 958 {
		t.Fatalf("counts %+v, want 42 captured and 958 dropped", counts)
	}
	var got []int
	c.Read(0, func(f *CapturedFrame) {
		i := int(binary.BigEndian.Uint32(f.Data))
		if len(f.Data) != 1514 || f.Queue != 3 || f.Iface != 0 || f.Out != (i%2 == 1) || f.Time != int64(i)+tp.wall {
			t.Fatalf("frame %d: %+v", i, f)
		}
		got = append(got, i)
	})
	if len(got) != 42 || got[0] != 0 || got[41] != 41 {
		t.Fatalf("read back %v", got)
	}
	// Room again, after a wrap: the next frame goes in.
	tp.frame(1, 0, 0, false, frame[:60])
	if n := c.Read(0, func(*CapturedFrame) {}); n != 1 {
		t.Fatalf("after draining, %d frames read, want 1", n)
	}
	if n := testing.AllocsPerRun(100, func() { tp.frame(1, 0, 0, false, frame[:60]) }); n != 0 {
		t.Errorf("a captured frame allocates %v times", n)
	}
}

// TestCaptureRingConcurrent: a producer that never waits and a reader
// draining as it goes: every frame is either read, intact and in order, or
// counted as dropped.
func TestCaptureRingConcurrent(t *testing.T) {
	r := newCaptureRing(64 << 10)
	const total = 200000
	var dropped int
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1600)
		for i := range total {
			n := 9 + i%1500 // every length, so records wrap at every offset
			binary.LittleEndian.PutUint64(buf, uint64(i))
			buf[n-1] = byte(i)
			if !r.push(int64(i), i%3, i%5, i%2 == 0, buf[:n]) {
				dropped++
			}
		}
	}()
	var f CapturedFrame
	last, read := -1, 0
	for finished := false; ; {
		if !finished {
			select {
			case <-done:
				finished = true // one more pass for what is left
			default:
			}
		}
		any := false
		for r.peek(&f) {
			any = true
			i := int(binary.LittleEndian.Uint64(f.Data))
			n := 9 + i%1500
			if i <= last || len(f.Data) != n || f.Data[n-1] != byte(i) || f.Time != int64(i) || f.Iface != i%3 || f.Queue != i%5 || f.Out != (i%2 == 0) {
				t.Fatalf("after frame %d: frame %d, %d bytes, %+v", last, i, len(f.Data), f)
			}
			last = i
			read++
			r.advance(len(f.Data))
		}
		if finished && !any {
			break
		}
	}
	if read == 0 {
		t.Fatalf("nothing read (%d dropped)", dropped)
	}
	if read+dropped != total {
		t.Fatalf("read %d + dropped %d != %d", read, dropped, total)
	}
}

// TestCaptureOneAtATime: a second capture is refused until the first closes.
func TestCaptureOneAtATime(t *testing.T) {
	d := Detached([]string{"p0", "p1"}, [][]int{{0, 0}, {1, -1}}, []*stack.Engine{nil, nil})
	defer d.Stop()
	c, err := d.StartCapture(CaptureFilter{Port: 80}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.StartCapture(CaptureFilter{}, 0); !errors.Is(err, ErrCaptureBusy) {
		t.Fatalf("second capture: %v, want ErrCaptureBusy", err)
	}
	c.Close()
	c.Close()
	for _, s := range d.shards {
		if s.tap.Load() != nil {
			t.Fatalf("shard %d still taps after Close", s.id)
		}
	}
	c2, err := d.StartCapture(CaptureFilter{}, 0)
	if err != nil {
		t.Fatalf("capture after Close: %v", err)
	}
	defer c2.Close()
	// Frames from both shards come out oldest first (a shard's own in
	// the order it took them, which is their time order).
	f := tcp4Frame(t, "10.0.0.7", "10.10.1.1", 40000, 80)
	d.shards[0].tap.Load().frame(3, 0, 0, false, f)
	d.shards[1].tap.Load().frame(5, 0, 1, false, f)
	d.shards[0].tap.Load().frame(7, 1, 0, true, f)
	var order []int
	c2.Read(0, func(fr *CapturedFrame) { order = append(order, int(fr.Time-c2.taps[0].wall)) })
	if len(order) != 3 || order[0] != 3 || order[1] != 5 || order[2] != 7 {
		t.Fatalf("read order %v, want [3 5 7]", order)
	}
	if got := c2.Counts(); got[0].Captured != 2 || got[1].Captured != 1 {
		t.Fatalf("counts %+v", got)
	}
}
