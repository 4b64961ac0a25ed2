package dataplane

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/bpf"
	"github.com/xdproxy/xdproxy/stack"
)

// SYN cookies answered in XDP (bpf/syncookie.h). tcp.syn_cookies decides,
// for the XDP program as for the engines:
//
//   - always: the program answers every SYN to a listener with a cookie
//     SYN-ACK (XDP_TX) and lets through only the ACKs of flows it knows or
//     whose cookie is valid; the shards never see a SYN.
//   - auto: the program steers SYNs to the engines as usual, remembering
//     their flows (cookie learning), until an engine shows SYN pressure —
//     its SYN queue overflowed cookieTrigger times within cookieEvery
//     (SYNQueueOverflow, SYNCookiesMemory: it answered with its own cookies)
//     or its memory is at the high mark. Then the program takes over, and
//     keeps the SYNs from the shards until cookieHold has passed without
//     pressure: no engine overflowing, and fewer SYNs answered in XDP in
//     that time than the engines' SYN queues hold together (so a flood that
//     goes on keeps cookies on; the engines would overflow again).
//   - never: the program never answers; SYNs overflowing a queue are dropped.
//
// The engines and the program share one set of keys (Config.Engine.Keys,
// from state_dir; drawn at start when there is none): the program gets the
// cookie secrets of the epochs around now (the previous, the current and
// the next: the engines derive each epoch's secret from the key, so the
// next is known in advance and the program turns over at the same instant
// they do) and the timestamp-offset key. The engines check every cookie
// again on the ACK (stack's cookieACK) and take MSS, window scale and SACK
// from it as from their own; SetExternalCookies keeps them from answering
// those ACKs with RSTs while a cookie of the program's may be outstanding.
//
// XDP_TX can fail where the program cannot see it: a veth in native mode
// whose peer end has no NAPI (no XDP program, GRO off) refuses the frames
// and counts them in rx_queue_N_xdp_tx_errors. At start the data plane
// sends a probe frame by XDP_TX on every veth in native mode
// (probeCookieTX), and the controller reads that counter (ethtool.go)
// afterwards; where XDP_TX does not get through, the programs' cookies and
// learning stay off for the rest of the run and the engines answer floods
// with their own cookies, as before.

const (
	cookieEvery = 50 * time.Millisecond
	cookieHold  = 5 * time.Second
	// cookieTrigger is how many SYNs the engines must have turned away from
	// their full SYN queues (answering them with their own cookies) within
	// one cookieEvery for the program to take over: ~1,300 a second. Fewer
	// are no flood, and the engines' queues can stay full of a past flood's
	// entries for a minute (SYN-ACK retries) after it ended.
	cookieTrigger = 64
)

// cookieCtl is the XDP cookie controller's state (the watchCookies goroutine's).
type cookieCtl struct {
	mode       stack.SYNCookieMode
	lifetime   time.Duration
	keys       *stack.Keys
	epoch      uint64 // the last epoch whose secrets were installed
	on         bool
	since      time.Time // when on last changed
	pressureAt time.Time // the last pressure seen
	overflow   uint64    // the engines' pressure counters at the last tick
	xdpSYNs    uint64    // the programs' TxSYNCookie at the last tick
	heldSYNs   uint64    // TxSYNCookie when pressureAt was last moved on by a rate
	external   bool      // what the engines were last told
	// XDP_TX failures: veth counts the frames its peer refused (no NAPI
	// there) in rx_queue_N_xdp_tx_errors, the ones it took in ..._xdp_tx;
	// one interface refusing most of them is enough to leave the cookies to
	// the engines for the rest of the run.
	txStats  []*ethtoolStats // per interface; nil where not watched
	txErrs   []uint64
	txOK     []uint64
	disabled bool
}

