package main

// The kernel-bypass path as a fraction of the raw XSK frame rate: the raw
// rate of the proxy's veth (bench/rawxsk, no contender running), and
// xdproxy's own frames through its AF_XDP sockets during each workload,
// from its admin endpoint's /metrics.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/xdproxy/xdproxy/bench/rawxsk"
	"github.com/xdproxy/xdproxy/internal/lab"
)

// xdproxy's counters of its AF_XDP sockets (proxy/admin/metrics.go), one series
// per interface and queue.
const (
	metricXSKRx = "xdproxy_xsk_rx_frames_total" // descriptors taken from the RX ring
	metricXSKTx = "xdproxy_xsk_tx_frames_total" // frames queued on the TX ring
	// The daemon's kernel entries on its data path: TX kicks (sendto),
	// fill-ring wake-ups (recvfrom), the shards' sleeps in poll(2) and the
	// eventfd writes that wake a sleeping shard.
	metricXSKKicks    = "xdproxy_xsk_tx_kicks_total"
	metricXSKWakeups  = "xdproxy_xsk_wakeups_total"
	metricSleeps      = "xdproxy_shard_sleeps_total"
	metricShardWakeup = "xdproxy_shard_wakeups_total"
)

// RawXSK is the raw XSK frame rate of the proxy's veth in one round,
// measured before the round's first contender starts.
type RawXSK struct {
	Round int          `json:"round"`
	TX    *rawxsk.Rate `json:"tx,omitempty"`
	RX    *rawxsk.Rate `json:"rx,omitempty"`
	Error string       `json:"error,omitempty"`
}

// RawSummary is the medians over rounds of the raw XSK rate.
type RawSummary struct {
	TXPerSec num `json:"tx_frames_per_s"`
	RXPerSec num `json:"rx_frames_per_s"`
	Rounds   int `json:"rounds"`
}

// XSKFrames is xdproxy's own traffic through its AF_XDP sockets over one
// workload: the growth of metricXSKRx and metricXSKTx, summed over queues,
// between a scrape before the workload and one after, and the rates over
// the time the load generator offered load (warm-up and window). The
// scrapes bracket the whole workload, whose start and end add little
// traffic but may add idle time: a connection-rate run lasts until its
// slowest connection gives up, up to 2 s after the window.
type XSKFrames struct {
	RX          uint64  `json:"rx"`
	TX          uint64  `json:"tx"`
	Seconds     float64 `json:"seconds"`      // between the scrapes
	LoadSeconds float64 `json:"load_seconds"` // warm-up and window: the rates' divisor
	RXPerSec    num     `json:"rx_per_s"`
	TXPerSec    num     `json:"tx_per_s"`
	// Syscalls is the data path's kernel entries between the scrapes: TX
	// kicks, fill-ring wake-ups, the shards' sleeps in poll(2) and the
	// eventfd writes that wake them.
	Syscalls uint64 `json:"syscalls"`
	Error    string `json:"error,omitempty"`
}

// FrameSummary is a contender's median frame rates in one workload, and
// their fractions of the raw XSK rate's medians.
type FrameSummary struct {
	Workload string `json:"workload"`
	RXPerSec num    `json:"rx_frames_per_s"`
	TXPerSec num    `json:"tx_frames_per_s"`
	RXOfRaw  num    `json:"rx_of_raw"`
	TXOfRaw  num    `json:"tx_of_raw"`
	// BytesPerFrame (bulk only) is the bytes the client received or sent,
	// warm-up included, per frame through the XSKs (RX+TX).
	BytesPerFrame num `json:"bytes_per_frame"`
}

// measureRaw measures the raw XSK TX and RX rates of the proxy's veth for
// -raw each and records them: p0 ⇄ router (topo.ProxyLink), the only one
// one-armed and the front one two-armed. No contender may run meanwhile.
func (h *harness) measureRaw(round int) {
	near, far := h.topo.ProxyLink.A, h.topo.ProxyLink.B
	raw := RawXSK{Round: round}
	var errs []string
	if tx, err := rawxsk.MeasureTX(near, far, h.opt.Queues, h.opt.Raw); err != nil {
		errs = append(errs, "TX: "+err.Error())
	} else {
		raw.TX = &tx
	}
	if rx, err := rawxsk.MeasureRX(near, far, h.opt.Queues, h.opt.Raw); err != nil {
		errs = append(errs, "RX: "+err.Error())
	} else {
		raw.RX = &rx
	}
	raw.Error = strings.Join(errs, "; ")
	h.res.RawXSK = append(h.res.RawXSK, raw)
	front := ""
	if h.topo.BackLink != nil {
		front = " (front)"
	}
	logf("  raw XSK rate of %s%s: %s", h.topo.ProxyIf, front, raw.brief())
	// The kernel lets go of the measurement's queues 25 to 45 ms after
	// their sockets close (rawxsk.OpenXSK), and xdproxy binds them
	// without retrying.
	time.Sleep(200 * time.Millisecond)
}

