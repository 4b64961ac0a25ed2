package stack

// The seeded network simulator: two engines over an in-memory link with
// loss, reordering, duplication, delay and a bandwidth limit. Virtual time
// jumps straight to the next event (a frame arriving or an engine deadline),
// so a minute of simulated transfer takes as long as the engines' work.
// Each condition moves simTransfer bytes each way at once, half-closes at
// the end, checks every byte, and checks that both sides end in the right
// states. The results table is kept in testdata/sim.golden; run
// `go test ./stack -run Sim -update` to rewrite it after an intended change
// (`-simcounters` logs both engines' counters after each condition).

import (
	"container/heap"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

var (
	updateGolden = flag.Bool("update", false, "rewrite golden files")
	simCounters  = flag.Bool("simcounters", false, "log the engines' counters after each simulation")
)

// simTransfer is the number of bytes sent each way.
const simTransfer = 64 << 20

type linkConfig struct {
	loss    float64       // probability a frame is lost
	dup     float64       // probability a frame is delivered twice
	reorder float64       // probability a frame is held back by up to two one-way delays (later frames overtake it)
	delay   time.Duration // one-way propagation delay
	rate    float64       // bits per second; 0: unlimited
	cc      CongestionControl
	buffers int // both sides' send and receive buffers (0: the default)
}

type simEvent struct {
	at    Time
	order uint64
	to    int // engine index
	frame []byte
}

type simQueue []*simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].order < q[j].order
}
func (q simQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(*simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

type sim struct {
	t       *testing.T
	now     Time
	rng     *rand.Rand
	q       simQueue
	order   uint64
	engines [2]*Engine
	links   [2]linkConfig // links[i]: frames sent by engine i
	busy    [2]Time       // when link i's transmitter is next free
	sent    [2]int        // frames put on link i
	lost    [2]int
	queued  [2]time.Duration // the longest a frame waited for link i's transmitter
	burstAt [2]Time          // when the current burst on link i began
	burst   [2]int           // frames put on link i at burstAt
	bursts  [2]int           // the most frames put on link i at one instant

	oversized [2]int // frames over simMaxFrame engine i built (dropped, an error)
	largest   [2]int // the largest of them
}

// simMaxFrame is the largest Ethernet frame (no FCS) of the sim's links:
// the engines' default MTU of IP plus the 14-byte Ethernet header.
const simMaxFrame = DefaultMTU + 14

// simSink puts an engine's frames on its outgoing link.
type simSink struct {
	s   *sim
	idx int
	buf []byte
}

func (k *simSink) NextFrame() []byte {
	if k.buf == nil {
		k.buf = make([]byte, 2048)
	}
	return k.buf
}

func (k *simSink) Commit(n int) {
	s, l := k.s, k.s.links[k.idx]
	s.sent[k.idx]++
	if n > simMaxFrame {
		// A frame over the link's MTU never arrives on a real link (veth
		// drops it; a NIC cannot send it): the engine must never build one.
		s.oversized[k.idx]++
		s.largest[k.idx] = max(s.largest[k.idx], n)
		return
	}
	if l.loss > 0 && s.rng.Float64() < l.loss {
		s.lost[k.idx]++
		return
	}
	frame := append([]byte(nil), k.buf[:n]...)
	start := max(s.now, s.busy[k.idx])
	s.queued[k.idx] = max(s.queued[k.idx], start.Sub(s.now))
	if s.burstAt[k.idx] != s.now {
		s.burstAt[k.idx], s.burst[k.idx] = s.now, 0
	}
	s.burst[k.idx]++
	s.bursts[k.idx] = max(s.bursts[k.idx], s.burst[k.idx])
	if l.rate > 0 {
		// Serialization: the link is busy for the frame's bits (plus the
		// Ethernet preamble, FCS and gap: 24 bytes).
		start = start.Add(time.Duration(float64(n+24) * 8 / l.rate * 1e9))
		s.busy[k.idx] = start
	}
	at := start.Add(l.delay)
	if l.reorder > 0 && s.rng.Float64() < l.reorder {
		at = at.Add(time.Duration(s.rng.Int64N(int64(2*l.delay) + 1)))
	}
	s.push(at, 1-k.idx, frame)
	if l.dup > 0 && s.rng.Float64() < l.dup {
		s.push(at.Add(100*time.Microsecond), 1-k.idx, append([]byte(nil), frame...))
	}
}

func (s *sim) push(at Time, to int, frame []byte) {
	s.order++
	heap.Push(&s.q, &simEvent{at: at, order: s.order, to: to, frame: frame})
}

// step runs the next event; it returns false when nothing is left to do.
func (s *sim) step() bool {
	next := Never
	if len(s.q) > 0 {
		next = s.q[0].at
	}
	for _, e := range s.engines {
		next = min(next, e.NextDeadline())
	}
	if next == Never {
		return false
	}
	s.now = max(s.now, next)
	if len(s.q) > 0 && s.q[0].at <= s.now {
		ev := heap.Pop(&s.q).(*simEvent)
		s.engines[ev.to].HandleFrame(s.now, ev.frame)
		return true
	}
	for _, e := range s.engines {
		if e.NextDeadline() <= s.now {
			e.Tick(s.now)
		}
	}
	return true
}

// streamByte is byte i of the test stream with the given seed: cheap to
// recompute, so neither side stores the 64 MiB.
func streamChunk(seed uint64, off int, p []byte) {
	for i := range p {
		x := uint64(off+i)*0x9e3779b97f4a7c15 ^ seed
		x ^= x >> 29
		x *= 0xbf58476d1ce4e5b9
		p[i] = byte(x >> 32)
	}
}

// simApp drives one side: it writes simTransfer bytes then half-closes, and
// reads and checks the other side's bytes until EOF.
type simApp struct {
	t        *testing.T
	c        *Conn
	l        *Listener
	sendSeed uint64
	recvSeed uint64
	sendSize int // bytes this side sends
	recvSize int // bytes it expects
	sent     int
	rcvd     int
	eof      bool
	closedWr bool
	err      error
	buf      [64 << 10]byte
	want     [64 << 10]byte
}

func (a *simApp) ConnEvent(c *Conn, ev Events) {
	if ev&(EventReset|EventTimedOut|EventConnectFailed) != 0 {
		a.err = fmt.Errorf("connection failed: %v (%v)", c.Err(), ev)
		return
	}
	a.pump()
}

func (a *simApp) Acceptable(l *Listener) {
	if a.c == nil {
		a.c = l.Accept()
		a.pump()
	}
}

func (a *simApp) pump() {
	c := a.c
	if c == nil || a.err != nil {
		return
	}
	for a.sent < a.sendSize {
		n := min(len(a.buf), a.sendSize-a.sent, c.WriteSpace())
		if n == 0 {
			break
		}
		streamChunk(a.sendSeed, a.sent, a.buf[:n])
		w, err := c.Write(a.buf[:n])
		if err != nil {
			a.err = fmt.Errorf("write: %w", err)
			return
		}
		a.sent += w
	}
	if a.sent == a.sendSize && !a.closedWr {
		a.closedWr = true
		if err := c.CloseWrite(); err != nil {
			a.err = fmt.Errorf("close-write: %w", err)
		}
	}
	for !a.eof {
		n, err := c.Read(a.buf[:])
		if n > 0 {
			streamChunk(a.recvSeed, a.rcvd, a.want[:n])
			if string(a.buf[:n]) != string(a.want[:n]) {
				a.err = fmt.Errorf("byte stream corrupted in [%d, %d)", a.rcvd, a.rcvd+n)
				return
			}
			a.rcvd += n
		}
		if err != nil {
			if err.Error() == "EOF" {
				a.eof = true
				break
			}
			a.err = fmt.Errorf("read: %w", err)
			return
		}
		if n == 0 {
			break
		}
	}
}

type simResult struct {
	name        string
	simTime     time.Duration
	goodput     float64 // Mbit/s, each direction
	retransmits uint64
	rtos        uint64 // retransmission timeouts with data outstanding, both sides
	framesSent  int
	framesLost  int
	queued      time.Duration // the longest a frame of side 0 waited for the link
}

func (r simResult) row() string {
	return fmt.Sprintf("| %-23s | %10.2f | %11d | %6d | %10d | %10d | %12.3f |",
		r.name, r.goodput, r.retransmits, r.rtos, r.framesSent, r.framesLost, r.simTime.Seconds())
}

const simHeader = "| condition               | Mbit/s/dir | retransmits | RTOs   | frames     | lost       | sim seconds  |\n" +
	"|-------------------------|------------|-------------|--------|------------|------------|--------------|"

func runSim(t *testing.T, name string, link linkConfig) simResult {
	t.Helper()
	return runSimSizes(t, name, link, simTransfer, simTransfer)
}

// runSimSizes is runSim with side 0 sending size0 and side 1 size1 bytes.
func runSimSizes(t *testing.T, name string, link linkConfig, size0, size1 int) simResult {
	t.Helper()
	return runSimObserved(t, name, link, size0, size1, nil)
}

// runSimObserved is runSimSizes calling observe after every step, with
// the dialing side's connection.
func runSimObserved(t *testing.T, name string, link linkConfig, size0, size1 int, observe func(s *sim, c *Conn)) simResult {
	t.Helper()
	s := &sim{t: t, now: t0, rng: rand.New(rand.NewPCG(42, uint64(len(name))))}
	s.links = [2]linkConfig{link, link}
	addrs := [2]netip.Addr{netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.1.0.2")}
	macs := [2][6]byte{{2, 0, 0, 0, 1, 1}, {2, 0, 0, 0, 1, 2}}
	apps := [2]*simApp{
		{t: t, sendSeed: 0xa, recvSeed: 0xb, sendSize: size0, recvSize: size1},
		{t: t, sendSeed: 0xb, recvSeed: 0xa, sendSize: size1, recvSize: size0},
	}
	for i := range s.engines {
		e, err := New(Config{
			MAC: macs[i], Addresses: []netip.Addr{addrs[i]},
			Sink: &simSink{s: s, idx: i}, Handler: apps[i],
			Rand:       rand.New(rand.NewPCG(uint64(i), 7)),
			Congestion: link.cc,
			SndBuffer:  link.buffers,
			RcvBuffer:  link.buffers,
		})
		if err != nil {
			t.Fatal(err)
		}
		e.SetNeighbor(addrs[1-i], macs[1-i])
		s.engines[i] = e
	}
	l, err := s.engines[1].Listen(netip.AddrPortFrom(addrs[1], 5001))
	if err != nil {
		t.Fatal(err)
	}
	apps[1].l = l
	c, err := s.engines[0].Dial(s.now, addrs[0], l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	apps[0].c = c
	apps[0].pump()

	start := s.now
	var done Time
	for steps := 0; s.step(); steps++ {
		if observe != nil && done == 0 {
			observe(s, c)
		}
		for _, a := range apps {
			if a.err != nil {
				t.Fatalf("%s: %v (at %v simulated)", name, a.err, s.now.Sub(start))
			}
		}
		if done == 0 && apps[0].eof && apps[1].eof && apps[0].closedWr && apps[1].closedWr {
			done = s.now
		}
		if s.now.Sub(start) > 2*time.Hour {
			t.Fatalf("%s: not finished after 2 simulated hours: sent %d/%d, received %d/%d",
				name, apps[0].sent, apps[1].sent, apps[0].rcvd, apps[1].rcvd)
		}
	}
	for i, a := range apps {
		if a.rcvd != a.recvSize || !a.eof {
			t.Fatalf("%s: side %d received %d of %d bytes (eof %v)", name, i, a.rcvd, a.recvSize, a.eof)
		}
	}
	// Both sides closed their write side after their data; the connection
	// ends in TIME_WAIT on the side whose FIN went first (or both, when the
	// FINs crossed), CLOSED on the other; the simulation ran the TIME_WAIT
	// timers out, so nothing may remain.
	for i, e := range s.engines {
		if n := len(e.flows); n != 0 {
			for _, c := range e.flows {
				t.Errorf("%s: engine %d still holds %v in %v", name, i, c.key, c.state)
			}
		}
		if e.tw.live != 0 {
			t.Errorf("%s: engine %d still holds %d TIME_WAIT entries", name, i, e.tw.live)
		}
	}
	if s.engines[0].Counters().Load(TimeWaitEntered)+s.engines[1].Counters().Load(TimeWaitEntered) == 0 {
		t.Errorf("%s: neither side went through TIME_WAIT", name)
	}
	for _, a := range apps {
		if st := a.c.State(); st != Closed && st != TimeWait {
			t.Errorf("%s: connection state %v at the end, want CLOSED or TIME_WAIT", name, st)
		}
	}
	for i := range s.oversized {
		if s.oversized[i] > 0 {
			t.Errorf("%s: engine %d built %d frames over the %d-byte MTU (the largest %d bytes of Ethernet frame)",
				name, i, s.oversized[i], DefaultMTU, s.largest[i])
		}
	}
	el := done.Sub(start)
	if *simCounters {
		for k := Counter(0); k < numCounters; k++ {
			if v := s.engines[0].Counters().Load(k) + s.engines[1].Counters().Load(k); v > 0 {
				t.Logf("%s: %s %d", name, k, v)
			}
		}
	}
	return simResult{
		name:        name,
		simTime:     el,
		goodput:     float64(max(size0, size1)) * 8 / el.Seconds() / 1e6,
		retransmits: s.engines[0].Counters().Load(Retransmits) + s.engines[1].Counters().Load(Retransmits),
		rtos:        s.engines[0].Counters().Load(RTORecoveries) + s.engines[1].Counters().Load(RTORecoveries),
		framesSent:  s.sent[0] + s.sent[1],
		framesLost:  s.lost[0] + s.lost[1],
		queued:      s.queued[0],
	}
}

// checkSimGolden compares (or with -update rewrites) this condition's row.
func checkSimGolden(t *testing.T, r simResult) {
	t.Helper()
	t.Log("\n" + simHeader + "\n" + r.row())
	path := filepath.Join("testdata", "sim.golden")
	rows := map[string]string{}
	if b, err := os.ReadFile(path); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Split(line, "|")
			if len(f) > 2 && !strings.HasPrefix(strings.TrimSpace(f[1]), "condition") && !strings.HasPrefix(strings.TrimSpace(f[1]), "---") {
				rows[strings.TrimSpace(f[1])] = line
			}
		}
	}
	if *updateGolden {
		rows[r.name] = r.row()
		names := make([]string, 0, len(rows))
		for n := range rows {
			names = append(names, n)
		}
		sort.Strings(names)
		var b strings.Builder
		b.WriteString(simHeader + "\n")
		for _, n := range names {
			b.WriteString(rows[n] + "\n")
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if want, ok := rows[r.name]; !ok {
		t.Fatalf("no golden row for %s in %s; run with -update", r.name, path)
	} else if want != r.row() {
		t.Fatalf("simulation result changed (run with -update if intended):\n got: %s\nwant: %s", r.row(), want)
	}
}

func TestSimNoFaults(t *testing.T) {
	checkSimGolden(t, runSim(t, "no faults", linkConfig{delay: 100 * time.Microsecond, rate: 1e9}))
}

func TestSimLoss1(t *testing.T) {
	checkSimGolden(t, runSim(t, "1% loss", linkConfig{loss: 0.01, delay: 100 * time.Microsecond, rate: 1e9}))
}

func TestSimLoss5(t *testing.T) {
	checkSimGolden(t, runSim(t, "5% loss", linkConfig{loss: 0.05, delay: 100 * time.Microsecond, rate: 1e9}))
}

func TestSimReorder10(t *testing.T) {
	checkSimGolden(t, runSim(t, "10% reordering", linkConfig{reorder: 0.10, delay: 100 * time.Microsecond, rate: 1e9}))
}

func TestSimDuplicate1(t *testing.T) {
	checkSimGolden(t, runSim(t, "1% duplication", linkConfig{dup: 0.01, delay: 100 * time.Microsecond, rate: 1e9}))
}

func TestSimWAN50msRTT10Mbit(t *testing.T) {
	checkSimGolden(t, runSim(t, "50ms RTT 10Mbit", linkConfig{delay: 25 * time.Millisecond, rate: 10e6}))
}

// TestSimWANPaths: the paths real clients sit on — 20 and 100 ms RTT at
// 100 Mbit/s, with 0.1%, 1% and 3% random loss or 5% reordering — the
// baseline the engine's loss recovery is measured against (issue 12).
func TestSimWANPaths(t *testing.T) {
	for _, c := range wanPaths() {
		t.Run(c.name, func(t *testing.T) { checkSimGolden(t, runSim(t, c.name, c.link)) })
	}
}

// simCond is a named link condition of the simulator's table.
type simCond struct {
	name string
	link linkConfig
}

// wanPaths are TestSimWANPaths' conditions.
func wanPaths() []simCond {
	var conds []simCond
	for _, rtt := range []time.Duration{20 * time.Millisecond, 100 * time.Millisecond} {
		for _, c := range []simCond{
			{"0.1% loss", linkConfig{loss: 0.001}},
			{"1% loss", linkConfig{loss: 0.01}},
			{"3% loss", linkConfig{loss: 0.03}},
			{"5% reordering", linkConfig{reorder: 0.05}},
		} {
			l := c.link
			l.delay, l.rate = rtt/2, 100e6
			conds = append(conds, simCond{fmt.Sprintf("%dms RTT %s", rtt.Milliseconds(), c.name), l})
		}
	}
	return conds
}

// TestSimBBR: the same conditions under BBR (tcp.congestion_control: bbr),
// whose model does not read random loss as congestion: on the WAN paths it
// keeps most of the 100 Mbit/s that CUBIC's halvings give away. The rows
// are the golden table's "bbr ..." rows.
func TestSimBBR(t *testing.T) {
	conds := []simCond{
		{"no faults", linkConfig{delay: 100 * time.Microsecond, rate: 1e9}},
		{"1% loss", linkConfig{loss: 0.01, delay: 100 * time.Microsecond, rate: 1e9}},
		{"10% reordering", linkConfig{reorder: 0.10, delay: 100 * time.Microsecond, rate: 1e9}},
		{"50ms RTT 10Mbit", linkConfig{delay: 25 * time.Millisecond, rate: 10e6}},
	}
	conds = append(conds, wanPaths()...)
	for _, c := range conds {
		name := "bbr " + c.name
		l := c.link
		l.cc = BBR
		t.Run(name, func(t *testing.T) { checkSimGolden(t, runSim(t, name, l)) })
	}
}
