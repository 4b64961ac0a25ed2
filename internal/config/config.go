// Package config reads and validates xdproxy's YAML configuration file (the
// contract is CONFIG.md; configs/xdproxy.example.yaml explains every field).
//
// Parse and Load either return a complete *Config, every default filled in,
// or a *Errors listing every problem in the file, each rendered as
//
//	FILE:LINE: field.path: what is wrong
//
// The field path is dotted with list indexes, as in
// "listeners[0].health_check.rise" or "tcp.rcv_buffer". LINE is the line of
// the offending value; for a missing required key it is the line of the
// mapping that should hold it. Problems that belong to no field (YAML syntax
// errors, a second document) render as "FILE:LINE: what is wrong"; a syntax
// error's line is the one yaml.v3 reports (the offending line, or the start of
// the collection it breaks), and an unquoted [IPv6]:port, the usual cause of
// one, is named on its own line instead.
//
// Cross-field rules: an admin.address that is not loopback (see
// LoopbackAddress) needs an admin.token_file; health_check.timeout must not
// exceed its interval;
// source and source_ports apply to dial: xdp only (an error with dial:
// kernel); the source and every backend must be of one IP family; listener
// names and addresses are unique, as are interface names, a listener's
// backends, and an interface's queue ids; a backend is not its listener's own
// address; zerocopy: on is impossible with xdp_mode: generic.
//
// Value syntax:
//   - durations are Go durations: 500ms, 2s, 5m, 1h30m (a bare number is an
//     error: the unit is required);
//   - sizes are a whole number of bytes (4096), or a whole number followed by a
//     binary unit KiB, MiB, GiB (1024-based) or a decimal unit KB, MB, GB
//     (1000-based), with or without a space: 256KiB, 1 MiB, 64KB;
//   - addresses are IPv4:port or [IPv6]:port, no host names;
//   - a YAML null (a key with no value, or ~) means "not set" and takes the
//     default, except for admin.address, where null or "" disables the admin
//     server; a missing admin block keeps the default 127.0.0.1:9100.
//
// A file holds one YAML document. Anchors and aliases work; merge keys (<<)
// do not.
package config

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Config is a validated configuration with every default applied.
type Config struct {
	Interfaces   []Interface
	Listeners    []Listener
	TCP          TCP
	DrainTimeout time.Duration // 0: reset open connections at once on shutdown
	// StateDir holds what must outlive the process: the engine's keys (ISN,
	// timestamps, SYN cookies), so a restarted daemon's SYNs are newer than
	// its predecessor's TIME_WAIT 4-tuples. An absolute path.
	StateDir string
	// ClientTimeout closes a session whose client has left data we sent
	// it unacknowledged, without taking a byte of it, this long (a client
	// that stopped reading its response). 0: off.
	ClientTimeout time.Duration
	Admin         Admin
	Log           Log
	// BGP is the bgp block (nil when the file has none: no BGP).
	BGP *BGP

	// Lines is the line of each field's value in the file, by field path
	// as errors name it ("interfaces[0].name", "listeners[1].address",
	// "listeners[0].backends[2].address"), for checks made after loading
	// (internal/preflight) to report FILE:LINE like Load does. nil for a
	// Config built in code; see Line.
	Lines map[string]int
}

// Line is the line of field's value in the file (Lines), or 1 when it is
// not known, as Error lines are never below 1.
func (c *Config) Line(field string) int {
	if n := c.Lines[field]; n > 0 {
		return n
	}
	return 1
}

// Interface is a NIC the XDP program attaches to; the proxy runs one shard
// per queue.
type Interface struct {
	Name     string
	Queues   []int  // nil: all queues of the interface
	XDPMode  string // auto | native | generic
	ZeroCopy string // auto | on | off
	// BusyPoll is how long a shard keeps polling after its last work before
	// it sleeps in poll(2) (0: sleep at once). Longer lowers wake-up latency
	// at the cost of a core's worth of spinning after every burst.
	BusyPoll time.Duration
}

// Listener is one proxied service.
type Listener struct {
	Name           string
	Address        netip.AddrPort
	Balance        string     // round_robin | least_conn | maglev
	Dial           string     // xdp | kernel
	Source         netip.Addr // zero (invalid) when unset: the address of the interface that routes to the backend
	SourcePorts    [2]uint16  // inclusive range, lo <= hi
	ProxyProtocol  string     // none | v1 | v2
	ConnectTimeout time.Duration
	IdleTimeout    time.Duration
	MaxConnections int // 0: unlimited
	HealthCheck    *HealthCheck
	Backends       []Backend
}

