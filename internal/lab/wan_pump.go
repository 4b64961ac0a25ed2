package lab

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/xsk"
)

func init() {
	// A WAN's pump process is the program that imports this package,
	// started again by WANLink with wanPumpEnv set: it runs the pump
	// instead of the program.
	if os.Getenv(wanPumpEnv) != "" {
		os.Exit(pumpMain())
	}
}

// pumpMain runs a WAN's forwarder: it reads the wanHello from the control
// socket (file descriptor 3), opens the sockets, answers, then serves
// requests until "stop" or until the control socket closes (its WAN's
// process is gone).
func pumpMain() int {
	f := os.NewFile(3, "wan-ctl")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab: WAN pump: control socket:", err)
		return 2
	}
	defer conn.Close()
	dec, enc := json.NewDecoder(conn), json.NewEncoder(conn)
	var h wanHello
	if err := dec.Decode(&h); err != nil {
		fmt.Fprintln(os.Stderr, "lab: WAN pump: hello:", err)
		return 2
	}
	p, err := newPump(h)
	if err != nil {
		enc.Encode(wanReply{Error: err.Error()})
		return 1
	}
	go p.run()
	if err := enc.Encode(wanReply{}); err != nil {
		p.close()
		return 1
	}
	for {
		var r wanRequest
		if err := dec.Decode(&r); err != nil {
			p.close()
			return 0
		}
		var rep wanReply
		switch {
		case r.Op == "set" && r.Config != nil:
			p.setConfig(*r.Config)
		case r.Op == "stats":
			st := p.stats()
			rep.Stats = &st
		case r.Op == "stop":
			st, err := p.close()
			rep.Stats = &st
			if err != nil {
				rep.Error = err.Error()
			}
			enc.Encode(rep)
			return 0
		default:
			rep.Error = fmt.Sprintf("unknown request %+v", r)
		}
		if err := enc.Encode(rep); err != nil {
			p.close()
			return 1
		}
	}
}

// pump is the emulator's forwarder: one goroutine, locked to its thread,
// that owns both sides' AF_XDP sockets and both directions' lines.
type pump struct {
	epoch  time.Time
	queues int
	a, b   []*xsk.Socket // per queue, on the inner ends A and B
	ab, ba *line
	efd    int   // eventfd: Set, Stats and close wake the pump with it
	tick   int64 // longest wait while frames are arriving, ns

	cfg    atomic.Pointer[WANConfig]
	cfgGen atomic.Uint64
	gen    uint64

	res []interface{ Close() error } // XDP links, programs, maps

	stop   atomic.Bool
	reqs   chan chan WANStats
	done   chan struct{}
	final  WANStats
	runErr error

	cpu0    time.Duration
	wakeups uint64
	txErrs  [2]uint64

	maxWork, maxOversleep time.Duration
}

const (
	wanBatch = 64
	// The XSKs: half the frames on the fill ring, half for TX. 8192 RX
	// frames are 100 ms of 1500-byte frames at 1 Gbit/s, what the ring
	// absorbs while the pump sleeps or the machine does not run it.
	wanXSKFrames = 16384
	wanXSKRing   = 8192
	// wanReleaseBudget bounds the frames one direction sends per round.
	wanReleaseBudget = 1024
	// Waits while frames arrive are bounded to keep their timestamps
	// honest: at most the smaller delay / wanTickDiv, within these bounds.
	wanTickDiv = 100
	wanTickMin = 20 * time.Microsecond
	wanTickMax = 250 * time.Microsecond
	// wanNice is the pump thread's nice value.
	wanNice = -10
)

// newPump opens the sockets and attaches the XDP programs on the inner
// ends named in h (this process runs in the emulator's namespace).
func newPump(h wanHello) (p *pump, err error) {
	p = &pump{
		epoch: time.Now(), queues: h.Queues, efd: -1,
		ab:   newLine(h.Config.Slots, h.Config.Seed, 1),
		ba:   newLine(h.Config.Slots, h.Config.Seed, 2),
		reqs: make(chan chan WANStats, 16),
		done: make(chan struct{}),
	}
	p.cfg.Store(&h.Config)
	defer func() {
		if err != nil {
			p.release()
		}
	}()
	if p.efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return p, fmt.Errorf("eventfd: %w", err)
	}
	for _, side := range []struct {
		name  string
		socks *[]*xsk.Socket
	}{{h.A, &p.a}, {h.B, &p.b}} {
		ifi, err := net.InterfaceByName(side.name)
		if err != nil {
			return p, err
		}
		if err := p.attach(ifi.Index, side.socks); err != nil {
			return p, fmt.Errorf("%s: %w", side.name, err)
		}
	}
	p.apply()
	return p, nil
}

