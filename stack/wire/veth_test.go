package wire

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/internal/lab"
)

// TestVethPartialChecksums holds ParseAllowPartialL4Checksum against what
// Linux really hands over on a veth with default offloads: the client's
// kernel sends a handshake, data and a FIN to the server, answers a SYN to a
// closed port with a RST and a datagram to a closed port with an ICMP error,
// over IPv4 and IPv6; an AF_PACKET socket on the server's end captures what
// arrives. Every TCP segment must carry either its checksum or exactly the
// pseudo-header sum PseudoHeaderSum computes (and the SYN and the data
// segment the latter, or offload is not doing what the flag is for); every
// ICMP message must carry a full checksum.
func TestVethPartialChecksums(t *testing.T) {
	lab.RequireRoot(t)
	l, err := lab.New(t)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := l.NS("cli")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := l.NS("srv")
	if err != nil {
		t.Fatal(err)
	}
	cli4, cli6 := netip.MustParseAddr("10.231.0.1"), netip.MustParseAddr("fd00:231::1")
	srv4, srv6 := netip.MustParseAddr("10.231.0.2"), netip.MustParseAddr("fd00:231::2")
	v, err := l.Link(cli, "c", srv, "s", lab.LinkOpts{
		AAddrs: []netip.Prefix{netip.PrefixFrom(cli4, 24), netip.PrefixFrom(cli6, 64)},
		BAddrs: []netip.Prefix{netip.PrefixFrom(srv4, 24), netip.PrefixFrom(srv6, 64)},
	})
	if err != nil {
		t.Fatal(err)
	}
	fd, err := packetSocket(srv, v.B.Index)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := bytes.Repeat([]byte("partial "), 100)
	for _, a := range [][2]netip.Addr{{cli4, srv4}, {cli6, srv6}} {
		if err := exchange(ctx, cli, srv, netip.AddrPortFrom(a[1], 7000), msg); err != nil {
			t.Fatal(err)
		}
		if c, err := srv.DialTCP(ctx, netip.AddrPortFrom(a[0], 7001).String()); err == nil {
			c.Close()
			t.Fatalf("connected to closed port %v", a[0])
		}
		if err := srv.Do(func() error {
			c, err := net.Dial("udp", netip.AddrPortFrom(a[0], 7002).String())
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("port unreachable, please"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}

	seen := map[string]bool{}
	buf := make([]byte, 65536)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			if seen["tcp4 partial data"] && seen["tcp6 partial data"] && seen["icmp4"] && seen["icmp6"] {
				break
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if kind := checkArrival(t, buf[:n]); kind != "" {
			seen[kind] = true
		}
	}
	for _, k := range []string{"tcp4 partial syn", "tcp4 partial data", "tcp6 partial syn", "tcp6 partial data", "icmp4", "icmp6"} {
		if !seen[k] {
			t.Errorf("no %s arrived (seen %v); is TX checksum offload off on the veth?", k, seen)
		}
	}
}

// packetSocket opens an AF_PACKET socket on interface ifindex of ns that
// returns from a read after 300 ms without frames.
func packetSocket(ns *lab.NS, ifindex int) (int, error) {
	// htons(ETH_P_ALL): the field is read in network order.
	proto := binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, unix.ETH_P_ALL))
	fd := -1
	err := ns.Do(func() error {
		s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return err
		}
		tv := unix.Timeval{Usec: 300000}
		if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(s)
			return err
		}
		if err := unix.Bind(s, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifindex}); err != nil {
			unix.Close(s)
			return err
		}
		fd = s
		return nil
	})
	return fd, err
}

// exchange connects from cli to srv's addr, sends msg, closes, and waits
// until the server has read all of it.
func exchange(ctx context.Context, cli, srv *lab.NS, addr netip.AddrPort, msg []byte) error {
	ln, err := srv.ListenTCP(addr.String())
	if err != nil {
		return err
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	c, err := cli.DialTCP(ctx, addr.String())
	if err != nil {
		return err
	}
	_, err = c.Write(msg)
	c.Close()
	if err != nil {
		return err
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, msg) {
			return fmt.Errorf("%v: server read %d bytes, want %d", addr, len(b), len(msg))
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkArrival checks one captured frame and names what it was ("tcp4
// partial syn", "icmp6", ...; "" for anything else).
func checkArrival(t *testing.T, frame []byte) string {
	t.Helper()
	if len(frame) < EthernetHeaderLen+IPv6HeaderLen {
		return ""
	}
	et := binary.BigEndian.Uint16(frame[12:])
	if et != EtherTypeIPv4 && et != EtherTypeIPv6 {
		return ""
	}
	seg, addrs, proto := l4Of(frame)
	family := "4"
	if et == EtherTypeIPv6 {
		family = "6"
	}
	var strict, loose Packet
	dStrict := Parse(frame, &strict, 0)
	dLoose := Parse(frame, &loose, ParseAllowPartialL4Checksum)
	switch proto {
	case ProtoTCP:
		src, _ := netip.AddrFromSlice(addrs[:len(addrs)/2])
		dst, _ := netip.AddrFromSlice(addrs[len(addrs)/2:])
		ps := PseudoHeaderSum(src, dst, ProtoTCP, len(seg))
		field := binary.BigEndian.Uint16(seg[16:])
		zeroed := append([]byte(nil), seg...)
		zeroed[16], zeroed[17] = 0, 0
		fullSum := Checksum(zeroed, ps)
		valid, partial := field == fullSum, field == Fold(ps)
		desc := fmt.Sprintf("tcp%s %v > %v flags %#02x, %d bytes: field %#04x, pseudo-header sum %#04x, checksum %#04x",
			family, src, dst, seg[13], len(seg), field, Fold(ps), fullSum)
		t.Log(desc)
		if partial && field != pseudoField(addrs, ProtoTCP, len(seg)) {
			t.Errorf("PseudoHeaderSum and the reference disagree: %s", desc)
		}
		switch {
		case valid:
			if dStrict != DropNone || dLoose != DropNone || loose.PartialChecksum {
				t.Errorf("full checksum: Parse = %v strict, %v allowing partial (marked %v): %s", dStrict, dLoose, loose.PartialChecksum, desc)
			}
			return ""
		case !partial:
			t.Errorf("neither the checksum nor the pseudo-header sum: %s", desc)
			return ""
		}
		if dStrict != DropTCPChecksum || dLoose != DropNone || !loose.PartialChecksum {
			t.Errorf("partial: Parse = %v strict, %v allowing partial (marked %v): %s", dStrict, dLoose, loose.PartialChecksum, desc)
		}
		switch {
		case seg[13]&FlagSYN != 0:
			return "tcp" + family + " partial syn"
		case len(loose.Payload) > 0:
			return "tcp" + family + " partial data"
		}
		return "tcp" + family + " partial"
	case ProtoICMP, ProtoICMPv6:
		var ps uint64
		if proto == ProtoICMPv6 {
			ps = pseudoSum(addrs, proto, len(seg))
		}
		t.Logf("icmp%s type %d code %d, %d bytes: field %#04x, verifies %v, Parse = %v",
			family, seg[0], seg[1], len(seg), binary.BigEndian.Uint16(seg[2:]), Checksum(seg, ps) == 0, dStrict)
		if Checksum(seg, ps) != 0 || dStrict == DropICMPChecksum {
			t.Errorf("icmp%s type %d without a full checksum", family, seg[0])
		}
		if seg[0] == ICMPv4DestUnreachable && proto == ProtoICMP || seg[0] == ICMPv6DestUnreachable && proto == ProtoICMPv6 {
			return "icmp" + family
		}
	}
	return ""
}
