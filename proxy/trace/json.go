package trace

import (
	"encoding/json"
	"io"

	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// SessionDoc is a session trace as JSON: the legs, then every event of
// both in the engine's order, numbers relative as in the ladder, times in
// nanoseconds since the session's first event.
type SessionDoc struct {
	ID          uint64     `json:"id"`
	Listener    string     `json:"listener"`
	Shard       int        `json:"shard"`
	Legs        []LegDoc   `json:"legs"`
	BackendNote string     `json:"backend_note,omitempty"`
	Events      []EventDoc `json:"events"`
}

// LegDoc is one leg of a session.
type LegDoc struct {
	Leg       string `json:"leg"` // client | backend
	Local     string `json:"local"`
	Remote    string `json:"remote"`
	Passive   bool   `json:"passive"`
	Cookie    bool   `json:"syn_cookie,omitempty"`
	ISS       uint32 `json:"iss"`
	IRS       uint32 `json:"irs"`
	Events    int    `json:"events"`
	Truncated int    `json:"truncated"` // events past the cap, not recorded
	Done      bool   `json:"done"`
}

// EventDoc is one event. Kind is in (a segment from the leg's peer), out
// (a segment xdproxy sent), state or timer; Peer is the peer's state as
// inferred, where it changed.
type EventDoc struct {
	T     int64   `json:"t_ns"`
	Leg   string  `json:"leg"`
	Kind  string  `json:"kind"`
	Flags string  `json:"flags,omitempty"`
	Seq   *uint32 `json:"seq,omitempty"`
	Ack   *uint32 `json:"ack,omitempty"`
	Len   uint32  `json:"len,omitempty"`
	Win   *uint32 `json:"win,omitempty"`
	Opts  *OptDoc `json:"opts,omitempty"`
	From  string  `json:"from,omitempty"`
	To    string  `json:"to,omitempty"`
	DurNS int64   `json:"dur_ns,omitempty"` // TIME_WAIT's 2MSL
	Timer string  `json:"timer,omitempty"`
	Peer  string  `json:"peer_state,omitempty"`
}

// OptDoc is a segment's options in short.
type OptDoc struct {
	MSS    uint16      `json:"mss,omitempty"`
	WScale *int8       `json:"ws,omitempty"`
	SACKOK bool        `json:"sack_ok,omitempty"`
	TS     bool        `json:"ts,omitempty"`
	SACK   [][2]uint32 `json:"sack,omitempty"`
}

// Doc is s as JSON.
func Doc(s *Session) SessionDoc {
	d := SessionDoc{ID: s.ID, Listener: s.Listener, Shard: s.Shard, BackendNote: s.BackendNote, Events: []EventDoc{}}
	for _, l := range s.legs() {
		ct := l.ct
		d.Legs = append(d.Legs, LegDoc{
			Leg: legNames[l.leg], Local: ct.Key.Local().String(), Remote: ct.Key.Remote().String(),
			Passive: ct.Passive, Cookie: ct.Cookie, ISS: ct.ISS, IRS: ct.IRS,
			Events: len(ct.Events), Truncated: ct.Truncated, Done: ct.Done,
		})
	}
	items := s.items()
	var peers [2]peer
	for _, l := range s.legs() {
		peers[l.leg] = newPeer(l.ct)
	}
	for _, it := range items {
		ev := it.ev
		e := EventDoc{T: int64(ev.At - items[0].ev.At), Leg: legNames[it.leg]}
		switch ev.Kind {
		case stack.TraceRecv, stack.TraceSent:
			g := &ev.Seg
			seq, ack, sackBase := rel(it.ct, ev)
			before := peers[it.leg].state
			e.Kind = "out"
			if it.fromPeer() {
				e.Kind = "in"
				peers[it.leg].sent(g.Flags, seq, g.Len)
			} else {
				peers[it.leg].received(g.Flags, ack)
			}
			if peers[it.leg].state != before {
				e.Peer = peers[it.leg].state.String()
			}
			win := g.Window
			e.Flags, e.Seq, e.Len, e.Win = FlagString(g.Flags), &seq, g.Len, &win
			if g.Flags&wire.FlagACK != 0 {
				e.Ack = &ack
			}
			o := &OptDoc{MSS: g.MSS, SACKOK: g.SACKPermit, TS: g.Timestamps}
			if g.WScale >= 0 {
				ws := g.WScale
				o.WScale = &ws
			}
			for i := 0; i < int(g.NumSACK) && i < len(g.SACK); i++ {
				o.SACK = append(o.SACK, [2]uint32{g.SACK[i].Start - sackBase, g.SACK[i].End - sackBase})
			}
			if o.MSS != 0 || o.WScale != nil || o.SACKOK || o.TS || o.SACK != nil {
				e.Opts = o
			}
		case stack.TraceState:
			e.Kind, e.From, e.To, e.DurNS = "state", ev.From.String(), ev.To.String(), int64(ev.Dur)
		case stack.TraceTimer:
			e.Kind, e.Timer = "timer", ev.Timer.String()
		}
		d.Events = append(d.Events, e)
	}
	return d
}

// WriteJSON writes s as one line of JSON.
func WriteJSON(w io.Writer, s *Session) error {
	return json.NewEncoder(w).Encode(Doc(s))
}