func (r RawXSK) brief() string {
	var parts []string
	if r.TX != nil {
		parts = append(parts, fmt.Sprintf("TX %s frames/s", commas(r.TX.PerSecond)))
	}
	if r.RX != nil {
		parts = append(parts, fmt.Sprintf("RX %s frames/s (sent %s, per queue %v)", commas(r.RX.PerSecond), commas(float64(r.RX.Sent)), r.RX.PerQueue))
	}
	if r.Error != "" {
		parts = append(parts, "ERROR "+firstLine(r.Error))
	}
	return strings.Join(parts, ", ")
}

// adminClient is an HTTP client whose connections are made from inside ns
// (xdproxy's admin endpoint listens on the proxy namespace's loopback).
func adminClient(ns *lab.NS) *http.Client {
	return &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			DialContext:       func(ctx context.Context, _, addr string) (net.Conn, error) { return ns.DialTCP(ctx, addr) },
			DisableKeepAlives: true,
		},
	}
}

// xskCounts are the AF_XDP frame counters of one scrape.
type xskCounts struct {
	rx, tx   float64
	syscalls float64 // kicks, wake-ups, sleeps and eventfd writes
	series   int     // series of each counter (one per interface and queue)
	at       time.Time
}

// scrapeXSK reads xdproxy's AF_XDP frame counters from its /metrics.
func (h *harness) scrapeXSK(ctx context.Context, admin string) (xskCounts, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+admin+"/metrics", nil)
	if err != nil {
		return xskCounts{}, err
	}
	resp, err := h.admin.Do(req)
	if err != nil {
		return xskCounts{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	at := time.Now()
	if err != nil {
		return xskCounts{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return xskCounts{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	rx, nrx := sumSamples(body, metricXSKRx)
	tx, ntx := sumSamples(body, metricXSKTx)
	if nrx == 0 || nrx != ntx {
		return xskCounts{}, fmt.Errorf("/metrics has %d series of %s and %d of %s", nrx, metricXSKRx, ntx, metricXSKTx)
	}
	kicks, _ := sumSamples(body, metricXSKKicks)
	wakeups, _ := sumSamples(body, metricXSKWakeups)
	sleeps, _ := sumSamples(body, metricSleeps)
	woken, _ := sumSamples(body, metricShardWakeup)
	return xskCounts{rx: rx, tx: tx, syscalls: kicks + wakeups + sleeps + woken, series: nrx, at: at}, nil
}

// sumSamples sums the samples of metric name in a Prometheus text
// exposition (parsed by prometheus/common's expfmt) and says how many
// there were; an exposition that does not parse has none.
func sumSamples(text []byte, name string) (sum float64, n int) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil || fams[name] == nil {
		return 0, 0
	}
	for _, m := range fams[name].GetMetric() {
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		default:
			sum += m.GetUntyped().GetValue()
		}
		n++
	}
	return sum, n
}

// startFrames scrapes the instance's AF_XDP counters before a workload
// that offers load for the given time. The function it returns scrapes
// them again and gives the frames in between and their rates; it returns
// nil for an instance without an admin endpoint (every contender but
// xdproxy).
func (h *harness) startFrames(ctx context.Context, in *instance, load time.Duration) func() *XSKFrames {
	if in.admin == "" {
		return func() *XSKFrames { return nil }
	}
	before, err0 := h.scrapeXSK(ctx, in.admin)
	return func() *XSKFrames {
		if err0 != nil {
			return &XSKFrames{RXPerSec: nan, TXPerSec: nan, Error: "before: " + err0.Error()}
		}
		after, err := h.scrapeXSK(ctx, in.admin)
		if err != nil {
			return &XSKFrames{RXPerSec: nan, TXPerSec: nan, Error: "after: " + err.Error()}
		}
		return framesBetween(before, after, load)
	}
}

// framesBetween is the frames between two scrapes, and their rates over
// load.
func framesBetween(before, after xskCounts, load time.Duration) *XSKFrames {
	f := &XSKFrames{Seconds: after.at.Sub(before.at).Seconds(), LoadSeconds: load.Seconds(), RXPerSec: nan, TXPerSec: nan}
	switch {
	case after.series != before.series:
		f.Error = fmt.Sprintf("%d queues' counters before, %d after", before.series, after.series)
	case after.rx < before.rx || after.tx < before.tx:
		f.Error = "the counters went back"
	case f.LoadSeconds <= 0:
		f.Error = "no load time"
	default:
		f.RX, f.TX = uint64(after.rx-before.rx), uint64(after.tx-before.tx)
		f.Syscalls = uint64(max(0, after.syscalls-before.syscalls))
		f.RXPerSec, f.TXPerSec = num(float64(f.RX)/f.LoadSeconds), num(float64(f.TX)/f.LoadSeconds)
	}
	return f
}

// summarizeFrames fills in the raw XSK rate's medians and, for every
// contender with frame counts, its frame summary per workload (in the
// order the workloads ran).
func (res *Results) summarizeFrames() {
	var tx, rx []float64
	for _, r := range res.RawXSK {
		if r.TX != nil {
			tx = append(tx, r.TX.PerSecond)
		}
		if r.RX != nil {
			rx = append(rx, r.RX.PerSecond)
		}
		if r.TX != nil && r.RX != nil {
			res.RawSummary.Rounds++
		}
	}
	res.RawSummary.TXPerSec, res.RawSummary.RXPerSec = median(tx), median(rx)
	for name, s := range res.Summary {
		var workloads []string
		for _, r := range res.Runs {
			if r.Contender == name && r.XSK != nil && !slices.Contains(workloads, r.Workload) {
				workloads = append(workloads, r.Workload)
			}
		}
		s.XSKFrames = nil
		for _, w := range workloads {
			var rxs, txs, bpf []float64
			for _, r := range res.Runs {
				if r.Contender != name || r.Workload != w || r.Error != "" || r.XSK == nil || r.XSK.Error != "" {
					continue
				}
				rxs = append(rxs, float64(r.XSK.RXPerSec))
				txs = append(txs, float64(r.XSK.TXPerSec))
				if frames := r.XSK.RX + r.XSK.TX; r.Bulk != nil && frames > 0 {
					bpf = append(bpf, float64(r.Bulk.AllBytes)/float64(frames))
				}
			}
			fs := FrameSummary{Workload: w, RXPerSec: median(rxs), TXPerSec: median(txs), BytesPerFrame: median(bpf)}
			fs.RXOfRaw, fs.TXOfRaw = fraction(fs.RXPerSec, res.RawSummary.RXPerSec), fraction(fs.TXPerSec, res.RawSummary.TXPerSec)
			s.XSKFrames = append(s.XSKFrames, fs)
		}
	}
}

// fraction is a/b, NaN when either is not a number or b is 0.
func fraction(a, b num) num {
	if math.IsNaN(float64(a)) || math.IsNaN(float64(b)) || b == 0 {
		return nan
	}
	return a / b
}

// percent formats a fraction as "12.3%".
func percent(f num) string {
	if math.IsNaN(float64(f)) {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(f))
}

// workloadLabel is how the frame table names a workload.
func workloadLabel(w string) string {
	switch w {
	case "connrate":
		return "connection rate"
	case "rr-max":
		return "request/response, max (closed loop)"
	case "bulk1":
		return "bulk, 1 stream"
	case "bulk8":
		return "bulk, 8 streams"
	case "bulk1-up":
		return "bulk upload, 1 stream"
	}
	if rate, ok := strings.CutPrefix(w, "rr@"); ok {
		if r, err := strconv.ParseFloat(rate, 64); err == nil {
			return "request/response, " + commas(r) + " req/s"
		}
	}
	return w
}

// framesMarkdown is the section on the kernel-bypass path against the raw
// XSK rate.
func (res *Results) framesMarkdown(w func(format string, a ...any), names []string) {
	st := res.Settings
	raw := res.RawSummary
	w("\n## Kernel-bypass path against the raw XSK frame rate\n\n")
	if st.Raw <= 0 {
		w("Not measured (-raw 0).\n")
		return
	}
	link := "the proxy's own veth"
	if st.shape() == lab.TwoArmed {
		link = "the proxy's front veth (towards the router; the back veth p1 is not measured)"
	}
	w("**Raw XSK rate** of %s (p0, %d queues), measured at the start of every round with no contender running, for %v per direction; median of the rounds:\n\n", link, st.Queues, st.Raw)
	w("| direction | frames/s | each round | how |\n|---|---:|---|---|\n")
	rounds := func(get func(RawXSK) *rawxsk.Rate) string {
		var s []string
		for _, r := range res.RawXSK {
			if x := get(r); x != nil {
				s = append(s, commas(x.PerSecond))
			} else {
				s = append(s, "failed")
			}
		}
		return strings.Join(s, ", ")
	}
	w("| TX from p0 | %s | %s | one AF_XDP socket per queue of p0 (copy mode), each driven by its own thread pinned to a core, sends 64-byte UDP frames to the router's end of the veth, where a count-and-drop XDP program counts what arrives |\n",
		f0(raw.TXPerSec), rounds(func(r RawXSK) *rawxsk.Rate { return r.TX }))
	w("| RX into p0 | %s | %s | a redirect-all XDP program on p0 steers every frame into the AF_XDP socket of its queue, each drained on its own thread; %d threads, pinned one to a core so that their frames land on every queue, send 64-byte UDP frames from the router's end with AF_PACKET sendmmsg (qdisc bypassed) |\n\n",
		f0(raw.RXPerSec), rounds(func(r RawXSK) *rawxsk.Rate { return r.RX }), st.Queues)
	for _, r := range res.RawXSK {
		if r.Error != "" {
			w("Round %d: %s\n\n", r.Round+1, firstLine(r.Error))
		}
	}
	w("The raw rate is the ceiling of the plumbing alone on this box: the rings, the copy of every frame into or out of a 2 KiB UMEM frame (copy mode: veth has no zero-copy), the veth and the receiving side's XDP in softirq. ")
	w("No TCP, no engine, and nothing else competing for the %d cores, whereas in every workload the load generator, the backends and the other namespaces' kernel TCP share them with xdproxy: it is a bound to read the figures below against, not a rate xdproxy could reach here. ", res.Machine.Cores)
	w("The test frames are 64 bytes; a full 1,514-byte segment takes longer to copy, so for bulk's frames the ceiling is somewhat lower. ")
	w("RX is bounded by its senders as well: on veth the XDP program and the copy into the UMEM run in the sending thread's softirq, so it is what %d AF_PACKET senders push through, not what the sockets could take.\n\n", st.Queues)
	over := "queues"
	if st.shape() == lab.TwoArmed {
		over = "queues and both interfaces (p0 and p1)"
	}
	w("**xdproxy's own frames**: `%s` (descriptors taken from the RX rings) and `%s` (frames queued on the TX rings), summed over %s, scraped from its admin endpoint before and after each workload, divided by the time the load generator offered load (warm-up and window; the scrapes also take in the generator's start and exit, which add little traffic). ", metricXSKRx, metricXSKTx, over)
	w("Every frame is one segment in one 2 KiB UMEM frame (no GSO/GRO). Median over rounds; \"of raw\" divides by the raw rate's median.\n\n")
	w("| contender | workload | RX frames/s | of raw RX | TX frames/s | of raw TX | bytes per frame |\n|---|---|---:|---:|---:|---:|---:|\n")
	rows := 0
	for _, n := range names {
		s, ok := res.Summary[n]
		if !ok {
			continue
		}
		for _, f := range s.XSKFrames {
			w("| %s | %s | %s | %s | %s | %s | %s |\n", n, workloadLabel(f.Workload), f0(f.RXPerSec), percent(f.RXOfRaw), f0(f.TXPerSec), percent(f.TXOfRaw), f0(f.BytesPerFrame))
			rows++
		}
	}
	if rows == 0 {
		w("| – | no xdproxy contender ran | | | | | |\n")
	}
	w("\nBytes per frame (bulk): the bytes the client received (or sent), warm-up included, per frame through the XSKs, RX and TX together. A full segment carries 1,448 bytes. With dial: xdp every byte crosses the XSKs twice, in from the backend and out to the client, and both legs' ACKs are frames too; with dial: kernel only the client leg does. ")
	w("So xdproxy's bulk throughput is the frames it moves per second times a few hundred to about a thousand bytes: bounded by frames, not bytes, where the kernel proxies move 64 KiB GSO/GRO super-segments. ")
	w("The fractions of the raw rate say how much of that bound is the plumbing's and how much xdproxy's own work per frame on the shared cores.\n")
}

// busiestFrames is the workload in which s moved the most frames through
// the XSKs (RX+TX), for the targets table.
func busiestFrames(s *Summary) (FrameSummary, bool) {
	var best FrameSummary
	found := false
	for _, f := range s.XSKFrames {
		sum := float64(f.RXPerSec + f.TXPerSec)
		if math.IsNaN(sum) {
			continue
		}
		if !found || sum > float64(best.RXPerSec+best.TXPerSec) {
			best, found = f, true
		}
	}
	return best, found
}
