package main

// The loss workload (-workloads loss, issue 12): downloads of a fixed size
// over a lossy, delayed client leg (the lab's WAN emulator between the
// client and the router), through xdproxy (dial: xdp) and kernel-to-kernel
// (the client downloads straight from a Go server in the backend
// namespace, as the direct contender does), over the same emulated path
// in the same run. It runs in a lab of its own, alone: the emulator on the
// client leg would change every other workload.
//
// For each cell (an RTT and a loss rate, each way) the two sides take
// turns, -loss-repeats times, the order swapped every repeat. Each
// download is timed from the dial to the server's FIN, and its bytes are
// checked against the pattern the server sends. Around each download the
// sender's counters are read: for xdproxy its engine's
// xdproxy_tcp_events_total{counter="retransmits"} and {counter="rto_recoveries"}
// from /metrics (the whole engine, both legs; the backend leg has no
// loss); for the kernel, nstat's TcpRetransSegs and TcpExtTCPTimeouts in
// the backend namespace (the sender's). The emulator's own counters say
// how many frames it dropped as asked (random loss) and otherwise (its
// bottleneck queue, its RX rings: losses nobody asked for).

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/xdproxy/xdproxy/internal/lab"
)

// lossOptions are the loss workload's flags.
type lossOptions struct {
	Repeats   int             `json:"repeats"`
	MiB       int             `json:"mib"`
	LossFlag  string          `json:"-"`
	Losses    []float64       `json:"loss_percent"` // each way
	RTTFlag   string          `json:"-"`
	RTTs      []time.Duration `json:"rtts_ns"`
	Rate      float64         `json:"rate_bps"`   // the emulator's bottleneck each way (0: none)
	BufferKiB int             `json:"buffer_kib"` // xdproxy's tcp.snd_buffer and rcv_buffer (0: its default)
	Timeout   time.Duration   `json:"timeout_ns"` // per download
	Seed      uint64          `json:"seed"`       // the emulator's (0: random)
	// The congestion controls each side runs: one xdproxy side per entry
	// of XdproxyCC (its tcp.congestion_control), one kernel side per entry
	// of KernelCC (TCP_CONGESTION on the server's listening socket).
	XdproxyCCFlag string   `json:"-"`
	XdproxyCC     []string `json:"xdproxy_cc"`
	KernelCCFlag  string   `json:"-"`
	KernelCC      []string `json:"kernel_cc"`
	KernelDefault string   `json:"kernel_default_cc"` // net.ipv4.tcp_congestion_control in the lab
}

func (lo *lossOptions) flags(fs interface {
	IntVar(*int, string, int, string)
	StringVar(*string, string, string, string)
	Float64Var(*float64, string, float64, string)
	DurationVar(*time.Duration, string, time.Duration, string)
	Uint64Var(*uint64, string, uint64, string)
}) {
	fs.IntVar(&lo.Repeats, "loss-repeats", 5, "loss workload: downloads per side and cell (the table gives medians)")
	fs.IntVar(&lo.MiB, "loss-mib", 50, "loss workload: size of each download, MiB")
	fs.StringVar(&lo.LossFlag, "loss-rates", "0,1,3", "loss workload: random loss rates each way, percent (comma list)")
	fs.StringVar(&lo.RTTFlag, "loss-rtts", "1ms,50ms", "loss workload: round-trip times the emulator adds (comma list)")
	fs.Float64Var(&lo.Rate, "loss-bottleneck", 1e9, "loss workload: the emulator's rate limit each way, bit/s (0: none)")
	fs.IntVar(&lo.BufferKiB, "loss-buffer-kib", 4096, "loss workload: xdproxy's tcp.snd_buffer and rcv_buffer in KiB, as Linux's tcp_wmem maximum (0: the daemon's default)")
	fs.DurationVar(&lo.Timeout, "loss-timeout", 10*time.Minute, "loss workload: limit of one download")
	fs.Uint64Var(&lo.Seed, "loss-seed", 0, "loss workload: the emulator's random seed (0: random, recorded in loss.json)")
	fs.StringVar(&lo.XdproxyCCFlag, "loss-xdproxy-cc", "bbr", "loss workload: xdproxy's congestion controls, one side each (comma list of tcp.congestion_control values)")
	fs.StringVar(&lo.KernelCCFlag, "loss-kernel-cc", "bbr", "loss workload: the kernel's congestion controls, one side each (comma list of TCP_CONGESTION names)")
}

