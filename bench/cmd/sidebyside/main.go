// Command sidebyside is `make bench`: xdproxy against the proxies its users
// would otherwise pick, side by side in one run, in the lab topology
// (internal/lab: client — router — proxy (p0, XDP) — backends).
//
// -shape picks the lab's deployment shape. one-armed (the default): the
// proxy has one veth p0 and reaches the backends (10.10.2.2/.3) through the
// router. two-armed: the proxy's front veth p0 faces the router and the
// clients, its back veth p1 has the backends (10.10.3.2/.3) on-link, and
// every contender runs there: xdproxy's config lists both interfaces (each
// leg leaves by the one the kernel's route names), the kernel proxies reach
// the backends through p1 by the kernel's route. -back-queues gives p1 its
// own queue count (default: -queues). The router has no route to the back
// subnet, so two-armed the direct path is client → router → the proxy
// namespace's kernel forwarding p0 → p1 → backends: for the direct
// contender only, the router gets a route to 10.10.3.0/24 via p0 and the
// proxy namespace forwards (the same links as the proxies' traffic, one
// forwarding hop more than one-armed's direct path). The raw XSK rate is
// that of the front link (p0 ⇄ router) in both shapes.
//
// Contenders: xdproxy with dial: xdp; xdproxy with dial: kernel; HAProxy
// (mode tcp, nbthread = xdproxy's shards); nginx stream (as many workers); a plain Go io.Copy proxy
// (this binary, `sidebyside gocopy`); and the direct path (no proxy) as the
// ceiling. Each proxy runs alone in the proxy namespace (nothing else is
// attached to p0 while a kernel proxy is measured) and listens on
// 10.10.1.1:7000-7004; the backends are Go servers in this process, in the
// backend namespace, on 10.10.2.2 and 10.10.2.3 (echo, source, sink, a
// minimal HTTP responder; iperf3 -s on the first).
//
// Workloads, from the load generator (bench/loadgen) running as a child
// process in the client namespace: connection rate; request/response over
// kept-alive connections at fixed offered rates (open loop, latency from the
// scheduled send) and at the maximum rate (closed loop); bulk download with
// 1 and 8 streams; idle connections (proxy RSS per 10,000). Each proxy's CPU
// (utime+stime of its process tree, /proc/<pid>/stat) is read around each
// workload, and xdproxy's frames through its AF_XDP sockets (its /metrics),
// and so is the whole machine's busy time (/proc/stat): per connection,
// request and GiB, minus the direct path's in the same round, it is what
// each proxy adds to the machine (marginal.go), with xdproxy's frames and
// data-path kernel entries per unit beside it. -base-bin runs a second
// xdproxy binary as one more contender, xdproxy-base, for a before/after
// in the same run.
// At the start of every round, with no contender running, the raw XSK frame
// rate of the proxy's veth is measured (bench/rawxsk), to show xdproxy's
// frame rates as fractions of it. Rounds: every round starts each contender
// afresh, in an order rotated by one per round, and runs all workloads
// against it; the report gives the median over rounds. Cross-checks in the
// first round: wrk against the loadgen's closed-loop request/response on
// the same HTTP service, and iperf3 against the loadgen's one-stream
// download.
//
// Output (-out): latest.json (every number of every round; settings.shape
// names the shape), latest.md (the tables, with ratios to HAProxy and to
// the direct path, also printed to stdout; the heading names the shape) and
// latency.svg (latency percentiles at each offered rate). A two-armed run
// writes latest-two-armed.json, latest-two-armed.md and
// latency-two-armed.svg instead, beside the one-armed files, never over
// them. With -pprof DIR, xdproxy's CPU profile over each workload's window
// is saved as DIR/<shape>-r<round>-<contender>-<workload>.pprof.
//
// -workloads loss is a run of its own (loss.go): a lab with the WAN
// emulator on the client leg, xdproxy (dial: xdp) against kernel-to-kernel
// downloads over the same emulated path at each loss rate and RTT
// (-loss-rates, -loss-rtts, -loss-repeats, -loss-mib, -loss-bottleneck,
// -loss-buffer-kib), with each side's retransmits and RTOs; it writes
// loss.json and loss.md (`make bench-loss`).
//
// Needs root. Everything lives in the lab's namespaces and is removed on
// exit, failure or Ctrl-C.
//
// Other modes of the binary: `sidebyside loadgen KIND JSON` (the load
// generator child), `sidebyside gocopy -map ...` (the Go proxy),
// `sidebyside microtable < go-test-bench-output` (make bench-micro's table).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/bench/loadgen"
	"github.com/xdproxy/xdproxy/internal/lab"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "loadgen":
			os.Exit(loadgenMain(os.Args[2:]))
		case "gocopy":
			os.Exit(gocopyMain(os.Args[2:]))
		case "microtable":
			os.Exit(microtableMain(os.Args[2:]))
		}
	}
	o, contenders, err := parseArgs(os.Args[1:], os.Stderr)
	var fe flagError
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, &fe): // the flag package has said what and printed the usage
		os.Exit(2)
	case err != nil:
		fmt.Fprintf(os.Stderr, "sidebyside: %v\n", err)
		os.Exit(2)
	}
	run := run
	if o.Workloads == "loss" {
		run = func(o *options, _ []contender) error { return runLoss(o) }
	}
	if err := run(o, contenders); err != nil {
		fmt.Fprintf(os.Stderr, "sidebyside: FAILED: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	Bin         string        `json:"bin"`
	Out         string        `json:"-"`
	Rounds      int           `json:"rounds"`
	Duration    time.Duration `json:"duration_ns"`
	Warmup      time.Duration `json:"warmup_ns"`
	ConnClients int           `json:"conn_clients"`
	RRConns     int           `json:"rr_conns"`
	RatesFlag   string        `json:"-"`
	Rates       []float64     `json:"rates"`
	Idle        int           `json:"idle_conns"`
	IdleRounds  int           `json:"idle_rounds"`
	Upload      bool          `json:"upload"`
	CrossFlag   string        `json:"crosscheck"`
	Shape       string        `json:"shape"`                 // one-armed or two-armed (lab.Shape's names)
	Queues      int           `json:"queues"`                // of the proxy's (front) link
	BackQueues  int           `json:"back_queues,omitempty"` // of the back link, two-armed (0: Queues)
	MTU         int           `json:"mtu,omitempty"`
	Workloads   string        `json:"workloads,omitempty"`
	Only        string        `json:"contenders,omitempty"`
	Raw         time.Duration `json:"raw_xsk_ns"`
	Pprof       string        `json:"-"`
	BaseBin     string        `json:"base_bin,omitempty"` // -base-bin: a second xdproxy binary, the xdproxy-base contender
	Command     string        `json:"command"`
	Loss        lossOptions   `json:"-"` // -workloads loss
}

// flagError is an error of the flag package, which has printed it with
// the usage already.
type flagError struct{ error }

func (e flagError) Unwrap() error { return e.error }

// parseArgs parses and checks the command line (usage and flag errors to
// out) and picks the contenders to run.
func parseArgs(args []string, out io.Writer) (*options, []contender, error) {
	o := &options{}
	fs := flag.NewFlagSet("sidebyside", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.Bin, "bin", "bin/xdproxy", "the xdproxy binary (make build)")
	fs.StringVar(&o.Out, "out", "bench/results", "output directory (one-armed: latest.json, latest.md, latency.svg; two-armed: latest-two-armed.json, latest-two-armed.md, latency-two-armed.svg)")
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds (each contender started afresh per round, order rotated)")
	fs.DurationVar(&o.Duration, "d", 2*time.Second, "measured window of each workload")
	fs.DurationVar(&o.Warmup, "warmup", 300*time.Millisecond, "warm-up before each window (not counted)")
	fs.IntVar(&o.ConnClients, "conn-clients", 32, "parallel clients in the connection-rate workload")
	fs.IntVar(&o.RRConns, "rr-conns", 16, "kept-alive connections in the request/response workloads")
	fs.StringVar(&o.RatesFlag, "rates", "2000,10000,20000", "offered request rates (req/s, all connections together) of the open-loop runs")
	fs.IntVar(&o.Idle, "idle", 10000, "idle connections for the memory measurement (0: skip)")
	fs.IntVar(&o.IdleRounds, "idle-rounds", 1, "rounds that measure idle memory (the first ones)")
	fs.BoolVar(&o.Upload, "upload", false, "also measure a one-stream bulk upload")
	fs.StringVar(&o.CrossFlag, "crosscheck", "all", "contenders cross-checked with wrk and iperf3 in the first round: all, none, or a comma list")
	fs.StringVar(&o.Shape, "shape", lab.OneArmed.String(), "lab topology: one-armed (backends behind the router, one proxy veth p0) or two-armed (front veth p0 towards the router, back veth p1 with the backends on-link)")
	fs.IntVar(&o.Queues, "queues", 1, "queues of the proxy's (front) veth: xdproxy's shards, HAProxy's threads, nginx's workers (1: a veth as Linux creates it; on a multi-queue veth a peer's frames land on a queue its socket's random hash picks, and about half cross between shards)")
	fs.IntVar(&o.BackQueues, "back-queues", 0, "queues of the back veth, -shape two-armed only (0: -queues)")
	fs.IntVar(&o.MTU, "mtu", 0, "MTU of every lab link (0: 1500); above 2026 xdproxy uses 4 KiB frames")
	fs.StringVar(&o.Workloads, "workloads", "", "comma list of workloads to run (default all: "+strings.Join(allWorkloads, ",")+"; rr means every offered rate)")
	fs.StringVar(&o.Only, "contenders", "", "comma list of contenders to run (default all: "+contenderNames()+")")
	fs.DurationVar(&o.Raw, "raw", 2*time.Second, "raw XSK frame rate of the proxy's (front) veth, TX and RX, measured this long each at the start of every round (0: skip)")
	fs.StringVar(&o.Pprof, "pprof", "", "directory for CPU profiles of xdproxy (its /debug/pprof/profile over each workload's window; \"\": none)")
	fs.StringVar(&o.BaseBin, "base-bin", "", "a second xdproxy binary (say, main's) run as one more contender, xdproxy-base (dial: xdp), for a before/after in the same run (\"\": none)")
	o.Loss.flags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, err
		}
		return nil, nil, flagError{err}
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.Command = "go run ./bench/cmd/sidebyside " + strings.Join(args, " ")
	for _, f := range strings.Split(o.RatesFlag, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		r, err := strconv.ParseFloat(f, 64)
		if err != nil || r <= 0 {
			return nil, nil, fmt.Errorf("-rates: bad rate %q", f)
		}
		o.Rates = append(o.Rates, r)
	}
	if o.Rounds < 1 || o.Duration <= 0 || o.ConnClients < 1 || o.RRConns < 1 || o.Queues < 1 {
		return nil, nil, errors.New("-rounds, -d, -conn-clients, -rr-conns and -queues must be positive")
	}
	if o.Raw < 0 {
		return nil, nil, errors.New("-raw must not be negative")
	}
	if o.MTU != 0 && (o.MTU < 576 || o.MTU > 4074) {
		return nil, nil, fmt.Errorf("-mtu: %d is outside 576..4074 (one 4 KiB AF_XDP frame)", o.MTU)
	}
	shape, err := parseShape(o.Shape)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case o.BackQueues < 0:
		return nil, nil, errors.New("-back-queues must not be negative")
	case o.BackQueues > 0 && shape != lab.TwoArmed:
		return nil, nil, errors.New("-back-queues needs -shape two-armed")
	}
	for _, w := range strings.Split(o.Workloads, ",") {
		if o.Workloads != "" && !slices.Contains(allWorkloads, w) && w != "loss" {
			return nil, nil, fmt.Errorf("-workloads: unknown %q (have %s, and loss on its own)", w, strings.Join(allWorkloads, ","))
		}
	}
	if slices.Contains(strings.Split(o.Workloads, ","), "loss") {
		switch {
		case o.Workloads != "loss":
			return nil, nil, errors.New("-workloads loss runs on its own (a lab with the WAN emulator on the client leg): give it alone")
		case o.Only != "":
			return nil, nil, errors.New("-workloads loss compares xdproxy (dial: xdp) with the kernel alone: no -contenders")
		case shape != lab.OneArmed:
			return nil, nil, errors.New("-workloads loss runs in the one-armed lab only")
		case o.MTU > 2030:
			return nil, nil, errors.New("-workloads loss: the WAN emulator's MTU is at most 2030")
		}
		if err := o.Loss.check(); err != nil {
			return nil, nil, err
		}
	}
	contenders := allContenders
	if o.Only != "" {
		contenders = nil
		for _, n := range strings.Split(o.Only, ",") {
			i := slices.IndexFunc(allContenders, func(c contender) bool { return c.name == strings.TrimSpace(n) })
			if i < 0 {
				return nil, nil, fmt.Errorf("-contenders: unknown %q (have %s)", n, contenderNames())
			}
			contenders = append(contenders, allContenders[i])
		}
	}
	if o.BaseBin != "" {
		if o.Workloads == "loss" {
			return nil, nil, errors.New("-base-bin does not apply to -workloads loss")
		}
		contenders = append(slices.Clone(contenders), baseContender(o.BaseBin))
	}
	return o, contenders, nil
}

