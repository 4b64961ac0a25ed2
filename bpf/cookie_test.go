package bpf

// SYN cookies in XDP (syncookie.h) against the engine's own cookie code: the
// same SYN given to the program (BPF_PROG_TEST_RUN) and to a stack.Engine
// with the same keys at the same instant gives the same SYN-ACK, byte for
// byte; the client's ACK to it passes the program and opens a connection in
// an engine that never saw the SYN; forged ACKs are dropped and counted.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/stack/wire"
)

const xdpTX = 3

var cookieKeys = &stack.Keys{
	ISN:       [2]uint64{0x1111, 0x2222},
	Timestamp: [2]uint64{0x0123456789abcdef, 0xfedcba9876543210},
	Cookie:    [2]uint64{0x5555aaaa5555aaaa, 0x0f0f0f0ff0f0f0f0},
}

const cookieLifetime = 64 * time.Second

// bootNow is CLOCK_BOOTTIME, the program's clock and the daemon engines'.
func bootNow(tb testing.TB) stack.Time {
	tb.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		tb.Fatal(err)
	}
	return stack.Time(ts.Nano())
}

type frameSink struct {
	buf    [2048]byte
	frames [][]byte
}

func (s *frameSink) NextFrame() []byte { return s.buf[:] }
func (s *frameSink) Commit(n int)      { s.frames = append(s.frames, bytes.Clone(s.buf[:n])) }

func (s *frameSink) take(tb testing.TB) []byte {
	tb.Helper()
	if len(s.frames) != 1 {
		tb.Fatalf("engine sent %d frames, want 1", len(s.frames))
	}
	f := s.frames[0]
	s.frames = nil
	return f
}

type nopHandler struct{}

func (nopHandler) ConnEvent(*stack.Conn, stack.Events) {}
func (nopHandler) Acceptable(*stack.Listener)          {}

// cookieEngine is an engine on the fixture's listeners with the test keys.
func cookieEngine(tb testing.TB, mode stack.SYNCookieMode) (*stack.Engine, *frameSink, map[netip.AddrPort]*stack.Listener) {
	tb.Helper()
	sink := &frameSink{}
	e, err := stack.New(stack.Config{
		MAC: wire.MAC(macServer), Addresses: []netip.Addr{listen4.Addr(), listen6.Addr()},
		Sink: sink, Handler: nopHandler{}, Rand: rand.New(rand.NewPCG(1, 2)),
		Keys: cookieKeys, SYNCookies: mode, CookieSecretLifetime: cookieLifetime,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ls := map[netip.AddrPort]*stack.Listener{}
	for _, ap := range []netip.AddrPort{listen4, listen6} {
		if ls[ap], err = e.Listen(ap); err != nil {
			tb.Fatal(err)
		}
	}
	return e, sink, ls
}

// cookieProgram is the fixture program with cookies on, keyed and
// parameterised from e.
func cookieProgram(tb testing.TB, e *stack.Engine) *Program {
	tb.Helper()
	p := loadForTest(tb)
	configure(tb, p)
	r := e.CookieResponder(0)
	if err := p.SetCookieResponder(CookieResponder{
		Lifetime: cookieLifetime, TSKey: cookieKeys.Timestamp, MSSTable: stack.CookieMSS(),
		MSS4: r.MSS4, MSS6: r.MSS6, Window: r.Window, WScale: r.WScale,
	}); err != nil {
		tb.Fatal(err)
	}
	epoch := stack.CookieEpoch(bootNow(tb), cookieLifetime)
	for ep := epoch - 1; ep <= epoch+1; ep++ {
		if err := p.SetCookieSecret(ep, cookieKeys.CookieSecret(ep)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := p.SetSYNCookies(true); err != nil {
		tb.Fatal(err)
	}
	return p
}

// tcpSeg builds a TCP segment from client:cport to dst.
func tcpSeg(tb testing.TB, dst netip.AddrPort, cport uint16, tcp *layers.TCP, tags ...tag) []byte {
	tb.Helper()
	tcp.SrcPort, tcp.DstPort = layers.TCPPort(cport), layers.TCPPort(dst.Port())
	if tcp.Window == 0 {
		tcp.Window = 64240
	}
	if dst.Addr().Is4() {
		ip := ipv4(layers.IPProtocolTCP, dst.Addr())
		ip.SrcIP = client4.AsSlice()
		ip.Flags = layers.IPv4DontFragment
		tcp.SetNetworkLayerForChecksum(ip)
		return frame(tb, tags, ip, tcp)
	}
	ip := ipv6(layers.IPProtocolTCP, dst.Addr())
	ip.SrcIP = client6.AsSlice()
	tcp.SetNetworkLayerForChecksum(ip)
	return frame(tb, tags, ip, tcp)
}

func optMSS(v uint16) layers.TCPOption {
	return layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: binary.BigEndian.AppendUint16(nil, v)}
}

func optWScale(v uint8) layers.TCPOption {
	return layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{v}}
}

func optSACKOK() layers.TCPOption {
	return layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2}
}

func optTS(val, ecr uint32) layers.TCPOption {
	d := binary.BigEndian.AppendUint32(nil, val)
	return layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: binary.BigEndian.AppendUint32(d, ecr)}
}