// setupCookies gives every interface's program the engines' cookie
// parameters and secrets, and the mode. The engines exist.
func (d *Dataplane) setupCookies() error {
	ecfg := d.shards[0].eng.Config()
	if ecfg.SYNCookies == stack.SYNCookiesNever {
		return nil
	}
	c := &cookieCtl{mode: ecfg.SYNCookies, lifetime: ecfg.CookieSecretLifetime, keys: ecfg.Keys}
	for _, f := range d.ifs {
		r := d.shards[0].eng.CookieResponder(f.index)
		if err := f.prog.SetCookieResponder(bpf.CookieResponder{
			Lifetime: c.lifetime, TSKey: c.keys.Timestamp, MSSTable: stack.CookieMSS(),
			MSS4: r.MSS4, MSS6: r.MSS6, Window: r.Window, WScale: r.WScale,
		}); err != nil {
			return fmt.Errorf("dataplane: %s: %w", f.name, err)
		}
	}
	c.epoch = stack.CookieEpoch(d.now(), c.lifetime)
	if err := d.installSecrets(c, c.epoch); err != nil {
		return err
	}
	c.txStats, c.txErrs, c.txOK = make([]*ethtoolStats, len(d.ifs)), make([]uint64, len(d.ifs)), make([]uint64, len(d.ifs))
	for i, f := range d.ifs {
		if f.link.Type() != "veth" {
			continue
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("dataplane: %s: ethtool socket: %w", f.name, err)
		}
		d.restore = append(d.restore, func() { unix.Close(fd) })
		st, err := newEthtoolStats(fd, f.name)
		if err != nil {
			d.log.Warn("xdp syn cookies: XDP_TX failures on this interface will go unnoticed", "interface", f.name, "err", err)
			continue
		}
		c.txStats[i] = st
		c.txErrs[i], _ = st.sum("xdp_tx_errors")
		c.txOK[i], _ = st.sum("xdp_tx")
	}
	d.cookies = c
	if c.mode == stack.SYNCookiesAlways {
		c.on = true
		d.xdpCookiesOn.Store(true)
		return d.setXDPCookies(c, true)
	}
	for _, f := range d.ifs {
		if err := f.prog.SetCookieLearning(true); err != nil {
			return fmt.Errorf("dataplane: %s: %w", f.name, err)
		}
	}
	return nil
}

// installSecrets puts the secrets of epoch-1, epoch and epoch+1 in every program.
func (d *Dataplane) installSecrets(c *cookieCtl, epoch uint64) error {
	for _, f := range d.ifs {
		for e := max(epoch, 1) - 1; e <= epoch+1; e++ {
			if err := f.prog.SetCookieSecret(e, c.keys.CookieSecret(e)); err != nil {
				return fmt.Errorf("dataplane: %s: %w", f.name, err)
			}
		}
	}
	return nil
}

// setXDPCookies turns the programs' cookies on or off.
func (d *Dataplane) setXDPCookies(c *cookieCtl, on bool) error {
	for _, f := range d.ifs {
		if err := f.prog.SetSYNCookies(on); err != nil {
			return fmt.Errorf("dataplane: %s: %w", f.name, err)
		}
	}
	if on {
		d.setExternalCookies(c, true)
	}
	return nil
}

func (d *Dataplane) setExternalCookies(c *cookieCtl, on bool) {
	for _, s := range d.shards {
		s.eng.SetExternalCookies(on)
	}
	c.external = on
}

// XDPCookies reports whether the XDP programs answer SYNs now.
func (d *Dataplane) XDPCookies() bool { return d.xdpCookiesOn.Load() }

// watchCookies rotates the programs' secrets and, with syn_cookies auto,
// turns their cookies on and off (see above).
func (d *Dataplane) watchCookies(end <-chan struct{}) {
	c := d.cookies
	t := time.NewTicker(cookieEvery)
	defer t.Stop()
	c.since = time.Now()
	for {
		select {
		case <-end:
			return
		case now := <-t.C:
			d.cookieTick(c, now)
		}
	}
}

func (d *Dataplane) cookieTick(c *cookieCtl, now time.Time) {
	if epoch := stack.CookieEpoch(d.now(), c.lifetime); epoch != c.epoch {
		if err := d.installSecrets(c, epoch); err != nil {
			d.log.Error("xdp syn cookies: installing the secrets of the next epoch", "err", err)
		} else {
			c.epoch = epoch
		}
	}
	if c.disabled {
		if c.external && now.Sub(c.since) >= 2*c.lifetime {
			d.setExternalCookies(c, false)
		}
		return
	}
	if d.txFailing(c) {
		return
	}
	if c.mode != stack.SYNCookiesAuto {
		return
	}

	var overflow uint64
	high := false
	for _, s := range d.shards {
		cn := s.eng.Counters()
		overflow += cn.Load(stack.SYNQueueOverflow) + cn.Load(stack.SYNCookiesMemory)
		high = high || s.eng.Memory().Level() == stack.MemoryHigh
	}
	var xdpSYNs uint64
	for _, f := range d.ifs {
		if cn, err := f.prog.Counters(); err == nil {
			xdpSYNs += cn.TxSYNCookie
		}
	}
	if overflow-c.overflow >= cookieTrigger || high {
		c.pressureAt = now
		c.heldSYNs = xdpSYNs
	}
	c.overflow = overflow
	// While on, a flood that would fill the engines' SYN queues within the
	// hold is pressure too.
	backlog := uint64(d.shards[0].eng.Config().SYNBacklog * len(d.shards))
	if c.on && xdpSYNs-c.heldSYNs >= backlog {
		c.pressureAt = now
		c.heldSYNs = xdpSYNs
	}
	switch {
	case !c.on && c.pressureAt == now:
		if err := d.setXDPCookies(c, true); err != nil {
			d.log.Error("xdp syn cookies: turning on", "err", err)
			return
		}
		c.on, c.since = true, now
		d.xdpCookiesOn.Store(true)
		d.log.Warn("SYN pressure: SYN cookies answered in XDP", "syn_queue_overflows", overflow, "memory_high", high)
	case c.on && now.Sub(c.pressureAt) >= cookieHold:
		if err := d.setXDPCookies(c, false); err != nil {
			d.log.Error("xdp syn cookies: turning off", "err", err)
			return
		}
		d.log.Info("SYN pressure over: SYNs to the engines again", "lasted", now.Sub(c.since).Round(time.Millisecond).String(),
			"answered_in_xdp", xdpSYNs-c.xdpSYNs)
		c.on, c.since = false, now
		c.xdpSYNs = xdpSYNs
		d.xdpCookiesOn.Store(false)
	case !c.on && c.external && now.Sub(c.since) >= 2*c.lifetime:
		// No cookie of the program's can still be valid.
		d.setExternalCookies(c, false)
	}
	if !c.on {
		c.xdpSYNs = xdpSYNs
	}
}

