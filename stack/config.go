package stack

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/xdproxy/xdproxy/stack/wire"
)

// SYNCookieMode says when the engine answers a SYN with a SYN cookie instead
// of keeping a SYN_RCVD record.
type SYNCookieMode uint8

const (
	// SYNCookiesAuto sends cookies only while a listener's SYN queue is full.
	SYNCookiesAuto SYNCookieMode = iota
	// SYNCookiesAlways answers every SYN with a cookie.
	SYNCookiesAlways
	// SYNCookiesNever drops SYNs that overflow the SYN queue.
	SYNCookiesNever
)

func (m SYNCookieMode) String() string {
	switch m {
	case SYNCookiesAuto:
		return "auto"
	case SYNCookiesAlways:
		return "always"
	case SYNCookiesNever:
		return "never"
	}
	return fmt.Sprintf("SYNCookieMode(%d)", uint8(m))
}

// Rand is the engine's source of randomness (ISN and cookie secrets, port
// choice). *math/rand/v2.Rand satisfies it; production uses a CSPRNG-seeded one.
type Rand interface {
	Uint64() uint64
}

// Sink takes the engine's outgoing frames. NextFrame returns a writable buffer
// for one frame (at least MTU+18 bytes), or nil when none is free — the frame
// is then dropped and counted (tx_no_buffer). Commit hands the first n bytes
// of the buffer NextFrame last returned to the device.
type Sink interface {
	NextFrame() []byte
	Commit(n int)
}

// Handler receives the engine's events. The engine calls it only after it has
// finished processing the input that caused them (never from the middle of a
// segment), so the handler may call any Conn or Listener method.
type Handler interface {
	// ConnEvent reports what changed on c since the last call.
	ConnEvent(c *Conn, ev Events)
	// Acceptable reports that l's accept queue holds a connection.
	Acceptable(l *Listener)
}

// Keepalive configures TCP keepalive probes (RFC 9293 section 3.8.4).
type Keepalive struct {
	Disabled bool
	Idle     time.Duration // idle time before the first probe (default 2h)
	Interval time.Duration // between unanswered probes (default 75s)
	Probes   int           // unanswered probes before the connection is reset (default 9)
}

// Interface is one link the engine sends and receives on. A shard's engine
// knows every interface of the daemon (one AF_XDP socket each): a connection
// leg leaves by the interface its route names, whichever interface the
// session's other leg uses.
type Interface struct {
	Name string   // for messages and metrics
	MAC  wire.MAC // source of every frame sent on it
	MTU  int      // link MTU (default 1500); our MSS on connections that use it
	Sink Sink     // where its outgoing frames go
	// Sources are the addresses an active open leaving by this interface is
	// dialed from when neither the caller nor the route names one (the
	// first of the destination's family). The engine owns them.
	Sources []netip.Addr
	// Virtual marks a link whose frames never crossed a wire (veth): a TCP
	// checksum left partial by the sender's own kernel (CHECKSUM_PARTIAL:
	// the field holds only the pseudo-header sum) is accepted and counted
	// (rx_partial_checksum), as the kernel's own receiver trusts it there.
	// Physical NICs stay strict.
	Virtual bool
	// Resolve, when set, is asked first to find the MAC of a next hop on
	// this interface for an active open from src; it returns false to let
	// the engine send its own ARP request or neighbour solicitation. The
	// answer arrives later through SetNeighborOn (the shard asks the kernel,
	// whose neighbour table it follows). It must not block.
	Resolve func(src, nextHop netip.Addr) bool
}

