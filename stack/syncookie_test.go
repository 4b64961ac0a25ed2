package stack

// SYN cookies (syncookie.go, listen.go): through real handshakes against the
// listener, and the cookie jar and timestamp encoding on their own.

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

func withCookies(m SYNCookieMode) harnessOpt {
	return func(c *Config) { c.SYNCookies = m }
}

const cookieLifetime = 64 * time.Second // the default CookieSecretLifetime

// epochStart is the start of the cookie secret lifetime that t falls in.
func epochStart(t Time) Time { return t - t%Time(cookieLifetime) }

// expectCookieSYNACK asserts a stateless SYN-ACK from the listener: seq is
// the cookie (learned as our ISN), nothing kept, nothing scheduled.
func (h *harness) expectCookieSYNACK(ack uint32) *wire.Packet {
	h.t.Helper()
	p := h.expect(seg{flags: SYN | ACK, seq: 0, ack: ack})
	epoch := uint64(h.now) / uint64(cookieLifetime)
	if got := p.TCP.Seq >> cookieMACBits; got != uint32(epoch&0xff) {
		h.t.Fatalf("cookie %#x carries epoch %d, want %d", p.TCP.Seq, got, epoch&0xff)
	}
	if _, ok := h.e.flows[h.key()]; ok {
		h.t.Fatal("a cookie SYN-ACK left a connection record")
	}
	return p
}

// The round trip with timestamps: the MSS comes back from the cookie, window
// scale and SACK-permitted from the echoed timestamp.
func TestCookieRoundTrip(t *testing.T) {
	h := newHarness(t, withCookies(SYNCookiesAlways))
	h.listen()
	// peer: SYN(seq=x) MSS 1460, wscale 7, SACK-permitted, TSval 5000
	h.send(seg{flags: SYN, seq: 0})
	// engine: SYN|ACK(seq=cookie, ack=x+1), keeping nothing
	p := h.expectCookieSYNACK(1)
	o := p.TCP.Options
	if o.MSS != 1460 || !o.HasWScale || o.WScale != 3 || !o.SACKPermitted || !o.HasTimestamps || o.TSEcr != 5000 {
		t.Fatalf("cookie SYN-ACK options %+v: want MSS 1460, wscale 3, SACK-permitted, TSecr 5000", o)
	}
	tsNow := tsClock(h.now) + h.e.tsOffset(engineAddr, peerAddr)
	if o.TSVal&cookieTSMask != 7|cookieSACKBit {
		t.Fatalf("TSval %#x: low bits %#x, want wscale 7 | SACK = %#x", o.TSVal, o.TSVal&cookieTSMask, 7|cookieSACKBit)
	}
	if d := int32(tsNow - o.TSVal); d < 0 || d >= 1<<cookieTSBits {
		t.Fatalf("TSval %d is %d behind the clock %d: want within [0, 64)", o.TSVal, d, tsNow)
	}
	if n := h.l.SYNQueueLen(); n != 0 {
		t.Fatalf("SYN queue %d, want 0", n)
	}
	h.expectDeadline(-1)
	h.expectCounter(SYNCookiesSent, 1)
	h.expectCounter(SYNQueueOverflow, 0)
	synackTS := o.TSVal

	// peer: ACK(seq=x+1, ack=cookie+1), TSecr = the cookie TSval
	h.advance(10 * time.Millisecond)
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expectNone()
	h.expectState(Established)
	h.expectCounter(SYNCookiesAccepted, 1)
	h.expectCounter(PassiveOpens, 1)
	c := h.l.Accept()
	if c != h.c {
		t.Fatalf("Accept = %v, want the cookie connection", c)
	}
	if !c.cookieOpen || c.sndMSS != 1460 || !c.wsOK || c.sndWScale != 7 || c.rcvWScale != 3 || !c.sackOK || !c.tsOK || c.tsRecent != 5000 {
		t.Fatalf("recovered MSS %d, wscale %v %d/%d, SACK %v, TS %v (recent %d)",
			c.sndMSS, c.wsOK, c.sndWScale, c.rcvWScale, c.sackOK, c.tsOK, c.tsRecent)
	}
	if i := c.Info(); i.SndUna != uint32(h.ourISS)+1 || i.RcvNxt != uint32(h.peerISS)+1 || i.SndWnd != 65535<<7 {
		t.Fatalf("SND.UNA %d RCV.NXT %d SND.WND %d, want y+1, x+1, %d",
			i.SndUna-uint32(h.ourISS), i.RcvNxt-uint32(h.peerISS), i.SndWnd, 65535<<7)
	}

	// Data both ways uses what was recovered.
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("0123456789")})
	p = h.expect(seg{flags: ACK, seq: 1, ack: 11, wnd: (DefaultBuffer - 10) >> 3}) // our window, scaled by 3
	if o := p.TCP.Options; !o.HasTimestamps || o.TSEcr != 5000 || int32(o.TSVal-synackTS) < 0 {
		t.Fatalf("ACK timestamps %d/%d: want TSecr 5000 and TSval not behind %d", o.TSVal, o.TSEcr, synackTS)
	}
	payload := bytes.Repeat([]byte("y"), 3000)
	h.writeAll(c, string(payload))
	h.expect(seg{flags: ACK, seq: 1, ack: 11, data: payload[:1448]}) // MSS 1460 less 12 bytes of timestamps
	h.expect(seg{flags: ACK, seq: 1449, ack: 11, data: payload[1448:2896]})
	h.expect(seg{flags: PSH | ACK, seq: 2897, ack: 11, data: payload[2896:]})
}