// parseShape is the lab shape named by -shape.
func parseShape(name string) (lab.Shape, error) {
	for _, s := range []lab.Shape{lab.OneArmed, lab.TwoArmed} {
		if name == s.String() {
			return s, nil
		}
	}
	return 0, fmt.Errorf("-shape: unknown %q (have %s, %s)", name, lab.OneArmed, lab.TwoArmed)
}

// shape is the lab shape of the run (parseArgs has checked the name).
func (o *options) shape() lab.Shape {
	s, _ := parseShape(o.Shape)
	return s
}

// shards is how many shards xdproxy runs (one per queue of its busiest
// interface), and so how many threads or workers the kernel proxies get:
// the targets compare them with as many threads as xdproxy has shards.
func (o *options) shards() int {
	if o.shape() == lab.TwoArmed {
		return max(o.Queues, o.backQueues())
	}
	return o.Queues
}

// backQueues is the queue count of the back link (two-armed).
func (o *options) backQueues() int {
	if o.BackQueues > 0 {
		return o.BackQueues
	}
	return o.Queues
}

// allWorkloads are the workloads of -workloads, in the order they run.
var allWorkloads = []string{"idle", "connrate", "rr", "rr-max", "bulk1", "bulk8"}

// planned is how many workloads a run with n contenders measures.
func (o *options) planned(n int) int {
	perBlock := 0
	for _, w := range []string{"connrate", "rr-max", "bulk1", "bulk8"} {
		if o.runs(w) {
			perBlock++
		}
	}
	if o.runs("rr") {
		perBlock += len(o.Rates)
	}
	if o.Upload {
		perBlock++
	}
	total := o.Rounds * n * perBlock
	if o.Idle > 0 && o.runs("idle") {
		total += min(o.IdleRounds, o.Rounds) * n
	}
	return total
}

