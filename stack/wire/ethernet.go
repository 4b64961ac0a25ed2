package wire

import "encoding/binary"

// MAC is an IEEE 802 MAC-48 address.
type MAC [6]byte

// BroadcastMAC is the Ethernet broadcast address.
var BroadcastMAC = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// EtherType values (IEEE 802 numbers registry).
const (
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeIPv6 = 0x86DD
	EtherTypeVLAN = 0x8100 // IEEE 802.1Q customer tag
	EtherTypeQinQ = 0x88A8 // IEEE 802.1ad service tag
)

// EthernetHeaderLen is the length of an untagged Ethernet II header.
const EthernetHeaderLen = 14

// vlanTagLen is the length of one 802.1Q/802.1ad tag (TPID + TCI).
const vlanTagLen = 4

// IsZero reports whether m is 00:00:00:00:00:00.
func (m MAC) IsZero() bool { return m == MAC{} }

// IsMulticast reports whether m has the group bit set (IEEE 802 §8.2); the
// broadcast address is a multicast address.
func (m MAC) IsMulticast() bool { return m[0]&1 != 0 }

// String formats m as six colon-separated lower-case hex bytes. It allocates;
// it is meant for logs and tests.
func (m MAC) String() string {
	const hex = "0123456789abcdef"
	var s [17]byte
	for i, b := range m {
		if i > 0 {
			s[3*i-1] = ':'
		}
		s[3*i] = hex[b>>4]
		s[3*i+1] = hex[b&0xf]
	}
	return string(s[:])
}

// parseEthernet fills the link-layer fields of p and returns the offset of
// the network header. VLAN tags are skipped whatever their number; p.VLAN is
// the VLAN ID of the outermost one (802.1Q-2018 §9.6).
func parseEthernet(frame []byte, p *Packet) (int, Drop) {
	if len(frame) < EthernetHeaderLen {
		return 0, DropTruncated
	}
	p.EthDst = MAC(frame[0:6])
	p.EthSrc = MAC(frame[6:12])
	off := 12
	et := binary.BigEndian.Uint16(frame[off:])
	tagged := false
	for et == EtherTypeVLAN || et == EtherTypeQinQ {
		if len(frame) < off+vlanTagLen+2 {
			return 0, DropTruncated
		}
		if !tagged {
			p.VLAN = binary.BigEndian.Uint16(frame[off+2:]) & 0x0fff
			tagged = true
		}
		off += vlanTagLen
		et = binary.BigEndian.Uint16(frame[off:])
	}
	p.EtherType = et
	return off + 2, DropNone
}

// putEthernet writes an untagged Ethernet II header; b must hold 14 bytes.
func putEthernet(b []byte, dst, src MAC, etherType uint16) {
	_ = b[EthernetHeaderLen-1]
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:14], etherType)
}
