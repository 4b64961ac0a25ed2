package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// WANPath is what one direction of a WAN does to the frames that cross it.
// The zero WANPath forwards every frame at once, in order.
//
// A frame meets the impairments in this order: loss (Gilbert-Elliott, then
// random), the bottleneck (Rate, with a queue of QueueBytes), the one-way
// Delay with Jitter, and reordering. Loss and reordering apply to IPv4 and
// IPv6 packets only; other frames (ARP) and IPv6 neighbour discovery are
// still rate-limited and delayed, but never lost or reordered, so that
// neighbour resolution cannot stall a test.
type WANPath struct {
	// Delay is the one-way propagation delay: a frame leaves Delay after it
	// has crossed the bottleneck (after it arrived, without Rate).
	Delay time.Duration
	// Jitter spreads each frame's delay uniformly over [Delay-Jitter,
	// Delay+Jitter] (never below zero). Jitter alone never reorders: a
	// frame whose draw would make it leave before its predecessor leaves
	// right after it instead. Sparse frames (a ping) each get their own
	// draw, with a mean of Delay; frames closer together than Jitter (a
	// bulk transfer) bunch towards Delay+Jitter. Reordering is Reorder's
	// job.
	Jitter time.Duration
	// Loss is the probability in [0, 1] that a packet is dropped, each
	// independently of the others.
	Loss float64
	// Burst, when set, drops packets by a Gilbert-Elliott model too.
	Burst *GilbertElliott
	// Reorder is the probability in [0, 1] that a packet is held back until
	// ReorderDistance packets that arrived after it have left (or, when
	// fewer follow, until ReorderTimeout past the time it was due), so the
	// receiver sees it ReorderDistance places late.
	Reorder float64
	// ReorderDistance is how many later packets overtake a reordered one
	// (0: 3, as TCP's duplicate-ACK threshold).
	ReorderDistance int
	// ReorderTimeout bounds how long past its due time a reordered packet
	// waits for the packets that should overtake it (0: 10 ms).
	ReorderTimeout time.Duration
	// Rate, when > 0, is the bottleneck's rate in bits per second of
	// Ethernet frames (header and payload; no preamble, FCS or gap): a
	// frame leaves the bottleneck len*8/Rate after the previous one.
	Rate int64
	// QueueBytes bounds the bottleneck's queue (the frames that arrived
	// but have not crossed it yet); a frame that would exceed it is
	// dropped (WANDrops.Queue). 0 means what Rate drains in 50 ms, and at
	// least 64 KiB. Unused without Rate.
	QueueBytes int64
}

// GilbertElliott is the two-state burst-loss model: a Good and a Bad state,
// each with its own loss probability, and a Markov chain between them that
// steps once per packet (first the transition, then the loss draw in the
// new state). With LossGood 0 and LossBad 1 (the Gilbert model), losses
// come in bursts of mean length 1/R packets, and the long-run loss rate is
// P/(P+R).
type GilbertElliott struct {
	P        float64 // probability of Good → Bad, per packet
	R        float64 // probability of Bad → Good, per packet
	LossGood float64 // loss probability in Good (usually 0)
	LossBad  float64 // loss probability in Bad; 0 means 1
}

// WANConfig configures both directions of a WAN. A is the side of the
// namespace passed first to WANLink (in a Topology: the client), B the
// other one.
type WANConfig struct {
	AtoB, BtoA WANPath
	// Seed seeds the random draws (loss, jitter, reordering): each
	// direction has its own generator, so a run with the same seed and the
	// same packets drops the same ones. 0 picks a random seed
	// (WAN.Seed tells which).
	Seed uint64
	// Slots is the number of frames the delay line can hold per
	// direction (0: 16384, which is 200 ms of 1500-byte frames at
	// 1 Gbit/s). A frame that finds every slot taken is dropped
	// (WANDrops.NoBuffer). Fixed when the WAN is made; Set ignores it.
	Slots int
}

// Symmetric returns a WANConfig with p in both directions.
func Symmetric(p WANPath) WANConfig { return WANConfig{AtoB: p, BtoA: p} }

// RTT returns a symmetric WANConfig that adds rtt to the round trip: half of
// it each way.
func RTT(rtt time.Duration) WANConfig { return Symmetric(WANPath{Delay: rtt / 2}) }

// Defaults of WANPath and WANConfig.
const (
	defaultWANSlots        = 16384
	defaultReorderDistance = 3
	defaultReorderTimeout  = 10 * time.Millisecond
	defaultQueueTime       = 50 * time.Millisecond
	minQueueBytes          = 64 << 10
	// wanFrameSize is the size of a UMEM frame and of a delay-line slot:
	// the largest frame a WAN forwards, hence its MTU limit.
	wanFrameSize = 2048
	wanMaxMTU    = wanFrameSize - 14 - 4
)

