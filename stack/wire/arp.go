package wire

import (
	"encoding/binary"
	"net/netip"
)

// ARP operation codes (RFC 826).
const (
	ARPRequest = 1
	ARPReply   = 2
)

// arpLen is the length of an Ethernet/IPv4 ARP packet (RFC 826): hardware
// type, protocol type, two length bytes, operation, then 6+4+6+4 addresses.
const arpLen = 28

// ARPFrameLen is the length of the frame EncodeARP writes. Ethernet requires
// 60 bytes before the FCS; the NIC pads short frames (IEEE 802.3 §4.2.3.3).
const ARPFrameLen = EthernetHeaderLen + arpLen

// ARP is an Ethernet/IPv4 ARP packet.
type ARP struct {
	Op        uint16
	SenderMAC MAC
	SenderIP  netip.Addr
	TargetMAC MAC
	TargetIP  netip.Addr
}

// parseARP accepts only what RFC 826 resolves for us: hardware type Ethernet
// (1) with 6-byte addresses, protocol IPv4 with 4-byte addresses, and a
// request or a reply (RFC 5227 probes and announcements are requests).
func parseARP(b []byte, a *ARP) Drop {
	if len(b) < arpLen {
		return DropTruncated
	}
	if binary.BigEndian.Uint16(b[0:2]) != 1 || binary.BigEndian.Uint16(b[2:4]) != EtherTypeIPv4 ||
		b[4] != 6 || b[5] != 4 {
		return DropBadARP
	}
	a.Op = binary.BigEndian.Uint16(b[6:8])
	if a.Op != ARPRequest && a.Op != ARPReply {
		return DropBadARP
	}
	a.SenderMAC = MAC(b[8:14])
	a.SenderIP = netip.AddrFrom4([4]byte(b[14:18]))
	a.TargetMAC = MAC(b[18:24])
	a.TargetIP = netip.AddrFrom4([4]byte(b[24:28]))
	return DropNone
}

// EncodeARP writes an Ethernet+ARP frame from srcMAC/srcIP to dstMAC/dstIP
// and returns its length (ARPFrameLen), or 0 if b is too small or an address
// is not IPv4. The Ethernet destination is dstMAC, or broadcast for a
// request whose dstMAC is zero; the ARP target hardware address is dstMAC as
// given (zero in a request, RFC 826 "Packet Generation").
func EncodeARP(b []byte, op uint16, srcMAC MAC, srcIP netip.Addr, dstMAC MAC, dstIP netip.Addr) int {
	if len(b) < ARPFrameLen || !srcIP.Is4() || !dstIP.Is4() {
		return 0
	}
	ethDst := dstMAC
	if op == ARPRequest && dstMAC.IsZero() {
		ethDst = BroadcastMAC
	}
	putEthernet(b, ethDst, srcMAC, EtherTypeARP)
	a := b[EthernetHeaderLen:ARPFrameLen]
	binary.BigEndian.PutUint16(a[0:2], 1)
	binary.BigEndian.PutUint16(a[2:4], EtherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], srcMAC[:])
	s, d := srcIP.As4(), dstIP.As4()
	copy(a[14:18], s[:])
	copy(a[18:24], dstMAC[:])
	copy(a[24:28], d[:])
	return ARPFrameLen
}