// The MSS travels as an index into cookieMSS: rounded down to a table entry
// (below the smallest, 536, as Linux's msstab[0]), then capped by ours.
func TestCookieMSS(t *testing.T) {
	for _, tc := range []struct{ peer, want uint16 }{
		{1460, 1460}, {1461, 1460}, {1452, 1452}, {1441, 1440}, {1400, 1380}, {1300, 1300},
		{1220, 1220}, {1219, 536}, {536, 536}, {500, 536}, {0, 536}, {9000, 1460},
	} {
		h := newHarness(t, withCookies(SYNCookiesAlways))
		h.listen()
		h.peerOpts.MSS = tc.peer
		h.send(seg{flags: SYN, seq: 0})
		h.expectCookieSYNACK(1)
		h.send(seg{flags: ACK, seq: 1, ack: 1})
		h.expectNone()
		h.expectState(Established)
		if h.c.sndMSS != int(tc.want) {
			t.Errorf("peer MSS %d: recovered %d, want %d", tc.peer, h.c.sndMSS, tc.want)
		}
	}
}

// Without timestamps there is nowhere to carry window scale and SACK: the
// SYN-ACK offers neither and the connection goes without (as Linux's).
func TestCookieWithoutTimestamps(t *testing.T) {
	h := newHarness(t, withCookies(SYNCookiesAlways))
	h.peerTS = false
	h.listen()
	h.peerOpts.MSS = 1300
	// peer: SYN MSS 1300, wscale 7, SACK-permitted, no timestamps
	h.send(seg{flags: SYN, seq: 0})
	p := h.expectCookieSYNACK(1)
	if o := p.TCP.Options; o != (wire.TCPOptions{MSS: 1460}) {
		t.Fatalf("SYN-ACK options %+v, want MSS 1460 alone", o)
	}
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expectNone()
	h.expectState(Established)
	c := h.l.Accept()
	if c.sndMSS != 1300 || c.wsOK || c.sndWScale != 0 || c.rcvWScale != 0 || c.sackOK || c.tsOK {
		t.Fatalf("MSS %d, wscale %v %d/%d, SACK %v, TS %v; want 1300 and nothing else",
			c.sndMSS, c.wsOK, c.sndWScale, c.rcvWScale, c.sackOK, c.tsOK)
	}
	// Windows are unscaled both ways.
	if i := c.Info(); i.SndWnd != 65535 {
		t.Fatalf("SND.WND %d, want 65535", i.SndWnd)
	}
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("hi")})
	h.expect(seg{flags: ACK, seq: 1, ack: 3, wnd: 65535})
	payload := bytes.Repeat([]byte("z"), 1500)
	h.writeAll(c, string(payload))
	h.expect(seg{flags: ACK, seq: 1, ack: 3, data: payload[:1300]})
	h.expect(seg{flags: PSH | ACK, seq: 1301, ack: 3, data: payload[1300:]})
}

