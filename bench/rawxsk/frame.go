package rawxsk

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Every raw test frame is Ethernet (14) + IPv4 (20) + UDP (8) + payload:
// FrameLen bytes, the minimum Ethernet frame without its FCS.
const (
	FrameLen   = 64
	HeaderLen  = 14 + 20 + 8 // where the UDP payload starts
	PayloadLen = FrameLen - HeaderLen
	Port       = 9000 // UDP source and destination port of every test frame
	Batch      = 64   // frames per sendmmsg/recvmmsg call and per XSK batch
)

// UDPFrame builds a FrameLen-byte Ethernet/IPv4/UDP frame from src to dst,
// port Port both ways, UDP checksum 0 (none, valid for IPv4).
func UDPFrame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr) []byte {
	f := make([]byte, FrameLen)
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:14], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], 20+8+PayloadLen)
	ip[6] = 0x40 // DF
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], ipChecksum(ip))
	udp := f[34:HeaderLen]
	binary.BigEndian.PutUint16(udp[0:2], Port)
	binary.BigEndian.PutUint16(udp[2:4], Port)
	binary.BigEndian.PutUint16(udp[4:6], 8+PayloadLen)
	copy(f[HeaderLen:], "xdproxy bench frame...")
	return f
}

// ipChecksum is the RFC 1071 checksum of an IPv4 header whose checksum
// field is zero.
func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// IsTestFrame reports whether f is one of ours: FrameLen bytes, IPv4, UDP,
// to Port.
func IsTestFrame(f []byte) bool {
	return len(f) == FrameLen && f[12] == 0x08 && f[13] == 0x00 && f[23] == unix.IPPROTO_UDP &&
		binary.BigEndian.Uint16(f[36:38]) == Port
}
