package stack

import (
	"fmt"
	"net/netip"
)

// FlowKey is a connection's 4-tuple seen from the engine's side.
type FlowKey struct {
	LocalAddr, RemoteAddr netip.Addr
	LocalPort, RemotePort uint16
}

func (k FlowKey) String() string {
	return fmt.Sprintf("%s <-> %s", netip.AddrPortFrom(k.LocalAddr, k.LocalPort), netip.AddrPortFrom(k.RemoteAddr, k.RemotePort))
}

// Local returns the local address and port.
func (k FlowKey) Local() netip.AddrPort { return netip.AddrPortFrom(k.LocalAddr, k.LocalPort) }

// Remote returns the remote address and port.
func (k FlowKey) Remote() netip.AddrPort { return netip.AddrPortFrom(k.RemoteAddr, k.RemotePort) }
