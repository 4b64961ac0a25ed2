package stack

import (
	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// segment is an arriving TCP segment, in the engine's terms.
type segment struct {
	key     FlowKey
	from    hop // the interface it arrived on and its sender's MAC: where replies go
	seq     seqnum.Value
	ack     seqnum.Value
	flags   uint8
	wnd     uint16 // as sent: not yet scaled
	opts    *wire.TCPOptions
	payload []byte
}

func (s *segment) load(p *wire.Packet, ifx uint8) {
	s.key = FlowKey{LocalAddr: p.Dst, RemoteAddr: p.Src, LocalPort: p.TCP.DstPort, RemotePort: p.TCP.SrcPort}
	s.from = hop{mac: p.EthSrc, ifx: ifx}
	s.seq = seqnum.Value(p.TCP.Seq)
	s.ack = seqnum.Value(p.TCP.Ack)
	s.flags = p.TCP.Flags
	s.wnd = p.TCP.Window
	s.opts = &p.TCP.Options
	s.payload = p.Payload
}

func (s *segment) has(f uint8) bool { return s.flags&f != 0 }

// seqLen is SEG.LEN: payload bytes plus one each for SYN and FIN.
func (s *segment) seqLen() seqnum.Size {
	n := seqnum.Size(len(s.payload))
	if s.has(wire.FlagSYN) {
		n++
	}
	if s.has(wire.FlagFIN) {
		n++
	}
	return n
}
