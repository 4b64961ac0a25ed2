package wire

import (
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"
)

// RFC 1071 §3 worked example: the words 0001 f203 f4f5 f6f7 sum to ddf2.
func TestChecksumRFC1071Example(t *testing.T) {
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := Fold(Sum(b, 0)); got != 0xddf2 {
		t.Fatalf("Fold(Sum) = %#04x, want 0xddf2", got)
	}
	if got := Checksum(b, 0); got != ^uint16(0xddf2) {
		t.Fatalf("Checksum = %#04x, want %#04x", got, ^uint16(0xddf2))
	}
}

func TestChecksumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 2048+64+3)
	for _, fill := range []byte{0x00, 0xff, 0} {
		for n := 0; n <= 2048+64; n++ {
			// Start at odd and even offsets: the fast path must not assume
			// alignment.
			b := buf[n%3 : n%3+n]
			for i := range b {
				if fill == 0 {
					b[i] = byte(r.Uint32())
				} else {
					b[i] = fill
				}
			}
			init := uint32(r.Uint32N(0x20000))
			if got, want := Checksum(b, uint64(init)), refChecksum(b, init); got != want {
				t.Fatalf("len %d fill %#x init %#x: Checksum = %#04x, ref %#04x", n, fill, init, got, want)
			}
		}
	}
}

// Sums of all-ones words carry out of bit 63 on every addition; the
// end-around carry must not lose any of them.
func TestSumCarryStorm(t *testing.T) {
	b := make([]byte, 4096+7)
	for i := range b {
		b[i] = 0xff
	}
	for _, init := range []uint64{0, 1, 0xffff, ^uint64(0), ^uint64(0) - 1} {
		for _, n := range []int{8, 9, 31, 32, 33, 64, 1500, len(b)} {
			want := refChecksum(b[:n], uint32(Fold(init)))
			if got := Checksum(b[:n], init); got != want {
				t.Errorf("n %d init %#x: %#04x, want %#04x", n, init, got, want)
			}
		}
	}
}

func TestSumComposes(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 999)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	// Splitting at even offsets gives the same sum.
	for _, cut := range []int{0, 2, 8, 32, 100, 998} {
		if got, want := Fold(Sum(b[cut:], Sum(b[:cut], 0))), Fold(Sum(b, 0)); got != want {
			t.Errorf("cut %d: %#04x, want %#04x", cut, got, want)
		}
	}
}

func TestFold(t *testing.T) {
	for _, c := range []struct {
		in   uint64
		want uint16
	}{
		{0, 0},
		{0xffff, 0xffff},
		{0x10000, 1},
		{^uint64(0), 0xffff},
		{0x0001_0002_0003_0004, 10},
		{0xffff_ffff_0000_0001, 1},
	} {
		if got := Fold(c.in); got != c.want {
			t.Errorf("Fold(%#x) = %#x, want %#x", c.in, got, c.want)
		}
	}
}

func TestPseudoHeaderSum(t *testing.T) {
	for _, c := range []struct {
		src, dst string
		proto    uint8
		length   int
	}{
		{"192.0.2.1", "198.51.100.2", ProtoTCP, 1480},
		{"255.255.255.254", "255.255.255.255", ProtoTCP, 65535},
		{"2001:db8::1", "2001:db8::2:3:4", ProtoTCP, 1440},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", ProtoICMPv6, 70000},
	} {
		src, dst := netip.MustParseAddr(c.src), netip.MustParseAddr(c.dst)
		addrs := append(src.AsSlice(), dst.AsSlice()...)
		want := refChecksum(nil, refPseudo(addrs, c.proto, c.length))
		if got := Checksum(nil, PseudoHeaderSum(src, dst, c.proto, c.length)); got != want {
			t.Errorf("%s > %s: PseudoHeaderSum folds to %#04x, want %#04x", c.src, c.dst, got, want)
		}
		if got := Checksum(nil, pseudoSum(addrs, c.proto, c.length)); got != want {
			t.Errorf("%s > %s: pseudoSum folds to %#04x, want %#04x", c.src, c.dst, got, want)
		}
	}
}

func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{20, 64, 1500, 9000} {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(n))
			var s uint16
			for b.Loop() {
				s += Checksum(buf, 0)
			}
			sink16 = s
		})
	}
}

var sink16 uint16

func TestIPv4HeaderChecksumFastPath(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	h := make([]byte, 24)
	for i := range 100000 {
		for j := range h {
			h[j] = byte(r.Uint32())
		}
		if i%2 == 0 { // make half of them valid
			h[10], h[11] = 0, 0
			c := refChecksum(h[:20], 0)
			h[10], h[11] = byte(c>>8), byte(c)
		}
		if got, want := ipv4HeaderChecksumOK(h[:20]), refChecksum(h[:20], 0) == 0; got != want {
			t.Fatalf("% x: fast path %v, reference %v", h[:20], got, want)
		}
		if got, want := ipv4HeaderChecksumOK(h), refChecksum(h, 0) == 0; got != want {
			t.Fatalf("% x: %v, reference %v", h, got, want)
		}
	}
}
