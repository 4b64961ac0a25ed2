package wire

import (
	"bytes"
	"testing"
)

// Linux's layouts, byte for byte (tcp_options_write).
func TestTCPOptionsLinuxLayout(t *testing.T) {
	for _, c := range []struct {
		name string
		o    TCPOptions
		want []byte
	}{
		{"syn", TCPOptions{MSS: 1460, SACKPermitted: true, HasTimestamps: true, TSVal: 0x01020304, TSEcr: 0, HasWScale: true, WScale: 7},
			[]byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7}},
		{"syn no sack", TCPOptions{MSS: 1460, HasTimestamps: true, TSVal: 1, HasWScale: true, WScale: 9},
			[]byte{2, 4, 0x05, 0xb4, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 9}},
		{"syn no timestamps", TCPOptions{MSS: 1460, SACKPermitted: true, HasWScale: true, WScale: 7},
			[]byte{2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7}},
		{"syn mss only", TCPOptions{MSS: 536}, []byte{2, 4, 0x02, 0x18}},
		{"ack", TCPOptions{HasTimestamps: true, TSVal: 0xa0b0c0d0, TSEcr: 0x11223344},
			[]byte{1, 1, 8, 10, 0xa0, 0xb0, 0xc0, 0xd0, 0x11, 0x22, 0x33, 0x44}},
		{"ack sack", TCPOptions{HasTimestamps: true, TSVal: 1, TSEcr: 2, NumSACK: 1, SACK: [4]SACKBlock{{0x100, 0x200}}},
			[]byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 5, 10, 0, 0, 1, 0, 0, 0, 2, 0}},
		{"none", TCPOptions{}, []byte{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if n := c.o.Len(); n != len(c.want) {
				t.Errorf("Len = %d, want %d", n, len(c.want))
			}
			b := make([]byte, MaxTCPOptionsLen)
			n := c.o.Encode(b)
			if !bytes.Equal(b[:n], c.want) {
				t.Errorf("Encode\n got % x\nwant % x", b[:n], c.want)
			}
		})
	}
}

// allOptionSets enumerates every combination of options with up to four SACK
// blocks.
func allOptionSets() []TCPOptions {
	var out []TCPOptions
	for mask := range 16 {
		for sacks := range 5 {
			o := TCPOptions{NumSACK: uint8(sacks)}
			if mask&1 != 0 {
				o.MSS = 1440 + uint16(mask)
			}
			if mask&2 != 0 {
				o.HasWScale, o.WScale = true, uint8(mask)
			}
			if mask&4 != 0 {
				o.SACKPermitted = true
			}
			if mask&8 != 0 {
				o.HasTimestamps, o.TSVal, o.TSEcr = true, 0xdead0000+uint32(mask), 0xbeef0000+uint32(sacks)
			}
			for i := range sacks {
				o.SACK[i] = SACKBlock{uint32(1000 * (i + 1)), uint32(1000*(i+1) + 500)}
			}
			out = append(out, o)
		}
	}
	return out
}