// Each option rides the timestamp independently.
func TestCookieTimestampOptions(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ws       bool
		sack     bool
		wantBits uint32
		wantWS   bool
		wantSACK bool
	}{
		{"wscale and SACK", true, true, 7 | cookieSACKBit, true, true},
		{"wscale only", true, false, 7, true, false},
		{"SACK only", false, true, cookieNoWScale | cookieSACKBit, false, true},
		{"neither", false, false, cookieNoWScale, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, withCookies(SYNCookiesAlways))
			h.listen()
			h.peerOpts = wire.TCPOptions{MSS: 1460, HasWScale: tc.ws, WScale: 7, SACKPermitted: tc.sack}
			h.send(seg{flags: SYN, seq: 0})
			o := h.expectCookieSYNACK(1).TCP.Options
			if o.HasWScale != tc.ws || o.SACKPermitted != tc.sack || o.TSVal&cookieTSMask != tc.wantBits {
				t.Fatalf("SYN-ACK options %+v: TSval low bits %#x, want %#x", o, o.TSVal&cookieTSMask, tc.wantBits)
			}
			h.send(seg{flags: ACK, seq: 1, ack: 1})
			h.expectState(Established)
			if c := h.c; c.wsOK != tc.wantWS || c.sackOK != tc.wantSACK || (tc.wantWS && c.sndWScale != 7) {
				t.Fatalf("recovered wscale %v (%d), SACK %v", c.wsOK, c.sndWScale, c.sackOK)
			}
		})
	}
}

// auto: a SYN_RCVD entry while the SYN queue has room, a cookie once it is full.
func TestCookieAutoSwitchesWhenSYNQueueFull(t *testing.T) {
	h := newHarness(t, withConfig(func(c *Config) { c.SYNBacklog = 2 }))
	h.listen()
	var peers []peerConn
	for _, port := range []uint16{40000, 40001} {
		h.freshPeer(port, 80)
		h.send(seg{flags: SYN, seq: 0})
		h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
		h.expectState(SynReceived)
		peers = append(peers, h.savePeer())
	}
	h.expectCounter(SYNCookiesSent, 0)
	if n := h.l.SYNQueueLen(); n != 2 {
		t.Fatalf("SYN queue %d, want 2", n)
	}
	// The third: the queue is full → cookie, no entry.
	h.freshPeer(40002, 80)
	h.send(seg{flags: SYN, seq: 0})
	h.expectCookieSYNACK(1)
	h.expectState(Closed)
	h.expectCounter(SYNQueueOverflow, 1)
	h.expectCounter(SYNCookiesSent, 1)
	if n := h.l.SYNQueueLen(); n != 2 {
		t.Fatalf("SYN queue %d, want 2", n)
	}
	h.expectDeadline(DefaultInitialRTO) // only the two entries' SYN-ACK timers
	cookie := h.savePeer()
	// Its handshake completes from the cookie.
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expectNone()
	h.expectState(Established)
	h.expectCounter(SYNCookiesAccepted, 1)
	cookie = h.savePeer()
	// The first entry completes normally; the queue has room again.
	h.usePeer(peers[0])
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expectNone()
	h.expectState(Established)
	if n := h.l.SYNQueueLen(); n != 1 {
		t.Fatalf("SYN queue %d, want 1", n)
	}
	// So the next SYN gets an entry again, not a cookie.
	h.freshPeer(40003, 80)
	h.send(seg{flags: SYN, seq: 0})
	h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.expectState(SynReceived)
	h.expectCounter(SYNCookiesSent, 1)
	// Accept order is completion order.
	if c := h.l.Accept(); c != cookie.c {
		t.Fatalf("first Accept = %v, want the cookie connection", c)
	}
	if c := h.l.Accept(); c != peers[0].c {
		t.Fatalf("second Accept = %v, want the first entry", c)
	}
	h.expectCounter(PassiveOpens, 2)
}