// txFailing checks the watched interfaces for XDP_TX failures and, when
// the kernel refused most of what the programs sent since the last check,
// turns the programs' cookies and learning off for good: the engines answer
// SYN floods with their own cookies from then on. A few refused under a
// flood are the peer's ring overflowing (a SYN-ACK lost as any packet is),
// not XDP_TX not working: seen on this lab's veth at 1 M SYN/s, where a
// first error switched the cookies off in the middle of the flood.
func (d *Dataplane) txFailing(c *cookieCtl) bool {
	for i, st := range c.txStats {
		if st == nil {
			continue
		}
		n, err := st.sum("xdp_tx_errors")
		if err != nil || n == c.txErrs[i] {
			continue
		}
		ok, _ := st.sum("xdp_tx")
		failed, sent := n-c.txErrs[i], ok-c.txOK[i]
		c.txErrs[i], c.txOK[i] = n, ok
		if !c.on || failed <= sent {
			continue
		}
		d.log.Warn("xdp syn cookies: the kernel drops the SYN-ACKs sent with XDP_TX (xdp_tx_errors in ethtool -S); SYN cookies are left to the engines. "+
			"On veth in native XDP mode the peer end needs an XDP program or GRO on (ethtool -K PEER gro on); or use xdp_mode: generic",
			"interface", d.ifs[i].name, "xdp_tx_errors", n)
		d.disableXDPCookies(c)
		return true
	}
	return false
}

// disableXDPCookies turns the programs' cookies and learning off for the
// rest of the run: the engines answer SYN floods with their own cookies.
func (d *Dataplane) disableXDPCookies(c *cookieCtl) {
	for _, f := range d.ifs {
		if err := f.prog.SetCookieLearning(false); err != nil {
			d.log.Error("xdp syn cookies: turning learning off", "interface", f.name, "err", err)
		}
	}
	if err := d.setXDPCookies(c, false); err != nil {
		d.log.Error("xdp syn cookies: turning off", "err", err)
	}
	c.on, c.disabled, c.since = false, true, time.Now()
	d.xdpCookiesOn.Store(false)
}

// probeCookieTX checks, before any SYN depends on it, that XDP_TX reaches
// the peer of every veth whose program runs in native mode: a frame that
// the peer drops unread (to a locally administered MAC nobody has,
// EtherType 0x88b5, local experimental) goes out as XDP_TX would send it,
// and the veth must count it sent (tx_queue_N_xdp_xmit). If it does not,
// the programs' cookies stay off for the run. The runtime watch
// (txFailing) still catches a peer that loses its NAPI later.
func (d *Dataplane) probeCookieTX() {
	c := d.cookies
	if c == nil || c.disabled {
		return
	}
	for i, f := range d.ifs {
		st := c.txStats[i]
		if st == nil || f.prog.AttachedMode() != bpf.ModeNative {
			continue
		}
		before, err := st.sum("xdp_xmit")
		if err != nil {
			continue
		}
		frame := make([]byte, 60)
		copy(frame[0:6], []byte{0x02, 'x', 'd', 'p', 't', 'x'})
		copy(frame[6:12], f.mac[:])
		frame[12], frame[13] = 0x88, 0xb5
		if err := bpf.SendByXDPTX(f.link.Attrs().Index, frame); err != nil {
			d.log.Warn("xdp syn cookies: cannot check that XDP_TX works here", "interface", f.name, "err", err)
			continue
		}
		if after, err := st.sum("xdp_xmit"); err != nil || after > before {
			continue
		}
		d.log.Warn("xdp syn cookies: XDP_TX does not reach the peer of this veth (native mode needs an XDP program or GRO on at the peer end: ethtool -K PEER gro on; or use xdp_mode: generic); SYN cookies stay in the engines",
			"interface", f.name)
		d.disableXDPCookies(c)
		return
	}
}