// runs reports whether -workloads selects the workload w.
func (o *options) runs(w string) bool {
	if o.Workloads == "" {
		return true
	}
	return slices.Contains(strings.Split(o.Workloads, ","), w)
}

func contenderNames() string {
	var n []string
	for _, c := range allContenders {
		n = append(n, c.name)
	}
	return strings.Join(n, ",")
}

type harness struct {
	opt       options
	topo      *lab.Topology
	bin, self string
	tmp       string
	res       *Results
	admin     *http.Client // to xdproxy's admin endpoint, from the proxy namespace
	start     time.Time
	total     int // workloads planned, for progress
	done      int
	nofile    int      // RLIMIT_NOFILE of this process and its children
	notes     []string // for the report
}

// idleConns is how many idle connections the idle measurement opens
// through c: -idle, or fewer if the descriptor limit would not hold them
// (the load generator holds one per connection too, the backends one).
func (h *harness) idleConns(c contender) int {
	n := h.opt.Idle
	if c.fdsPerConn > 0 {
		n = min(n, (h.nofile-400)/c.fdsPerConn)
	}
	return min(n, h.nofile-400)
}

// raiseNofile raises RLIMIT_NOFILE as far as allowed (1<<20, else the hard
// limit) and returns it. Children inherit it (an explicit Setrlimit also
// stops Go from restoring the original soft limit in them).
func raiseNofile() int {
	var cur unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &cur)
	lim := unix.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if lim.Max < cur.Max {
		lim = cur
	}
	if unix.Setrlimit(unix.RLIMIT_NOFILE, &lim) != nil {
		lim = unix.Rlimit{Cur: cur.Max, Max: cur.Max}
		unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	unix.Getrlimit(unix.RLIMIT_NOFILE, &cur)
	return int(cur.Cur)
}

