package trace

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// Legs of a session, in column order.
const (
	legClient = iota
	legBackend
)

var legNames = [2]string{"client", "backend"}

// item is one event of one leg.
type item struct {
	leg int
	ct  *stack.ConnTrace
	ev  *stack.TraceEvent
}

func (it item) isSeg() bool { return it.ev.Kind == stack.TraceRecv || it.ev.Kind == stack.TraceSent }

// fromPeer reports a segment the leg's peer sent (client → xdproxy, backend → xdproxy).
func (it item) fromPeer() bool { return it.ev.Kind == stack.TraceRecv }

// legs returns the session's traced legs.
func (s *Session) legs() []item {
	var out []item
	for i, ct := range [2]*stack.ConnTrace{s.Client, s.Backend} {
		if ct != nil {
			out = append(out, item{leg: i, ct: ct})
		}
	}
	return out
}

// items merges the legs' events in the engine's order.
func (s *Session) items() []item {
	var out []item
	for _, l := range s.legs() {
		for i := range l.ct.Events {
			out = append(out, item{leg: l.leg, ct: l.ct, ev: &l.ct.Events[i]})
		}
	}
	slices.SortStableFunc(out, func(a, b item) int { return cmp.Compare(a.ev.Order, b.ev.Order) })
	return out
}

// rel converts a segment's numbers to relative ones: seq against the
// sender's ISN, ack and SACK blocks against the receiver's.
func rel(ct *stack.ConnTrace, ev *stack.TraceEvent) (seq, ack uint32, sackBase uint32) {
	g := &ev.Seg
	if ev.Kind == stack.TraceRecv {
		return g.Seq - ct.IRS, g.Ack - ct.ISS, ct.ISS
	}
	return g.Seq - ct.ISS, g.Ack - ct.IRS, ct.IRS
}

var flagNames = []struct {
	bit  uint8
	name string
}{{wire.FlagSYN, "SYN"}, {wire.FlagFIN, "FIN"}, {wire.FlagRST, "RST"}, {wire.FlagPSH, "PSH"},
	{wire.FlagACK, "ACK"}, {wire.FlagURG, "URG"}, {wire.FlagECE, "ECE"}, {wire.FlagCWR, "CWR"}}

