package wire

import "encoding/binary"

// MaxTCPOptionsLen is the most option space a TCP header has: a data offset
// of 15 words less the 5-word fixed header (RFC 9293 §3.1).
const MaxTCPOptionsLen = 40

// TCP option kinds (IANA "TCP Option Kind Numbers").
const (
	optEOL           = 0 // RFC 9293 §3.2
	optNOP           = 1 // RFC 9293 §3.2
	optMSS           = 2 // RFC 9293 §3.2
	optWScale        = 3 // RFC 7323 §2.2
	optSACKPermitted = 4 // RFC 2018 §2
	optSACK          = 5 // RFC 2018 §3
	optTimestamps    = 8 // RFC 7323 §3.2
)

// Option lengths, kind and length bytes included.
const (
	lenMSS           = 4
	lenWScale        = 3
	lenSACKPermitted = 2
	lenTimestamps    = 10
	lenSACKBlock     = 8 // two sequence numbers
	maxSACKBlocks    = 4 // (40 - 2) / 8
)

// LenTimestampsOption is what the timestamps option takes of a non-SYN
// segment as Encode writes it: NOP NOP and the 10-byte option.
const LenTimestampsOption = 2 + lenTimestamps

// SACKOptionLen is what n SACK blocks take as Encode writes them: NOP NOP,
// kind, length and the blocks.
func SACKOptionLen(n int) int { return 4 + lenSACKBlock*n }

// MaxSACKBlocks is how many SACK blocks a non-SYN segment has room for:
// three beside timestamps, four without.
func MaxSACKBlocks(timestamps bool) int {
	if timestamps {
		return (MaxTCPOptionsLen - LenTimestampsOption - 4) / lenSACKBlock
	}
	return maxSACKBlocks
}

// SACKBlock is one block of a SACK option: the sequence numbers of the first
// byte received and of the byte after the last (RFC 2018 §3).
type SACKBlock struct{ Start, End uint32 }

// TCPOptions holds the options Linux sends or accepts.
type TCPOptions struct {
	MSS           uint16 // 0: absent
	HasWScale     bool
	WScale        uint8 // as sent (the engine clamps to 14)
	SACKPermitted bool
	HasTimestamps bool
	TSVal, TSEcr  uint32
	NumSACK       uint8 // blocks in SACK[:NumSACK]
	SACK          [4]SACKBlock
}

// ParseTCPOptions decodes the option bytes of a TCP header (between the fixed
// header and the data offset) into o, overwriting it, the way Linux's
// tcp_parse_options does: an option of a known kind with a length other than
// its own (MSS 4, window scale 3, SACK-permitted 2, timestamps 10, SACK 2+8n
// with 1 to 4 blocks) is skipped by its length, and a length below 2 or
// running past the end stops the parse, keeping what came before. The segment
// itself is never refused for its options (RFC 9293 §3.1: "must be prepared
// to handle an illegal option length"; RFC 1122 §4.2.2.5). It reports false
// when it ignored anything, for the caller to count. Unknown kinds are
// skipped by their length. A received MSS of 0 is treated as absent, as
// Linux does.
func ParseTCPOptions(b []byte, o *TCPOptions) (clean bool) {
	*o = TCPOptions{}
	clean = true
	for i := 0; i < len(b); {
		kind := b[i]
		if kind == optEOL {
			return clean
		}
		if kind == optNOP {
			i++
			continue
		}
		if i+1 >= len(b) {
			return false
		}
		n := int(b[i+1])
		if n < 2 || n > len(b)-i {
			return false
		}
		v := b[i+2 : i+n]
		i += n
		switch kind {
		case optMSS:
			if n != lenMSS {
				clean = false
				continue
			}
			o.MSS = binary.BigEndian.Uint16(v)
		case optWScale:
			if n != lenWScale {
				clean = false
				continue
			}
			o.HasWScale = true
			o.WScale = v[0]
		case optSACKPermitted:
			if n != lenSACKPermitted {
				clean = false
				continue
			}
			o.SACKPermitted = true
		case optSACK:
			blocks := (n - 2) / lenSACKBlock
			if blocks == 0 || blocks > maxSACKBlocks || (n-2)%lenSACKBlock != 0 {
				clean = false
				continue
			}
			o.SACK = [maxSACKBlocks]SACKBlock{} // a repeated option replaces the blocks
			for k := range blocks {
				o.SACK[k] = SACKBlock{
					Start: binary.BigEndian.Uint32(v[8*k:]),
					End:   binary.BigEndian.Uint32(v[8*k+4:]),
				}
			}
			o.NumSACK = uint8(blocks)
		case optTimestamps:
			if n != lenTimestamps {
				clean = false
				continue
			}
			o.HasTimestamps = true
			o.TSVal = binary.BigEndian.Uint32(v[0:4])
			o.TSEcr = binary.BigEndian.Uint32(v[4:8])
		}
	}
	return clean
}