func run(o *options, contenders []contender) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, XDP, AF_XDP): run it as root")
	}
	h := &harness{opt: *o, start: time.Now()}
	if h.bin, err = filepath.Abs(o.Bin); err != nil {
		return err
	}
	if slices.ContainsFunc(contenders, func(c contender) bool { return strings.HasPrefix(c.name, "xdproxy") }) {
		if _, err := os.Stat(h.bin); err != nil {
			return fmt.Errorf("xdproxy binary: %w (run `make build`)", err)
		}
	}
	if h.self, err = os.Executable(); err != nil {
		return err
	}
	if err := ensureTools(contenders); err != nil {
		return err
	}
	// Room for the idle connections: the limit is inherited by every
	// process started below (an explicit Setrlimit also stops Go from
	// restoring the original soft limit in children).
	h.nofile = raiseNofile()
	for _, c := range contenders {
		if n := h.idleConns(c); n < o.Idle {
			h.notes = append(h.notes, fmt.Sprintf("Idle memory of %s measured with %s connections and scaled to 10,000: the hard RLIMIT_NOFILE here is %d (no CAP_SYS_RESOURCE to raise it) and it holds %d descriptors per proxied connection.", c.name, commas(float64(n)), h.nofile, c.fdsPerConn))
		}
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	l, tmp, done, err := newRunLab()
	if err != nil {
		return err
	}
	defer func() {
		if cerr := done(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	h.tmp = tmp
	topts := lab.TopologyOpts{Shape: o.shape(), Queues: o.Queues, MTU: o.MTU}
	if topts.Shape == lab.TwoArmed {
		topts.BackQueues = o.BackQueues
	}
	if h.topo, err = l.NewTopologyWith(topts); err != nil {
		return err
	}
	if err := tuneNamespaces(h.topo); err != nil {
		return err
	}
	h.admin = adminClient(h.topo.Proxy)
	bs, err := startBackends(h.topo)
	if err != nil {
		return err
	}
	defer bs.close()
	if _, err := h.topo.Backends.Start(ctx, "iperf3", "-s", "-B", h.topo.BackendAddrs[0].String(), "-p", "5201"); err != nil {
		return err
	}

	h.res = newResults(h, contenders)
	h.res.Notes = append(h.res.Notes, h.notes...)
	cross := map[string]bool{}
	switch o.CrossFlag {
	case "all":
		for _, c := range contenders {
			cross[c.name] = true
		}
	case "none", "":
	default:
		for _, n := range strings.Split(o.CrossFlag, ",") {
			cross[strings.TrimSpace(n)] = true
		}
	}
	h.total = o.planned(len(contenders))
	logf("lab up (%s, %s, %s); %d contenders × %d rounds, %v windows", l.Prefix(), o.Shape, h.linkQueues(), len(contenders), o.Rounds, o.Duration)

	for round := range o.Rounds {
		if o.Raw > 0 && ctx.Err() == nil {
			h.measureRaw(round)
		}
		for slot := range contenders {
			c := contenders[(slot+round)%len(contenders)]
			if err := h.block(ctx, round, slot, c, round == 0 && cross[c.name]); err != nil {
				return err
			}
		}
	}
	h.res.Seconds = time.Since(h.start).Seconds()
	h.res.summarize()
	md := h.res.markdown()
	if err := h.res.write(o.Out, md); err != nil {
		return err
	}
	fmt.Println(md)
	f := outputFiles(o.shape())
	logf("wrote %s/%s, %s, %s in %.0fs", o.Out, f.JSON, f.Markdown, f.SVG, h.res.Seconds)
	return nil
}

// newRunLab makes a run's lab and temporary directory; done tears the lab
// down and removes the directory.
func newRunLab() (l *lab.Lab, tmp string, done func() error, err error) {
	if tmp, err = os.MkdirTemp("", "sidebyside-"); err != nil {
		return nil, "", nil, err
	}
	if l, err = lab.New(nil); err != nil {
		os.RemoveAll(tmp)
		return nil, "", nil, err
	}
	return l, tmp, func() error {
		logf("tearing down the lab")
		defer os.RemoveAll(tmp)
		return l.Close()
	}, nil
}

// linkQueues says which proxy interfaces the run has and their queues.
func (h *harness) linkQueues() string {
	s := fmt.Sprintf("%d queues on %s", h.opt.Queues, h.topo.ProxyIf)
	if h.topo.BackLink != nil {
		s += fmt.Sprintf(", %d on %s", h.opt.backQueues(), h.topo.BackLink.A.Name)
	}
	return s
}

// ensureTools installs what the chosen contenders and the cross-checks
// need (Debian packages).
func ensureTools(cs []contender) error {
	tools := []string{"ip:iproute2", "ethtool:ethtool", "iperf3:iperf3", "wrk:wrk"}
	for _, c := range cs {
		switch c.name {
		case "haproxy":
			tools = append(tools, "haproxy:haproxy")
		case "nginx":
			tools = append(tools, "nginx:nginx")
		}
	}
	if err := lab.EnsureTools(tools...); err != nil {
		return err
	}
	if slices.ContainsFunc(cs, func(c contender) bool { return c.name == "nginx" }) {
		if _, err := os.Stat(nginxStreamModule); err != nil {
			// The stream module is a separate Debian package, only
			// recommended by nginx.
			cmd := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", "libnginx-mod-stream")
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("installing libnginx-mod-stream: %v\n%s", err, out)
			}
		}
	}
	return nil
}

// tuneNamespaces lets the client and the kernel proxies open connections
// at a high rate: a wide ephemeral port range and reuse of TIME_WAIT for
// outgoing connections (timestamps make it safe), the same for every
// contender. (xdproxy reserves its own source ports from the proxy
// namespace's range while it runs.)
func tuneNamespaces(t *lab.Topology) error {
	for _, ns := range []*lab.NS{t.Client, t.Proxy} {
		err := ns.Do(func() error {
			for path, v := range map[string]string{
				"/proc/sys/net/ipv4/ip_local_port_range": "1024 65535",
				"/proc/sys/net/ipv4/tcp_tw_reuse":        "1",
			} {
				if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
					return fmt.Errorf("%s: %s: %w", ns.Name, path, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}

// block starts contender c, runs every workload against it and stops it.
func (h *harness) block(ctx context.Context, round, slot int, c contender, cross bool) error {
	logf("round %d/%d, %d: %s", round+1, h.opt.Rounds, slot+1, c.name)
	in, err := c.start(ctx, h)
	if err == nil {
		if err = waitServing(ctx, h, in, 30*time.Second); err != nil {
			in.stop()
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		h.res.Runs = append(h.res.Runs, Run{Round: round, Slot: slot, Contender: c.name, Workload: "start", Error: err.Error()})
		logf("  %s did not start: %v", c.name, err)
		return nil
	}
	o := h.opt
	if o.Idle > 0 && round < o.IdleRounds && o.runs("idle") {
		h.measure(ctx, round, slot, c.name, in, "idle", func(r *Run) error { return h.idle(ctx, in, h.idleConns(c), r) })
	}
	if o.runs("connrate") {
		h.measure(ctx, round, slot, c.name, in, "connrate", func(r *Run) error {
			r.ConnRate = &loadgen.ConnRateResult{}
			return h.runLoadgen(ctx, "connrate", loadgen.ConnRateConfig{
				Addrs: in.addrs["echo"], Concurrency: o.ConnClients, Warmup: o.Warmup, Duration: o.Duration, ReqSize: 64,
			}, r.ConnRate)
		})
	}
	rr := func(rate float64) func(r *Run) error {
		return func(r *Run) error {
			r.RR = &loadgen.RRResult{}
			return h.runLoadgen(ctx, "rr", loadgen.RRConfig{
				Addrs: in.addrs["echo"], Conns: o.RRConns, Rate: rate, Warmup: o.Warmup, Duration: o.Duration, Echo: true,
			}, r.RR)
		}
	}
	for _, rate := range o.Rates {
		if o.runs("rr") {
			h.measure(ctx, round, slot, c.name, in, rrName(rate), rr(rate))
		}
	}
	if o.runs("rr-max") {
		h.measure(ctx, round, slot, c.name, in, "rr-max", rr(0))
	}
	bulk := func(streams int, upload bool) func(r *Run) error {
		svc := "source"
		if upload {
			svc = "sink"
		}
		return func(r *Run) error {
			r.Bulk = &loadgen.BulkResult{}
			return h.runLoadgen(ctx, "bulk", loadgen.BulkConfig{
				Addrs: in.addrs[svc], Streams: streams, Upload: upload, Warmup: o.Warmup, Duration: o.Duration,
			}, r.Bulk)
		}
	}
	if o.runs("bulk1") {
		h.measure(ctx, round, slot, c.name, in, "bulk1", bulk(1, false))
	}
	if o.runs("bulk8") {
		h.measure(ctx, round, slot, c.name, in, "bulk8", bulk(8, false))
	}
	if o.Upload {
		h.measure(ctx, round, slot, c.name, in, "bulk1-up", bulk(1, true))
	}
	if cross && ctx.Err() == nil {
		h.crossCheck(ctx, c.name, in)
	}
	if ctx.Err() != nil {
		in.stop()
		return ctx.Err()
	}
	if err := in.stop(); err != nil {
		h.res.Notes = append(h.res.Notes, fmt.Sprintf("round %d: %s did not stop cleanly: %v", round+1, c.name, firstLine(err.Error())))
	}
	if in.proc != nil {
		for _, line := range strings.Split(in.proc.Output(), "\n") {
			if strings.Contains(line, "level=ERROR") {
				h.res.Notes = append(h.res.Notes, fmt.Sprintf("round %d: %s logged: %s", round+1, c.name, line))
				break
			}
		}
	}
	return nil
}

func rrName(rate float64) string { return "rr@" + strconv.FormatFloat(rate, 'f', -1, 64) }

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// measure runs one workload, reading the contender's CPU and the machine's
// around it, and records the run.
func (h *harness) measure(ctx context.Context, round, slot int, cname string, in *instance, workload string, fn func(*Run) error) {
	if ctx.Err() != nil {
		return
	}
	r := Run{Round: round, Slot: slot, Contender: cname, Workload: workload, ProxyCPU: num(math.NaN())}
	frames := func() *XSKFrames { return nil }
	if workload != "idle" { // opening idle connections is no frame rate
		frames = h.startFrames(ctx, in, h.opt.Warmup+h.opt.Duration)
	}
	profiled := func() {}
	if workload != "idle" {
		profiled = h.startProfile(ctx, in, round, cname, workload)
	}
	pid := in.pid()
	r.LoadAvg = num(loadAvg1())
	cpu0 := cpuSeconds(procTree(pid))
	m0, s0 := machineCPU()
	t0 := time.Now()
	err := fn(&r)
	r.Wall = num(time.Since(t0).Seconds())
	m1, s1 := machineCPU()
	if pid > 0 {
		r.ProxyCPU = num(cpuSeconds(procTree(pid)) - cpu0)
	}
	r.MachineCPU, r.MachineSoftirq = m1-m0, s1-s0
	r.XSK = frames()
	profiled()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		r.Error = err.Error()
		r.ConnRate, r.RR, r.Bulk, r.XSK = nil, nil, nil, nil
	}
	h.res.Runs = append(h.res.Runs, r)
	h.done++
	logf("  [%d/%d %s] %-14s %-9s %s", h.done, h.total, time.Since(h.start).Round(time.Second), cname, workload, r.brief())
	// Let the closes and TIME_WAITs of this workload settle.
	time.Sleep(200 * time.Millisecond)
}

// profileName is the file name of the CPU profile of one workload.
func profileName(shape lab.Shape, round int, contender, workload string) string {
	return fmt.Sprintf("%s-r%d-%s-%s.pprof", shape, round+1, contender, strings.ReplaceAll(workload, "@", "-"))
}

// startProfile takes, with -pprof, a CPU profile of an xdproxy instance
// over a workload's window (from the end of the warm-up, whole seconds of
// it) from its admin endpoint's /debug/pprof/profile, and writes it to the
// -pprof directory. The function it returns waits for the profile.
func (h *harness) startProfile(ctx context.Context, in *instance, round int, contender, workload string) func() {
	if h.opt.Pprof == "" || in.admin == "" {
		return func() {}
	}
	secs := max(1, int(h.opt.Duration/time.Second))
	path := filepath.Join(h.opt.Pprof, profileName(h.opt.shape(), round, contender, workload))
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			select {
			case <-time.After(h.opt.Warmup):
			case <-ctx.Done():
				return ctx.Err()
			}
			c := *h.admin
			c.Timeout = time.Duration(secs)*time.Second + 10*time.Second
			req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", in.admin, secs), nil)
			if err != nil {
				return err
			}
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", resp.Status, firstLine(string(b)))
			}
			if err := os.MkdirAll(h.opt.Pprof, 0o755); err != nil {
				return err
			}
			return os.WriteFile(path, b, 0o644)
		}()
	}()
	return func() {
		if err := <-done; err != nil && ctx.Err() == nil {
			h.res.Notes = append(h.res.Notes, fmt.Sprintf("round %d: %s %s: no CPU profile: %v", round+1, contender, workload, err))
		}
	}
}

// idle opens o.Idle connections through the instance, each with one round
// trip, and reads the proxy's RSS before and after.
func (h *harness) idle(ctx context.Context, in *instance, n int, r *Run) error {
	pid := in.pid()
	m := &IdleMeasure{RSSBeforeKiB: rssKiB(procTree(pid))}
	slab0 := statusKiB("/proc/meminfo", "Slab:")
	b, _ := json.Marshal(loadgen.IdleConfig{Addrs: in.addrs["echo"], N: n, Concurrency: 32, MaxErrors: 100})
	p, err := h.topo.Client.Start(ctx, h.self, "loadgen", "idle", string(b))
	if err != nil {
		return err
	}
	defer p.Stop(10 * time.Second)
	line, err := waitLine(ctx, p.Output, p.Done(), "IDLE-READY ", 120*time.Second)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(line), &m.IdleResult); err != nil {
		return err
	}
	time.Sleep(time.Second) // settle
	m.RSSAfterKiB = rssKiB(procTree(pid))
	m.SlabDeltaKiB = statusKiB("/proc/meminfo", "Slab:") - slab0
	if pid > 0 && m.Open > 0 {
		m.RSSPer10kMiB = num(float64(m.RSSAfterKiB-m.RSSBeforeKiB) / 1024 * 10000 / float64(m.Open))
	} else {
		m.RSSPer10kMiB = num(math.NaN())
	}
	r.Idle = m
	if err := p.Stop(10 * time.Second); err != nil {
		return fmt.Errorf("idle load generator: %w", err)
	}
	time.Sleep(time.Second) // the proxies close their 10,000 backend legs
	if m.Open < n-n/100 {
		return fmt.Errorf("only %d of %d idle connections opened (%d errors: %v)", m.Open, n, m.Errors, m.ErrorSamples)
	}
	if m.Errors > 0 {
		h.res.Notes = append(h.res.Notes, fmt.Sprintf("%s: %d of %d connections failed while opening the idle set (%v); the figure is for the %d that stayed open.", r.Contender, m.Errors, n, m.ErrorSamples, m.Open))
	}
	return nil
}

func machineInfo() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	m.MemMiB = statusKiB("/proc/meminfo", "MemTotal:") / 1024
	return m
}

func versions(bin string) map[string]string {
	v := map[string]string{}
	for name, args := range map[string][]string{
		"xdproxy": {bin, "version"},
		"haproxy": {"haproxy", "-v"},
		"nginx":   {"nginx", "-v"},
		"iperf3":  {"iperf3", "-v"},
		"wrk":     {"wrk", "-v"},
	} {
		out, _ := exec.Command(args[0], args[1:]...).CombinedOutput()
		if s := strings.TrimSpace(firstLine(string(out))); s != "" {
			v[name] = s
		}
	}
	return v
}