// check parses the list flags and checks the values.
func (lo *lossOptions) check() error {
	lo.Losses, lo.RTTs = nil, nil
	for _, f := range strings.Split(lo.LossFlag, ",") {
		p, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || p < 0 || p > 50 {
			return fmt.Errorf("-loss-rates: bad rate %q (percent, 0 to 50)", f)
		}
		lo.Losses = append(lo.Losses, p)
	}
	for _, f := range strings.Split(lo.RTTFlag, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d < 0 || d > 2*time.Second {
			return fmt.Errorf("-loss-rtts: bad RTT %q (0 to 2s)", f)
		}
		lo.RTTs = append(lo.RTTs, d)
	}
	lo.XdproxyCC, lo.KernelCC = nil, nil
	for _, f := range strings.Split(lo.XdproxyCCFlag, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(xdproxyCCs, f) {
			return fmt.Errorf("-loss-xdproxy-cc: unknown %q (one of %s)", f, strings.Join(xdproxyCCs, ", "))
		}
		lo.XdproxyCC = append(lo.XdproxyCC, f)
	}
	for _, f := range strings.Split(lo.KernelCCFlag, ",") {
		f = strings.TrimSpace(f)
		if f == "" || strings.ContainsAny(f, " /") || len(f) > 15 {
			return fmt.Errorf("-loss-kernel-cc: bad name %q", f)
		}
		lo.KernelCC = append(lo.KernelCC, f)
	}
	switch {
	case lo.Repeats < 1 || lo.MiB < 1 || lo.Timeout <= 0:
		return errors.New("-loss-repeats, -loss-mib and -loss-timeout must be positive")
	case lo.Rate != 0 && lo.Rate < 1e6:
		return errors.New("-loss-bottleneck: 0 or at least 1e6 bit/s")
	case lo.BufferKiB < 0 || lo.BufferKiB > 1<<20:
		return errors.New("-loss-buffer-kib: 0 to 1048576")
	}
	return nil
}

// The download service of the loss workload: the client sends the size
// (8 bytes, big endian), the server sends that many bytes of sourceBuf's
// pattern (byte i is byte(7i)) and closes.
const (
	downloadProxyPort   = 7005
	downloadBackendPort = 8005
)

func downloadConn(c net.Conn) {
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	for rem := int64(binary.BigEndian.Uint64(hdr[:])); rem > 0; {
		n := min(rem, int64(len(sourceBuf)))
		if _, err := c.Write(sourceBuf[:n]); err != nil {
			return
		}
		rem -= n
	}
}

// downloadPattern is sourceBuf twice over, so that any read of up to
// len(sourceBuf) bytes at any offset compares with one slice of it.
var downloadPattern = append(slices.Clone(sourceBuf), sourceBuf...)

// fetch downloads size bytes from addr, from the namespace ns, checks
// every byte and returns the time from the dial to the server's FIN.
func fetch(ctx context.Context, ns *lab.NS, addr string, size int64, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	c, err := ns.DialTCP(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(size))
	if _, err := c.Write(hdr[:]); err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	var got int64
	for {
		n, err := c.Read(buf)
		if n > 0 {
			off := got % int64(len(sourceBuf))
			if !bytes.Equal(buf[:n], downloadPattern[off:off+int64(n)]) {
				return 0, fmt.Errorf("%s: wrong bytes at offset %d..%d", addr, got, got+int64(n))
			}
			got += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("%s: after %d of %d bytes in %v: %w", addr, got, size, time.Since(start).Round(time.Millisecond), err)
		}
	}
	el := time.Since(start)
	if got != size {
		return 0, fmt.Errorf("%s: %d bytes, want %d", addr, got, size)
	}
	return el, nil
}

// LossRun is one download of the loss workload.
type LossRun struct {
	RTTms   float64 `json:"rtt_ms"`
	LossPct float64 `json:"loss_percent"`
	Repeat  int     `json:"repeat"`
	Side    string  `json:"side"` // xdproxy-<cc> or kernel-<cc>
	Seconds num     `json:"seconds"`
	// The sender's counters over the download.
	Retransmits num `json:"retransmits"`
	RTOs        num `json:"rtos"`
	// What the emulator dropped meanwhile, both ways: as asked (random
	// loss) and not (its queue, its RX rings).
	WANLoss  uint64 `json:"wan_loss"`
	WANOther uint64 `json:"wan_other_drops"`
	Error    string `json:"error,omitempty"`
}