// never: a SYN beyond the SYN queue is dropped and counted; no cookie.
func TestCookieNeverDrops(t *testing.T) {
	h := newHarness(t, withCookies(SYNCookiesNever), withConfig(func(c *Config) { c.SYNBacklog = 1 }))
	h.listen()
	h.send(seg{flags: SYN, seq: 0})
	h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.freshPeer(40001, 80)
	h.send(seg{flags: SYN, seq: 0})
	h.expectNone()
	h.expectState(Closed)
	h.expectCounter(SYNQueueOverflow, 1)
	h.expectCounter(SYNCookiesSent, 0)
	if n := h.l.SYNQueueLen(); n != 1 {
		t.Fatalf("SYN queue %d, want 1", n)
	}
	// No cookie can be outstanding, so a guessed ACK is refused as by
	// RFC 9293 LISTEN: <SEQ=SEG.ACK><CTL=RST> (seq absolute: no ISN of ours).
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expect(seg{flags: RST, seq: 1})
	h.expectCounter(SYNCookiesRejected, 0)
	h.expectState(Closed)
}

// Validity: a cookie is checked under the current and the previous secret,
// so it lives between one and two lifetimes; older ACKs are rejected,
// counted, and not answered.
func TestCookieExpiryAndRotation(t *testing.T) {
	h := newHarness(t, withCookies(SYNCookiesAlways))
	h.listen()
	start := epochStart(h.now) + Time(cookieLifetime) // the first instant of an epoch E
	h.now = start
	syn := func(port uint16) peerConn {
		h.freshPeer(port, 80)
		h.send(seg{flags: SYN, seq: 0})
		h.expectCookieSYNACK(1)
		return h.savePeer()
	}
	ack := func(p peerConn) {
		h.usePeer(p)
		h.send(seg{flags: ACK, seq: 1, ack: 1})
		h.expectNone()
	}
	a := syn(40000) // first instant of E
	c := syn(40002) // first instant of E
	h.now = start + Time(cookieLifetime) - 1
	b := syn(40001) // last instant of E
	// Last instant of E+1: A's cookie, nearly two lifetimes old, is still good
	// (the previous secret).
	h.now = start + 2*Time(cookieLifetime) - 1
	ack(a)
	h.expectState(Established)
	h.expectCounter(SYNCookiesAccepted, 1)
	// First instant of E+2: E's secret is gone. B's cookie, one lifetime
	// old, and C's, exactly two, are rejected; no RST is sent.
	h.now++
	ack(b)
	h.expectState(Closed)
	ack(c)
	h.expectState(Closed)
	h.expectCounter(SYNCookiesRejected, 2)
	h.expectCounter(TxResets, 0)
	h.expectCounter(SYNCookiesAccepted, 1)
	if len(h.e.flows) != 1 {
		t.Fatalf("%d flows, want only A's", len(h.e.flows))
	}
}

// auto mode stops expecting cookies two lifetimes after the last one it
// sent; an ACK after that is refused with RST as in plain LISTEN (Linux's
// tcp_synq_no_recent_overflow).
func TestCookieAutoExpiryFallsBackToRST(t *testing.T) {
	h := newHarness(t, withConfig(func(c *Config) { c.SYNBacklog = 1 }))
	h.listen()
	h.send(seg{flags: SYN, seq: 0})
	h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.freshPeer(40001, 80)
	h.send(seg{flags: SYN, seq: 0})
	h.expectCookieSYNACK(1)
	h.now = h.now.Add(2 * cookieLifetime)
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expect(seg{flags: RST, seq: 1})
	h.expectCounter(SYNCookiesRejected, 0)
	h.expectCounter(RxNoSocket, 1)
}