// attach opens an AF_XDP socket on every queue of e (in the emulator's
// namespace, where the socket binds) and attaches an XDP program that
// redirects every frame to the socket of its queue.
func (p *pump) attach(ifindex int, socks *[]*xsk.Socket) error {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: uint32(p.queues)})
	if err != nil {
		return fmt.Errorf("XSKMAP: %w", err)
	}
	p.res = append(p.res, m)
	// return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP):
	// nothing reaches the emulator namespace's own stack.
	const xdpDrop, rxQueueIndex = 1, 16
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "lab_wan", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, rxQueueIndex, asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Imm(asm.R3, xdpDrop),
			asm.FnRedirectMap.Call(),
			asm.Return(),
		},
	})
	if err != nil {
		return fmt.Errorf("XDP program: %w", err)
	}
	p.res = append(p.res, prog)
	for q := range p.queues {
		s, err := xsk.Open(ifindex, q, xsk.Config{
			NumFrames: wanXSKFrames, FrameSize: wanFrameSize, ZeroCopy: xsk.ZeroCopyOff,
			FillSize: wanXSKRing, CompletionSize: wanXSKRing, RxSize: wanXSKRing, TxSize: wanXSKRing,
		})
		if err != nil {
			return err
		}
		*socks = append(*socks, s)
		if err := m.Update(uint32(q), uint32(s.FD()), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("XSKMAP[%d]: %w", q, err)
		}
	}
	lk, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		return fmt.Errorf("attaching XDP: %w", err)
	}
	p.res = append(p.res, lk)
	return nil
}

// release closes the sockets, the XDP links, programs and maps, and the
// eventfd.
func (p *pump) release() error {
	var errs []error
	for _, s := range append(append([]*xsk.Socket(nil), p.a...), p.b...) {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(p.res) - 1; i >= 0; i-- {
		if err := p.res[i].Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if p.efd >= 0 {
		unix.Close(p.efd)
	}
	return errors.Join(errs...)
}

func (p *pump) now() int64 { return int64(time.Since(p.epoch)) } // monotonic

// wake interrupts the pump's wait.
func (p *pump) wake() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(p.efd, one[:])
}

// setConfig hands a new configuration to the pump.
func (p *pump) setConfig(c WANConfig) {
	p.cfg.Store(&c)
	p.cfgGen.Add(1)
	p.wake()
}

// apply puts the configuration in force if it changed.
func (p *pump) apply() {
	gen := p.cfgGen.Load()
	if gen == p.gen && p.tick != 0 {
		return
	}
	p.gen = gen
	c := p.cfg.Load()
	p.ab.setConfig(c.AtoB)
	p.ba.setConfig(c.BtoA)
	d := min(c.AtoB.Delay, c.BtoA.Delay) / wanTickDiv
	p.tick = int64(min(max(d, wanTickMin), wanTickMax))
}

func (p *pump) run() {
	defer close(p.done)
	// The pump's thread is its own: precise timers, a higher priority
	// than the rest of the machine's work (nice -10, per thread), CPU time
	// of its own. It is never unlocked, so the thread ends with the pump
	// rather than going back to the runtime with these settings.
	runtime.LockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1000, 0, 0, 0)
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), wanNice)
	p.cpu0 = processCPU()

	descs := make([]xsk.Desc, wanBatch)
	fds := make([]unix.PollFd, 0, 2*p.queues+1)
	fds = append(fds, unix.PollFd{Fd: int32(p.efd), Events: unix.POLLIN})
	for _, s := range append(append([]*xsk.Socket(nil), p.a...), p.b...) {
		fds = append(fds, unix.PollFd{Fd: int32(s.FD()), Events: unix.POLLIN})
	}
	sendA := func(frame []byte, q int) bool { return p.send(p.a[q], frame) }
	sendB := func(frame []byte, q int) bool { return p.send(p.b[q], frame) }
	var ev [8]byte
	for {
		p.apply()
		round := p.now()
		got := 0
		for q := range p.queues {
			got += p.receive(p.a[q], p.ab, q, descs)
			got += p.receive(p.b[q], p.ba, q, descs)
		}
		now := p.now()
		// Departures in bounded batches, so that a backlog (after the
		// machine did not run the pump for a while) does not keep the RX
		// rings from being drained.
		n1, blocked1 := p.ab.release(now, wanReleaseBudget, sendB)
		n2, blocked2 := p.ba.release(now, wanReleaseBudget, sendA)
		more := n1 == wanReleaseBudget || n2 == wanReleaseBudget
		p.flush(p.b, 0)
		p.flush(p.a, 1)
		p.maxWork = max(p.maxWork, time.Duration(p.now()-round))
		p.answerStats()
		if p.stop.Load() {
			p.final = p.snapshot()
			return
		}
		if more && !blocked1 && !blocked2 {
			continue // a backlog to send: look at the RX rings first
		}

		// Sleep until the next frame is due; while frames keep arriving,
		// at most a tick and without waking for each of them (the RX
		// rings hold them meanwhile); when idle, until a frame arrives.
		wait := int64(-1)
		t1, ok1 := p.ab.next()
		t2, ok2 := p.ba.next()
		switch {
		case ok1 && ok2:
			wait = max(min(t1, t2)-now, 0)
		case ok1:
			wait = max(t1-now, 0)
		case ok2:
			wait = max(t2-now, 0)
		}
		n := len(fds)
		if got > 0 || wait == 0 {
			n = 1 // the eventfd only
			if wait < 0 || wait > p.tick {
				wait = p.tick
			}
			wait = max(wait, int64(wanTickMin)) // due but no TX room: let the kernel drain
		}
		var ts *unix.Timespec
		if wait >= 0 {
			t := unix.NsecToTimespec(wait)
			ts = &t
		}
		for i := range fds[:n] {
			fds[i].Revents = 0
		}
		slept := p.now()
		k, err := unix.Ppoll(fds[:n], ts, nil)
		if k == 0 && wait >= 0 {
			p.maxOversleep = max(p.maxOversleep, time.Duration(p.now()-slept-wait))
		}
		if err != nil && err != unix.EINTR {
			p.runErr = fmt.Errorf("ppoll: %w", err)
			p.final = p.snapshot()
			return
		}
		p.wakeups++
		if fds[0].Revents&unix.POLLIN != 0 {
			unix.Read(p.efd, ev[:])
		}
	}
}

