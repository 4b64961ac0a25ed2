package proxy

import (
	"fmt"
	"log/slog"

	"github.com/xdproxy/xdproxy/bpf"
	"github.com/xdproxy/xdproxy/internal/config"
	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/xsk"
)

// FromConfig turns a validated configuration file into the proxy's Config.
func FromConfig(c *config.Config, log *slog.Logger) (Config, error) {
	out := Config{Logger: log, StateDir: c.StateDir}
	for _, ifc := range c.Interfaces {
		spec := InterfaceSpec{Name: ifc.Name, Queues: ifc.Queues, BusyPoll: ifc.BusyPoll}
		if spec.BusyPoll == 0 {
			spec.BusyPoll = -1 // busy_poll: 0 means no spinning, not "the default"
		}
		switch ifc.XDPMode {
		case "native":
			spec.XDPMode = bpf.ModeNative
		case "generic":
			spec.XDPMode = bpf.ModeGeneric
		default:
			spec.XDPMode = bpf.ModeAuto
		}
		switch ifc.ZeroCopy {
		case "on":
			spec.ZeroCopy = xsk.ZeroCopyOn
		case "off":
			spec.ZeroCopy = xsk.ZeroCopyOff
		default:
			spec.ZeroCopy = xsk.ZeroCopyAuto
		}
		out.Interfaces = append(out.Interfaces, spec)
	}
	// The engine picks backend-leg ports from one range; with several
	// listeners it is the span of theirs (the XDP program steers the same span).
	for i, l := range c.Listeners {
		if i == 0 {
			out.SourcePorts = l.SourcePorts
		} else {
			out.SourcePorts[0] = min(out.SourcePorts[0], l.SourcePorts[0])
			out.SourcePorts[1] = max(out.SourcePorts[1], l.SourcePorts[1])
		}
		spec := ListenerSpec{
			Name: l.Name, Addr: l.Address, Balance: l.Balance, DialKernel: l.Dial == "kernel",
			Source: l.Source, ConnectTimeout: l.ConnectTimeout, IdleTimeout: l.IdleTimeout,
			MaxConnections: l.MaxConnections, SndBuffer: c.TCP.SndBuffer, ClientTimeout: c.ClientTimeout,
		}
		switch l.ProxyProtocol {
		case "v1":
			spec.ProxyProtocol = 1
		case "v2":
			spec.ProxyProtocol = 2
		}
		if h := l.HealthCheck; h != nil {
			spec.Health = &HealthSpec{Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall}
		}
		for _, b := range l.Backends {
			spec.Backends = append(spec.Backends, BackendSpec{Addr: b.Address, Weight: b.Weight})
		}
		out.Listeners = append(out.Listeners, spec)
	}
	t := c.TCP
	e := stack.Config{
		SYNBacklog: t.SYNBacklog, AcceptBacklog: t.AcceptBacklog,
		TimeWait: t.TimeWait, TimeWaitMax: t.TimeWaitMax,
		MinRTO: t.MinRTO, MaxRetries: t.MaxRetries,
		Keepalive: stack.Keepalive{Idle: t.Keepalive.Idle, Interval: t.Keepalive.Interval, Probes: t.Keepalive.Probes},
		Nagle:     !t.NoDelay,
		RcvBuffer: t.RcvBuffer, SndBuffer: t.SndBuffer,
	}
	switch t.SYNCookies {
	case "always":
		e.SYNCookies = stack.SYNCookiesAlways
	case "never":
		e.SYNCookies = stack.SYNCookiesNever
	default:
		e.SYNCookies = stack.SYNCookiesAuto
	}
	switch t.CongestionControl {
	case "newreno":
		e.Congestion = stack.NewReno
	case "bbr":
		e.Congestion = stack.BBR
	case "", "cubic":
		e.Congestion = stack.CUBIC
	default:
		return out, fmt.Errorf("tcp.congestion_control: unknown %q", t.CongestionControl)
	}
	if c.BGP != nil {
		// Second chance (stack/secondchance.go): the other nodes behind the
		// same ECMP route get the segments of connections this one does not hold.
		e.SecondChance.Peers = c.BGP.SecondChance.Peers
	}
	out.Engine = e
	out.MemoryLimit = int64(t.MemoryLimit)
	if out.MemoryLimit == 0 {
		n, from, err := AutoMemoryLimit()
		if err != nil {
			return out, fmt.Errorf("tcp.memory_limit: auto: %w (set a size)", err)
		}
		out.MemoryLimit = n
		log.Debug("tcp.memory_limit: auto", "bytes", n, "from", from)
	}
	return out, nil
}
