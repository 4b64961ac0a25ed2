package stack

// The state × event matrix, as the FreeBSD TCP test suite keeps one: every
// state against every kind of arriving segment, each cell asserting the exact
// reply (or none), the state afterwards and exactly which counters moved.
// A fresh harness per cell drives the connection into the state through the
// real transitions (harness_test.go), then the peer sends one segment.
//
// Cells follow RFC 9293 section 3.10.7 and RFC 5961. Where Linux departs from
// them the engine matches Linux, and the cell says so ("Linux:").
//
// Sequence numbers are relative to the ISNs (harness_test.go). The numbers in
// each state, after its setup:
//
//	state        RCV.NXT  SND.UNA  SND.NXT  how
//	LISTEN          -        -        -     h.listen()
//	CLOSED          -        -        -     nothing: no listener, no connection
//	SYN_SENT        -        0        1     h.synSent()
//	SYN_RCVD        1        0        1     h.synReceived()
//	ESTABLISHED     1        1        6     h.established(), then "hello" written and in flight
//	FIN_WAIT_1      1        1        2     h.finWait1()
//	FIN_WAIT_2      1        2        2     h.finWait2()
//	CLOSE_WAIT      2        1        6     h.closeWait(), then "hello" written and in flight
//	CLOSING         2        1        2     h.closing()
//	LAST_ACK        2        1        2     h.lastAck()
//	TIME_WAIT       2        2        2     h.timeWait()
//
// The peer's window is 65535 with window scale 7, so MAX.SND.WND is
// 65535<<7 once synchronized; our receive window is at most the 256 KiB buffer.

import (
	"testing"
)

var (
	matrixStates = []State{Listen, Closed, SynSent, SynReceived, Established, FinWait1, FinWait2, CloseWait, Closing, LastAck, TimeWait}

	// matrixEvents are the columns. Where a state has no RCV.NXT (LISTEN,
	// CLOSED, SYN_SENT) the same segments are sent as in ESTABLISHED.
	matrixEvents = []string{
		"SYN",                // the peer's SYN again: seq = its ISN, no ACK
		"SYN-ACK",            // a SYN|ACK at the peer's ISN acknowledging SND.NXT
		"SYN-in-window",      // a SYN at RCV.NXT+100 (RFC 5961 section 4's blind SYN; in TIME_WAIT, a newer SYN)
		"SYN-FIN",            // SYN|FIN at the peer's ISN
		"ACK-acceptable",     // SND.UNA < SEG.ACK =< SND.NXT (SEG.ACK = SND.NXT when nothing is outstanding)
		"ACK-old",            // SEG.ACK = SND.UNA-1: a duplicate, within MAX.SND.WND
		"ACK-too-old",        // SEG.ACK = SND.UNA-2^24, below SND.UNA-MAX.SND.WND (RFC 5961 section 5)
		"ACK-unsent",         // SEG.ACK = SND.NXT+1
		"FIN",                // the peer's FIN|ACK at RCV.NXT, or its retransmission once received
		"RST-exact",          // RST at RCV.NXT (in SYN_SENT: RST|ACK acknowledging our SYN)
		"RST-in-window",      // RST at RCV.NXT+100 (in SYN_SENT: a bare RST)
		"RST-out-of-window",  // RST at RCV.NXT+2^20 (in SYN_SENT: RST|ACK with an unacceptable ACK)
		"RST-after-FIN",      // RST at RCV.NXT-1, the sequence number of a FIN already received
		"data",               // 10 bytes at RCV.NXT
		"data-out-of-window", // 10 bytes at RCV.NXT+2^20
	}
)

// far puts a sequence number past any receive window the engine advertises.
const far = 1 << 20

// below is an acknowledgment number more than MAX.SND.WND (65535<<7) below n.
func below(n uint32) uint32 { return n - 1<<24 }

var ten = []byte("0123456789")

// matrixCell is one state × event: what the peer sends and what must follow.
type matrixCell struct {
	in     seg
	out    []seg // the engine's replies, in order; none when empty
	absSeq bool  // out[0].seq is absolute (the <SEQ=0> of an RST answering a segment without ACK)
	next   State
	moved  []Counter // the counters that moved, each by one; the frame/segment totals are not listed
}

var matrixSetup = map[State]func(h *harness){
	Listen:      func(h *harness) { h.listen() },
	Closed:      func(h *harness) {},
	SynSent:     (*harness).synSent,
	SynReceived: (*harness).synReceived,
	Established: func(h *harness) {
		h.established()
		h.matrixWrite("hello")
		h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("hello")})
	},
	FinWait1: (*harness).finWait1,
	FinWait2: (*harness).finWait2,
	CloseWait: func(h *harness) {
		h.closeWait()
		h.matrixWrite("hello")
		h.expect(seg{flags: PSH | ACK, seq: 1, ack: 2, data: []byte("hello")})
	},
	Closing:  (*harness).closing,
	LastAck:  (*harness).lastAck,
	TimeWait: (*harness).timeWait,
}

