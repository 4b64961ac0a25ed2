package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// wanPumpEnv, set in a process's environment, makes it a WAN's pump (see
// init in wan_pump.go).
const wanPumpEnv = "XDPROXY_LAB_WAN_PUMP"

// The control protocol between a WAN and its pump process: JSON values on
// a stream socket, one request and one reply at a time.
type (
	// wanHello is the first message, answered by an empty wanReply once
	// the pump forwards, or by one with Error.
	wanHello struct {
		Config WANConfig
		A, B   string // the inner ends' names in the emulator namespace
		Queues int
	}
	wanRequest struct {
		Op     string     // "set", "stats" or "stop"
		Config *WANConfig `json:",omitempty"` // for "set"
	}
	wanReply struct {
		Error string    `json:",omitempty"`
		Stats *WANStats `json:",omitempty"` // for "stats" and "stop"
	}
)

// wanTimeout bounds the pump's start and each request.
const wanTimeout = 20 * time.Second

// WANLink joins namespace a (interface prefix+aIf) and namespace b
// (prefix+bIf) through a new WAN emulator namespace, and starts the
// emulator with c. To the two namespaces it looks like Lab.Link with o: the
// ends carry o's names, addresses and MACs and see each other on one
// Ethernet segment (ARP, neighbour discovery and every other frame go
// through). Differences: both ends always have TX checksum offload off (a
// frame that crosses userspace cannot stay CHECKSUM_PARTIAL), and the MTU is
// at most 2030. The emulator is a process (this program, started again in
// the emulator's namespace); it stops with WAN.Close or with the lab.
func (l *Lab) WANLink(a *NS, aIf string, b *NS, bIf string, o LinkOpts, c WANConfig) (*WAN, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	if o.MTU > wanMaxMTU {
		return nil, fmt.Errorf("lab: WANLink: MTU %d over the emulator's %d", o.MTU, wanMaxMTU)
	}
	if a == nil || b == nil || a.lab != l || b.lab != l || a == b {
		return nil, errors.New("lab: WANLink needs two different namespaces of this lab")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("lab: WANLink: this program's path: %w", err)
	}
	l.mu.Lock()
	l.wanN++
	name := fmt.Sprintf("wan%d", l.wanN)
	l.mu.Unlock()
	ns, err := l.NS(name)
	if err != nil {
		return nil, err
	}
	// The emulator's namespace puts nothing of its own on the wire: no
	// IPv6 link-local address, router solicitations or MLD reports.
	if err := ns.Do(func() error {
		for _, k := range []string{"all", "default"} {
			p := "/proc/sys/net/ipv6/conf/" + k + "/disable_ipv6"
			if _, err := os.Stat(p); err != nil {
				continue // no IPv6 on this kernel
			}
			if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("lab: %s: %w", ns.Name, err)
	}
	q := max(o.Queues, 1)
	va, err := l.Link(a, aIf, ns, "wa", LinkOpts{Queues: q, MTU: o.MTU, AAddrs: o.AAddrs, AMAC: o.AMAC, DisableTxChecksum: true})
	if err != nil {
		return nil, err
	}
	vb, err := l.Link(ns, "wb", b, bIf, LinkOpts{Queues: q, MTU: o.MTU, BAddrs: o.BAddrs, BMAC: o.BMAC, DisableTxChecksum: true})
	if err != nil {
		return nil, err
	}
	w := &WAN{NS: ns, Link: &Veth{A: va.A, B: vb.B}, Inner: &Veth{A: va.B, B: vb.A}, seed: c.Seed}
	// GRO on makes a veth receive through its NAPI ring, in the order the
	// frames were sent; without it each frame goes to the backlog of the
	// CPU that sent it, and two frames the pump sends from two CPUs (the
	// thread migrated) can overtake each other.
	ctx, cancel := context.WithTimeout(context.Background(), wanTimeout)
	defer cancel()
	for _, e := range []*End{w.Link.A, w.Link.B} {
		if _, err := e.NS.Run(ctx, "ethtool", "-K", e.Name, "gro", "on"); err != nil {
			return nil, err
		}
	}
	for w.seed == 0 {
		var s [8]byte
		rand.Read(s[:])
		w.seed = binary.LittleEndian.Uint64(s[:])
	}
	if c.Slots == 0 {
		c.Slots = defaultWANSlots
	}
	c.Seed = w.seed
	w.cfg = c

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lab: WANLink: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "wan-ctl"), os.NewFile(uintptr(fds[1]), "wan-ctl")
	defer theirs.Close()
	w.ctl, err = net.FileConn(ours)
	ours.Close()
	if err != nil {
		return nil, fmt.Errorf("lab: WANLink: %w", err)
	}
	w.enc, w.dec = json.NewEncoder(w.ctl), json.NewDecoder(w.ctl)
	cmd := ns.Command(context.Background(), exe)
	cmd.Env = append(os.Environ(), wanPumpEnv+"=1")
	cmd.ExtraFiles = []*os.File{theirs} // descriptor 3
	if w.proc, err = ns.start(cmd, "WAN pump"); err != nil {
		w.ctl.Close()
		return nil, err
	}
	theirs.Close()
	l.mu.Lock()
	if l.closed {
		// Close has already run: the lab kills the process, as it
		// would have any other.
		l.mu.Unlock()
		return nil, errors.Join(ErrClosed, w.Close())
	}
	l.wans = append(l.wans, w)
	l.mu.Unlock()
	if _, err := w.request(wanHello{Config: c, A: w.Inner.A.Name, B: w.Inner.B.Name, Queues: q}); err != nil {
		return nil, errors.Join(err, w.Close())
	}
	return w, nil
}

// request sends msg to the pump and returns its reply.
func (w *WAN) request(msg any) (wanReply, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.requestLocked(msg)
}

func (w *WAN) requestLocked(msg any) (wanReply, error) {
	var rep wanReply
	if w.closed {
		return rep, ErrClosed
	}
	w.ctl.SetDeadline(time.Now().Add(wanTimeout))
	err := w.enc.Encode(msg)
	if err == nil {
		err = w.dec.Decode(&rep)
	}
	w.ctl.SetDeadline(time.Time{})
	if err == nil && rep.Error != "" {
		err = errors.New(rep.Error)
	}
	if err != nil {
		return rep, fmt.Errorf("lab: WAN %s: %w\n%s", w.NS.Name, err, tail([]byte(w.proc.Output()), 2000))
	}
	return rep, nil
}

// Set changes the impairments at run time (Slots and Seed are kept). Frames
// already in the delay line keep the time they were given; new ones get
// the new delay, and never leave before the frames ahead of them.
func (w *WAN) Set(c WANConfig) error {
	if err := c.check(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	c.Slots, c.Seed = w.cfg.Slots, w.cfg.Seed
	if _, err := w.requestLocked(wanRequest{Op: "set", Config: &c}); err != nil {
		return err
	}
	w.cfg = c
	return nil
}

// Stats returns a snapshot of the counters, taken by the emulator between
// two frames. After Close it returns the last ones.
func (w *WAN) Stats() (WANStats, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.final != nil {
		return *w.final, nil
	}
	rep, err := w.requestLocked(wanRequest{Op: "stats"})
	if err != nil {
		return WANStats{}, err
	}
	return *rep.Stats, nil
}

// Close stops the emulator: its process closes the sockets and detaches
// the XDP programs, and the link stops forwarding. The namespace and the
// veth pairs go with the lab, which also calls Close. Idempotent.
func (w *WAN) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	var err error
	select {
	case <-w.proc.Done():
		// Already stopped (by the lab, or it failed): nothing to ask.
	default:
		var rep wanReply
		rep, err = w.requestLocked(wanRequest{Op: "stop"})
		if rep.Stats != nil {
			w.final = rep.Stats
		}
	}
	w.closed = true
	w.ctl.Close()
	select {
	case <-w.proc.Done():
	case <-time.After(5 * time.Second):
	}
	return errors.Join(err, w.proc.Stop(procGrace))
}