func (p WANPath) check() error {
	prob := func(name string, v float64) error {
		if !(v >= 0 && v <= 1) {
			return fmt.Errorf("%s %v not in [0, 1]", name, v)
		}
		return nil
	}
	var errs []error
	if p.Delay < 0 || p.Jitter < 0 || p.ReorderTimeout < 0 {
		errs = append(errs, fmt.Errorf("negative delay %v, jitter %v or reorder timeout %v", p.Delay, p.Jitter, p.ReorderTimeout))
	}
	if p.Delay > time.Hour || p.Jitter > time.Hour || p.ReorderTimeout > time.Hour {
		errs = append(errs, errors.New("delay, jitter or reorder timeout over an hour"))
	}
	errs = append(errs, prob("Loss", p.Loss), prob("Reorder", p.Reorder))
	if p.ReorderDistance < 0 {
		errs = append(errs, fmt.Errorf("ReorderDistance %d", p.ReorderDistance))
	}
	if p.Rate < 0 || p.QueueBytes < 0 || (p.Rate > 0 && p.Rate < 1000) {
		errs = append(errs, fmt.Errorf("Rate %d bit/s (want 0 or at least 1000) or QueueBytes %d", p.Rate, p.QueueBytes))
	}
	if g := p.Burst; g != nil {
		errs = append(errs, prob("Burst.P", g.P), prob("Burst.R", g.R), prob("Burst.LossGood", g.LossGood), prob("Burst.LossBad", g.LossBad))
	}
	return errors.Join(errs...)
}

func (c WANConfig) check() error {
	var errs []error
	if err := c.AtoB.check(); err != nil {
		errs = append(errs, fmt.Errorf("AtoB: %w", err))
	}
	if err := c.BtoA.check(); err != nil {
		errs = append(errs, fmt.Errorf("BtoA: %w", err))
	}
	if c.Slots < 0 || c.Slots > 1<<20 {
		errs = append(errs, fmt.Errorf("Slots %d not in [0, 2^20]", c.Slots))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab: WAN config: %w", err)
	}
	return nil
}

// WANDrops counts the frames a direction dropped, by reason.
type WANDrops struct {
	Loss     uint64 // random loss (WANPath.Loss)
	Burst    uint64 // Gilbert-Elliott loss (WANPath.Burst)
	Queue    uint64 // the bottleneck's queue was full (WANPath.QueueBytes)
	NoBuffer uint64 // every delay-line slot was taken (WANConfig.Slots)
	Oversize uint64 // longer than a slot (cannot happen within the MTU limit)
	// RxRing counts frames the kernel dropped on the way into the
	// emulator because its AF_XDP RX ring was full or its fill ring empty
	// (the emulator fell behind). A test that wants a clean path can
	// require it to be 0.
	RxRing uint64
}

// Total is the sum of every reason.
func (d WANDrops) Total() uint64 {
	return d.Loss + d.Burst + d.Queue + d.NoBuffer + d.Oversize + d.RxRing
}

// WANDirStats are the counters of one direction of a WAN since it was made.
// At any snapshot, Packets = Forwarded + Dropped.Total() + InFlight.
type WANDirStats struct {
	Packets uint64 // frames that reached the emulator (RxRing drops included)
	Bytes   uint64 // their bytes (RxRing drops excluded: the kernel does not say)
	// Forwarded frames left through the other side.
	Forwarded, ForwardedBytes uint64
	Dropped                   WANDrops
	// Delayed frames entered the delay line (Forwarded + InFlight).
	Delayed uint64
	// InFlight frames are in the delay line now; MaxInFlight is the most
	// there were at once.
	InFlight, MaxInFlight uint64
	// Reordered frames left after a frame that arrived after them.
	Reordered uint64
	// Exempt frames (not IP, or IPv6 neighbour discovery) were delayed but
	// not subject to loss or reordering.
	Exempt uint64
	// Hold is the total time the forwarded frames spent in the emulator,
	// from the moment it read them to the moment it queued them for
	// transmission; Hold/Forwarded is the mean added one-way delay.
	Hold time.Duration
	// Late is the total, and MaxLate the largest, time by which frames left
	// after they were due (the emulator's scheduling error; never early).
	Late, MaxLate time.Duration
	// TxErrors counts failed transmit kicks (the link went down).
	TxErrors uint64
}

// MeanHold is the mean time a forwarded frame spent in the emulator.
func (s WANDirStats) MeanHold() time.Duration {
	if s.Forwarded == 0 {
		return 0
	}
	return s.Hold / time.Duration(s.Forwarded)
}

func (s WANDirStats) String() string {
	d := s.Dropped
	mean := time.Duration(0)
	if s.Forwarded > 0 {
		mean = s.Late / time.Duration(s.Forwarded)
	}
	return fmt.Sprintf("%d pkts %d B, fwd %d %d B, dropped %d (loss %d burst %d queue %d nobuf %d oversize %d rxring %d), "+
		"reordered %d, exempt %d, in flight %d (max %d), mean hold %v, late mean %v max %v",
		s.Packets, s.Bytes, s.Forwarded, s.ForwardedBytes, d.Total(), d.Loss, d.Burst, d.Queue, d.NoBuffer, d.Oversize, d.RxRing,
		s.Reordered, s.Exempt, s.InFlight, s.MaxInFlight, s.MeanHold().Round(time.Microsecond),
		mean.Round(time.Microsecond), s.MaxLate.Round(time.Microsecond))
}