func optNOP() layers.TCPOption { return layers.TCPOption{OptionType: layers.TCPOptionKindNop} }

// runOut runs the program on pkt and returns its verdict and output frame.
func runOut(tb testing.TB, prog *ebpf.Program, pkt []byte) (uint32, []byte) {
	tb.Helper()
	out := make([]byte, len(pkt)+256)
	opts := &ebpf.RunOptions{Data: pkt, DataOut: out}
	ret, err := prog.Run(opts)
	if err != nil {
		tb.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret, opts.DataOut
}

type synCase struct {
	name string
	dst  netip.AddrPort
	opts []layers.TCPOption
	// What the connection recovers from the cookie and the timestamp echo.
	mss       int
	sack, ts  bool
	sndWScale int // -1: no window scaling
}

func synCases() []synCase {
	full := func(mss uint16, ws uint8) []layers.TCPOption {
		return []layers.TCPOption{optMSS(mss), optSACKOK(), optTS(5000, 0), optNOP(), optWScale(ws)}
	}
	var cs []synCase
	for _, dst := range []netip.AddrPort{listen4, listen6} {
		// The MSS a connection gets: the peer's, rounded down to the cookie's
		// table, capped by ours (MTU 1500).
		fam, defMSS, ours := "v4", 536, 1460
		if dst.Addr().Is6() {
			fam, defMSS, ours = "v6", 1220, 1440
		}
		cs = append(cs,
			synCase{fam + "/no_options", dst, nil, defMSS, false, false, -1},
			synCase{fam + "/mss_only", dst, []layers.TCPOption{optMSS(1400)}, 1380, false, false, -1},
			synCase{fam + "/mss_sack_no_ts", dst, []layers.TCPOption{optMSS(1460), optSACKOK(), optNOP(), optWScale(7)}, min(1460, ours), false, false, -1},
			synCase{fam + "/linux_syn", dst, full(1460, 7), min(1460, ours), true, true, 7},
			synCase{fam + "/jumbo_mss_capped", dst, full(8960, 9), ours, true, true, 9},
			synCase{fam + "/wscale_clamped", dst, full(1300, 15), 1300, true, true, 14},
			synCase{fam + "/ts_no_sack_no_ws", dst, []layers.TCPOption{optMSS(1452), optNOP(), optNOP(), optTS(77, 0)}, min(1452, ours), false, true, -1},
			synCase{fam + "/small_mss", dst, []layers.TCPOption{optMSS(500), optTS(9, 0)}, 536, false, true, -1},
		)
	}
	return cs
}

// engineSYNACK hands syn to e at now and returns its SYN-ACK.
func engineSYNACK(tb testing.TB, e *stack.Engine, sink *frameSink, now stack.Time, syn []byte) []byte {
	tb.Helper()
	e.HandleFrameOn(now, 0, syn)
	return sink.take(tb)
}

// The program's SYN-ACK is the engine's, byte for byte, for every option
// mix, IPv4 and IPv6.
func TestCookieSYNACKMatchesEngine(t *testing.T) {
	ref, _, _ := cookieEngine(t, stack.SYNCookiesAlways)
	p := cookieProgram(t, ref)
	for i, tc := range synCases() {
		t.Run(tc.name, func(t *testing.T) {
			syn := tcpSeg(t, tc.dst, uint16(30000+i), &layers.TCP{SYN: true, Seq: 0x1000000 * uint32(i+1), Options: tc.opts})
			for try := 0; ; try++ {
				e, sink, _ := cookieEngine(t, stack.SYNCookiesAlways)
				t0 := bootNow(t)
				ret, got := runOut(t, p.objs.XdproxySteer, syn)
				t1 := bootNow(t)
				if ret != xdpTX {
					t.Fatalf("verdict %s, want XDP_TX", actionNames[ret])
				}
				want := engineSYNACK(t, e, sink, t0, syn)
				if stack.TSClock(t0) != stack.TSClock(t1) && !bytes.Equal(got, want) && try < 5 {
					continue // a millisecond tick between the two: the timestamps differ
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("program's SYN-ACK differs from the engine's:\n got %x\nwant %x\n%s", got, want, gopacket.NewPacket(got, layers.LayerTypeEthernet, gopacket.Default))
				}
				break
			}
		})
	}
	c := counters(t, p)
	if n := uint64(len(synCases())); c.TxSYNCookie < n || c.RedirectListener != 0 {
		t.Fatalf("counters %+v: want TxSYNCookie >= %d and no redirect", c, n)
	}
}

// The SYN-ACK of a tagged SYN keeps its VLAN tags, MACs swapped.
func TestCookieSYNACKVLAN(t *testing.T) {
	ref, _, _ := cookieEngine(t, stack.SYNCookiesAlways)
	p := cookieProgram(t, ref)
	tags := []tag{{layers.EthernetTypeQinQ, 100}, {layers.EthernetTypeDot1Q, 200}}
	syn := tcpSeg(t, listen4, 31000, &layers.TCP{SYN: true, Seq: 7, Options: []layers.TCPOption{optMSS(1460)}}, tags...)
	ret, got := runOut(t, p.objs.XdproxySteer, syn)
	if ret != xdpTX {
		t.Fatalf("verdict %s, want XDP_TX", actionNames[ret])
	}
	pkt := gopacket.NewPacket(got, layers.LayerTypeEthernet, gopacket.Default)
	eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !bytes.Equal(eth.SrcMAC, macServer) || !bytes.Equal(eth.DstMAC, macClient) {
		t.Fatalf("MACs %v -> %v, want %v -> %v", eth.SrcMAC, eth.DstMAC, macServer, macClient)
	}
	var vids []uint16
	for _, l := range pkt.Layers() {
		if q, ok := l.(*layers.Dot1Q); ok {
			vids = append(vids, q.VLANIdentifier)
		}
	}
	tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if fmt.Sprint(vids) != "[100 200]" || tcp == nil || !tcp.SYN || !tcp.ACK || tcp.Ack != 8 {
		t.Fatalf("VLANs %v, TCP %+v: want tags 100, 200 and a SYN-ACK of 8", vids, tcp)
	}
}

// handshake returns the client's SYN for case tc and its ACK of the
// program's SYN-ACK (echoing its timestamp).
func handshake(tb testing.TB, p *Program, tc synCase, cport uint16, isn uint32) (synack *layers.TCP, ack []byte) {
	tb.Helper()
	syn := tcpSeg(tb, tc.dst, cport, &layers.TCP{SYN: true, Seq: isn, Options: tc.opts})
	ret, out := runOut(tb, p.objs.XdproxySteer, syn)
	if ret != xdpTX {
		tb.Fatalf("SYN: verdict %s, want XDP_TX", actionNames[ret])
	}
	synack = gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeTCP).(*layers.TCP)
	a := &layers.TCP{ACK: true, Seq: isn + 1, Ack: synack.Seq + 1, Window: 1000}
	for _, o := range synack.Options {
		if o.OptionType == layers.TCPOptionKindTimestamps {
			a.Options = []layers.TCPOption{optNOP(), optNOP(), optTS(6000, binary.BigEndian.Uint32(o.OptionData[:4]))}
		}
	}
	return synack, tcpSeg(tb, tc.dst, cport, a)
}