// Config is one engine's configuration. Zero fields take the defaults that
// CONFIG.md documents; Validate says which field is wrong.
type Config struct {
	// Interfaces are the engine's links, indexed as HandleFrameOn and
	// Route.Iface count them. Empty: one interface made of MAC, MTU and Sink.
	Interfaces []Interface

	MAC       wire.MAC     // with no Interfaces: the one interface's MAC address
	Addresses []netip.Addr // addresses the engine answers ARP/NDP/ICMP echo for and terminates TCP on
	MTU       int          // with no Interfaces: the one interface's MTU (default 1500)

	SYNCookies    SYNCookieMode
	SYNBacklog    int           // SYN_RCVD entries per listener (default 4096)
	AcceptBacklog int           // established, not yet accepted, per listener (default 4096)
	TimeWait      time.Duration // 2MSL (default 60s)
	TimeWaitMax   int           // TIME_WAIT entries per engine before the oldest is recycled (default 262144)
	// TimeWaitReuse lets an active open take a 4-tuple still in TIME_WAIT
	// once its entry is this old, if the old connection used timestamps
	// (Linux's tcp_tw_reuse=1 with tcp_tw_reuse_delay; default 1s, negative
	// never). The new ISN starts past anything the old one sent and our
	// timestamps keep rising for the address pair, so the peer's PAWS and
	// sequence checks tell the incarnations apart (RFC 6191).
	TimeWaitReuse time.Duration
	MinRTO        time.Duration // default 200ms
	InitialRTO    time.Duration // default 1s (RFC 6298)
	MaxRTO        time.Duration // default 120s (Linux TCP_RTO_MAX)
	MaxRetries    int           // data retransmissions before the connection times out (default 15)
	SYNRetries    int           // SYN retransmissions before connect fails (default 6, Linux tcp_syn_retries)
	SYNACKRetries int           // SYN-ACK retransmissions before a half-open entry is dropped (default 5)
	Keepalive     Keepalive
	Nagle         bool          // Nagle's algorithm (RFC 9293 section 3.7.4); off by default (CONFIG.md's nodelay: true)
	DelayedACK    time.Duration // delayed-ACK timeout (default 40ms, Linux's TCP_DELACK_MIN)
	Congestion    CongestionControl
	RcvBuffer     int // per-connection receive buffer bound (default 256 KiB)
	SndBuffer     int // per-connection send buffer bound (default 256 KiB)
	// MemoryLimit is the engine's share of the memory budget in bytes (0:
	// no limit): ring storage and connection records, with pressure near it
	// (memory.go). The owner may move it later with SetMemoryShare.
	MemoryLimit int64
	// ConnOverhead is what the owner keeps per connection (its session
	// state), charged to the budget with each connection record.
	ConnOverhead int

	// EphemeralPorts is the source-port range for active opens (default 20000-59999).
	EphemeralPorts [2]uint16
	// PortFilter, when set, vetoes source ports (the shard loop uses it to pick
	// ports whose return traffic the NIC steers to this shard's queue).
	PortFilter func(port uint16) bool

	// ChallengeACKBurst challenge ACKs per ChallengeACKWindow per connection
	// (RFC 5961 section 7; defaults 5 per 1s). Beyond that they are counted and suppressed.
	ChallengeACKBurst  int
	ChallengeACKWindow time.Duration

	// CookieSecretLifetime is how often the SYN cookie secret rotates (default
	// 64s); a cookie is valid for two lifetimes, as Linux's is for ~2 minutes.
	CookieSecretLifetime time.Duration

	// TrustL4Checksum skips verifying TCP/ICMP checksums (the device did).
	TrustL4Checksum bool

	Sink    Sink // with no Interfaces: the one interface's sink
	Handler Handler
	Rand    Rand
	// Keys, when set, are the ISN, timestamp and cookie secrets (see Keys);
	// otherwise they are drawn from Rand.
	Keys *Keys
	// SecondChance, with peers, hands segments of connections this node
	// does not hold to the other nodes instead of resetting them
	// (secondchance.go).
	SecondChance SecondChance
	// Flows, when set, is told of every 4-tuple the engine starts and
	// stops holding state for.
	Flows FlowObserver
}