// The encoding is word-aligned the way Linux's tcp_options_write lays it out,
// so that no padding is ever needed and a receiver's fast path can find the
// timestamps at a fixed place (RFC 7323 Appendix A):
//
//	MSS                      kind 2 len 4 (SYN only, in practice)
//	SACK-permitted + TS      kind 4 len 2, kind 8 len 10
//	or TS alone              NOP NOP, kind 8 len 10
//	or SACK-permitted alone  NOP NOP, kind 4 len 2
//	window scale             NOP, kind 3 len 3
//	SACK blocks              NOP NOP, kind 5 len 2+8n
//
// Which options appear depends only on the fields set, so the engine sets
// MSS, window scale and SACK-permitted on SYNs and timestamps and SACK blocks
// on other segments, and Len needs no flags.

// sackBlocks returns how many SACK blocks fit after the other options.
func (o *TCPOptions) sackBlocks() (blocks, fixedLen int) {
	if o.MSS != 0 {
		fixedLen += 4
	}
	if o.HasTimestamps {
		fixedLen += 12
	} else if o.SACKPermitted {
		fixedLen += 4
	}
	if o.HasWScale {
		fixedLen += 4
	}
	blocks = min(int(o.NumSACK), maxSACKBlocks, (MaxTCPOptionsLen-fixedLen-4)/lenSACKBlock)
	return max(blocks, 0), fixedLen
}

// Len is the encoded length of o, padded to a multiple of 4, never over 40
// (SACK blocks that do not fit are left out: at most 3 with timestamps, 4
// without).
func (o *TCPOptions) Len() int {
	blocks, n := o.sackBlocks()
	if blocks > 0 {
		n += 4 + lenSACKBlock*blocks
	}
	return n
}

// Encode writes o into b and returns the number of bytes written, o.Len(), or
// 0 if b is shorter than that.
func (o *TCPOptions) Encode(b []byte) int {
	blocks, n := o.sackBlocks()
	if blocks > 0 {
		n += 4 + lenSACKBlock*blocks
	}
	if len(b) < n {
		return 0
	}
	i := 0
	if o.MSS != 0 {
		b[0], b[1] = optMSS, lenMSS
		binary.BigEndian.PutUint16(b[2:4], o.MSS)
		i = 4
	}
	switch {
	case o.HasTimestamps:
		if o.SACKPermitted {
			b[i], b[i+1] = optSACKPermitted, lenSACKPermitted
		} else {
			b[i], b[i+1] = optNOP, optNOP
		}
		b[i+2], b[i+3] = optTimestamps, lenTimestamps
		binary.BigEndian.PutUint32(b[i+4:], o.TSVal)
		binary.BigEndian.PutUint32(b[i+8:], o.TSEcr)
		i += 12
	case o.SACKPermitted:
		b[i], b[i+1], b[i+2], b[i+3] = optNOP, optNOP, optSACKPermitted, lenSACKPermitted
		i += 4
	}
	if o.HasWScale {
		b[i], b[i+1], b[i+2], b[i+3] = optNOP, optWScale, lenWScale, o.WScale
		i += 4
	}
	if blocks > 0 {
		b[i], b[i+1], b[i+2], b[i+3] = optNOP, optNOP, optSACK, byte(2+lenSACKBlock*blocks)
		i += 4
		for _, s := range o.SACK[:blocks] {
			binary.BigEndian.PutUint32(b[i:], s.Start)
			binary.BigEndian.PutUint32(b[i+4:], s.End)
			i += 8
		}
	}
	return i
}