// A valid ACK passes (to the XSK: with none bound in the test, the
// fallback XDP_PASS), counted as CookieACK; the engine, which never saw the
// SYN, opens the connection from it with what the cookie and the timestamp
// echo carry — once told that cookies it did not send may be outstanding.
func TestCookieACK(t *testing.T) {
	ref, _, _ := cookieEngine(t, stack.SYNCookiesAlways)
	p := cookieProgram(t, ref)
	for i, tc := range synCases() {
		t.Run(tc.name, func(t *testing.T) {
			cport := uint16(32000 + i)
			_, ack := handshake(t, p, tc, cport, 0xfffffff0+uint32(i)) // the ISN wraps
			before := counters(t, p)
			if ret := run(t, p.objs.XdproxySteer, ack); ret != xdpPass {
				t.Fatalf("ACK: verdict %s, want XDP_PASS (the redirect's fallback)", actionNames[ret])
			}
			if d := counters(t, p).Sub(before); d != (Counters{RxPackets: 1, RedirectListener: 1, RedirectFailed: 1, CookieACK: 1}) {
				t.Fatalf("ACK: counters %+v", d)
			}
			// Its flow is known now: the next segment passes without a cookie check.
			before = counters(t, p)
			run(t, p.objs.XdproxySteer, ack)
			if d := counters(t, p).Sub(before); d.CookieACK != 0 || d.RedirectListener != 1 {
				t.Fatalf("second ACK: counters %+v, want a plain redirect", d)
			}

			e, sink, ls := cookieEngine(t, stack.SYNCookiesAuto)
			now := bootNow(t)
			e.HandleFrameOn(now, 0, ack)
			if n := ls[tc.dst].AcceptQueueLen(); n != 0 {
				t.Fatalf("engine without SetExternalCookies accepted the ACK")
			}
			sink.frames = nil // its RST
			e.SetExternalCookies(true)
			e.HandleFrameOn(now, 0, ack)
			c := ls[tc.dst].Accept()
			if c == nil {
				t.Fatalf("engine did not open a connection from the ACK (counters: accepted %d rejected %d)",
					e.Counters().Load(stack.SYNCookiesAccepted), e.Counters().Load(stack.SYNCookiesRejected))
			}
			in := c.Info()
			wantWnd := uint32(1000)
			if tc.sndWScale >= 0 {
				wantWnd <<= tc.sndWScale
			}
			if in.MSS != tc.mss || in.SACK != tc.sack || in.Timestamps != tc.ts || in.SndWnd != wantWnd {
				t.Fatalf("connection MSS %d SACK %v TS %v SND.WND %d; want %d %v %v %d",
					in.MSS, in.SACK, in.Timestamps, in.SndWnd, tc.mss, tc.sack, tc.ts, wantWnd)
			}
		})
	}
}