// LossCell is the summary of one cell.
type LossCell struct {
	RTTms   float64 `json:"rtt_ms"`
	LossPct float64 `json:"loss_percent"`
	// Per side (xdproxy-cubic, kernel-bbr, ...): medians over the repeats that succeeded.
	Seconds     map[string]num `json:"seconds"`
	MinSeconds  map[string]num `json:"min_seconds"`
	MaxSeconds  map[string]num `json:"max_seconds"`
	Retransmits map[string]num `json:"retransmits"`
	RTOs        map[string]num `json:"rtos"`
	OK          map[string]int `json:"ok"` // downloads that succeeded
	// Ratios: an xdproxy side's median time over a kernel side's, keyed
	// "xdproxy-cubic/kernel-cubic".
	Ratios map[string]num `json:"ratios"`
}

// LossResults is loss.json.
type LossResults struct {
	Date     string            `json:"date"`
	Command  string            `json:"command"`
	Machine  Machine           `json:"machine"`
	Versions map[string]string `json:"versions"`
	Settings lossOptions       `json:"settings"`
	Queues   int               `json:"queues"`
	Seconds  float64           `json:"seconds"`
	Runs     []LossRun         `json:"runs"`
	Cells    []LossCell        `json:"cells"`
	Notes    []string          `json:"notes,omitempty"`
	// LoadAvg is /proc/loadavg at the start and at the end of the run
	// (other work on the machine).
	LoadAvg []string `json:"loadavg"`
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// xdproxyCCs are the values tcp.congestion_control takes.
var xdproxyCCs = []string{"cubic", "newreno", "bbr"}

// lossSide is one contender of the loss workload: xdproxy running one of
// its congestion controls, or the kernel running one of its own.
type lossSide struct {
	name string // xdproxy-cubic, kernel-bbr
	kind string // xdproxy or kernel
	cc   string
	addr string // what the client dials
}

// sides are the loss workload's contenders, xdproxy's first.
func (lo *lossOptions) sides() []lossSide {
	var s []lossSide
	for _, cc := range lo.XdproxyCC {
		s = append(s, lossSide{name: "xdproxy-" + cc, kind: "xdproxy", cc: cc})
	}
	for _, cc := range lo.KernelCC {
		s = append(s, lossSide{name: "kernel-" + cc, kind: "kernel", cc: cc})
	}
	return s
}

// sideNames are the names of lo's sides, xdproxy's first.
func (lo *lossOptions) sideNames() []string {
	var n []string
	for _, s := range lo.sides() {
		n = append(n, s.name)
	}
	return n
}

// listenCC listens on addr in ns with TCP_CONGESTION set to cc on the
// listening socket, which the accepted connections inherit.
func listenCC(ns *lab.NS, addr, cc string) (net.Listener, error) {
	ln, err := ns.ListenTCP(addr)
	if err != nil {
		return nil, err
	}
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) { err = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc) })
		err = errors.Join(err, cerr)
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("TCP_CONGESTION %q in %s (see net.ipv4.tcp_available_congestion_control): %w", cc, ns.Name, err)
	}
	return ln, nil
}

// lossConfig is the WAN's configuration for a cell.
func (lo *lossOptions) lossConfig(rtt time.Duration, lossPct float64) lab.WANConfig {
	return lab.Symmetric(lab.WANPath{Delay: rtt / 2, Loss: lossPct / 100, Rate: int64(lo.Rate)})
}