// HealthCheck configures active TCP connect checks. Listener.HealthCheck is
// nil when the file has no health_check block: no active checks.
type HealthCheck struct {
	Interval time.Duration
	Timeout  time.Duration // <= Interval
	Rise     int           // consecutive successes that mark a backend up
	Fall     int           // consecutive failures that mark a backend down
}

// Backend is one upstream of a listener.
type Backend struct {
	Address netip.AddrPort
	Weight  int // 1..65535
}

// TCP configures the userspace TCP engine.
type TCP struct {
	SYNCookies        string // auto | always | never
	SYNBacklog        int
	AcceptBacklog     int
	TimeWait          time.Duration
	TimeWaitMax       int
	CongestionControl string // cubic | newreno | bbr
	MinRTO            time.Duration
	MaxRetries        int
	Keepalive         Keepalive
	NoDelay           bool
	RcvBuffer         int // bytes
	SndBuffer         int // bytes
	// MemoryLimit is the engine's whole buffer budget in bytes; 0 is
	// "auto": a quarter of the machine's or the cgroup's memory, resolved
	// when the daemon starts.
	MemoryLimit int
}

// Keepalive configures TCP keepalive probes.
type Keepalive struct {
	Idle     time.Duration
	Interval time.Duration
	Probes   int
}

// Admin configures the admin HTTP server.
type Admin struct {
	Address string // host:port; empty disables the admin server
	// TokenFile holds the bearer token that every admin path but /healthz
	// and /metrics needs when Address is not loopback (then it is
	// required); an absolute path, "" for none. See ReadTokenFile.
	TokenFile string
}

// Log configures logging to stderr.
type Log struct {
	Level  string // debug | info | warn | error
	Format string // text | json
}

// Defaults (CONFIG.md).
const (
	DefaultQueues            = "all"
	DefaultXDPMode           = "auto"
	DefaultZeroCopy          = "auto"
	DefaultBusyPoll          = 5 * time.Microsecond
	MaxBusyPoll              = 10 * time.Millisecond
	DefaultBalance           = "round_robin"
	DefaultDial              = "xdp"
	DefaultSourcePortLo      = 20000
	DefaultSourcePortHi      = 59999
	DefaultProxyProtocol     = "none"
	DefaultConnectTimeout    = 3 * time.Second
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultMaxConnections    = 0
	DefaultWeight            = 1
	DefaultHealthInterval    = 2 * time.Second
	DefaultHealthTimeout     = time.Second
	DefaultHealthRise        = 2
	DefaultHealthFall        = 3
	DefaultSYNCookies        = "auto"
	DefaultSYNBacklog        = 4096
	DefaultAcceptBacklog     = 4096
	DefaultTimeWait          = 60 * time.Second
	DefaultTimeWaitMax       = 262144
	DefaultCongestionControl = "cubic"
	DefaultMinRTO            = 200 * time.Millisecond
	DefaultMaxRetries        = 15
	DefaultKeepaliveIdle     = 2 * time.Hour
	DefaultKeepaliveInterval = 75 * time.Second
	DefaultKeepaliveProbes   = 9
	DefaultNoDelay           = true
	DefaultBuffer            = 256 << 10
	DefaultDrainTimeout      = 30 * time.Second
	DefaultStateDir          = "/var/lib/xdproxy"
	DefaultClientTimeout     = 60 * time.Second
	DefaultAdminAddress      = "127.0.0.1:9100"
	DefaultLogLevel          = "info"
	DefaultLogFormat         = "text"
)

// Limits enforced by validation.
const (
	MinBuffer = 4 << 10 // tcp.rcv_buffer, tcp.snd_buffer
	// tcp.memory_limit bounds.
	MinMemoryLimit = 8 << 20
	MaxMemoryLimit = 1 << 40
	MaxBuffer      = 1 << 30 // the TCP window-scale limit
	MaxWeight      = 65535
	MinMinRTO      = time.Millisecond
	MaxMinRTO      = 120 * time.Second // the engine's maximum RTO
	MaxRetries     = 255
	MaxProbes      = 255
	MaxIfNameLen   = 15 // IFNAMSIZ - 1
	MaxNameLen     = 64 // listener names
)

