package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// parseProxyHeaderForTest is an independent reader of PROXY protocol v1 and
// v2 headers, written from the spec, for round-trip tests. It returns the
// addresses (invalid for UNKNOWN / LOCAL / UNSPEC), the header length, and
// whether the receiver should use the real connection endpoints instead.
func parseProxyHeaderForTest(b []byte) (src, dst netip.AddrPort, n int, local bool, err error) {
	if bytes.HasPrefix(b, proxyV2Sig[:]) {
		if len(b) < 16 {
			return src, dst, 0, false, errors.New("v2: short header")
		}
		if b[12]>>4 != 2 {
			return src, dst, 0, false, errors.New("v2: bad version")
		}
		cmd, fam, proto := b[12]&0xf, b[13]>>4, b[13]&0xf
		l := int(binary.BigEndian.Uint16(b[14:16]))
		n = 16 + l
		if len(b) < n {
			return src, dst, 0, false, errors.New("v2: short address block")
		}
		switch cmd {
		case 0: // LOCAL: ignore the block, use the real endpoints
			return src, dst, n, true, nil
		case 1:
		default:
			return src, dst, 0, false, errors.New("v2: bad command")
		}
		blk := b[16:n]
		switch {
		case fam == 0:
			return src, dst, n, true, nil
		case proto != 1:
			return src, dst, 0, false, errors.New("v2: not STREAM")
		case fam == 1 && l >= 12:
			s := netip.AddrFrom4([4]byte(blk[0:4]))
			d := netip.AddrFrom4([4]byte(blk[4:8]))
			src = netip.AddrPortFrom(s, binary.BigEndian.Uint16(blk[8:]))
			dst = netip.AddrPortFrom(d, binary.BigEndian.Uint16(blk[10:]))
		case fam == 2 && l >= 36:
			s := netip.AddrFrom16([16]byte(blk[0:16]))
			d := netip.AddrFrom16([16]byte(blk[16:32]))
			src = netip.AddrPortFrom(s, binary.BigEndian.Uint16(blk[32:]))
			dst = netip.AddrPortFrom(d, binary.BigEndian.Uint16(blk[34:]))
		default:
			return src, dst, 0, false, errors.New("v2: bad family or length")
		}
		return src, dst, n, false, nil
	}
	end := bytes.Index(b, []byte("\r\n"))
	if !bytes.HasPrefix(b, []byte("PROXY ")) || end < 0 || end+2 > 107 {
		return src, dst, 0, false, errors.New("v1: no header")
	}
	n = end + 2
	f := strings.Split(string(b[6:end]), " ")
	if f[0] == "UNKNOWN" {
		return src, dst, n, true, nil
	}
	if len(f) != 5 || (f[0] != "TCP4" && f[0] != "TCP6") {
		return src, dst, 0, false, errors.New("v1: bad fields")
	}
	var addrs [2]netip.Addr
	var ports [2]uint16
	for k := range 2 {
		a, err := netip.ParseAddr(f[1+k])
		if err != nil || a.Zone() != "" || (f[0] == "TCP4") != a.Is4() {
			return src, dst, 0, false, errors.New("v1: bad address " + f[1+k])
		}
		p, err := strconv.ParseUint(f[3+k], 10, 16)
		if err != nil || (len(f[3+k]) > 1 && f[3+k][0] == '0') {
			return src, dst, 0, false, errors.New("v1: bad port " + f[3+k])
		}
		addrs[k], ports[k] = a, uint16(p)
	}
	return netip.AddrPortFrom(addrs[0], ports[0]), netip.AddrPortFrom(addrs[1], ports[1]), n, false, nil
}