// Forged ACKs — any cookie the program did not make for that flow and ISN —
// are dropped and counted; so are ACKs of a secret that has expired.
func TestCookieForgedACK(t *testing.T) {
	ref, _, _ := cookieEngine(t, stack.SYNCookiesAlways)
	p := cookieProgram(t, ref)
	tc := synCases()[3] // v4 linux_syn
	synack, ack := handshake(t, p, tc, 33000, 1000)
	epoch := stack.CookieEpoch(bootNow(t), cookieLifetime)
	forged := []struct {
		name string
		seg  *layers.TCP
		dst  netip.AddrPort
	}{
		{"random_ack", &layers.TCP{ACK: true, Seq: 1001, Ack: 0x12345678}, listen4},
		{"right_epoch_wrong_mac", &layers.TCP{ACK: true, Seq: 1001, Ack: uint32(epoch&0xff)<<24 | 0x00abcdef}, listen4},
		{"other_isn", &layers.TCP{ACK: true, Seq: 2001, Ack: synack.Seq + 1}, listen4},
		{"fin_ack", &layers.TCP{ACK: true, FIN: true, Seq: 1001, Ack: 99}, listen4},
		{"v6_random", &layers.TCP{ACK: true, Seq: 1, Ack: 2}, listen6},
	}
	for _, f := range forged {
		before := counters(t, p)
		if ret := run(t, p.objs.XdproxySteer, tcpSeg(t, f.dst, 33000, f.seg)); ret != xdpDrop {
			t.Errorf("%s: verdict %s, want XDP_DROP", f.name, actionNames[ret])
		}
		if d := counters(t, p).Sub(before); d != (Counters{RxPackets: 1, DropBadCookie: 1}) {
			t.Errorf("%s: counters %+v", f.name, d)
		}
	}
	// The cookie from another port's handshake does not fit this flow.
	if ret := run(t, p.objs.XdproxySteer, mutate(ack, func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[14+20:], 33001)
		return b
	})); ret != xdpDrop {
		t.Errorf("cookie replayed on another port: verdict %s, want XDP_DROP", actionNames[ret])
	}
	// RSTs and segments without ACK are the engine's business.
	for _, seg := range []*layers.TCP{{RST: true, Seq: 5}, {RST: true, ACK: true, Seq: 5, Ack: 9}, {PSH: true, Seq: 5}} {
		if ret := run(t, p.objs.XdproxySteer, tcpSeg(t, listen4, 33002, seg)); ret != xdpPass {
			t.Errorf("%+v: verdict %s, want the redirect's XDP_PASS", seg, actionNames[ret])
		}
	}
	// Secrets gone: the valid cookie is refused too.
	for ep := epoch - 1; ep <= epoch+1; ep++ {
		if err := p.objs.CookieKeys.Update(uint32(ep%CookieKeySlots), &xdpCookieKey{}, ebpf.UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	if ret := run(t, p.objs.XdproxySteer, ack); ret != xdpDrop {
		t.Errorf("ACK after its secrets were removed: verdict %s, want XDP_DROP", actionNames[ret])
	}
	// ... and SYNs go to the engine, which can still answer them, from its
	// SYN queue too: the flow is learnt, so its handshake's ACK passes.
	syn := tcpSeg(t, listen4, 33003, &layers.TCP{SYN: true, Seq: 1})
	if ret := run(t, p.objs.XdproxySteer, syn); ret != xdpPass {
		t.Errorf("SYN without a secret: verdict %s, want the redirect's XDP_PASS", actionNames[ret])
	}
	if ret := run(t, p.objs.XdproxySteer, tcpSeg(t, listen4, 33003, &layers.TCP{ACK: true, Seq: 2, Ack: 0x777})); ret != xdpPass {
		t.Errorf("ACK of a handshake left to the engine: verdict %s, want the redirect's XDP_PASS", actionNames[ret])
	}
}

// With learning on and cookies off, the SYNs the engine handles put their
// flows in cookie_flows, and their first ACKs confirm them: once cookies
// turn on, confirmed flows and handshakes begun less than COOKIE_PENDING_NS
// ago pass; a flow whose SYN was seen long ago and never acknowledged (a
// flood's spoofed source) is checked for a cookie like a stranger.
func TestCookieLearning(t *testing.T) {
	ref, _, _ := cookieEngine(t, stack.SYNCookiesAlways)
	p := cookieProgram(t, ref)
	for _, err := range []error{p.SetSYNCookies(false), p.SetCookieLearning(true)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	syn := func(port uint16) []byte { return tcpSeg(t, listen6, port, &layers.TCP{SYN: true, Seq: 1}) }
	ack := func(port uint16) []byte { return tcpSeg(t, listen6, port, &layers.TCP{ACK: true, Seq: 2, Ack: 12345}) }
	const confirmed, stale, fresh, stranger = 34000, 34001, 34002, 34003
	for _, pkt := range [][]byte{syn(confirmed), syn(stale), ack(confirmed)} {
		if ret := run(t, p.objs.XdproxySteer, pkt); ret != xdpPass {
			t.Fatalf("cookies off: verdict %s, want the redirect's XDP_PASS", actionNames[ret])
		}
	}
	// Age every entry past COOKIE_PENDING_NS.
	var k xdpCookieFlow
	var st xdpCookieFlowState
	for it := p.objs.CookieFlows.Iterate(); it.Next(&k, &st); {
		st.SeenNs = 1
		if err := p.objs.CookieFlows.Update(&k, &st, ebpf.UpdateExist); err != nil {
			t.Fatal(err)
		}
	}
	run(t, p.objs.XdproxySteer, syn(fresh))
	if err := p.SetSYNCookies(true); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		port uint16
		want uint32
	}{
		{"confirmed", confirmed, xdpPass},
		{"handshake in flight", fresh, xdpPass},
		{"handshake in flight, again (now confirmed)", fresh, xdpPass},
		{"SYN long ago, never acknowledged", stale, xdpDrop},
		{"unknown", stranger, xdpDrop},
	} {
		if ret := run(t, p.objs.XdproxySteer, ack(tc.port)); ret != tc.want {
			t.Errorf("%s: verdict %s, want %s", tc.name, actionNames[ret], actionNames[tc.want])
		}
	}
}

// Cookies off (the default after Load): SYNs and ACKs go to the engine.
func TestCookiesOff(t *testing.T) {
	p := loadForTest(t)
	configure(t, p)
	for _, seg := range []*layers.TCP{{SYN: true, Seq: 1}, {ACK: true, Seq: 2, Ack: 3}} {
		if ret := run(t, p.objs.XdproxySteer, tcpSeg(t, listen4, 35000, seg)); ret != xdpPass {
			t.Errorf("%+v: verdict %s, want the redirect's XDP_PASS", seg, actionNames[ret])
		}
	}
	if err := p.SetCookieResponder(CookieResponder{}); err == nil {
		t.Error("SetCookieResponder without a lifetime: no error")
	}
}

// BenchmarkXDPCookie is the program's cost per SYN answered with a cookie,
// per forged ACK (one SipHash, then the drop) and per ACK of a known flow,
// beside a SYN and an ACK steered to the engine while learning, in ns/pkt. The ACKs and the steered
// SYN run under BPF_PROG_TEST_RUN's repeat (the kernel's time per run); a
// SYN cannot, since the first run turns the frame into our SYN-ACK, so it
// runs once per call and what the same calls cost a program that returns
// XDP_PASS at once is subtracted (two interleaved timings: noisier).
func BenchmarkXDPCookie(b *testing.B) {
	ref, _, _ := cookieEngine(b, stack.SYNCookiesAlways)
	p := cookieProgram(b, ref)
	tc := synCases()[3]
	_, ack := handshake(b, p, tc, 36000, 1000)
	// The right epoch byte: the MAC is computed before the ACK is refused.
	epoch := stack.CookieEpoch(bootNow(b), cookieLifetime)
	forged := tcpSeg(b, listen4, 36001, &layers.TCP{ACK: true, Seq: 5, Ack: uint32(epoch&0xff)<<24 | 0xabcdef})
	syn := tcpSeg(b, listen4, 36002, &layers.TCP{SYN: true, Seq: 1, Options: tc.opts})
	cookies := func(on bool) {
		if err := p.SetSYNCookies(on); err != nil {
			b.Fatal(err)
		}
	}
	repeat := func(name string, pkt []byte, on bool, want uint32) {
		b.Run(name, func(b *testing.B) {
			cookies(on)
			ret, perRun, err := p.objs.XdproxySteer.Benchmark(pkt, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			if ret != want {
				b.Fatalf("verdict %s, want %s", actionNames[ret], actionNames[want])
			}
			b.ReportMetric(float64(perRun.Nanoseconds()), "ns/pkt")
		})
	}
	if err := p.SetCookieLearning(true); err != nil {
		b.Fatal(err)
	}
	// Cookies off, learning on (syn_cookies auto without pressure): the
	// SYN's flow is recorded, the ACK's looked up (and confirmed once).
	repeat("syn_to_engine_learning", syn, false, xdpPass)
	repeat("ack_to_engine_learning", ack, false, xdpPass)
	repeat("forged_ack_drop", forged, true, xdpDrop)
	// After its first run the flow is known: a lookup, no cookie check.
	repeat("known_flow_ack", ack, true, xdpPass)

	// A SYN cannot repeat in place (the first run turns the frame into our
	// SYN-ACK; live frames recycle their pages modified), so it runs once
	// per call, in batches interleaved with a program that only returns
	// XDP_PASS; the best batch of each is kept and their difference is the
	// program's cost (noisier than the repeats above).
	b.Run("syn_cookie_tx", func(b *testing.B) {
		cookies(true)
		base := foreignProgram(b)
		out := make([]byte, len(syn)+256)
		const batch = 200
		best := [2]time.Duration{time.Hour, time.Hour}
		for done := 0; done < b.N; done += batch {
			for j, prog := range []*ebpf.Program{p.objs.XdproxySteer, base} {
				t0 := time.Now()
				for range batch {
					if _, err := prog.Run(&ebpf.RunOptions{Data: syn, DataOut: out}); err != nil {
						b.Fatal(err)
					}
				}
				best[j] = min(best[j], time.Since(t0)/batch)
			}
		}
		if ret, _ := runOut(b, p.objs.XdproxySteer, syn); ret != xdpTX {
			b.Fatalf("verdict %s, want XDP_TX", actionNames[ret])
		}
		b.ReportMetric(float64((best[0] - best[1]).Nanoseconds()), "ns/pkt")
	})
}

// SendByXDPTX hands a frame to the driver as XDP_TX: with an XDP program on
// the veth's peer (NAPI there), the peer receives it.
func TestSendByXDPTX(t *testing.T) {
	v := newVethPair(t)
	l, err := link.AttachXDP(link.XDPOptions{Program: foreignProgram(t), Interface: v.out.Attrs().Index})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rx := func() uint64 {
		lk, err := netlink.LinkByIndex(v.out.Attrs().Index)
		if err != nil {
			t.Fatal(err)
		}
		return lk.Attrs().Statistics.RxPackets
	}
	before := rx()
	frame := make([]byte, 60)
	copy(frame, []byte{0x02, 'x', 'd', 'p', 't', 'x'})
	frame[12], frame[13] = 0x88, 0xb5
	if err := SendByXDPTX(v.in.Attrs().Index, frame); err != nil {
		t.Fatal(err)
	}
	if after := rx(); after != before+1 {
		t.Fatalf("peer received %d frames, want 1", after-before)
	}
}
