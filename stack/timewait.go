package stack

import (
	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// The TIME_WAIT table keeps what TIME_WAIT needs (RFC 9293 section 3.6.1) in
// compact entries, apart from full connection records: the 4-tuple, the two
// sequence numbers, TS.Recent and the peer's MAC. Since every entry lives
// the same 2MSL, insertion order is expiry order: entries sit in a FIFO ring
// and expire from its head, O(1) each. The ring has at most TimeWaitMax
// slots; when they are all taken (live entries, plus tombstones left by
// restarted timers) the oldest slot is recycled, counted when it was live —
// bounded memory under churn, constant time per operation.
//
// A retransmitted FIN restarts an entry's timer: the entry moves to the
// tail (its old slot becomes a tombstone), which keeps the ring in expiry order.
type twEntry struct {
	key      FlowKey
	sndNxt   seqnum.Value
	rcvNxt   seqnum.Value
	tsRecent uint32
	tsOffset uint32
	expires  Time
	peer     hop
	wnd      uint16 // the window field we last advertised (Linux's tw_rcv_wnd)
	hasTS    bool
	live     bool
}

type timeWaitTable struct {
	ring  []twEntry // capacity grows by doubling up to max
	head  int
	n     int // slots in use, tombstones included
	live  int
	max   int
	index map[FlowKey]int // key → slot
	stats *Stats
	// released hears of every live entry dropped (expired, recycled,
	// removed): Config.Flows.
	released func(FlowKey)
}

func (t *timeWaitTable) init(max int) {
	t.max = max
	t.index = make(map[FlowKey]int)
}

func (t *timeWaitTable) slot(i int) *twEntry { return &t.ring[(t.head+i)%len(t.ring)] }

// lookup returns the slot of k's entry.
func (t *timeWaitTable) lookup(k FlowKey) (int, bool) {
	if t.live == 0 {
		return 0, false
	}
	i, ok := t.index[k]
	return i, ok
}

func (t *timeWaitTable) entry(slot int) *twEntry { return &t.ring[slot] }

// popHead removes the head slot, returning whether it held a live entry.
func (t *timeWaitTable) popHead() bool {
	e := &t.ring[t.head]
	wasLive := e.live
	if wasLive {
		delete(t.index, e.key)
		t.live--
		if t.released != nil {
			t.released(e.key)
		}
	}
	*e = twEntry{}
	t.head = (t.head + 1) % len(t.ring)
	t.n--
	return wasLive
}

// insert adds an entry, recycling the oldest when full. It reports whether a
// live entry was recycled.
func (t *timeWaitTable) insert(en twEntry) (recycled bool) {
	if t.n == len(t.ring) {
		if len(t.ring) < t.max {
			t.grow()
		} else {
			for t.n == len(t.ring) {
				recycled = t.popHead() || recycled
			}
		}
	}
	if t.live >= t.max {
		for !t.popHead() {
		}
		recycled = true
	}
	i := (t.head + t.n) % len(t.ring)
	en.live = true
	t.ring[i] = en
	t.index[en.key] = i
	t.n++
	t.live++
	return recycled
}

func (t *timeWaitTable) grow() {
	size := max(64, 2*len(t.ring))
	size = min(size, t.max)
	nr := make([]twEntry, size)
	for i := 0; i < t.n; i++ {
		nr[i] = *t.slot(i)
		if nr[i].live {
			t.index[nr[i].key] = i
		}
	}
	t.ring, t.head = nr, 0
}

// remove deletes the entry in slot, leaving a tombstone.
func (t *timeWaitTable) remove(slot int) {
	e := &t.ring[slot]
	if !e.live {
		return
	}
	delete(t.index, e.key)
	e.live = false
	t.live--
	if t.released != nil {
		t.released(e.key)
	}
}

// nextExpiry is the expiry of the oldest live entry, or Never.
func (t *timeWaitTable) nextExpiry() Time {
	for t.n > 0 && !t.ring[t.head].live {
		t.popHead()
	}
	if t.n == 0 {
		return Never
	}
	return t.ring[t.head].expires
}

// expire removes every entry due by now.
func (t *timeWaitTable) expire(e *Engine, now Time) {
	for t.n > 0 {
		h := &t.ring[t.head]
		if h.live && h.expires > now {
			return
		}
		if t.popHead() {
			e.counters.inc(TimeWaitExpired)
			e.stats.states[TimeWait].Add(-1)
		}
	}
}

func (t *timeWaitTable) each(fn func(k FlowKey, ifx int) bool) {
	for i := 0; i < t.n; i++ {
		if s := t.slot(i); s.live && !fn(s.key, int(s.peer.ifx)) {
			return
		}
	}
}

// enterTimeWait converts c into a TIME_WAIT entry and releases the record.
func (c *Conn) enterTimeWait() {
	e := c.e
	en := twEntry{
		key: c.key, sndNxt: c.sndNxt, rcvNxt: c.rcvNxt,
		tsRecent: c.tsRecent, tsOffset: c.tsOffset, hasTS: c.tsOK,
		peer: c.peer, expires: e.now.Add(e.cfg.TimeWait),
		wnd: c.rcvWindow(),
	}
	e.releaseConn(c, TimeWait)
	e.counters.inc(TimeWaitEntered)
	e.addTimeWait(en)
}

// addTimeWait inserts an entry, keeping the gauge and the recycle counter.
func (e *Engine) addTimeWait(en twEntry) {
	if e.tw.insert(en) {
		e.counters.inc(TimeWaitRecycled) // one out, one in: the gauge stays
	} else {
		e.stats.states[TimeWait].Add(1)
	}
}

// timeWaitInput handles a segment for a TIME_WAIT entry.
func (e *Engine) timeWaitInput(slot int, s *segment) {
	tw := e.tw.entry(slot)
	switch {
	case s.has(wire.FlagRST):
		// RFC 1337 ("TIME-WAIT assassination"): an RST does not cut TIME_WAIT
		// short. Linux's default (tcp_rfc1337=0) lets it; we do not.
		e.counters.inc(TimeWaitRSTIgnored)
		return
	case s.has(wire.FlagSYN) && !s.has(wire.FlagACK):
		// RFC 6191 (and RFC 1122 4.2.2.13): a new SYN may reopen the 4-tuple
		// if it is newer than the old incarnation — by timestamp when both
		// carry them, else by sequence number. Like Linux, the new ISN is
		// set past anything the old connection sent.
		newer := s.seq.GreaterThan(tw.rcvNxt)
		if tw.hasTS && s.opts.HasTimestamps {
			// RFC 6191 section 2 (and Linux's PAWS check in
			// tcp_timewait_state_process): a newer timestamp reopens, an
			// equal one defers to the sequence number, an older one never.
			d := int32(s.opts.TSVal - tw.tsRecent)
			newer = d > 0 || (d == 0 && newer)
		}
		l := e.listeners[s.key.Local()]
		if newer && l != nil && !l.closed {
			iss := tw.sndNxt.Add(65535 + 2)
			e.tw.remove(slot)
			e.stats.states[TimeWait].Add(-1)
			e.counters.inc(TimeWaitReopened)
			l.handleSYN(s, iss, true)
			return
		}
	case s.has(wire.FlagACK) && !s.has(wire.FlagSYN) && e.cookieReopen(slot, tw, s):
		// The third segment of a handshake whose SYN was answered outside
		// the engine (listen.go).
		return
	case s.has(wire.FlagFIN) && s.seq.Add(seqnum.Size(len(s.payload))).Add(1) == tw.rcvNxt:
		// The peer retransmitted its FIN: our last ACK was lost. ACK it
		// again and restart the 2MSL timer (RFC 9293 section 3.10.7.4).
		e.counters.inc(TimeWaitFINReACKed)
		en := *tw
		en.expires = e.now.Add(e.cfg.TimeWait)
		e.tw.remove(slot)
		e.stats.states[TimeWait].Add(-1)
		e.addTimeWait(en)
		e.timeWaitACK(&en)
		return
	case len(s.payload) == 0 && s.seq == tw.rcvNxt:
		e.counters.inc(TimeWaitDupACKs) // a bare duplicate ACK: nothing to say
		return
	}
	e.counters.inc(TimeWaitACKs)
	e.timeWaitACK(tw)
}

// timeWaitACK sends <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> from an entry.
func (e *Engine) timeWaitACK(tw *twEntry) {
	var o wire.TCPOptions
	var opts *wire.TCPOptions
	if tw.hasTS {
		o = wire.TCPOptions{HasTimestamps: true, TSVal: tsClock(e.now) + tw.tsOffset, TSEcr: tw.tsRecent}
		opts = &o
	}
	e.sendSegment(tw.key, tw.peer, tw.sndNxt, tw.rcvNxt, wire.FlagACK, tw.wnd, opts, nil, nil)
}