// Allowed values of the enumerated fields, in the order messages list them.
var (
	XDPModes          = []string{"auto", "native", "generic"}
	ZeroCopyModes     = []string{"auto", "on", "off"}
	BalanceModes      = []string{"round_robin", "least_conn", "maglev"}
	DialModes         = []string{"xdp", "kernel"}
	ProxyProtocols    = []string{"none", "v1", "v2"}
	SYNCookieModes    = []string{"auto", "always", "never"}
	CongestionControl = []string{"cubic", "newreno", "bbr"}
	LogLevels         = []string{"debug", "info", "warn", "error"}
	LogFormats        = []string{"text", "json"}
)

// DefaultTCP returns the tcp block's defaults.
func DefaultTCP() TCP {
	return TCP{
		SYNCookies:        DefaultSYNCookies,
		SYNBacklog:        DefaultSYNBacklog,
		AcceptBacklog:     DefaultAcceptBacklog,
		TimeWait:          DefaultTimeWait,
		TimeWaitMax:       DefaultTimeWaitMax,
		CongestionControl: DefaultCongestionControl,
		MinRTO:            DefaultMinRTO,
		MaxRetries:        DefaultMaxRetries,
		Keepalive: Keepalive{
			Idle:     DefaultKeepaliveIdle,
			Interval: DefaultKeepaliveInterval,
			Probes:   DefaultKeepaliveProbes,
		},
		NoDelay:   DefaultNoDelay,
		RcvBuffer: DefaultBuffer,
		SndBuffer: DefaultBuffer,
	}
}

// DefaultHealthCheck returns the values a present health_check block starts from.
func DefaultHealthCheck() HealthCheck {
	return HealthCheck{
		Interval: DefaultHealthInterval,
		Timeout:  DefaultHealthTimeout,
		Rise:     DefaultHealthRise,
		Fall:     DefaultHealthFall,
	}
}

// Load reads and validates the file at path. An unreadable file gives an
// error wrapping the *fs.PathError (errors.Is(err, fs.ErrNotExist) works); an
// invalid one gives a *Errors whose entries name path as their File.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config file: %w", err)
	}
	return Parse(path, data)
}

// Parse validates data, naming it name in error messages. It returns the
// configuration with defaults applied, or a *Errors with every problem found.
func Parse(name string, data []byte) (*Config, error) {
	d := &decoder{file: name}
	cfg := d.parse(data)
	if len(d.errs) > 0 {
		d.errs.sort()
		errs := d.errs
		return nil, &errs
	}
	return cfg, nil
}

// Summary describes the configuration in a few human-readable lines (for a
// startup log or `check -v`), without a trailing newline.
func (c *Config) Summary() string {
	var b strings.Builder
	for i, ifc := range c.Interfaces {
		if i == 0 {
			b.WriteString("interfaces:")
		} else {
			b.WriteString(",")
		}
		queues := "all queues"
		if ifc.Queues != nil {
			qs := make([]string, len(ifc.Queues))
			for j, q := range ifc.Queues {
				qs[j] = fmt.Sprint(q)
			}
			queues = "queues " + strings.Join(qs, ",")
		}
		fmt.Fprintf(&b, " %s (%s, xdp %s, zerocopy %s)", ifc.Name, queues, ifc.XDPMode, ifc.ZeroCopy)
	}
	for _, l := range c.Listeners {
		n := len(l.Backends)
		plural := "s"
		if n == 1 {
			plural = ""
		}
		fmt.Fprintf(&b, "\nlistener %s %s -> %d backend%s (%s, dial %s", l.Name, l.Address, n, plural, l.Balance, l.Dial)
		if l.ProxyProtocol != "none" {
			fmt.Fprintf(&b, ", proxy protocol %s", l.ProxyProtocol)
		}
		if l.MaxConnections > 0 {
			fmt.Fprintf(&b, ", max %d connections", l.MaxConnections)
		}
		if l.HealthCheck != nil {
			fmt.Fprintf(&b, ", health check every %s", l.HealthCheck.Interval)
		} else {
			b.WriteString(", no health check")
		}
		b.WriteString(")")
	}
	admin := c.Admin.Address
	if admin == "" {
		admin = "disabled"
	}
	fmt.Fprintf(&b, "\nadmin %s, log %s/%s, drain %s", admin, c.Log.Level, c.Log.Format, c.DrainTimeout)
	return b.String()
}