var matrix = map[State]map[string]matrixCell{
	// RFC 9293 section 3.10.7.2. Any ACK is answered <SEQ=SEG.ACK><CTL=RST>
	// (no SYN cookie is outstanding); an RST is never answered.
	Listen: {
		"SYN":           {in: seg{flags: SYN, seq: 0}, out: []seg{{flags: SYN | ACK, seq: 0, ack: 1}}, next: SynReceived},
		"SYN-ACK":       {in: seg{flags: SYN | ACK, seq: 0, ack: 1}, out: []seg{{flags: RST, seq: 1}}, next: Listen, moved: []Counter{RxBadSYN, TxResets}},
		"SYN-in-window": {in: seg{flags: SYN, seq: 101}, out: []seg{{flags: SYN | ACK, seq: 0, ack: 102}}, next: SynReceived},
		// Linux: SYN|FIN to a listener is discarded (tcp_rcv_state_process);
		// RFC 9293 would open a connection and process the FIN later.
		"SYN-FIN":            {in: seg{flags: SYN | FIN, seq: 0}, next: Listen, moved: []Counter{RxBadSYN}},
		"ACK-acceptable":     {in: seg{flags: ACK, seq: 1, ack: 1}, out: []seg{{flags: RST, seq: 1}}, next: Listen, moved: []Counter{RxNoSocket, TxResets}},
		"ACK-old":            {in: seg{flags: ACK, seq: 1, ack: 0}, out: []seg{{flags: RST, seq: 0}}, next: Listen, moved: []Counter{RxNoSocket, TxResets}},
		"ACK-too-old":        {in: seg{flags: ACK, seq: 1, ack: below(1)}, out: []seg{{flags: RST, seq: below(1)}}, next: Listen, moved: []Counter{RxNoSocket, TxResets}},
		"ACK-unsent":         {in: seg{flags: ACK, seq: 1, ack: 2}, out: []seg{{flags: RST, seq: 2}}, next: Listen, moved: []Counter{RxNoSocket, TxResets}},
		"FIN":                {in: seg{flags: FIN | ACK, seq: 1, ack: 1}, out: []seg{{flags: RST, seq: 1}}, next: Listen, moved: []Counter{RxNoSocket, TxResets}},
		"RST-exact":          {in: seg{flags: RST, seq: 1}, next: Listen, moved: []Counter{RxRSTIgnored}},
		"RST-in-window":      {in: seg{flags: RST, seq: 101}, next: Listen, moved: []Counter{RxRSTIgnored}},
		"RST-out-of-window":  {in: seg{flags: RST, seq: 1 + far}, next: Listen, moved: []Counter{RxRSTIgnored}},
		"RST-after-FIN":      {in: seg{flags: RST, seq: 0}, next: Listen, moved: []Counter{RxRSTIgnored}},
		"data":               {in: seg{flags: PSH | ACK, seq: 1, ack: 1, data: ten}, out: []seg{{flags: RST, seq: 1}}, next: Listen, moved: []Counter{RxNoSocket, TxResets}},
		"data-out-of-window": {in: seg{flags: PSH | ACK, seq: 1 + far, ack: 1, data: ten}, out: []seg{{flags: RST, seq: 1}}, next: Listen, moved: []Counter{RxNoSocket, TxResets}},
	},

	// RFC 9293 section 3.10.7.1: with ACK, <SEQ=SEG.ACK><CTL=RST>; without,
	// <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; an RST is dropped.
	Closed: {
		"SYN":                {in: seg{flags: SYN, seq: 0}, out: []seg{{flags: RST | ACK, seq: 0, ack: 1}}, next: Closed, moved: []Counter{RxNoSocket, TxResets}},
		"SYN-ACK":            {in: seg{flags: SYN | ACK, seq: 0, ack: 1}, out: []seg{{flags: RST, seq: 1}}, next: Closed, moved: []Counter{RxNoSocket, TxResets}},
		"SYN-in-window":      {in: seg{flags: SYN, seq: 101}, out: []seg{{flags: RST | ACK, seq: 0, ack: 102}}, next: Closed, moved: []Counter{RxNoSocket, TxResets}},
		"SYN-FIN":            {in: seg{flags: SYN | FIN, seq: 0}, out: []seg{{flags: RST | ACK, seq: 0, ack: 2}}, next: Closed, moved: []Counter{RxNoSocket, TxResets}},
		"ACK-acceptable":     {in: seg{flags: ACK, seq: 1, ack: 1}, out: []seg{{flags: RST, seq: 1}}, next: Closed, moved: []Counter{RxNoSocket, TxResets}},
		"ACK-old":            {in: seg{flags: ACK, seq: 1, ack: 0}, out: []seg{{flags: RST, seq: 0}}, next: Closed, moved: []Counter{RxNoSocket, TxResets}},
		"ACK-too-old":        {in: seg{flags: ACK, seq: 1, ack: below(1)}, out: []seg{{flags: RST, seq: below(1)}}, next: Closed, moved: []Counter{RxNoSocket, TxResets}},
		"ACK-unsent":         {in: seg{flags: ACK, seq: 1, ack: 2}, out: []seg{{flags: RST, seq: 2}}, next: Closed, moved: []Counter{RxNoSocket, TxResets}},
		"FIN":                {in: seg{flags: FIN | ACK, seq: 1, ack: 1}, out: []seg{{flags: RST, seq: 1}}, next: Closed, moved: []Counter{RxNoSocket, TxResets}},
		"RST-exact":          {in: seg{flags: RST, seq: 1}, next: Closed, moved: []Counter{RxNoSocket, RxRSTIgnored}},
		"RST-in-window":      {in: seg{flags: RST, seq: 101}, next: Closed, moved: []Counter{RxNoSocket, RxRSTIgnored}},
		"RST-out-of-window":  {in: seg{flags: RST, seq: 1 + far}, next: Closed, moved: []Counter{RxNoSocket, RxRSTIgnored}},
		"RST-after-FIN":      {in: seg{flags: RST, seq: 0}, next: Closed, moved: []Counter{RxNoSocket, RxRSTIgnored}},
		"data":               {in: seg{flags: PSH | ACK, seq: 1, ack: 1, data: ten}, out: []seg{{flags: RST, seq: 1}}, next: Closed, moved: []Counter{RxNoSocket, TxResets}},
		"data-out-of-window": {in: seg{flags: PSH | ACK, seq: 1 + far, ack: 1, data: ten}, out: []seg{{flags: RST, seq: 1}}, next: Closed, moved: []Counter{RxNoSocket, TxResets}},
	},

	// RFC 9293 section 3.10.7.3. An ACK must satisfy ISS < SEG.ACK =< SND.NXT
	// or it draws <SEQ=SEG.ACK><CTL=RST>; RFC 5961 section 3.2: an RST is
	// acceptable only with an ACK of our SYN; without SYN or RST, drop.
	SynSent: {
		"SYN":           {in: seg{flags: SYN, seq: 0}, out: []seg{{flags: SYN | ACK, seq: 0, ack: 1}}, next: SynReceived}, // simultaneous open
		"SYN-ACK":       {in: seg{flags: SYN | ACK, seq: 0, ack: 1}, out: []seg{{flags: ACK, seq: 1, ack: 1}}, next: Established, moved: []Counter{ActiveOpens}},
		"SYN-in-window": {in: seg{flags: SYN, seq: 101}, out: []seg{{flags: SYN | ACK, seq: 0, ack: 102}}, next: SynReceived},
		// The FIN of a SYN|FIN is not processed in SYN_SENT (Linux discards it too).
		"SYN-FIN":        {in: seg{flags: SYN | FIN, seq: 0}, out: []seg{{flags: SYN | ACK, seq: 0, ack: 1}}, next: SynReceived},
		"ACK-acceptable": {in: seg{flags: ACK, seq: 1, ack: 1}, next: SynSent, moved: []Counter{RxNoFlags}},
		// A bare ACK with an unacceptable ACK is what a peer's TIME_WAIT
		// answers a SYN with: RST, and the SYN again at once (timeWaitCollision).
		"ACK-old":            {in: seg{flags: ACK, seq: 1, ack: 0}, out: []seg{{flags: RST, seq: 0}, {flags: SYN, seq: 0}}, next: SynSent, moved: []Counter{RxACKUnsent, TxResets, SYNTimeWaitCollisions}},
		"ACK-too-old":        {in: seg{flags: ACK, seq: 1, ack: below(0)}, out: []seg{{flags: RST, seq: below(0)}, {flags: SYN, seq: 0}}, next: SynSent, moved: []Counter{RxACKUnsent, TxResets, SYNTimeWaitCollisions}},
		"ACK-unsent":         {in: seg{flags: ACK, seq: 1, ack: 2}, out: []seg{{flags: RST, seq: 2}, {flags: SYN, seq: 0}}, next: SynSent, moved: []Counter{RxACKUnsent, TxResets, SYNTimeWaitCollisions}},
		"FIN":                {in: seg{flags: FIN | ACK, seq: 1, ack: 1}, next: SynSent, moved: []Counter{RxNoFlags}},
		"RST-exact":          {in: seg{flags: RST | ACK, seq: 0, ack: 1}, next: Closed, moved: []Counter{ConnectRefused}},
		"RST-in-window":      {in: seg{flags: RST, seq: 0}, next: SynSent, moved: []Counter{RxRSTIgnored}},
		"RST-out-of-window":  {in: seg{flags: RST | ACK, seq: 0, ack: 2}, next: SynSent, moved: []Counter{RxRSTIgnored}},
		"RST-after-FIN":      {in: seg{flags: RST, seq: 0}, next: SynSent, moved: []Counter{RxRSTIgnored}},
		"data":               {in: seg{flags: PSH | ACK, seq: 1, ack: 1, data: ten}, next: SynSent, moved: []Counter{RxNoFlags}},
		"data-out-of-window": {in: seg{flags: PSH | ACK, seq: 1 + far, ack: 1, data: ten}, next: SynSent, moved: []Counter{RxNoFlags}},
	},

	// A passive SYN_RCVD entry. Linux handles it in tcp_check_req, which
	// departs from RFC 9293 in three cells, matched here.
	SynReceived: {
		// Linux: a retransmitted SYN (flags other than FIN ignored) gets the
		// SYN-ACK again, where RFC 9293's sequence check would send a bare ACK.
		"SYN":     {in: seg{flags: SYN, seq: 0}, out: []seg{{flags: SYN | ACK, seq: 0, ack: 1}}, next: SynReceived},
		"SYN-ACK": {in: seg{flags: SYN | ACK, seq: 0, ack: 1}, out: []seg{{flags: ACK, seq: 1, ack: 1}}, next: SynReceived, moved: []Counter{RxOutOfWindow}},
		// RFC 9293 returns a passive SYN_RCVD to LISTEN; Linux also answers
		// the SYN with an RST (embryonic_reset). The entry is gone.
		"SYN-in-window":  {in: seg{flags: SYN, seq: 101}, out: []seg{{flags: RST | ACK, seq: 0, ack: 102}}, absSeq: true, next: Closed, moved: []Counter{RxSYNInWindow, TxResets}},
		"SYN-FIN":        {in: seg{flags: SYN | FIN, seq: 0}, out: []seg{{flags: SYN | ACK, seq: 0, ack: 1}}, next: SynReceived},
		"ACK-acceptable": {in: seg{flags: ACK, seq: 1, ack: 1}, next: Established, moved: []Counter{PassiveOpens}},
		// An unacceptable ACK: <SEQ=SEG.ACK><CTL=RST>, the entry stays.
		"ACK-old":     {in: seg{flags: ACK, seq: 1, ack: 0}, out: []seg{{flags: RST, seq: 0}}, next: SynReceived, moved: []Counter{RxACKUnsent, TxResets}},
		"ACK-too-old": {in: seg{flags: ACK, seq: 1, ack: below(0)}, out: []seg{{flags: RST, seq: below(0)}}, next: SynReceived, moved: []Counter{RxACKUnsent, TxResets}},
		"ACK-unsent":  {in: seg{flags: ACK, seq: 1, ack: 2}, out: []seg{{flags: RST, seq: 2}}, next: SynReceived, moved: []Counter{RxACKUnsent, TxResets}},
		// A passive close: its ACK waits for the delayed-ACK timer (or our FIN).
		"FIN":       {in: seg{flags: FIN | ACK, seq: 1, ack: 1}, next: CloseWait, moved: []Counter{PassiveOpens}},
		"RST-exact": {in: seg{flags: RST, seq: 1}, next: Closed, moved: []Counter{RxResets}},
		// Linux: any in-window RST ends a request socket; RFC 5961 would
		// send a challenge ACK.
		"RST-in-window":      {in: seg{flags: RST, seq: 101}, next: Closed, moved: []Counter{RxResets}},
		"RST-out-of-window":  {in: seg{flags: RST, seq: 1 + far}, next: SynReceived, moved: []Counter{RxRSTIgnored}},
		"RST-after-FIN":      {in: seg{flags: RST, seq: 0}, next: SynReceived, moved: []Counter{RxRSTIgnored}},
		"data":               {in: seg{flags: PSH | ACK, seq: 1, ack: 1, data: ten}, out: []seg{{flags: ACK, seq: 1, ack: 11}}, next: Established, moved: []Counter{PassiveOpens}},
		"data-out-of-window": {in: seg{flags: PSH | ACK, seq: 1 + far, ack: 1, data: ten}, out: []seg{{flags: ACK, seq: 1, ack: 1}}, next: SynReceived, moved: []Counter{RxOutOfWindow}},
	},

	// The synchronized states. Common to all of them: a SYN, in the window or
	// not, draws a challenge ACK (RFC 5961 section 4.2, "irrespective of the
	// sequence number"; Linux's syn_challenge); an RST other than at RCV.NXT
	// draws one when in the window (RFC 5961 section 3.2) and nothing outside.
	Established: {
		"SYN":            {in: seg{flags: SYN, seq: 0}, out: []seg{{flags: ACK, seq: 6, ack: 1}}, next: Established, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-ACK":        {in: seg{flags: SYN | ACK, seq: 0, ack: 6}, out: []seg{{flags: ACK, seq: 6, ack: 1}}, next: Established, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-in-window":  {in: seg{flags: SYN, seq: 101}, out: []seg{{flags: ACK, seq: 6, ack: 1}}, next: Established, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-FIN":        {in: seg{flags: SYN | FIN, seq: 0}, out: []seg{{flags: ACK, seq: 6, ack: 1}}, next: Established, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"ACK-acceptable": {in: seg{flags: ACK, seq: 1, ack: 6}, next: Established},
		"ACK-old":        {in: seg{flags: ACK, seq: 1, ack: 0}, next: Established},
		"ACK-too-old":    {in: seg{flags: ACK, seq: 1, ack: below(1)}, out: []seg{{flags: ACK, seq: 6, ack: 1}}, next: Established, moved: []Counter{RxACKTooOld, ChallengeACKs}},
		// Linux: dropped silently in ESTABLISHED (tcp_rcv_established);
		// RFC 9293 says send an ACK.
		"ACK-unsent": {in: seg{flags: ACK, seq: 1, ack: 7}, out: []seg{{flags: ACK, seq: 6, ack: 1}}, next: Established, moved: []Counter{RxACKUnsent, ChallengeACKs}},
		// A passive close: its ACK waits for the delayed-ACK timer (or our FIN).
		"FIN":                {in: seg{flags: FIN | ACK, seq: 1, ack: 1}, next: CloseWait},
		"RST-exact":          {in: seg{flags: RST, seq: 1}, next: Closed, moved: []Counter{RxResets, EstablishedResets}},
		"RST-in-window":      {in: seg{flags: RST, seq: 101}, out: []seg{{flags: ACK, seq: 6, ack: 1}}, next: Established, moved: []Counter{ChallengeACKs}},
		"RST-out-of-window":  {in: seg{flags: RST, seq: 1 + far}, next: Established, moved: []Counter{RxRSTIgnored}},
		"RST-after-FIN":      {in: seg{flags: RST, seq: 0}, next: Established, moved: []Counter{RxRSTIgnored}},
		"data":               {in: seg{flags: PSH | ACK, seq: 1, ack: 1, data: ten}, out: []seg{{flags: ACK, seq: 6, ack: 11}}, next: Established},
		"data-out-of-window": {in: seg{flags: PSH | ACK, seq: 1 + far, ack: 1, data: ten}, out: []seg{{flags: ACK, seq: 6, ack: 1}}, next: Established, moved: []Counter{RxOutOfWindow}},
	},

	FinWait1: {
		"SYN":            {in: seg{flags: SYN, seq: 0}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait1, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-ACK":        {in: seg{flags: SYN | ACK, seq: 0, ack: 2}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait1, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-in-window":  {in: seg{flags: SYN, seq: 101}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait1, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-FIN":        {in: seg{flags: SYN | FIN, seq: 0}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait1, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"ACK-acceptable": {in: seg{flags: ACK, seq: 1, ack: 2}, next: FinWait2},
		"ACK-old":        {in: seg{flags: ACK, seq: 1, ack: 0}, next: FinWait1},
		"ACK-too-old":    {in: seg{flags: ACK, seq: 1, ack: below(1)}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait1, moved: []Counter{RxACKTooOld, ChallengeACKs}},
		// Linux: a challenge ACK outside ESTABLISHED (tcp_rcv_state_process).
		"ACK-unsent": {in: seg{flags: ACK, seq: 1, ack: 3}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait1, moved: []Counter{RxACKUnsent, ChallengeACKs}},
		"FIN":        {in: seg{flags: FIN | ACK, seq: 1, ack: 1}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: Closing},
		// Linux counts TCP_MIB_ESTABRESETS only from ESTABLISHED and CLOSE_WAIT.
		"RST-exact":          {in: seg{flags: RST, seq: 1}, next: Closed, moved: []Counter{RxResets}},
		"RST-in-window":      {in: seg{flags: RST, seq: 101}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait1, moved: []Counter{ChallengeACKs}},
		"RST-out-of-window":  {in: seg{flags: RST, seq: 1 + far}, next: FinWait1, moved: []Counter{RxRSTIgnored}},
		"RST-after-FIN":      {in: seg{flags: RST, seq: 0}, next: FinWait1, moved: []Counter{RxRSTIgnored}},
		"data":               {in: seg{flags: PSH | ACK, seq: 1, ack: 1, data: ten}, out: []seg{{flags: ACK, seq: 2, ack: 11}}, next: FinWait1},
		"data-out-of-window": {in: seg{flags: PSH | ACK, seq: 1 + far, ack: 1, data: ten}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait1, moved: []Counter{RxOutOfWindow}},
	},

	FinWait2: {
		"SYN":                {in: seg{flags: SYN, seq: 0}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait2, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-ACK":            {in: seg{flags: SYN | ACK, seq: 0, ack: 2}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait2, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-in-window":      {in: seg{flags: SYN, seq: 101}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait2, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-FIN":            {in: seg{flags: SYN | FIN, seq: 0}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait2, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"ACK-acceptable":     {in: seg{flags: ACK, seq: 1, ack: 2}, next: FinWait2},
		"ACK-old":            {in: seg{flags: ACK, seq: 1, ack: 1}, next: FinWait2},
		"ACK-too-old":        {in: seg{flags: ACK, seq: 1, ack: below(2)}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait2, moved: []Counter{RxACKTooOld, ChallengeACKs}},
		"ACK-unsent":         {in: seg{flags: ACK, seq: 1, ack: 3}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait2, moved: []Counter{RxACKUnsent, ChallengeACKs}},
		"FIN":                {in: seg{flags: FIN | ACK, seq: 1, ack: 2}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: TimeWait, moved: []Counter{TimeWaitEntered}},
		"RST-exact":          {in: seg{flags: RST, seq: 1}, next: Closed, moved: []Counter{RxResets}},
		"RST-in-window":      {in: seg{flags: RST, seq: 101}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait2, moved: []Counter{ChallengeACKs}},
		"RST-out-of-window":  {in: seg{flags: RST, seq: 1 + far}, next: FinWait2, moved: []Counter{RxRSTIgnored}},
		"RST-after-FIN":      {in: seg{flags: RST, seq: 0}, next: FinWait2, moved: []Counter{RxRSTIgnored}},
		"data":               {in: seg{flags: PSH | ACK, seq: 1, ack: 2, data: ten}, out: []seg{{flags: ACK, seq: 2, ack: 11}}, next: FinWait2},
		"data-out-of-window": {in: seg{flags: PSH | ACK, seq: 1 + far, ack: 2, data: ten}, out: []seg{{flags: ACK, seq: 2, ack: 1}}, next: FinWait2, moved: []Counter{RxOutOfWindow}},
	},

	// From here on the peer's FIN has been received: its retransmission lies
	// below RCV.NXT (unacceptable: answered with an ACK), and text at RCV.NXT
	// is ignored without an ACK (RFC 9293 seventh step; Linux likewise).
	CloseWait: {
		"SYN":            {in: seg{flags: SYN, seq: 0}, out: []seg{{flags: ACK, seq: 6, ack: 2}}, next: CloseWait, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-ACK":        {in: seg{flags: SYN | ACK, seq: 0, ack: 6}, out: []seg{{flags: ACK, seq: 6, ack: 2}}, next: CloseWait, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-in-window":  {in: seg{flags: SYN, seq: 102}, out: []seg{{flags: ACK, seq: 6, ack: 2}}, next: CloseWait, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-FIN":        {in: seg{flags: SYN | FIN, seq: 0}, out: []seg{{flags: ACK, seq: 6, ack: 2}}, next: CloseWait, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"ACK-acceptable": {in: seg{flags: ACK, seq: 2, ack: 6}, next: CloseWait},
		"ACK-old":        {in: seg{flags: ACK, seq: 2, ack: 0}, next: CloseWait},
		"ACK-too-old":    {in: seg{flags: ACK, seq: 2, ack: below(1)}, out: []seg{{flags: ACK, seq: 6, ack: 2}}, next: CloseWait, moved: []Counter{RxACKTooOld, ChallengeACKs}},
		// Linux: a challenge ACK outside ESTABLISHED (tcp_rcv_state_process).
		"ACK-unsent":        {in: seg{flags: ACK, seq: 2, ack: 7}, out: []seg{{flags: ACK, seq: 6, ack: 2}}, next: CloseWait, moved: []Counter{RxACKUnsent, ChallengeACKs}},
		"FIN":               {in: seg{flags: FIN | ACK, seq: 1, ack: 1}, out: []seg{{flags: ACK, seq: 6, ack: 2}}, next: CloseWait, moved: []Counter{RxOutOfWindow}},
		"RST-exact":         {in: seg{flags: RST, seq: 2}, next: Closed, moved: []Counter{RxResets, EstablishedResets}},
		"RST-in-window":     {in: seg{flags: RST, seq: 102}, out: []seg{{flags: ACK, seq: 6, ack: 2}}, next: CloseWait, moved: []Counter{ChallengeACKs}},
		"RST-out-of-window": {in: seg{flags: RST, seq: 2 + far}, next: CloseWait, moved: []Counter{RxRSTIgnored}},
		// Linux (tcp_reset_check): after the peer's FIN an RST at RCV.NXT-1
		// resets too, as some stacks send one right behind their FIN with
		// the FIN's sequence number. RFC 5961 would drop it (out of window).
		"RST-after-FIN":      {in: seg{flags: RST, seq: 1}, next: Closed, moved: []Counter{RxResets, EstablishedResets}},
		"data":               {in: seg{flags: PSH | ACK, seq: 2, ack: 1, data: ten}, next: CloseWait, moved: []Counter{RxDataAfterFIN}},
		"data-out-of-window": {in: seg{flags: PSH | ACK, seq: 2 + far, ack: 1, data: ten}, out: []seg{{flags: ACK, seq: 6, ack: 2}}, next: CloseWait, moved: []Counter{RxOutOfWindow}},
	},

	Closing: {
		"SYN":                {in: seg{flags: SYN, seq: 0}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: Closing, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-ACK":            {in: seg{flags: SYN | ACK, seq: 0, ack: 2}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: Closing, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-in-window":      {in: seg{flags: SYN, seq: 102}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: Closing, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-FIN":            {in: seg{flags: SYN | FIN, seq: 0}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: Closing, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"ACK-acceptable":     {in: seg{flags: ACK, seq: 2, ack: 2}, next: TimeWait, moved: []Counter{TimeWaitEntered}},
		"ACK-old":            {in: seg{flags: ACK, seq: 2, ack: 0}, next: Closing},
		"ACK-too-old":        {in: seg{flags: ACK, seq: 2, ack: below(1)}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: Closing, moved: []Counter{RxACKTooOld, ChallengeACKs}},
		"ACK-unsent":         {in: seg{flags: ACK, seq: 2, ack: 3}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: Closing, moved: []Counter{RxACKUnsent, ChallengeACKs}},
		"FIN":                {in: seg{flags: FIN | ACK, seq: 1, ack: 1}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: Closing, moved: []Counter{RxOutOfWindow}},
		"RST-exact":          {in: seg{flags: RST, seq: 2}, next: Closed, moved: []Counter{RxResets}},
		"RST-in-window":      {in: seg{flags: RST, seq: 102}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: Closing, moved: []Counter{ChallengeACKs}},
		"RST-out-of-window":  {in: seg{flags: RST, seq: 2 + far}, next: Closing, moved: []Counter{RxRSTIgnored}},
		"RST-after-FIN":      {in: seg{flags: RST, seq: 1}, next: Closed, moved: []Counter{RxResets}}, // Linux: tcp_reset_check
		"data":               {in: seg{flags: PSH | ACK, seq: 2, ack: 1, data: ten}, next: Closing, moved: []Counter{RxDataAfterFIN}},
		"data-out-of-window": {in: seg{flags: PSH | ACK, seq: 2 + far, ack: 1, data: ten}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: Closing, moved: []Counter{RxOutOfWindow}},
	},

	LastAck: {
		"SYN":                {in: seg{flags: SYN, seq: 0}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: LastAck, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-ACK":            {in: seg{flags: SYN | ACK, seq: 0, ack: 2}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: LastAck, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-in-window":      {in: seg{flags: SYN, seq: 102}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: LastAck, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"SYN-FIN":            {in: seg{flags: SYN | FIN, seq: 0}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: LastAck, moved: []Counter{RxSYNInWindow, ChallengeACKs}},
		"ACK-acceptable":     {in: seg{flags: ACK, seq: 2, ack: 2}, next: Closed},
		"ACK-old":            {in: seg{flags: ACK, seq: 2, ack: 0}, next: LastAck},
		"ACK-too-old":        {in: seg{flags: ACK, seq: 2, ack: below(1)}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: LastAck, moved: []Counter{RxACKTooOld, ChallengeACKs}},
		"ACK-unsent":         {in: seg{flags: ACK, seq: 2, ack: 3}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: LastAck, moved: []Counter{RxACKUnsent, ChallengeACKs}},
		"FIN":                {in: seg{flags: FIN | ACK, seq: 1, ack: 1}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: LastAck, moved: []Counter{RxOutOfWindow}},
		"RST-exact":          {in: seg{flags: RST, seq: 2}, next: Closed, moved: []Counter{RxResets}},
		"RST-in-window":      {in: seg{flags: RST, seq: 102}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: LastAck, moved: []Counter{ChallengeACKs}},
		"RST-out-of-window":  {in: seg{flags: RST, seq: 2 + far}, next: LastAck, moved: []Counter{RxRSTIgnored}},
		"RST-after-FIN":      {in: seg{flags: RST, seq: 1}, next: Closed, moved: []Counter{RxResets}}, // Linux: tcp_reset_check
		"data":               {in: seg{flags: PSH | ACK, seq: 2, ack: 1, data: ten}, next: LastAck, moved: []Counter{RxDataAfterFIN}},
		"data-out-of-window": {in: seg{flags: PSH | ACK, seq: 2 + far, ack: 1, data: ten}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: LastAck, moved: []Counter{RxOutOfWindow}},
	},

	// The compact TIME_WAIT entry (timewait.go), as Linux's
	// tcp_timewait_state_process: the ACK field is not looked at, a bare
	// segment at RCV.NXT is absorbed, anything else is answered with an ACK.
	TimeWait: {
		"SYN":     {in: seg{flags: SYN, seq: 0}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: TimeWait, moved: []Counter{TimeWaitACKs}},
		"SYN-ACK": {in: seg{flags: SYN | ACK, seq: 0, ack: 2}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: TimeWait, moved: []Counter{TimeWaitACKs}},
		// RFC 6191 / RFC 1122 section 4.2.2.13: a SYN above RCV.NXT reopens the
		// 4-tuple, with an ISN of SND.NXT+65537 (Linux's choice).
		"SYN-in-window":  {in: seg{flags: SYN, seq: 102}, out: []seg{{flags: SYN | ACK, seq: 2 + 65537, ack: 103}}, next: SynReceived, moved: []Counter{TimeWaitReopened}},
		"SYN-FIN":        {in: seg{flags: SYN | FIN, seq: 0}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: TimeWait, moved: []Counter{TimeWaitACKs}},
		"ACK-acceptable": {in: seg{flags: ACK, seq: 2, ack: 2}, next: TimeWait, moved: []Counter{TimeWaitDupACKs}},
		"ACK-old":        {in: seg{flags: ACK, seq: 2, ack: 1}, next: TimeWait, moved: []Counter{TimeWaitDupACKs}},
		"ACK-too-old":    {in: seg{flags: ACK, seq: 2, ack: below(2)}, next: TimeWait, moved: []Counter{TimeWaitDupACKs}},
		"ACK-unsent":     {in: seg{flags: ACK, seq: 2, ack: 3}, next: TimeWait, moved: []Counter{TimeWaitDupACKs}},
		"FIN":            {in: seg{flags: FIN | ACK, seq: 1, ack: 2}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: TimeWait, moved: []Counter{TimeWaitFINReACKed}},
		// RFC 1337: no RST ends TIME_WAIT. Linux's default (tcp_rfc1337=0)
		// lets an RST at RCV.NXT kill the entry; deliberately not matched.
		"RST-exact":          {in: seg{flags: RST, seq: 2}, next: TimeWait, moved: []Counter{TimeWaitRSTIgnored}},
		"RST-in-window":      {in: seg{flags: RST, seq: 102}, next: TimeWait, moved: []Counter{TimeWaitRSTIgnored}},
		"RST-out-of-window":  {in: seg{flags: RST, seq: 2 + far}, next: TimeWait, moved: []Counter{TimeWaitRSTIgnored}},
		"RST-after-FIN":      {in: seg{flags: RST, seq: 1}, next: TimeWait, moved: []Counter{TimeWaitRSTIgnored}},
		"data":               {in: seg{flags: PSH | ACK, seq: 2, ack: 2, data: ten}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: TimeWait, moved: []Counter{TimeWaitACKs}},
		"data-out-of-window": {in: seg{flags: PSH | ACK, seq: 2 + far, ack: 2, data: ten}, out: []seg{{flags: ACK, seq: 2, ack: 2}}, next: TimeWait, moved: []Counter{TimeWaitACKs}},
	},
}

func TestMatrix(t *testing.T) {
	known := make(map[string]bool)
	for _, ev := range matrixEvents {
		known[ev] = true
	}
	for _, st := range matrixStates {
		t.Run(st.String(), func(t *testing.T) {
			for ev := range matrix[st] {
				if !known[ev] {
					t.Errorf("cell %s/%s: no such event", st, ev)
				}
			}
			for _, ev := range matrixEvents {
				t.Run(ev, func(t *testing.T) {
					cell, ok := matrix[st][ev]
					if !ok {
						t.Fatal("no cell in the matrix")
					}
					h := newHarness(t)
					matrixSetup[st](h)
					h.expectNone()
					h.takeEvents()
					before := h.e.Counters().Snapshot(make([]uint64, NumCounters))

					h.send(cell.in)
					for i, want := range cell.out {
						if i == 0 && cell.absSeq {
							want.seq -= uint32(h.ourISS)
						}
						h.expect(want)
					}
					h.expectNone()
					if got := h.matrixState(); got != cell.next {
						t.Errorf("state %v, want %v", got, cell.next)
					}
					h.expectMoved(before, cell.moved)
				})
			}
		})
	}
}

// matrixWrite has the application write data on the connection under test.
func (h *harness) matrixWrite(data string) {
	h.t.Helper()
	if n, err := h.c.Write([]byte(data)); n != len(data) || err != nil {
		h.t.Fatalf("Write(%q) = %d, %v", data, n, err)
	}
}

// matrixState is the state of the 4-tuple under test: its connection (a new
// one, if the segment opened it), its TIME_WAIT entry, CLOSED once the
// connection under test is gone, else LISTEN when a listener would take it.
func (h *harness) matrixState() State {
	if c := h.e.flows[h.key()]; c != nil {
		return c.State()
	}
	if _, ok := h.e.tw.lookup(h.key()); ok {
		return TimeWait
	}
	if h.c != nil {
		return h.c.State()
	}
	if h.l != nil && !h.l.closed {
		return Listen
	}
	return Closed
}

// expectMoved asserts that exactly the counters in want moved since before,
// each by the number of times it is listed. The frame and segment totals,
// which every cell moves, are left out.
func (h *harness) expectMoved(before []uint64, want []Counter) {
	h.t.Helper()
	wantN := make(map[Counter]uint64)
	for _, k := range want {
		wantN[k]++
	}
	after := h.e.Counters().Snapshot(make([]uint64, NumCounters))
	for i := range after {
		k := Counter(i)
		switch k {
		case RxFrames, RxSegments, TxFrames, TxSegments:
			continue
		}
		if d := after[i] - before[i]; d != wantN[k] {
			h.t.Errorf("counter %v moved by %d, want %d", k, d, wantN[k])
		}
	}
}