// FlagString names the flags as a ladder shows them: "SYN,ACK".
func FlagString(f uint8) string {
	var parts []string
	for _, x := range flagNames {
		if f&x.bit != 0 {
			parts = append(parts, x.name)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// segLabel is the text on a segment's arrow.
func segLabel(ct *stack.ConnTrace, ev *stack.TraceEvent) string {
	g := &ev.Seg
	seq, ack, sackBase := rel(ct, ev)
	var b strings.Builder
	fmt.Fprintf(&b, "%s seq=%d", FlagString(g.Flags), seq)
	if g.Flags&wire.FlagACK != 0 {
		fmt.Fprintf(&b, " ack=%d", ack)
	}
	if g.Len > 0 {
		fmt.Fprintf(&b, " len=%d", g.Len)
	}
	fmt.Fprintf(&b, " win=%d", g.Window)
	var opts []string
	if g.Flags&wire.FlagSYN != 0 {
		if g.MSS != 0 {
			opts = append(opts, fmt.Sprintf("mss %d", g.MSS))
		}
		if g.WScale >= 0 {
			opts = append(opts, fmt.Sprintf("ws %d", g.WScale))
		}
		if g.SACKPermit {
			opts = append(opts, "sack-ok")
		}
		if g.Timestamps {
			opts = append(opts, "ts")
		}
	}
	for i := 0; i < int(g.NumSACK) && i < len(g.SACK); i++ {
		opts = append(opts, fmt.Sprintf("sack %d-%d", g.SACK[i].Start-sackBase, g.SACK[i].End-sackBase))
	}
	if len(opts) > 0 {
		fmt.Fprintf(&b, " <%s>", strings.Join(opts, ","))
	}
	return b.String()
}

// peer infers the state of a leg's far end from the segments: the state a
// textbook peer enters on sending or receiving each one.
type peer struct {
	state  stack.State
	finEnd uint32 // relative: the sequence number after its FIN
	fin    bool
}

func newPeer(ct *stack.ConnTrace) peer {
	switch {
	case ct.Cookie:
		return peer{state: stack.Established}
	case ct.Passive:
		return peer{state: stack.Closed}
	}
	return peer{state: stack.Listen}
}

// sent: the peer sent g (relative seq).
func (p *peer) sent(flags uint8, seq, length uint32) {
	switch {
	case flags&wire.FlagRST != 0:
		p.state = stack.Closed
		return
	case flags&wire.FlagSYN != 0 && flags&wire.FlagACK == 0 && p.state == stack.Closed:
		p.state = stack.SynSent
	case flags&wire.FlagSYN != 0 && p.state == stack.Listen:
		p.state = stack.SynReceived
	}
	if flags&wire.FlagFIN != 0 {
		p.fin, p.finEnd = true, seq+length+1
		switch p.state {
		case stack.Established, stack.SynReceived:
			p.state = stack.FinWait1
		case stack.CloseWait:
			p.state = stack.LastAck
		}
	}
}

// received: our segment reached the peer (relative ack, in its space).
func (p *peer) received(flags uint8, ack uint32) {
	hasACK := flags&wire.FlagACK != 0
	switch {
	case flags&wire.FlagRST != 0:
		p.state = stack.Closed
		return
	case flags&wire.FlagSYN != 0 && !hasACK && p.state == stack.Listen:
		p.state = stack.SynReceived
		return
	case flags&wire.FlagSYN != 0 && hasACK && p.state == stack.SynSent:
		p.state = stack.Established
		return
	case hasACK && p.state == stack.SynReceived && int32(ack) >= 1:
		p.state = stack.Established
	}
	if hasACK && p.fin && int32(ack-p.finEnd) >= 0 {
		switch p.state {
		case stack.FinWait1:
			p.state = stack.FinWait2
		case stack.Closing:
			p.state = stack.TimeWait
		case stack.LastAck:
			p.state = stack.Closed
		}
	}
	if flags&wire.FlagFIN != 0 {
		switch p.state {
		case stack.Established:
			p.state = stack.CloseWait
		case stack.FinWait1:
			p.state = stack.Closing
		case stack.FinWait2:
			p.state = stack.TimeWait
		}
	}
}

// row is one line of the ladder: states at the four places (client,
// xdproxy's client leg, xdproxy's backend leg, backend) and what crosses
// each leg.
type row struct {
	peerState [2]string // client, backend
	ownState  [2]string // xdproxy's client leg, backend leg
	arrow     [2]string // label
	dir       [2]int    // +1 left to right, -1 right to left, 0 a note
	note      [2]string
}

const stateWidth = 11 // len("ESTABLISHED")

// WriteText writes s as a text ladder.
func WriteText(w io.Writer, s *Session) error {
	rows := ladderRows(s)
	var width [2]int
	for l := range width {
		width[l] = 24
		for _, r := range rows {
			width[l] = max(width[l], len(r.arrow[l])+6, len(r.note[l])+2)
		}
	}
	var b strings.Builder
	writeHeader(&b, s)
	fmt.Fprintf(&b, "%*s |%s| %-*s |%s| %s\n", stateWidth, "client", strings.Repeat(" ", width[0]),
		2*stateWidth+1, center("xdproxy", 2*stateWidth+1), strings.Repeat(" ", width[1]), "backend")
	for _, r := range rows {
		line := fmt.Sprintf("%*s |%s| %-*s %*s |%s| %s", stateWidth, r.peerState[0], cell(r, legClient, width[0]),
			stateWidth, r.ownState[0], stateWidth, r.ownState[1], cell(r, legBackend, width[1]), r.peerState[1])
		b.WriteString(strings.TrimRight(line, " "))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeHeader(b *strings.Builder, s *Session) {
	fmt.Fprintf(b, "session %d, listener %s, shard %d\n", s.ID, s.Listener, s.Shard)
	for _, l := range s.legs() {
		k := l.ct.Key
		if l.leg == legClient {
			fmt.Fprintf(b, "  client leg: %v -> %v\n", k.Remote(), k.Local())
		} else {
			fmt.Fprintf(b, "  backend leg: %v -> %v\n", k.Local(), k.Remote())
		}
	}
	if s.Backend == nil && s.BackendNote != "" {
		fmt.Fprintf(b, "  backend leg: %s\n", s.BackendNote)
	}
}

func center(s string, w int) string {
	pad := max(w-len(s), 0)
	return strings.Repeat(" ", pad/2) + s + strings.Repeat(" ", pad-pad/2)
}

// cell draws leg l's part of r in width w.
func cell(r row, l, w int) string {
	switch {
	case r.arrow[l] != "" && r.dir[l] > 0:
		lab := r.arrow[l]
		return "-- " + lab + " " + strings.Repeat("-", w-len(lab)-5) + ">"
	case r.arrow[l] != "":
		lab := r.arrow[l]
		return "<" + strings.Repeat("-", w-len(lab)-5) + " " + lab + " --"
	case r.note[l] != "" && l == legClient:
		return fmt.Sprintf("%*s ", w-1, r.note[l]) // beside xdproxy's lifeline
	case r.note[l] != "":
		return fmt.Sprintf(" %-*s", w-1, r.note[l])
	}
	return strings.Repeat(" ", w)
}

// ladderRows lays the session's events out in rows.
func ladderRows(s *Session) []row {
	items := s.items()
	var peers [2]peer
	for _, l := range s.legs() {
		peers[l.leg] = newPeer(l.ct)
	}
	var rows []row
	rowOf := make([]int, len(items))
	var pending [2]string
	for i, it := range items {
		l, ev := it.leg, it.ev
		switch ev.Kind {
		case stack.TraceRecv, stack.TraceSent:
			var r row
			r.arrow[l] = segLabel(it.ct, ev)
			seq, ack, _ := rel(it.ct, ev)
			before := peers[l].state
			if it.fromPeer() {
				peers[l].sent(ev.Seg.Flags, seq, ev.Seg.Len)
			} else {
				peers[l].received(ev.Seg.Flags, ack)
			}
			if peers[l].state != before {
				r.peerState[l] = peers[l].state.String()
			}
			// Client → xdproxy and xdproxy → backend go left to right.
			r.dir[l] = -1
			if it.fromPeer() == (l == legClient) {
				r.dir[l] = 1
			}
			r.ownState[l], pending[l] = pending[l], ""
			rows = append(rows, r)
		case stack.TraceState:
			st := ev.To.String()
			// SYN_SENT, FIN_WAIT_1 and LAST_ACK are entered to send the
			// next segment (SYN, FIN); the others are caused by the
			// segment just received (or, TIME_WAIT and CLOSED after an
			// abort, just sent).
			sending := ev.To == stack.SynSent || ev.To == stack.FinWait1 || ev.To == stack.LastAck
			switch {
			case sending && i+1 < len(items) && items[i+1].leg == l && items[i+1].ev.Kind == stack.TraceSent:
				pending[l] = st
			case !sending && i > 0 && items[i-1].leg == l && items[i-1].isSeg() && rows[rowOf[i-1]].ownState[l] == "":
				rows[rowOf[i-1]].ownState[l] = st
			default:
				var r row
				r.ownState[l] = st
				rows = append(rows, r)
			}
		case stack.TraceTimer:
			var r row
			r.note[l] = "[" + ev.Timer.String() + " timer]"
			rows = append(rows, r)
		}
		rowOf[i] = len(rows) - 1
	}
	for _, lg := range s.legs() {
		ct := lg.ct
		var note string
		switch {
		case ct.Truncated > 0:
			note = fmt.Sprintf("[%d more events not recorded]", ct.Truncated)
		case len(ct.Events) > 0 && ct.Events[len(ct.Events)-1].Kind == stack.TraceState && ct.Events[len(ct.Events)-1].To == stack.TimeWait:
			note = fmt.Sprintf("[TIME_WAIT for %v]", ct.Events[len(ct.Events)-1].Dur)
		case !ct.Done:
			note = "[still open]"
		}
		if note != "" {
			var r row
			r.note[lg.leg] = note
			rows = append(rows, r)
		}
	}
	return rows
}