// WANStats is a consistent snapshot of both directions' counters, taken by
// the emulator between two frames.
type WANStats struct {
	AtoB, BtoA WANDirStats
	// CPU is the CPU time the emulator's thread has used since it started
	// (user and system, including the kernel work done in its system
	// calls).
	CPU time.Duration
	// Wakeups counts the emulator's returns from waiting.
	Wakeups uint64
	// MaxWork is the longest the emulator took to handle one batch of
	// arrivals and departures; MaxOversleep the longest it woke up late
	// from a timed wait (the machine did not run it).
	MaxWork, MaxOversleep time.Duration
}

func (s WANStats) String() string {
	return fmt.Sprintf("a→b: %v; b→a: %v; cpu %v, %d wakeups, max work %v, max oversleep %v", s.AtoB, s.BtoA,
		s.CPU.Round(time.Millisecond), s.Wakeups, s.MaxWork.Round(time.Microsecond), s.MaxOversleep.Round(time.Microsecond))
}

// WAN is a delay line between two namespaces: an emulator namespace joined
// to each of them by a veth pair, whose frames an AF_XDP forwarder (a
// process of its own, see the package doc, "WAN emulator") holds, drops,
// reorders and rate-limits as its WANConfig says. Its methods are safe for
// concurrent use.
type WAN struct {
	// NS is the emulator's own namespace. It has no addresses: it is a
	// bump in the wire, which the two sides see as one Ethernet segment.
	NS *NS
	// Link holds the ends that the two namespaces see, A in the first one,
	// B in the second, with LinkOpts' names, addresses and MACs, as Lab.Link
	// would have made them.
	Link *Veth
	// Inner holds the emulator's own ends: A faces Link.A, B faces Link.B.
	Inner *Veth

	seed uint64
	proc *Proc

	mu     sync.Mutex // one request at a time on ctl
	ctl    net.Conn
	enc    *json.Encoder
	dec    *json.Decoder
	cfg    WANConfig
	final  *WANStats // the last counters, once stopped
	closed bool
}

// Seed returns the seed of the WAN's random draws.
func (w *WAN) Seed() uint64 { return w.seed }

// Config returns the configuration in force.
func (w *WAN) Config() WANConfig {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cfg
}

// String summarises the configuration and the counters.
func (w *WAN) String() string {
	c := w.Config()
	st, err := w.Stats()
	if err != nil {
		return fmt.Sprintf("wan %s (seed %d) a→b [%v] b→a [%v]: %v", w.NS.Name, w.seed, c.AtoB, c.BtoA, err)
	}
	return fmt.Sprintf("wan %s (seed %d) a→b [%v] b→a [%v]: %v", w.NS.Name, w.seed, c.AtoB, c.BtoA, st)
}

func (p WANPath) String() string {
	var parts []string
	add := func(f string, a ...any) { parts = append(parts, fmt.Sprintf(f, a...)) }
	add("delay %v", p.Delay)
	if p.Jitter > 0 {
		add("jitter ±%v", p.Jitter)
	}
	if p.Loss > 0 {
		add("loss %g%%", 100*p.Loss)
	}
	if g := p.Burst; g != nil {
		add("gilbert-elliott p %g r %g loss good %g bad %g", g.P, g.R, g.LossGood, g.lossBad())
	}
	if p.Reorder > 0 {
		add("reorder %g%% by %d (timeout %v)", 100*p.Reorder, p.reorderDistance(), p.reorderTimeout())
	}
	if p.Rate > 0 {
		add("rate %s queue %d B", formatRate(float64(p.Rate)), p.queueBytes())
	}
	return strings.Join(parts, ", ")
}

func (g *GilbertElliott) lossBad() float64 {
	if g.LossBad == 0 {
		return 1
	}
	return g.LossBad
}

func (p WANPath) reorderDistance() int {
	if p.ReorderDistance == 0 {
		return defaultReorderDistance
	}
	return p.ReorderDistance
}

func (p WANPath) reorderTimeout() time.Duration {
	if p.ReorderTimeout == 0 {
		return defaultReorderTimeout
	}
	return p.ReorderTimeout
}

func (p WANPath) queueBytes() int64 {
	if p.QueueBytes > 0 || p.Rate == 0 {
		return p.QueueBytes
	}
	q := int64(float64(p.Rate) / 8 * defaultQueueTime.Seconds())
	return max(q, minQueueBytes)
}

// formatRate writes bits per second with an SI prefix ("1.5 Gbit/s").
func formatRate(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.4g Gbit/s", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.4g Mbit/s", bps/1e6)
	case bps >= 1e3:
		return fmt.Sprintf("%.4g kbit/s", bps/1e3)
	}
	return fmt.Sprintf("%.4g bit/s", bps)
}