// Forged cookies are rejected and counted, never answered (unlike Linux,
// which answers with RST: no reflection during a flood of forged ACKs).
func TestCookieForged(t *testing.T) {
	h := newHarness(t, withCookies(SYNCookiesAlways))
	h.listen()
	h.send(seg{flags: SYN, seq: 0})
	h.expectCookieSYNACK(1)
	real := h.savePeer()
	rejected := uint64(0)
	try := func(s seg) {
		t.Helper()
		h.send(s)
		h.expectNone()
		rejected++
		h.expectCounter(SYNCookiesRejected, rejected)
		if len(h.e.flows) != 0 {
			t.Fatalf("forged ACK %v created a connection", s)
		}
	}
	try(seg{flags: ACK, seq: 1, ack: 1 + 123457})          // a guess
	try(seg{flags: ACK, seq: 1, ack: 1 + 1<<24})           // right MAC, wrong epoch
	try(seg{flags: ACK, seq: 1, ack: 1 + (1<<32 - 1<<24)}) // the previous epoch's byte
	try(seg{flags: ACK, seq: 2, ack: 1})                   // right cookie, wrong client ISN
	try(seg{flags: ACK, seq: 1, ack: 1 + 8})               // past the MSS table
	h.freshPeer(40001, 80)                                 // right cookie, another 4-tuple
	h.ourISS, h.knowISS = real.ourISS, true
	try(seg{flags: ACK, seq: 1, ack: 1})
	h.expectCounter(TxResets, 0)
	h.expectCounter(SYNCookiesAccepted, 0)
	// The genuine ACK still works.
	h.usePeer(real)
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expectNone()
	h.expectState(Established)
	h.expectCounter(SYNCookiesAccepted, 1)
}

func TestCookieJarMakeCheck(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	k := FlowKey{LocalAddr: engineAddr, RemoteAddr: peerAddr, LocalPort: 80, RemotePort: 40000}
	other := k
	other.RemotePort++
	v6 := FlowKey{LocalAddr: netip.MustParseAddr("2001:db8::1"), RemoteAddr: netip.MustParseAddr("2001:db8::2"), LocalPort: 80, RemotePort: 40000}
	life := Time(cookieLifetime)
	start := epochStart(t0)
	epoch := uint32(uint64(start) / uint64(cookieLifetime))

	j := cookieJar{lifetime: cookieLifetime}
	j.rotate(start, r)
	for i, mss := range cookieMSS {
		for _, key := range []FlowKey{k, v6} {
			c := j.make(key, 1000, mss)
			if c>>cookieMACBits != epoch&0xff {
				t.Fatalf("cookie %#x: epoch byte %d, want %d", c, c>>cookieMACBits, epoch&0xff)
			}
			if got, ok := j.check(key, 1000, c); !ok || got != mss {
				t.Fatalf("MSS %d (index %d): check = %d, %v", mss, i, got, ok)
			}
		}
	}
	c := j.make(k, 1000, 1460)
	if c2 := j.make(k, 1000, 1460); c2 != c {
		t.Fatalf("make is not deterministic: %#x, %#x", c, c2)
	}
	if j.make(k, 1001, 1460) == c || j.make(other, 1000, 1460) == c {
		t.Fatal("the cookie does not depend on the client ISN and the 4-tuple")
	}
	for _, tc := range []struct {
		name   string
		k      FlowKey
		isn    uint32
		cookie uint32
	}{
		{"client ISN", k, 1001, c},
		{"4-tuple", other, 1000, c},
		{"epoch byte", k, 1000, c ^ 1<<cookieMACBits},
		{"MAC", k, 1000, c ^ 1<<20},
	} {
		if mss, ok := j.check(tc.k, tc.isn, tc.cookie); ok {
			t.Errorf("wrong %s accepted (MSS %d)", tc.name, mss)
		}
	}
	// Rotating within the epoch keeps the secret (and draws nothing).
	j.rotate(start+life-1, r)
	if j.make(k, 1000, 1460) != c {
		t.Fatal("the secret changed within its lifetime")
	}
	// One lifetime on: the previous secret still validates.
	j.rotate(start+life, r)
	if mss, ok := j.check(k, 1000, c); !ok || mss != 1460 {
		t.Fatalf("previous lifetime: check = %d, %v; want 1460, true", mss, ok)
	}
	if j.make(k, 1000, 1460) == c {
		t.Fatal("a new lifetime made the same cookie")
	}
	// Two lifetimes on: gone.
	j.rotate(start+2*life, r)
	if _, ok := j.check(k, 1000, c); ok {
		t.Fatal("a cookie two lifetimes old was accepted")
	}
	// Skipping a lifetime (no traffic) forgets the old secret at once.
	j2 := cookieJar{lifetime: cookieLifetime}
	j2.rotate(start, r)
	c = j2.make(k, 5, 536)
	j2.rotate(start+2*life, r)
	if j2.prev.valid {
		t.Fatal("a secret two lifetimes old kept as the previous one")
	}
	if _, ok := j2.check(k, 5, c); ok {
		t.Fatal("a cookie two lifetimes old was accepted after an idle lifetime")
	}
}

