package rawxsk

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
)

func TestUDPFrame(t *testing.T) {
	dst := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	src := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	f := UDPFrame(dst, src, netip.MustParseAddr("10.10.1.1"), netip.MustParseAddr("10.10.1.254"))
	if len(f) != FrameLen || !IsTestFrame(f) {
		t.Fatalf("len %d, IsTestFrame %v", len(f), IsTestFrame(f))
	}
	if net.HardwareAddr(f[0:6]).String() != dst.String() || net.HardwareAddr(f[6:12]).String() != src.String() {
		t.Errorf("MACs % x", f[:12])
	}
	ip := f[14:34]
	if ipChecksum(ip) != 0 { // the sum over a header with its checksum in is all ones
		t.Errorf("IPv4 checksum %#04x does not verify", binary.BigEndian.Uint16(ip[10:12]))
	}
	if got := binary.BigEndian.Uint16(ip[2:4]); int(got) != FrameLen-14 {
		t.Errorf("IPv4 total length %d", got)
	}
	if got := binary.BigEndian.Uint16(f[38:40]); int(got) != 8+PayloadLen {
		t.Errorf("UDP length %d", got)
	}
	if netip.AddrFrom4([4]byte(ip[12:16])).String() != "10.10.1.1" || netip.AddrFrom4([4]byte(ip[16:20])).String() != "10.10.1.254" {
		t.Errorf("addresses % x", ip[12:20])
	}
	other := append([]byte(nil), f...)
	binary.BigEndian.PutUint16(other[36:38], Port+1)
	if IsTestFrame(other) || IsTestFrame(f[:FrameLen-1]) {
		t.Error("IsTestFrame accepts another port or a short frame")
	}
}
