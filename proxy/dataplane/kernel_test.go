package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/stack"
)

type nullSink struct{ buf [2048]byte }

func (s *nullSink) NextFrame() []byte { return s.buf[:] }
func (s *nullSink) Commit(int)        {}

// TestChecksumWarning: an interface where bad checksums are most of what
// arrives gets one warning naming it, then none for checksumWarnEvery; a
// trickle of bad checksums gets none.
func TestChecksumWarning(t *testing.T) {
	e, err := stack.New(stack.Config{
		Interfaces: []stack.Interface{{Name: "eth0", Sink: &nullSink{}}, {Name: "veth1", Sink: &nullSink{}, Virtual: true}},
		Addresses:  []netip.Addr{netip.MustParseAddr("10.0.0.1")},
		Rand:       NewRand(),
	})
	if err != nil {
		t.Fatal(err)
	}
	d := Detached([]string{"eth0", "veth1"}, [][]int{{0, 0}}, []*stack.Engine{e})
	defer d.Stop()
	d.ifs[1].virtual = true
	var logs bytes.Buffer
	d.log = slog.New(slog.NewTextHandler(&logs, nil))
	now := time.Now()
	st0, st1 := e.IfaceStats(0), e.IfaceStats(1)

	st0.RxFrames.Store(1000)
	st0.ChecksumDrops.Store(10) // 1%: no warning
	d.checkChecksums(now)
	if logs.Len() != 0 {
		t.Fatalf("warned about 1%% bad checksums: %s", logs.String())
	}
	st0.RxFrames.Store(2000)
	st0.ChecksumDrops.Store(900) // 890 of the last 1000
	st1.RxFrames.Store(100)
	st1.ChecksumDrops.Store(90)
	d.checkChecksums(now.Add(5 * time.Second))
	out := logs.String()
	if strings.Count(out, "level=WARN") != 2 || !strings.Contains(out, "interface=eth0") || !strings.Contains(out, "interface=veth1") ||
		!strings.Contains(out, "ethtool -K") || !strings.Contains(out, "corrupt") {
		t.Fatalf("want one warning per interface (offload hint for eth0, corruption for the virtual veth1), got:\n%s", out)
	}
	logs.Reset()
	st0.RxFrames.Store(3000)
	st0.ChecksumDrops.Store(1800)
	d.checkChecksums(now.Add(10 * time.Second))
	if logs.Len() != 0 {
		t.Fatalf("warned again within %v: %s", checksumWarnEvery, logs.String())
	}
	st0.RxFrames.Store(4000)
	st0.ChecksumDrops.Store(2700)
	d.checkChecksums(now.Add(checksumWarnEvery + 10*time.Second))
	if !strings.Contains(logs.String(), "interface=eth0") {
		t.Fatalf("no warning after %v: %q", checksumWarnEvery, logs.String())
	}
}