func TestCookieTSValAndOptions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  wire.TCPOptions
		bits  uint32
		ws    uint8
		hasWS bool
		sack  bool
	}{
		{"wscale 7 + SACK", wire.TCPOptions{HasWScale: true, WScale: 7, SACKPermitted: true}, 0x17, 7, true, true},
		{"wscale 0", wire.TCPOptions{HasWScale: true, WScale: 0}, 0x00, 0, true, false},
		{"wscale 14", wire.TCPOptions{HasWScale: true, WScale: 14}, 0x0e, 14, true, false},
		{"wscale 15 clamped to 14", wire.TCPOptions{HasWScale: true, WScale: 15}, 0x0e, 14, true, false},
		{"SACK only", wire.TCPOptions{SACKPermitted: true}, 0x1f, 0, false, true},
		{"nothing", wire.TCPOptions{}, 0x0f, 0, false, false},
	} {
		for _, tsNow := range []uint32{0x12345680, 0x123456bf, 0x12345697, 0x12345696, 5, 0, 0xffffffff, 0x80000010} {
			ts := cookieTSVal(tsNow, &tc.opts)
			if ts&cookieTSMask != tc.bits {
				t.Errorf("%s, now %#x: TSval %#x has low bits %#x, want %#x", tc.name, tsNow, ts, ts&cookieTSMask, tc.bits)
			}
			// Never from the future, and as recent as the encoding allows.
			if d := int32(tsNow - ts); d < 0 || d >= 1<<cookieTSBits {
				t.Errorf("%s, now %#x: TSval %#x is %d behind, want [0, 64)", tc.name, tsNow, ts, d)
			}
			ws, hasWS, sack := cookieTSOptions(ts)
			if hasWS != tc.hasWS || sack != tc.sack || (hasWS && ws != tc.ws) {
				t.Errorf("%s: decoded wscale %d (%v), SACK %v; want %d (%v), %v", tc.name, ws, hasWS, sack, tc.ws, tc.hasWS, tc.sack)
			}
		}
	}
	// Exact values: the clock's low bits are replaced, stepping back one
	// 64-tick block when that would run ahead of the clock.
	o := wire.TCPOptions{HasWScale: true, WScale: 7, SACKPermitted: true}
	for _, tc := range []struct{ now, want uint32 }{
		{0x123456bf, 0x12345697}, // 0x...97 <= now: kept
		{0x12345697, 0x12345697}, // equal: kept
		{0x12345696, 0x12345657}, // one ahead: back a block
		{0x12345680, 0x12345657},
		{5, 0xffffffd7}, // wraps below zero
	} {
		if got := cookieTSVal(tc.now, &o); got != tc.want {
			t.Errorf("cookieTSVal(%#x) = %#x, want %#x", tc.now, got, tc.want)
		}
	}
}