func TestTCPOptionsRoundTrip(t *testing.T) {
	for _, o := range allOptionSets() {
		n := o.Len()
		if n%4 != 0 || n > MaxTCPOptionsLen {
			t.Errorf("%+v: Len %d", o, n)
		}
		b := bytes.Repeat([]byte{0xee}, MaxTCPOptionsLen)
		if got := o.Encode(b); got != n {
			t.Fatalf("%+v: Encode = %d, Len = %d", o, got, n)
		}
		if o.Encode(b[:n-1+boolInt(n == 0)]) != 0 && n > 0 {
			t.Errorf("%+v: Encode into a short buffer succeeded", o)
		}
		var back TCPOptions
		if !ParseTCPOptions(b[:n], &back) {
			t.Fatalf("%+v: encoded % x does not parse", o, b[:n])
		}
		want := trimSACK(o)
		if back != want {
			t.Errorf("round trip\n got %+v\nwant %+v", back, want)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// trimSACK is what the encoding keeps: the first blocks that fit in 40 bytes
// after the other options (RFC 2018 §4: the first block is the newest).
func trimSACK(o TCPOptions) TCPOptions {
	fixed := 0
	if o.MSS != 0 {
		fixed += 4
	}
	if o.HasTimestamps || o.SACKPermitted {
		fixed += 4
	}
	if o.HasTimestamps {
		fixed += 8
	}
	if o.HasWScale {
		fixed += 4
	}
	keep := int(o.NumSACK)
	for keep > 0 && fixed+4+8*keep > MaxTCPOptionsLen {
		keep--
	}
	o.NumSACK = uint8(keep)
	for i := keep; i < len(o.SACK); i++ {
		o.SACK[i] = SACKBlock{}
	}
	return o
}

func TestTCPOptionsSACKTrimming(t *testing.T) {
	four := TCPOptions{NumSACK: 4, SACK: [4]SACKBlock{{1, 2}, {3, 4}, {5, 6}, {7, 8}}}
	for _, c := range []struct {
		name      string
		o         TCPOptions
		wantBlock int
		wantLen   int
	}{
		{"4 blocks alone", four, 4, 36},
		{"timestamps leave room for 3", withTS(four), 3, 40},
		{"syn-like options leave room for 2", withSYN(four), 2, 40},
		{"mss + timestamps leave room for 2", withMSS(withTS(four)), 2, 36},
		{"bogus count clamped", TCPOptions{NumSACK: 200}, 4, 36},
	} {
		t.Run(c.name, func(t *testing.T) {
			if n := c.o.Len(); n != c.wantLen {
				t.Errorf("Len = %d, want %d", n, c.wantLen)
			}
			b := make([]byte, MaxTCPOptionsLen)
			n := c.o.Encode(b)
			var back TCPOptions
			if !ParseTCPOptions(b[:n], &back) || int(back.NumSACK) != c.wantBlock {
				t.Fatalf("decoded %d blocks from % x, want %d", back.NumSACK, b[:n], c.wantBlock)
			}
			for i := range c.wantBlock {
				if back.SACK[i] != c.o.SACK[i] {
					t.Errorf("block %d = %v, want %v (the first blocks are kept)", i, back.SACK[i], c.o.SACK[i])
				}
			}
		})
	}
}

func withTS(o TCPOptions) TCPOptions { o.HasTimestamps, o.TSVal = true, 9; return o }
func withMSS(o TCPOptions) TCPOptions {
	o.MSS = 1000
	return o
}
func withSYN(o TCPOptions) TCPOptions {
	o.MSS, o.HasWScale, o.SACKPermitted = 1460, true, true
	return withTS(o)
}

func TestParseTCPOptionsLastWins(t *testing.T) {
	var o TCPOptions
	if !ParseTCPOptions([]byte{2, 4, 0, 100, 2, 4, 0, 200, 3, 3, 1, 3, 3, 2}, &o) {
		t.Fatal("rejected")
	}
	if o.MSS != 200 || o.WScale != 2 {
		t.Errorf("got %+v", o)
	}
	sacks := append([]byte{5, 26}, bytes.Repeat([]byte{0x11}, 24)...) // three blocks
	sacks = append(sacks, 5, 10, 0, 0, 0, 9, 0, 0, 0, 10)
	if !ParseTCPOptions(sacks, &o) || o.NumSACK != 1 || o.SACK != [4]SACKBlock{{9, 10}} {
		t.Errorf("repeated SACK option: got %+v", o)
	}
	o = TCPOptions{MSS: 1, NumSACK: 3}
	if !ParseTCPOptions(nil, &o) || o != (TCPOptions{}) {
		t.Errorf("empty options left %+v", o)
	}
	if ParseTCPOptions(append([]byte{5, 42}, make([]byte, 40)...), &o) {
		t.Errorf("5 SACK blocks accepted")
	}
}

func FuzzTCPOptions(f *testing.F) {
	b := make([]byte, MaxTCPOptionsLen)
	for _, o := range allOptionSets() {
		f.Add(append([]byte(nil), b[:o.Encode(b)]...))
	}
	f.Add([]byte{2, 4, 0x05, 0xb4, 3, 3, 7, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 0})
	f.Add([]byte{254, 6, 1, 2, 3, 4, 5, 34, 1, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > MaxTCPOptionsLen {
			in = in[:MaxTCPOptionsLen]
		}
		var o TCPOptions
		if !ParseTCPOptions(in, &o) {
			return
		}
		n := o.Len()
		if n%4 != 0 || n > MaxTCPOptionsLen {
			t.Fatalf("Len %d for %+v", n, o)
		}
		out := make([]byte, n)
		if o.Encode(out) != n {
			t.Fatalf("Encode != Len for %+v", o)
		}
		var back TCPOptions
		if !ParseTCPOptions(out, &back) || back != trimSACK(o) {
			t.Fatalf("re-encoded % x as % x:\n got %+v\nwant %+v", in, out, back, trimSACK(o))
		}
	})
}