// TestLabRoutesFollowed: the engines follow the kernel's routing table
// live. A destination with no route cannot be dialed (ErrNoRoute, counted);
// once the kernel has a route to it, the engine takes it within the
// reload delay and the dial goes through, to the gateway's MAC (resolved
// by the kernel).
func TestLabRoutesFollowed(t *testing.T) {
	el := newEchoLab(t, 1, nil)
	far := netip.MustParsePrefix("10.99.0.1/24")
	nl := el.client.Netlink()
	c0, err := nl.LinkByIndex(el.veth.A.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.AddrAdd(c0, &netlink.Addr{IPNet: &net.IPNet{IP: far.Addr().AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	el.client.EchoTCP(t, "10.99.0.1:9000")
	dst := netip.AddrPortFrom(far.Addr(), 9000)
	sh := el.dp.Shards()[0]
	done := make(chan dialResult, 1)
	engineDial(sh, dst, []byte("before"), done)
	if r := <-done; r.err == nil || !errors.Is(r.err, stack.ErrNoRoute) {
		t.Fatalf("dial without a route: %v, want ErrNoRoute", r.err)
	}
	if err := el.proxy.AddRoute(far.Masked(), clientPrefix.Addr()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var ok bool
		sh.Do(func(s *Shard) { _, _, _, ok = s.Engine().RouteTo(far.Addr()) })
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the engine never learned the new route")
		}
		time.Sleep(10 * time.Millisecond)
	}
	engineDial(sh, dst, []byte("after"), done)
	select {
	case r := <-done:
		if r.err != nil || string(r.got) != "after" {
			t.Fatalf("dial over the new route: %q, %v", r.got, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dial over the new route: no answer")
	}
}

// TestLabLinkLocalGateway: an IPv6 route whose gateway is a link-local
// address (what router advertisements install) — the next hop is that
// address on that link, resolved by the kernel.
func TestLabLinkLocalGateway(t *testing.T) {
	el := newLabLink(t, 1)
	far := netip.MustParseAddr("fd99::1")
	src := netip.MustParseAddr("fd98::2") // the engine's IPv6 source, on the proxy's veth before the start
	prefix := func(ip netip.Addr) *net.IPNet { return &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(64, 128)} }
	cnl, pnl := el.client.Netlink(), el.proxy.Netlink()
	c0, err := cnl.LinkByIndex(el.veth.A.Index)
	if err != nil {
		t.Fatal(err)
	}
	p0, err := pnl.LinkByIndex(el.veth.B.Index)
	if err != nil {
		t.Fatal(err)
	}
	var ll netip.Addr
	addrs, err := cnl.AddrList(c0, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.IsLinkLocalUnicast() {
			ll = ip
		}
	}
	if !ll.IsValid() {
		t.Fatal("the client's veth has no link-local address")
	}
	for _, step := range []error{
		cnl.AddrAdd(c0, &netlink.Addr{IPNet: prefix(far), Flags: unix.IFA_F_NODAD}),
		pnl.AddrAdd(p0, &netlink.Addr{IPNet: prefix(src), Flags: unix.IFA_F_NODAD}),
		// fd99::/64 via the client's link-local address, as an RA installs a default route.
		pnl.RouteAdd(&netlink.Route{LinkIndex: p0.Attrs().Index, Dst: prefix(netip.MustParseAddr("fd99::")), Gw: ll.AsSlice()}),
		// The client answers fd98::/64 on-link.
		cnl.RouteAdd(&netlink.Route{LinkIndex: c0.Attrs().Index, Dst: prefix(netip.MustParseAddr("fd98::"))}),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	el.client.EchoTCP(t, "[fd99::1]:9000")
	el.start(t, nil)
	sh := el.dp.Shards()[0]
	var nh, from netip.Addr
	var ok bool
	sh.Do(func(s *Shard) { _, nh, from, ok = s.Engine().RouteTo(far) })
	if !ok || nh != ll || from != src {
		t.Fatalf("the engine's route to %v: next hop %v from %v (%v); want %v from %v", far, nh, from, ok, ll, src)
	}
	done := make(chan dialResult, 1)
	engineDialFrom(sh, netip.Addr{}, netip.AddrPortFrom(far, 9000), []byte("via fe80"), done)
	select {
	case r := <-done:
		if r.err != nil || string(r.got) != "via fe80" {
			t.Fatalf("dial via a link-local gateway: %q, %v", r.got, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dial via a link-local gateway: no answer")
	}
}

// TestLabListenerAddedAndRemoved: a listener added while the data plane
// runs is steered, reserved and served at once; closed, it refuses new
// clients while an accepted connection goes on; removed, its port goes back
// to the kernel.
func TestLabListenerAddedAndRemoved(t *testing.T) {
	el := newLabLink(t, 2)
	el.start(t, func(c *Config) { c.ReservePorts, c.StateDir = true, t.TempDir() })
	ap := netip.AddrPortFrom(proxyPrefix.Addr(), 8000)
	reserved := func() string {
		var out string
		el.proxy.Do(func() error {
			b, err := os.ReadFile(reservedPortsPath)
			out = strings.TrimSpace(string(b))
			return err
		})
		return out
	}
	if strings.Contains(reserved(), "8000") {
		t.Fatalf("8000 reserved before the listener exists: %q", reserved())
	}
	els, err := el.dp.AddListener(ap)
	if err != nil || len(els) != 2 {
		t.Fatalf("AddListener: %v, %d listeners", err, len(els))
	}
	if !strings.Contains(reserved(), "8000") {
		t.Errorf("8000 not reserved with the listener: %q", reserved())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kept, err := el.client.DialTCP(ctx, ap.String())
	if err != nil {
		t.Fatalf("dial the new listener: %v", err)
	}
	defer kept.Close()
	for i := range 20 { // every shard serves it
		c, err := el.client.DialTCP(ctx, ap.String())
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if err := echoExchange(c, []byte(fmt.Sprintf("hello %d", i))); err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		c.Close()
	}

	el.dp.CloseListener(ap)
	if _, err := el.client.DialTCP(ctx, ap.String()); err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial a closed listener: %v, want connection refused", err)
	}
	// The accepted connection goes on.
	if _, err := kept.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	kept.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(kept, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("the accepted connection after close: %q, %v", buf, err)
	}

	if err := el.dp.RemoveListener(ap); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(reserved(), "8000") {
		t.Errorf("8000 still reserved after RemoveListener: %q", reserved())
	}
	if _, err := el.dp.AddListener(ap); err != nil { // and it can come back
		t.Fatalf("AddListener again: %v", err)
	}
}