// acceptingHandler accepts every connection as soon as the listener reports
// one, as a server loop does, and records the events.
type acceptingHandler struct {
	accepted []*Conn
	events   map[*Conn]Events
}

func (a *acceptingHandler) ConnEvent(c *Conn, ev Events) { a.events[c] |= ev }
func (a *acceptingHandler) Acceptable(l *Listener) {
	for c := l.Accept(); c != nil; c = l.Accept() {
		a.accepted = append(a.accepted, c)
	}
}

// The third segment of a cookie handshake may carry data (the client
// believes it is established). It is taken, acknowledged, and reported to
// the application as soon as it accepts the connection — within the same
// input, when it accepts from the Acceptable callback.
func TestCookieDataOnThirdACK(t *testing.T) {
	h := newHarness(t, withCookies(SYNCookiesAlways))
	a := &acceptingHandler{events: map[*Conn]Events{}}
	h.e.handler = a
	h.listen()
	h.send(seg{flags: SYN, seq: 0})
	h.expectCookieSYNACK(1)
	// peer: PSH|ACK(seq=x+1, ack=cookie+1, "GET /")
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("GET /")})
	// engine: ACK(seq=y+1, ack=x+6)
	h.expect(seg{flags: ACK, seq: 1, ack: 6})
	h.expectState(Established)
	if len(a.accepted) != 1 || a.accepted[0] != h.c {
		t.Fatalf("accepted %v, want the cookie connection", a.accepted)
	}
	if ev := a.events[h.c]; ev != EventReadable {
		t.Fatalf("events %v delivered with the segment, want readable", ev)
	}
	if got := h.readAll(h.c); got != "GET /" {
		t.Fatalf("read %q", got)
	}
}

// A cookie made outside the engine (the XDP program, bpf/syncookie.h) from
// the exported definition and the engine's keys: it is the cookie the engine
// sends itself, and its ACK opens a connection in an engine in auto mode
// that never sent a cookie — once SetExternalCookies says one may be
// outstanding; before, the ACK is answered as LISTEN answers a stray ACK.
func TestCookieFromOutside(t *testing.T) {
	keys := &Keys{ISN: [2]uint64{1, 2}, Timestamp: [2]uint64{3, 4}, Cookie: [2]uint64{5, 6}}
	withKeys := withConfig(func(c *Config) { c.Keys = keys })

	h := newHarness(t, withKeys, withCookies(SYNCookiesAlways))
	h.listen()
	h.send(seg{flags: SYN, seq: 0})
	p := h.expectCookieSYNACK(1)
	epoch := CookieEpoch(h.now, cookieLifetime)
	made := SYNCookie(keys.CookieSecret(epoch), epoch, h.key(), uint32(h.peerISS), 1460)
	if p.TCP.Seq != made {
		t.Fatalf("engine's cookie %#x, SYNCookie %#x", p.TCP.Seq, made)
	}
	if mss, ok := CheckSYNCookie(keys.CookieSecret(epoch), epoch, h.key(), uint32(h.peerISS), made); !ok || mss != 1460 {
		t.Fatalf("CheckSYNCookie = %d, %v; want 1460, true", mss, ok)
	}
	tsNow := TSClock(h.now) + keys.TSOffset(engineAddr, peerAddr)
	if want := CookieTSVal(tsNow, &wire.TCPOptions{HasWScale: true, WScale: 7, SACKPermitted: true, HasTimestamps: true}); p.TCP.Options.TSVal != want {
		t.Fatalf("engine's TSval %d, CookieTSVal %d", p.TCP.Options.TSVal, want)
	}
	if r := h.e.CookieResponder(0); r != (CookieResponder{MSS4: 1460, MSS6: 1440, Window: 65535, WScale: 3}) {
		t.Fatalf("CookieResponder %+v", r)
	}

	for _, external := range []bool{false, true} {
		h := newHarness(t, withKeys) // auto: no cookie of its own outstanding
		h.listen()
		h.e.SetExternalCookies(external)
		h.ourISS, h.knowISS = seqnum.Value(made), true
		h.peerTSVal = 6000
		h.lastTSEcho = p.TCP.Options.TSVal
		h.send(seg{flags: ACK, seq: 1, ack: 1})
		if !external {
			h.expect(seg{flags: RST, seq: 1})
			h.expectCounter(RxNoSocket, 1)
			continue
		}
		h.expectNone()
		h.expectState(Established)
		h.expectCounter(SYNCookiesAccepted, 1)
		if i := h.l.Accept().Info(); i.MSS != 1460 || !i.SACK || !i.Timestamps || i.SndWnd != 65535<<7 {
			t.Fatalf("recovered %+v", i)
		}
	}
}

