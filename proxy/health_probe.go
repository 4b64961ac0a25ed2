package proxy

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/xdproxy/xdproxy/stack"
)

// Active health checks: a TCP connect to each backend every interval, failed
// when it is refused, reset or not answered within timeout; rise and fall
// (Health) turn results into up/down. Backends of dial: xdp listeners are
// checked from the engine (so the check takes the path real legs take), on
// one shard; backends of dial: kernel listeners with OS sockets from one
// goroutine. Connect failures of real sessions count as failed checks
// (passive marking), so a dead backend goes down after fall failures even
// between checks.

type probeTarget struct {
	l        *Listener
	b        *BackendState
	interval time.Duration
	timeout  time.Duration
	due      stack.Time
	inflight *probe
}

type probe struct {
	t        *probeTarget
	p        *prober
	c        *stack.Conn
	deadline stack.Time
}

// prober runs the engine health checks of one shard.
type prober struct {
	app     *shardApp
	targets []*probeTarget
	next    stack.Time
}

func newProber(a *shardApp, ls []*Listener, now stack.Time) *prober {
	p := &prober{app: a}
	for _, l := range ls {
		if l.Spec.Health == nil || l.Spec.DialKernel {
			continue
		}
		for _, b := range l.Backends {
			p.targets = append(p.targets, &probeTarget{l: l, b: b, interval: l.Spec.Health.Interval, timeout: l.Spec.Health.Timeout, due: now})
		}
	}
	if len(p.targets) == 0 {
		return nil
	}
	p.next = now
	return p
}

func (p *prober) tick(now stack.Time) {
	next := stack.Never
	for _, t := range p.targets {
		if pr := t.inflight; pr != nil && now >= pr.deadline {
			pr.c.Abort()
			pr.finish(false)
		}
		if t.inflight == nil && now >= t.due {
			t.due = now.Add(t.interval)
			p.start(t, now)
		}
		next = min(next, t.due)
		if t.inflight != nil {
			next = min(next, t.inflight.deadline)
		}
	}
	p.next = next
}

func (p *prober) start(t *probeTarget, now stack.Time) {
	a := p.app
	c, err := a.sh.Engine().Dial(now, t.l.Spec.Source, t.b.Spec.Addr)
	if err != nil {
		t.report(false)
		return
	}
	pr := &probe{t: t, p: p, c: c, deadline: now.Add(t.timeout)}
	c.User = pr
	t.inflight = pr
}

func (pr *probe) onConnEvent(c *stack.Conn, ev stack.Events) {
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

func (pr *probe) finish(ok bool) {
	pr.t.inflight = nil
	pr.t.report(ok)
}

func (t *probeTarget) report(ok bool) {
	if t.b.Health.Report(ok) {
		t.l.healthChanged(t.b)
	}
}

// kernelChecks runs the dial: kernel listeners' checks until ctx ends.
func kernelChecks(ctx context.Context, ls []*Listener, wg *sync.WaitGroup) {
	type target struct {
		l *Listener
		b *BackendState
	}
	var targets []target
	interval := time.Duration(0)
	for _, l := range ls {
		if l.Spec.Health == nil || !l.Spec.DialKernel {
			continue
		}
		if interval == 0 || l.Spec.Health.Interval < interval {
			interval = l.Spec.Health.Interval
		}
		for _, b := range l.Backends {
			targets = append(targets, target{l, b})
		}
	}
	if len(targets) == 0 {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := make([]time.Time, len(targets))
		tick := time.NewTicker(min(interval, 100*time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				var round sync.WaitGroup
				for i, t := range targets {
					if now.Sub(last[i]) < t.l.Spec.Health.Interval {
						continue
					}
					last[i] = now
					round.Add(1)
					go func() {
						defer round.Done()
						d := net.Dialer{Timeout: t.l.Spec.Health.Timeout}
						c, err := d.DialContext(ctx, "tcp", t.b.Spec.Addr.String())
						if err == nil {
							if tc, ok := c.(*net.TCPConn); ok {
								tc.SetLinger(0)
							}
							c.Close()
						}
						if ctx.Err() != nil {
							return
						}
						if t.b.Health.Report(err == nil) {
							t.l.healthChanged(t.b)
						}
					}()
				}
				round.Wait()
			}
		}
	}()
}