// runLoss is the loss workload: its own lab, xdproxy dial: xdp and the
// kernel side by side, loss.json and loss.md in o.Out.
func runLoss(o *options) (err error) {
	lo := &o.Loss
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, XDP, AF_XDP): run it as root")
	}
	bin, err := filepath.Abs(o.Bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("xdproxy binary: %w (run `make build`)", err)
	}
	if err := lab.EnsureTools("ip:iproute2", "nstat:iproute2", "ethtool:ethtool"); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	start := time.Now()
	l, tmp, done, err := newRunLab()
	if err != nil {
		return err
	}
	defer func() {
		if cerr := done(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	wc := lo.lossConfig(time.Millisecond, 0)
	wc.Seed = lo.Seed
	topo, err := l.NewTopologyWith(lab.TopologyOpts{Queues: o.Queues, MTU: o.MTU, ClientWAN: &wc})
	if err != nil {
		return err
	}
	lo.Seed = topo.ClientWAN.Seed()
	if out, err := topo.Backends.Run(ctx, "sysctl", "-n", "net.ipv4.tcp_congestion_control"); err == nil {
		lo.KernelDefault = strings.TrimSpace(out)
	}
	// The server xdproxy's backend leg reaches (its sender is xdproxy's
	// engine on the lossy leg), and one per kernel side, each with its
	// congestion control.
	backend := fmt.Sprintf("%s:%d", topo.BackendAddrs[0], downloadBackendPort)
	ln, err := topo.Backends.ListenTCP(backend)
	if err != nil {
		return err
	}
	defer ln.Close()
	go serve(ln, downloadConn)
	sides := lo.sides()
	for i := range sides {
		sd := &sides[i]
		if sd.kind == "xdproxy" {
			sd.addr = fmt.Sprintf("%s:%d", listenIP, downloadProxyPort)
			continue
		}
		sd.addr = fmt.Sprintf("%s:%d", topo.BackendAddrs[0], downloadBackendPort+1+i)
		kln, err := listenCC(topo.Backends, sd.addr, sd.cc)
		if err != nil {
			return err
		}
		defer kln.Close()
		go serve(kln, downloadConn)
	}

	// xdproxy, dial: xdp, one listener to the download server; restarted
	// when the next side runs another congestion control.
	var in *instance
	runningCC := ""
	defer func() {
		if in != nil {
			in.stop()
		}
	}()
	startXdproxy := func(cc string) error {
		if in != nil && runningCC == cc {
			return nil
		}
		if in != nil {
			in.stop()
			in = nil
		}
		tcp := fmt.Sprintf("tcp:\n  congestion_control: %s\n", cc)
		if lo.BufferKiB > 0 {
			tcp += fmt.Sprintf("  snd_buffer: %dKiB\n  rcv_buffer: %dKiB\n", lo.BufferKiB, lo.BufferKiB)
		}
		cfg := fmt.Sprintf(`interfaces:
  - name: %s
listeners:
  - name: download
    address: %s:%d
    dial: xdp
    connect_timeout: 3s
    idle_timeout: 10m
    backends:
      - address: %s
%sclient_timeout: 0s
drain_timeout: 1s
admin:
  address: %s
log:
  level: info
  format: text
`, topo.ProxyIf, listenIP, downloadProxyPort, backend, tcp, xdproxyAdmin)
		path := filepath.Join(tmp, "xdproxy-loss.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return err
		}
		var err error
		if in, err = runXdproxy(ctx, topo.Proxy, bin, path); err != nil {
			return err
		}
		runningCC = cc
		if err := waitDownloads(ctx, topo.Client, fmt.Sprintf("%s:%d", listenIP, downloadProxyPort)); err != nil {
			return fmt.Errorf("xdproxy (%s) not serving: %w", cc, err)
		}
		return nil
	}
	admin := adminClient(topo.Proxy)
	for _, sd := range sides {
		if sd.kind == "xdproxy" {
			continue
		}
		if err := waitDownloads(ctx, topo.Client, sd.addr); err != nil {
			return fmt.Errorf("%s path not serving: %w", sd.name, err)
		}
	}

	res := &LossResults{Date: time.Now().UTC().Format(time.RFC3339), Command: o.Command, Machine: machineInfo(),
		Versions: versions(bin), Settings: *lo, Queues: o.Queues, LoadAvg: []string{loadAvg()}}
	size := int64(lo.MiB) << 20
	total := len(lo.RTTs) * len(lo.Losses) * lo.Repeats * len(sides)
	logf("loss workload: lab %s, %d MiB downloads, %d cells × %d repeats × %d sides, emulator seed %d, kernel default %s",
		l.Prefix(), lo.MiB, len(lo.RTTs)*len(lo.Losses), lo.Repeats, len(sides), lo.Seed, lo.KernelDefault)
	for _, rtt := range lo.RTTs {
		for _, loss := range lo.Losses {
			if err := topo.ClientWAN.Set(lo.lossConfig(rtt, loss)); err != nil {
				return err
			}
			for rep := range lo.Repeats {
				for i := range sides {
					// Turns rotate each repeat: no side always runs first.
					sd := sides[(i+rep)%len(sides)]
					if ctx.Err() != nil {
						return ctx.Err()
					}
					if sd.kind == "xdproxy" {
						if err := startXdproxy(sd.cc); err != nil {
							return err
						}
					}
					r := LossRun{RTTms: ms(rtt), LossPct: loss, Repeat: rep, Side: sd.name}
					lossRun(ctx, topo, admin, sd.kind, sd.addr, size, lo.Timeout, &r)
					res.Runs = append(res.Runs, r)
					logf("  [%d/%d %s] %5.0f ms %4g%% %-14s %s", len(res.Runs), total, time.Since(start).Round(time.Second),
						ms(rtt), loss, sd.name, r.brief())
					if in != nil {
						select {
						case <-in.proc.Done():
							return fmt.Errorf("xdproxy exited: %v\n%s", in.proc.Wait(), tail(in.proc.Output(), 3000))
						default:
						}
					}
				}
			}
		}
	}
	res.Seconds = time.Since(start).Seconds()
	res.LoadAvg = append(res.LoadAvg, loadAvg())
	res.summarize()
	if in != nil {
		for _, line := range strings.Split(in.proc.Output(), "\n") {
			if strings.Contains(line, "level=ERROR") {
				res.Notes = append(res.Notes, "xdproxy logged: "+line)
				break
			}
		}
	}
	md := res.markdown()
	if err := res.write(o.Out, md); err != nil {
		return err
	}
	fmt.Println(md)
	logf("wrote %s/loss.json, loss.md in %.0fs", o.Out, res.Seconds)
	return nil
}

// waitDownloads makes a first small download from addr until one succeeds
// (neighbours resolved, the path serving), for up to 50 tries.
func waitDownloads(ctx context.Context, ns *lab.NS, addr string) error {
	var last error
	for range 50 {
		if _, last = fetch(ctx, ns, addr, 1<<20, 5*time.Second); last == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// lossRun runs one download and reads the sender's counters and the
// emulator's around it.
func lossRun(ctx context.Context, topo *lab.Topology, admin *http.Client, kind, addr string, size int64, timeout time.Duration, r *LossRun) {
	counters := func() (retrans, rtos float64, err error) {
		if kind == "xdproxy" {
			return engineCounters(ctx, admin)
		}
		return kernelCounters(ctx, topo.Backends)
	}
	r.Seconds, r.Retransmits, r.RTOs = nan, nan, nan
	re0, rto0, err0 := counters()
	w0, werr0 := topo.ClientWAN.Stats()
	d, err := fetch(ctx, topo.Client, addr, size, timeout)
	re1, rto1, err1 := counters()
	w1, werr1 := topo.ClientWAN.Stats()
	if err != nil {
		r.Error = err.Error()
		return
	}
	r.Seconds = num(d.Seconds())
	if err := errors.Join(err0, err1); err != nil {
		r.Error = "counters: " + err.Error()
	} else {
		r.Retransmits, r.RTOs = num(re1-re0), num(rto1-rto0)
	}
	if werr0 == nil && werr1 == nil {
		drops := func(s lab.WANStats) (loss, other uint64) {
			return s.AtoB.Dropped.Loss + s.BtoA.Dropped.Loss,
				s.AtoB.Dropped.Total() + s.BtoA.Dropped.Total() - s.AtoB.Dropped.Loss - s.BtoA.Dropped.Loss
		}
		l0, o0 := drops(w0)
		l1, o1 := drops(w1)
		r.WANLoss, r.WANOther = l1-l0, o1-o0
	}
}

func (r LossRun) brief() string {
	if math.IsNaN(float64(r.Seconds)) {
		return "ERROR " + firstLine(r.Error)
	}
	s := fmt.Sprintf("%7.2fs, %s retransmits, %s RTOs; emulator dropped %d (%d not asked for)",
		float64(r.Seconds), f0(r.Retransmits), f0(r.RTOs), r.WANLoss, r.WANOther)
	if r.Error != "" {
		s += "; " + firstLine(r.Error)
	}
	return s
}

// Engine counters read from xdproxy's /metrics for the loss workload.
const (
	metricTCPEvents = "xdproxy_tcp_events_total"
	eventRetransmit = "retransmits"
	eventRTO        = "rto_recoveries"
)

// engineCounters reads the engine's retransmissions and retransmission
// timeouts (every shard, both legs) from xdproxy's /metrics.
func engineCounters(ctx context.Context, admin *http.Client) (retrans, rtos float64, err error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+xdproxyAdmin+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := admin.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseEngineCounters(resp.Body)
}

// parseEngineCounters takes the engine's retransmissions and
// retransmission timeouts from a /metrics exposition.
func parseEngineCounters(r io.Reader) (retrans, rtos float64, err error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return 0, 0, err
	}
	found := map[string]float64{}
	for _, m := range fams[metricTCPEvents].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "counter" {
				found[lp.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	for _, k := range []string{eventRetransmit, eventRTO} {
		if _, ok := found[k]; !ok {
			return 0, 0, fmt.Errorf("/metrics has no %s{counter=%q}", metricTCPEvents, k)
		}
	}
	return found[eventRetransmit], found[eventRTO], nil
}

// kernelCounters reads the kernel's retransmitted segments and
// retransmission timeouts in ns with nstat (absolute values, history
// untouched).
func kernelCounters(ctx context.Context, ns *lab.NS) (retrans, rtos float64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := ns.Run(ctx, "nstat", "-asz", "TcpRetransSegs", "TcpExtTCPTimeouts")
	if err != nil {
		return 0, 0, err
	}
	re, to, err := parseNstat(out)
	if err != nil {
		return 0, 0, fmt.Errorf("nstat in %s: %w", ns.Name, err)
	}
	return re, to, nil
}

// parseNstat takes TcpRetransSegs and TcpExtTCPTimeouts from nstat's
// output.
func parseNstat(out string) (retrans, rtos float64, err error) {
	found := map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				found[f[0]] = v
			}
		}
	}
	re, ok1 := found["TcpRetransSegs"]
	to, ok2 := found["TcpExtTCPTimeouts"]
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("no TcpRetransSegs or TcpExtTCPTimeouts in %q", out)
	}
	return re, to, nil
}