// A client reusing a 4-tuple the engine holds in TIME_WAIT, while the XDP
// program answers SYNs: the engine sees no SYN, only the ACK of a cookie.
// Newer than the old incarnation (RFC 6191, as for a SYN) and with a valid
// cookie, it reopens the 4-tuple; otherwise TIME_WAIT answers as ever.
func TestCookieReopensTimeWait(t *testing.T) {
	keys := &Keys{ISN: [2]uint64{1, 2}, Timestamp: [2]uint64{3, 4}, Cookie: [2]uint64{5, 6}}
	for _, tc := range []struct {
		name   string
		tsVal  uint32 // the old incarnation's last TSval was 5000
		cookie bool
		reopen bool
	}{
		{"newer timestamp, valid cookie", 6000, true, true},
		{"older timestamp", 4000, true, false},
		{"forged cookie", 6000, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, withConfig(func(c *Config) { c.Keys = keys }))
			h.timeWait()
			h.advance(time.Second)
			h.e.SetExternalCookies(true)
			isn := uint32(h.peerISS) + 1000 // the new incarnation's ISN, relative seq 1000
			epoch := CookieEpoch(h.now, cookieLifetime)
			cookie := SYNCookie(keys.CookieSecret(epoch), epoch, h.key(), isn, 1460)
			if !tc.cookie {
				cookie ^= 0x5555
			}
			old := h.ourISS
			h.ourISS = seqnum.Value(cookie)
			tsNow := TSClock(h.now) + keys.TSOffset(engineAddr, peerAddr)
			h.lastTSEcho = CookieTSVal(tsNow, &wire.TCPOptions{HasWScale: true, WScale: 7, SACKPermitted: true})
			h.peerTSVal = tc.tsVal
			h.send(seg{flags: ACK, seq: 1001, ack: 1})
			if !tc.reopen {
				h.ourISS = old
				h.expect(seg{flags: ACK, seq: 2, ack: 2}) // TIME_WAIT's own ACK
				h.expectState(TimeWait)
				h.expectCounter(TimeWaitReopened, 0)
				return
			}
			h.expectNone()
			h.expectState(Established)
			h.expectCounter(TimeWaitReopened, 1)
			h.expectCounter(SYNCookiesAccepted, 1)
			if n := h.e.Stats().Connections(TimeWait); n != 0 {
				t.Fatalf("TIME_WAIT gauge %d, want 0", n)
			}
			if i := h.l.Accept().Info(); i.RcvNxt != isn+1 || i.SndUna != cookie+1 || !i.SACK || !i.Timestamps {
				t.Fatalf("reopened %+v", i)
			}
		})
	}
}
