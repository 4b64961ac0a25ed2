package stack

import "github.com/xdproxy/xdproxy/stack/seqnum"

// The sent queue: one record per segment sent and not yet cumulatively
// acknowledged, in sequence order, covering [SND.UNA, SND.NXT) without gaps.
// Each record carries its latest transmit time on the engine's clock (RACK's
// Segment.xmit_ts, RFC 8985 section 5.2) and what the scoreboard knows of
// it: SACKed, deemed lost, retransmitted; and the delivery state it was
// sent in, for delivery rate samples (rate.go). The bytes themselves stay
// in the send ring; a record is 48 bytes beside a segment's ~1448.
//
// Storage is a power-of-two ring taken from the engine's free list on the
// first send and given back when the queue empties, so the steady state
// allocates nothing and an idle connection holds no record memory.

// sentSeg is one transmitted segment.
type sentSeg struct {
	start, end seqnum.Value // [start, end): its data, then our FIN when segFIN
	xmit       Time         // its latest transmission
	flags      uint8
	// The delivery state at its latest transmission (rateOnSend).
	txDelivered   uint64
	txDeliveredAt Time
	txFirstSent   Time
}

const (
	segSACKed     uint8 = 1 << iota // covered by SACK blocks
	segLost                         // deemed lost (counted in lostOut until SACKed or acknowledged)
	segRxtOut                       // a retransmission of it is in flight (counted in rxtOut)
	segRetrans                      // sent more than once (RFC 8985 Segment.retransmitted)
	segFIN                          // its last sequence number is our FIN
	segAppLimited                   // sent while the application kept the pipe short (rate.go)
	segRateTaken                    // delivered: its rate state was taken (not again at the cumulative ACK)
)

func (s *sentSeg) len() int { return int(s.start.Size(s.end)) }

type sentQueue struct {
	r    []sentSeg // ring storage; len(r) is 0 or a power of two
	head int
	n    int
}

// minSentQueue is the first ring size; it doubles as the flight grows.
const minSentQueue = 16

// maxFreeSentRings bounds the engine's free list of rings.
const maxFreeSentRings = 256

func (q *sentQueue) at(i int) *sentSeg { return &q.r[(q.head+i)&(len(q.r)-1)] }

func (q *sentQueue) push(e *Engine, s sentSeg) {
	if q.n == len(q.r) {
		q.grow(e)
	}
	*q.at(q.n) = s
	q.n++
}

func (q *sentQueue) popFront(e *Engine) {
	q.head = (q.head + 1) & (len(q.r) - 1)
	q.n--
	if q.n == 0 {
		q.release(e)
	}
}

// split cuts record i at seq (inside it) into two records with the same
// transmit time and flags; only the second keeps the FIN.
func (q *sentQueue) split(e *Engine, i int, seq seqnum.Value) {
	if q.n == len(q.r) {
		q.grow(e)
	}
	for k := q.n; k > i+1; k-- {
		*q.at(k) = *q.at(k - 1)
	}
	q.n++
	first, second := q.at(i), q.at(i+1)
	*second = *first
	second.start = seq
	first.end = seq
	first.flags &^= segFIN
}

// find returns the index of the first record that ends after seq (the one
// holding seq when seq is in the queue), or q.n.
func (q *sentQueue) find(seq seqnum.Value) int {
	lo, hi := 0, q.n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if q.at(mid).end.LessThanEq(seq) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

func (q *sentQueue) grow(e *Engine) {
	size := max(2*len(q.r), minSentQueue)
	r := e.takeSentRing(size)
	for i := 0; i < q.n; i++ {
		r[i] = *q.at(i)
	}
	e.giveSentRing(q.r)
	q.r, q.head = r, 0
}

// release gives the storage back (the queue must be empty, or be dropped).
func (q *sentQueue) release(e *Engine) {
	e.giveSentRing(q.r)
	q.r, q.head, q.n = nil, 0, 0
}

// takeSentRing returns ring storage of size records from the free list, or new.
func (e *Engine) takeSentRing(size int) []sentSeg {
	for i := len(e.sentRings) - 1; i >= 0; i-- {
		if r := e.sentRings[i]; len(r) == size {
			last := len(e.sentRings) - 1
			e.sentRings[i] = e.sentRings[last]
			e.sentRings[last] = nil
			e.sentRings = e.sentRings[:last]
			return r
		}
	}
	return make([]sentSeg, size)
}

func (e *Engine) giveSentRing(r []sentSeg) {
	if len(r) == 0 || len(e.sentRings) >= maxFreeSentRings {
		return
	}
	e.sentRings = append(e.sentRings, r)
}
