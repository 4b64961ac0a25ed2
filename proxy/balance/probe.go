package balance

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/xdproxy/xdproxy/stack"
)

// Active health checks: a TCP connect to each backend every interval, failed
// when it is refused, reset or not answered within timeout; rise and fall
// (Health) turn results into up/down. Backends of dial: xdp listeners are
// checked from the engine (Prober, so the check takes the path real legs
// take), on one shard; backends of dial: kernel listeners with OS sockets
// from one goroutine (RunKernelChecks). Connect failures of real sessions
// count as failed checks (passive marking, Health.ConnectFailed), so a dead
// backend goes down after fall failures even between checks.
//
// A backend in Maint is not checked: a check due meanwhile is skipped, one
// in flight is dropped (its result not reported), and checks resume within
// an interval of the backend leaving Maint.

// Target is one backend to check.
type Target struct {
	Listener string         // the listener the backend serves (for listings)
	Source   netip.Addr     // engine checks: the source address (zero: the engine picks)
	Addr     netip.AddrPort // the backend
	Interval time.Duration  // between checks
	Timeout  time.Duration  // for one check
	Health   *Health        // fed with every result
	Runtime  *Runtime       // the backend's run-time setting: no checks in Maint (nil: always checked)
	Changed  func()         // called after a result changed Health's state (may be nil)
}

func (t *Target) report(ok bool) {
	if t.Runtime.Paused() {
		return // the result of a check that began before Maint
	}
	if t.Health.Report(ok) && t.Changed != nil {
		t.Changed()
	}
}

// Dialer opens an engine connection: stack.Engine's Dial, as the shard that
// runs the Prober reaches it.
type Dialer interface {
	Dial(now stack.Time, src netip.Addr, dst netip.AddrPort) (*stack.Conn, error)
}

// Prober runs the engine checks of one shard. It is driven by the shard's
// loop: Tick when Next is due, and every event of a connection whose User
// is a *Probe handed to that Probe's ConnEvent. Like the engine, it must
// be used by the shard's goroutine only.
type Prober struct {
	dial    Dialer
	targets []*probeTarget
	next    stack.Time
}

type probeTarget struct {
	Target
	due      stack.Time
	inflight *Probe
}

// Probe is one check in flight: the User of its engine connection.
type Probe struct {
	t        *probeTarget
	c        *stack.Conn
	deadline stack.Time
}

// NewProber returns a Prober that checks every target from now on, or nil
// when there is none.
func NewProber(d Dialer, targets []Target, now stack.Time) *Prober {
	if len(targets) == 0 {
		return nil
	}
	p := &Prober{dial: d, next: now}
	for _, t := range targets {
		p.targets = append(p.targets, &probeTarget{Target: t, due: now})
	}
	return p
}

// Next is when Tick is due next.
func (p *Prober) Next() stack.Time { return p.next }

// Tick starts the checks that are due and fails the ones that timed out.
func (p *Prober) Tick(now stack.Time) {
	next := stack.Never
	for _, t := range p.targets {
		if pr := t.inflight; pr != nil && (now >= pr.deadline || t.Runtime.Paused()) {
			pr.c.Abort()
			pr.finish(false) // not reported when paused
		}
		if t.inflight == nil && now >= t.due {
			t.due = now.Add(t.Interval)
			if !t.Runtime.Paused() {
				p.start(t, now)
			}
		}
		next = min(next, t.due)
		if t.inflight != nil {
			next = min(next, t.inflight.deadline)
		}
	}
	p.next = next
}

func (p *Prober) start(t *probeTarget, now stack.Time) {
	c, err := p.dial.Dial(now, t.Source, t.Addr)
	if err != nil {
		t.report(false)
		return
	}
	pr := &Probe{t: t, c: c, deadline: now.Add(t.Timeout)}
	c.User = pr
	t.inflight = pr
}

// Listener names the listener whose backend the probe checks.
func (pr *Probe) Listener() string {
	if pr.t == nil {
		return ""
	}
	return pr.t.Listener
}

// ConnEvent takes the events of the probe's connection.
func (pr *Probe) ConnEvent(c *stack.Conn, ev stack.Events) {
	if pr.t.inflight != pr {
		return
	}
	switch {
	case ev&stack.EventConnected != 0:
		// The backend accepted: that is the check. Reset rather than close,
		// so that checks leave no TIME_WAIT behind on either side.
		c.Abort()
		pr.finish(true)
	case ev&(stack.EventConnectFailed|stack.EventReset|stack.EventTimedOut) != 0:
		c.Close()
		pr.finish(false)
	}
}

func (pr *Probe) finish(ok bool) {
	pr.t.inflight = nil
	pr.t.report(ok)
}

// RunKernelChecks checks targets with OS sockets until ctx ends: each one
// every Interval, the checks of one round in parallel. It returns at once
// when there is no target.
func RunKernelChecks(ctx context.Context, targets []Target) {
	if len(targets) == 0 {
		return
	}
	interval := time.Duration(0)
	for _, t := range targets {
		if interval == 0 || t.Interval < interval {
			interval = t.Interval
		}
	}
	last := make([]time.Time, len(targets))
	tick := time.NewTicker(min(interval, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			var round sync.WaitGroup
			for i := range targets {
				t := &targets[i]
				if now.Sub(last[i]) < t.Interval {
					continue
				}
				last[i] = now
				if t.Runtime.Paused() {
					continue
				}
				round.Go(func() {
					d := net.Dialer{Timeout: t.Timeout}
					c, err := d.DialContext(ctx, "tcp", t.Addr.String())
					if err == nil {
						if tc, ok := c.(*net.TCPConn); ok {
							tc.SetLinger(0)
						}
						c.Close()
					}
					if ctx.Err() != nil {
						return
					}
					t.report(err == nil)
				})
			}
			round.Wait()
		}
	}
}