// FlowObserver hears which flows an engine holds: from the moment a
// connection record exists for the 4-tuple (a SYN answered, a SYN cookie
// accepted, an active open) until neither the record nor its TIME_WAIT
// entry remains. A record that becomes a TIME_WAIT entry stays held; a
// TIME_WAIT entry that a new SYN reopens is released before the new
// connection is held. The calls come from the engine's goroutine, in
// order; they must not call back into the engine. A shard loop uses it to
// send a client's segments to the shard that holds the flow when the link
// does not keep a flow on one queue (veth).
type FlowObserver interface {
	FlowHeld(k FlowKey)
	FlowReleased(k FlowKey)
}

// maxInterfaces bounds Interfaces: an interface index is a byte on every
// connection and TIME_WAIT entry.
const maxInterfaces = 255

// Defaults documented in CONFIG.md.
const (
	DefaultMTU            = 1500
	DefaultSYNBacklog     = 4096
	DefaultAcceptBacklog  = 4096
	DefaultTimeWait       = 60 * time.Second
	DefaultTimeWaitMax    = 262144
	DefaultTimeWaitReuse  = time.Second
	DefaultMinRTO         = 200 * time.Millisecond
	DefaultInitialRTO     = time.Second
	DefaultMaxRTO         = 120 * time.Second
	DefaultMaxRetries     = 15
	DefaultSYNRetries     = 6
	DefaultSYNACKRetries  = 5
	DefaultKeepaliveIdle  = 2 * time.Hour
	DefaultKeepaliveIntvl = 75 * time.Second
	DefaultKeepaliveCount = 9
	DefaultBuffer         = 256 << 10
	DefaultDelayedACK     = 40 * time.Millisecond
)

func (c *Config) setDefaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.MTU, DefaultMTU)
	if len(c.Interfaces) == 0 {
		c.Interfaces = []Interface{{MAC: c.MAC, MTU: c.MTU, Sink: c.Sink}}
	}
	c.Interfaces = append([]Interface(nil), c.Interfaces...)
	for i := range c.Interfaces {
		def(&c.Interfaces[i].MTU, DefaultMTU)
	}
	def(&c.SYNBacklog, DefaultSYNBacklog)
	def(&c.AcceptBacklog, DefaultAcceptBacklog)
	defDur(&c.TimeWait, DefaultTimeWait)
	def(&c.TimeWaitMax, DefaultTimeWaitMax)
	defDur(&c.TimeWaitReuse, DefaultTimeWaitReuse)
	defDur(&c.MinRTO, DefaultMinRTO)
	defDur(&c.DelayedACK, DefaultDelayedACK)
	defDur(&c.InitialRTO, DefaultInitialRTO)
	defDur(&c.MaxRTO, DefaultMaxRTO)
	def(&c.MaxRetries, DefaultMaxRetries)
	def(&c.SYNRetries, DefaultSYNRetries)
	def(&c.SYNACKRetries, DefaultSYNACKRetries)
	defDur(&c.Keepalive.Idle, DefaultKeepaliveIdle)
	defDur(&c.Keepalive.Interval, DefaultKeepaliveIntvl)
	def(&c.Keepalive.Probes, DefaultKeepaliveCount)
	def(&c.RcvBuffer, DefaultBuffer)
	def(&c.SndBuffer, DefaultBuffer)
	def(&c.ChallengeACKBurst, 5)
	defDur(&c.ChallengeACKWindow, time.Second)
	defDur(&c.CookieSecretLifetime, 64*time.Second)
	if c.EphemeralPorts == [2]uint16{} {
		c.EphemeralPorts = [2]uint16{20000, 59999}
	}
}