func (res *LossResults) summarize() {
	lo := res.Settings
	res.Cells = nil
	for _, rtt := range lo.RTTs {
		for _, loss := range lo.Losses {
			c := LossCell{RTTms: ms(rtt), LossPct: loss, Seconds: map[string]num{}, MinSeconds: map[string]num{}, MaxSeconds: map[string]num{},
				Retransmits: map[string]num{}, RTOs: map[string]num{}, OK: map[string]int{}}
			for _, side := range lo.sideNames() {
				var secs, re, to []float64
				for _, r := range res.Runs {
					if r.RTTms != c.RTTms || r.LossPct != loss || r.Side != side || math.IsNaN(float64(r.Seconds)) {
						continue
					}
					secs = append(secs, float64(r.Seconds))
					re = append(re, float64(r.Retransmits))
					to = append(to, float64(r.RTOs))
				}
				c.OK[side] = len(secs)
				c.Seconds[side], c.Retransmits[side], c.RTOs[side] = median(secs), median(re), median(to)
				c.MinSeconds[side], c.MaxSeconds[side] = nan, nan
				if len(secs) > 0 {
					c.MinSeconds[side], c.MaxSeconds[side] = num(slices.Min(secs)), num(slices.Max(secs))
				}
			}
			c.Ratios = map[string]num{}
			for _, x := range lo.XdproxyCC {
				for _, k := range lo.KernelCC {
					c.Ratios[ratioKey(x, k)] = nan
					if ks := c.Seconds["kernel-"+k]; ks > 0 {
						c.Ratios[ratioKey(x, k)] = c.Seconds["xdproxy-"+x] / ks
					}
				}
			}
			res.Cells = append(res.Cells, c)
		}
	}
}