func TestProxyProtoV1Exact(t *testing.T) {
	for _, c := range []struct{ src, dst, want string }{
		// The spec's example and its worst cases.
		{"192.168.0.1:56324", "192.168.0.11:443", "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"},
		{"255.255.255.255:65535", "255.255.255.255:65535", "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"},
		{"[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
			"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"},
		{"[2001:db8::1]:40000", "[2001:db8:0:1::80]:80", "PROXY TCP6 2001:db8::1 2001:db8:0:1::80 40000 80\r\n"},
		{"0.0.0.0:0", "10.0.0.1:80", "PROXY TCP4 0.0.0.0 10.0.0.1 0 80\r\n"},
		// IPv4-mapped IPv6 is reported as IPv4; zones are dropped.
		{"[::ffff:192.0.2.1]:1000", "[::ffff:192.0.2.2]:80", "PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\r\n"},
		{"[fe80::1%eth0]:1000", "[fe80::2%eth0]:80", "PROXY TCP6 fe80::1 fe80::2 1000 80\r\n"},
		// Mismatched families.
		{"192.0.2.1:1000", "[2001:db8::2]:80", "PROXY UNKNOWN\r\n"},
		{"[::ffff:192.0.2.1]:1000", "[2001:db8::2]:80", "PROXY UNKNOWN\r\n"},
	} {
		got := AppendV1(nil, netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst))
		if string(got) != c.want {
			t.Errorf("%s → %s: %q, want %q", c.src, c.dst, got, c.want)
		}
	}
	if got := AppendV1([]byte("x"), netip.AddrPort{}, netip.AddrPort{}); string(got) != "xPROXY UNKNOWN\r\n" {
		t.Errorf("invalid addresses: %q", got)
	}
	// The spec's worst-case lengths: 56 (TCP4), 104 (TCP6).
	if n := len(AppendV1(nil, netip.MustParseAddrPort("255.255.255.255:65535"), netip.MustParseAddrPort("255.255.255.255:65535"))); n != 56 {
		t.Errorf("worst TCP4 length %d, want 56", n)
	}
	ff := netip.MustParseAddrPort("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")
	if n := len(AppendV1(nil, ff, ff)); n != 104 || n > ProxyV1MaxLen {
		t.Errorf("worst TCP6 length %d, want 104", n)
	}
}

func TestProxyProtoV2Exact(t *testing.T) {
	sig := "\r\n\r\n\x00\r\nQUIT\n"
	for _, c := range []struct{ src, dst, want string }{
		{"192.168.0.1:56324", "192.168.0.11:443",
			sig + "\x21\x11\x00\x0c" + "\xc0\xa8\x00\x01" + "\xc0\xa8\x00\x0b" + "\xdc\x04" + "\x01\xbb"},
		{"[2001:db8::1]:40000", "[2001:db8:0:1::80]:80",
			sig + "\x21\x21\x00\x24" +
				"\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01" +
				"\x20\x01\x0d\xb8\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x80" +
				"\x9c\x40" + "\x00\x50"},
		{"[::ffff:10.1.2.3]:65535", "10.0.0.1:0",
			sig + "\x21\x11\x00\x0c" + "\x0a\x01\x02\x03" + "\x0a\x00\x00\x01" + "\xff\xff" + "\x00\x00"},
		// Mismatched families: LOCAL, UNSPEC, no address block.
		{"192.0.2.1:1000", "[2001:db8::2]:80", sig + "\x20\x00\x00\x00"},
	} {
		got := AppendV2(nil, netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst))
		if string(got) != c.want {
			t.Errorf("%s → %s:\n got % x\nwant % x", c.src, c.dst, got, c.want)
		}
		if len(got) > ProxyV2MaxLen {
			t.Errorf("%d bytes > ProxyV2MaxLen", len(got))
		}
	}
	if got := AppendV2([]byte("ab"), netip.AddrPort{}, netip.AddrPort{}); string(got) != "ab"+sig+"\x20\x00\x00\x00" {
		t.Errorf("invalid addresses: % x", got)
	}
}

func TestProxyProtoRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	randAddr := func(v6 bool) netip.AddrPort {
		var a netip.Addr
		if v6 {
			var b [16]byte
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			if r.IntN(4) == 0 { // runs of zeros, for :: compression
				clear(b[2 : 2+2*r.IntN(6)])
			}
			if netip.AddrFrom16(b).Is4In6() { // keep the family
				b[0] = 0x20
			}
			a = netip.AddrFrom16(b)
		} else {
			a = netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
		}
		return netip.AddrPortFrom(a, uint16(r.Uint32()))
	}
	buf := make([]byte, 0, 256)
	for k := range 20000 {
		v6 := k%2 == 1
		src, dst := randAddr(v6), randAddr(v6)
		for _, enc := range []func([]byte, netip.AddrPort, netip.AddrPort) []byte{AppendV1, AppendV2} {
			// Trailing payload must be left alone by the parser.
			hdr := append(enc(buf[:0], src, dst), "GET / HTTP/1.1\r\n"...)
			s, d, n, local, err := parseProxyHeaderForTest(hdr)
			if err != nil || local || s != src || d != dst || string(hdr[n:]) != "GET / HTTP/1.1\r\n" {
				t.Fatalf("%v → %v: %q parsed as %v %v n=%d local=%v err=%v", src, dst, hdr, s, d, n, local, err)
			}
		}
	}
	// Mismatched families parse as "use the real endpoints".
	for _, enc := range []func([]byte, netip.AddrPort, netip.AddrPort) []byte{AppendV1, AppendV2} {
		hdr := enc(nil, randAddr(false), randAddr(true))
		if _, _, n, local, err := parseProxyHeaderForTest(hdr); err != nil || !local || n != len(hdr) {
			t.Fatalf("mixed families: %q: n=%d local=%v err=%v", hdr, n, local, err)
		}
	}
}

func FuzzProxyProtoRoundTrip(f *testing.F) {
	f.Add(make([]byte, 16), make([]byte, 16), uint16(1), uint16(2), true)
	f.Add([]byte{192, 0, 2, 1}, []byte{10, 0, 0, 1}, uint16(56324), uint16(443), false)
	f.Fuzz(func(t *testing.T, sb, db []byte, sp, dp uint16, v6 bool) {
		mk := func(b []byte, p uint16) netip.AddrPort {
			if v6 {
				var a [16]byte
				copy(a[:], b)
				return netip.AddrPortFrom(netip.AddrFrom16(a), p)
			}
			var a [4]byte
			copy(a[:], b)
			return netip.AddrPortFrom(netip.AddrFrom4(a), p)
		}
		src, dst := mk(sb, sp), mk(db, dp)
		want := func(ap netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) }
		sameFamily := want(src).Addr().Is4() == want(dst).Addr().Is4()
		for _, enc := range []func([]byte, netip.AddrPort, netip.AddrPort) []byte{AppendV1, AppendV2} {
			hdr := enc(nil, src, dst)
			s, d, n, local, err := parseProxyHeaderForTest(hdr)
			if err != nil || n != len(hdr) || local == sameFamily || (sameFamily && (s != want(src) || d != want(dst))) {
				t.Fatalf("%v → %v: %q parsed as %v %v n=%d local=%v err=%v", src, dst, hdr, s, d, n, local, err)
			}
		}
	})
}

func TestProxyProtoAllocs(t *testing.T) {
	src := netip.MustParseAddrPort("[2001:db8::1]:40000")
	dst := netip.MustParseAddrPort("[2001:db8::2]:443")
	buf := make([]byte, 0, ProxyV1MaxLen)
	if n := testing.AllocsPerRun(1000, func() {
		buf = AppendV1(buf[:0], src, dst)
		buf = AppendV2(buf[:0], src, dst)
	}); n != 0 {
		t.Fatalf("Append allocates %v times", n)
	}
}

func BenchmarkProxyProtoV1(b *testing.B) {
	src := netip.MustParseAddrPort("192.168.0.1:56324")
	dst := netip.MustParseAddrPort("192.168.0.11:443")
	buf := make([]byte, 0, ProxyV1MaxLen)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendV1(buf[:0], src, dst)
	}
}

func BenchmarkProxyProtoV2(b *testing.B) {
	src := netip.MustParseAddrPort("[2001:db8::1]:40000")
	dst := netip.MustParseAddrPort("[2001:db8::2]:443")
	buf := make([]byte, 0, ProxyV2MaxLen)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendV2(buf[:0], src, dst)
	}
}