// Validate reports the first impossible setting, naming its field. Zero
// values are valid (they mean the default).
func (c *Config) Validate() error {
	var errs []error
	neg := func(name string, v int) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %d", name, v))
		}
	}
	negDur := func(name string, v time.Duration) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %s", name, v))
		}
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 9000) {
		errs = append(errs, fmt.Errorf("MTU: must be within 576..9000, got %d", c.MTU))
	}
	if len(c.Interfaces) > maxInterfaces {
		errs = append(errs, fmt.Errorf("Interfaces: at most %d, got %d", maxInterfaces, len(c.Interfaces)))
	}
	for i, ifc := range c.Interfaces {
		if ifc.MTU != 0 && (ifc.MTU < 576 || ifc.MTU > 9000) {
			errs = append(errs, fmt.Errorf("Interfaces[%d].MTU: must be within 576..9000, got %d", i, ifc.MTU))
		}
		if ifc.Sink == nil {
			errs = append(errs, fmt.Errorf("Interfaces[%d].Sink: required", i))
		}
		for j, a := range ifc.Sources {
			if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
				errs = append(errs, fmt.Errorf("Interfaces[%d].Sources[%d]: %v is not a unicast address", i, j, a))
			}
		}
	}
	neg("SYNBacklog", c.SYNBacklog)
	neg("AcceptBacklog", c.AcceptBacklog)
	neg("TimeWaitMax", c.TimeWaitMax)
	neg("MaxRetries", c.MaxRetries)
	neg("SYNRetries", c.SYNRetries)
	neg("SYNACKRetries", c.SYNACKRetries)
	neg("Keepalive.Probes", c.Keepalive.Probes)
	neg("RcvBuffer", c.RcvBuffer)
	neg("SndBuffer", c.SndBuffer)
	neg("ConnOverhead", c.ConnOverhead)
	if c.MemoryLimit < 0 {
		errs = append(errs, fmt.Errorf("MemoryLimit: must not be negative, got %d", c.MemoryLimit))
	}
	neg("ChallengeACKBurst", c.ChallengeACKBurst)
	negDur("TimeWait", c.TimeWait)
	negDur("MinRTO", c.MinRTO)
	negDur("InitialRTO", c.InitialRTO)
	negDur("MaxRTO", c.MaxRTO)
	negDur("Keepalive.Idle", c.Keepalive.Idle)
	negDur("Keepalive.Interval", c.Keepalive.Interval)
	negDur("ChallengeACKWindow", c.ChallengeACKWindow)
	negDur("CookieSecretLifetime", c.CookieSecretLifetime)
	negDur("DelayedACK", c.DelayedACK)
	if c.Congestion > BBR {
		errs = append(errs, fmt.Errorf("Congestion: unknown algorithm %d", c.Congestion))
	}
	if c.SYNCookies > SYNCookiesNever {
		errs = append(errs, fmt.Errorf("SYNCookies: unknown mode %d", c.SYNCookies))
	}
	if c.RcvBuffer != 0 && c.RcvBuffer < 4096 {
		errs = append(errs, fmt.Errorf("RcvBuffer: must be at least 4096, got %d", c.RcvBuffer))
	}
	if c.SndBuffer != 0 && c.SndBuffer < 4096 {
		errs = append(errs, fmt.Errorf("SndBuffer: must be at least 4096, got %d", c.SndBuffer))
	}
	if c.RcvBuffer > 1<<30 || c.SndBuffer > 1<<30 {
		errs = append(errs, errors.New("RcvBuffer/SndBuffer: must be at most 1 GiB (the window scale limit)"))
	}
	if p := c.EphemeralPorts; p != [2]uint16{} && (p[0] == 0 || p[0] > p[1]) {
		errs = append(errs, fmt.Errorf("EphemeralPorts: %d-%d is not a valid range", p[0], p[1]))
	}
	if c.Sink == nil && len(c.Interfaces) == 0 {
		errs = append(errs, errors.New("Sink: required"))
	}
	if c.Rand == nil {
		errs = append(errs, errors.New("Rand: required"))
	}
	for i, a := range c.Addresses {
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
			errs = append(errs, fmt.Errorf("Addresses[%d]: %v is not a unicast address", i, a))
		}
	}
	if err := c.SecondChance.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