// ratioKey names the ratio of xdproxy running xcc to the kernel running kcc.
func ratioKey(xcc, kcc string) string { return "xdproxy-" + xcc + "/kernel-" + kcc }

func (c LossCell) name() string {
	return fmt.Sprintf("%g ms, %g%%", c.RTTms, c.LossPct)
}

func secsRange(c LossCell, side string) string {
	if math.IsNaN(float64(c.Seconds[side])) {
		return "–"
	}
	return fmt.Sprintf("%.2f (%.2f-%.2f)", float64(c.Seconds[side]), float64(c.MinSeconds[side]), float64(c.MaxSeconds[side]))
}

func (res *LossResults) markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	lo := res.Settings
	w("# Loss workload: xdproxy against kernel-to-kernel over a lossy WAN path\n\n")
	w("%s; %s, %d cores, Linux %s; %s.\n\n", res.Date, res.Machine.CPU, res.Machine.Cores, res.Machine.Kernel, res.Versions["xdproxy"])
	w("`%s`\n\n", res.Command)
	bottleneck := "no rate limit"
	if lo.Rate > 0 {
		bottleneck = fmt.Sprintf("a %s bottleneck each way", formatBits(lo.Rate))
	}
	buf := "its default buffers"
	if lo.BufferKiB > 0 {
		buf = fmt.Sprintf("tcp.snd_buffer and rcv_buffer %d KiB (Linux's tcp_wmem maximum is 4 MiB)", lo.BufferKiB)
	}
	w("%d MiB downloads over the lab's WAN emulator on the client leg (the RTT added, random loss each way at the rate given, %s; emulator seed %d). "+
		"xdproxy: client → emulator → router → xdproxy (dial: xdp, %d shards, %s) → backend; kernel: client → emulator → router → the same backend server, directly. "+
		"Medians of %d downloads per side and cell, taking turns; time from the dial to the last byte, every byte checked. "+
		"Retransmits and RTOs per download are the sender's: xdproxy's engine counters (`retransmits`, `rto_recoveries`, both legs), "+
		"the backend namespace's nstat `TcpRetransSegs`, `TcpExtTCPTimeouts` for the kernel.\n\n",
		lo.MiB, bottleneck, lo.Seed, res.Queues, buf, lo.Repeats)
	names := lo.sideNames()
	w("Sides: xdproxy with each `tcp.congestion_control` given (%s), the kernel with each congestion control given (%s; set on the server's listening socket, TCP_CONGESTION; this lab's default is %s). "+
		"Ratios are xdproxy's median time over the kernel's, for each pair.\n\n", strings.Join(lo.XdproxyCC, ", "), strings.Join(lo.KernelCC, ", "), lo.KernelDefault)
	w("| cell (RTT, loss) |")
	for _, n := range names {
		w(" %s s (min-max) |", n)
	}
	for _, x := range lo.XdproxyCC {
		for _, k := range lo.KernelCC {
			w(" %s |", ratioKey(x, k))
		}
	}
	w(" retransmits %s | RTOs %s |\n", strings.Join(names, " / "), strings.Join(names, " / "))
	w("|---|%s%s---|---|\n", strings.Repeat("---|", len(names)), strings.Repeat("---:|", len(lo.XdproxyCC)*len(lo.KernelCC)))
	for _, c := range res.Cells {
		w("| %s |", c.name())
		for _, n := range names {
			w(" %s |", secsRange(c, n))
		}
		for _, x := range lo.XdproxyCC {
			for _, k := range lo.KernelCC {
				w(" %s× |", fN(c.Ratios[ratioKey(x, k)], 2))
			}
		}
		var re, to []string
		for _, n := range names {
			re, to = append(re, f0(c.Retransmits[n])), append(to, f0(c.RTOs[n]))
		}
		w(" %s | %s |\n", strings.Join(re, " / "), strings.Join(to, " / "))
	}
	var notes []string
	for _, c := range res.Cells {
		for _, side := range names {
			if c.OK[side] < lo.Repeats {
				notes = append(notes, fmt.Sprintf("%s, %s: %d of %d downloads failed (loss.json has the errors).", c.name(), side, lo.Repeats-c.OK[side], lo.Repeats))
			}
		}
	}
	var other uint64
	for _, r := range res.Runs {
		other += r.WANOther
	}
	if other > 0 {
		notes = append(notes, fmt.Sprintf("The emulator dropped %d frames it was not asked to (its bottleneck queue or RX rings; per download in loss.json).", other))
	}
	notes = append(notes, res.Notes...)
	if len(notes) > 0 {
		w("\n")
		for _, n := range notes {
			w("- %s\n", n)
		}
	}
	w("\nRun time %.0f s; load average %s at the start, %s at the end.\n", res.Seconds, get(res.LoadAvg, 0), get(res.LoadAvg, 1))
	return b.String()
}

// formatBits writes bit/s with an SI prefix.
func formatBits(bps float64) string {
	switch {
	case bps >= 1e9:
		return strconv.FormatFloat(bps/1e9, 'g', 4, 64) + " Gbit/s"
	case bps >= 1e6:
		return strconv.FormatFloat(bps/1e6, 'g', 4, 64) + " Mbit/s"
	}
	return strconv.FormatFloat(bps, 'g', 4, 64) + " bit/s"
}

func (res *LossResults) write(dir, md string) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return writeFiles(dir, map[string][]byte{"loss.json": append(b, '\n'), "loss.md": []byte(md)})
}

// get is s[i], or "?" past its end.
func get(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "?"
}