// receive takes what s's RX ring holds (a bounded amount, so that
// departures are not held up) into l. Each batch is stamped with the time
// after it was taken from the ring, so that no frame is stamped before it
// arrived (and none leaves early).
func (p *pump) receive(s *xsk.Socket, l *line, q int, descs []xsk.Desc) int {
	total := 0
	for total < 16*wanBatch {
		n := s.Receive(descs)
		now := p.now()
		for _, d := range descs[:n] {
			l.arrive(now, s.Frame(d), q)
		}
		s.Recycle(descs[:n])
		total += n
		if n < len(descs) {
			break
		}
	}
	return total
}

// send copies frame into a TX frame of s and queues it; false when s has
// no TX room even after flushing.
func (p *pump) send(s *xsk.Socket, frame []byte) bool {
	buf := s.NextFrame()
	if buf == nil {
		s.Flush()
		s.Complete()
		if buf = s.NextFrame(); buf == nil {
			return false
		}
	}
	s.Commit(copy(buf, frame))
	return true
}

// flush kicks the TX rings of socks and reaps their completions; dir is the
// direction whose frames leave through them, for the error count.
func (p *pump) flush(socks []*xsk.Socket, dir int) {
	for _, s := range socks {
		if s.TxPending() > 0 {
			if err := s.Flush(); err != nil {
				p.txErrs[dir]++
			}
		}
		s.Complete()
	}
}

// answerStats serves the pending Stats calls.
func (p *pump) answerStats() {
	for {
		select {
		case r := <-p.reqs:
			r <- p.snapshot()
		default:
			return
		}
	}
}

// snapshot reads every counter, on the pump's thread.
func (p *pump) snapshot() WANStats {
	st := WANStats{AtoB: p.ab.st, BtoA: p.ba.st, CPU: processCPU() - p.cpu0, Wakeups: p.wakeups,
		MaxWork: p.maxWork, MaxOversleep: p.maxOversleep}
	st.AtoB.TxErrors, st.BtoA.TxErrors = p.txErrs[0], p.txErrs[1]
	for i, socks := range [][]*xsk.Socket{p.a, p.b} {
		d := &st.AtoB
		if i == 1 {
			d = &st.BtoA
		}
		for _, s := range socks {
			if ks, err := s.Stats(); err == nil {
				d.Dropped.RxRing += ks.RxDropped + ks.RxRingFull
			}
		}
		d.Packets += d.Dropped.RxRing
	}
	return st
}

// stats asks the pump for a snapshot, or returns the last one once it has
// stopped.
func (p *pump) stats() WANStats {
	r := make(chan WANStats, 1)
	select {
	case p.reqs <- r:
		p.wake()
	case <-p.done:
		return p.final
	}
	select {
	case s := <-r:
		return s
	case <-p.done:
		return p.final
	}
}

// close stops the pump, releases everything and returns the last counters.
func (p *pump) close() (WANStats, error) {
	p.stop.Store(true)
	p.wake()
	<-p.done
	return p.final, errors.Join(p.runErr, p.release())
}

// processCPU is the CPU time (user and system) of this process.
func processCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
