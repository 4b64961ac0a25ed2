package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/xdproxy/xdproxy/bench/loadgen"
	"github.com/xdproxy/xdproxy/internal/lab"
)

// num is a float64 that is null in JSON when not a number (not measured,
// not applicable).
type num float64

func (n num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(f)
}

func (n *num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = num(math.NaN())
		return nil
	}
	var f float64
	err := json.Unmarshal(b, &f)
	*n = num(f)
	return err
}

var nan = num(math.NaN())

// Results is latest.json.
type Results struct {
	Started     time.Time           `json:"started"`
	Seconds     float64             `json:"seconds"`
	Command     string              `json:"command"`
	Machine     Machine             `json:"machine"`
	Versions    map[string]string   `json:"versions"`
	Settings    options             `json:"settings"`
	Contenders  []ContenderInfo     `json:"contenders"`
	Summary     map[string]*Summary `json:"summary"` // medians over rounds, by contender
	CrossChecks []CrossCheck        `json:"cross_checks"`
	RawXSK      []RawXSK            `json:"raw_xsk"`         // the raw XSK frame rate, every round
	RawSummary  RawSummary          `json:"raw_xsk_summary"` // its medians
	Runs        []Run               `json:"runs"`            // every measurement
	Notes       []string            `json:"notes"`
}

type Machine struct {
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	MemMiB int64  `json:"mem_mib"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

type ContenderInfo struct {
	Name  string `json:"name"`
	About string `json:"about"`
}

// Run is one workload against one contender in one round.
type Run struct {
	Round     int    `json:"round"`
	Slot      int    `json:"slot"` // position in the round's order
	Contender string `json:"contender"`
	Workload  string `json:"workload"`
	Wall      num    `json:"wall_s"`
	// ProxyCPU is utime+stime of the proxy's processes over the workload
	// (null for the direct path). MachineCPU is the whole machine's busy
	// time (load generator, backends, softirq included), MachineSoftirq
	// its softirq part.
	ProxyCPU       num     `json:"proxy_cpu_s"`
	MachineCPU     float64 `json:"machine_cpu_s"`
	MachineSoftirq float64 `json:"machine_softirq_s"`
	// LoadAvg is the machine's 1-minute load average as the workload
	// started: other work on a shared box is in MachineCPU too.
	LoadAvg  num                     `json:"load_avg_1m"`
	ConnRate *loadgen.ConnRateResult `json:"connrate,omitempty"`
	RR       *loadgen.RRResult       `json:"rr,omitempty"`
	Bulk     *loadgen.BulkResult     `json:"bulk,omitempty"`
	Idle     *IdleMeasure            `json:"idle,omitempty"`
	// XSK is xdproxy's traffic through its AF_XDP sockets (xdproxy only).
	XSK   *XSKFrames `json:"xsk_frames,omitempty"`
	Error string     `json:"error,omitempty"`
}

type IdleMeasure struct {
	loadgen.IdleResult
	RSSBeforeKiB int64 `json:"rss_before_kib"`
	RSSAfterKiB  int64 `json:"rss_after_kib"`
	RSSPer10kMiB num   `json:"rss_per_10k_mib"`
	// SlabDeltaKiB is the machine's kernel slab growth meanwhile: the
	// sockets of the client, the backends and a kernel proxy (not in any
	// process's RSS).
	SlabDeltaKiB int64 `json:"slab_delta_kib"`
}

func (r Run) brief() string {
	if r.Error != "" {
		return "ERROR " + firstLine(r.Error)
	}
	extra := ""
	if !math.IsNaN(float64(r.ProxyCPU)) {
		extra = fmt.Sprintf(" (proxy cpu %.2fs)", float64(r.ProxyCPU))
	}
	if x := r.XSK; x != nil && x.Error != "" {
		extra += " (XSK frames: " + x.Error + ")"
	} else if x != nil {
		extra += fmt.Sprintf(" (XSK frames/s RX %s TX %s)", f0(x.RXPerSec), f0(x.TXPerSec))
	}
	switch {
	case r.ConnRate != nil:
		return fmt.Sprintf("%.0f conn/s, p99 %.0fµs, %d errors%s", r.ConnRate.PerSecond, r.ConnRate.Latency.P99Us, r.ConnRate.Errors, extra)
	case r.RR != nil:
		return fmt.Sprintf("%.0f req/s, p50 %.0fµs p99 %.0fµs p99.9 %.0fµs, missed %d, errors %d%s", r.RR.Achieved, r.RR.Latency.P50Us, r.RR.Latency.P99Us, r.RR.Latency.P999Us, r.RR.Missed, r.RR.Errors, extra)
	case r.Bulk != nil:
		return fmt.Sprintf("%.2f Gbit/s, %d errors%s", r.Bulk.Gbps, r.Bulk.Errors, extra)
	case r.Idle != nil:
		return fmt.Sprintf("%d open, RSS %d → %d KiB (%.1f MiB per 10k), slab +%d KiB", r.Idle.Open, r.Idle.RSSBeforeKiB, r.Idle.RSSAfterKiB, float64(r.Idle.RSSPer10kMiB), r.Idle.SlabDeltaKiB)
	}
	return ""
}

// Summary is a contender's medians over rounds (NaN/null: not measured).
type Summary struct {
	ConnPerSec        num         `json:"conn_per_s"`
	ConnP99Us         num         `json:"conn_p99_us"`
	ConnErrors        int64       `json:"conn_errors"`
	CPUmsPer1kConn    num         `json:"proxy_cpu_ms_per_1k_conn"`
	MachineMsPer1k    num         `json:"machine_cpu_ms_per_1k_conn"`
	RR                []RRSummary `json:"rr"` // one per offered rate, then the closed loop (offered 0)
	Bulk1Gbps         num         `json:"bulk1_gbps"`
	Bulk8Gbps         num         `json:"bulk8_gbps"`
	BulkUpGbps        num         `json:"bulk1_upload_gbps"`
	CPUsPerGiB1       num         `json:"proxy_cpu_s_per_gib_1stream"`
	CPUsPerGiB8       num         `json:"proxy_cpu_s_per_gib_8streams"`
	MachineSPerGiB8   num         `json:"machine_cpu_s_per_gib_8streams"`
	IdleConns         num         `json:"idle_conns"`
	IdleRSSMiBPer10k  num         `json:"idle_rss_mib_per_10k"`
	IdleSlabMiBPer10k num         `json:"idle_machine_slab_mib_per_10k"`
	// XSKFrames is the frame rate through the AF_XDP sockets per
	// workload (xdproxy only).
	XSKFrames []FrameSummary `json:"xsk_frames,omitempty"`
	// Marginal is the machine-wide CPU per unit of each workload and what
	// it adds to the direct path's (marginal.go).
	Marginal []Marginal `json:"marginal,omitempty"`
	Rounds   int        `json:"rounds_ok"`
}

type RRSummary struct {
	Offered   float64 `json:"offered"`
	Achieved  num     `json:"achieved"`
	P50Us     num     `json:"p50_us"`
	P90Us     num     `json:"p90_us"`
	P99Us     num     `json:"p99_us"`
	P999Us    num     `json:"p999_us"`
	Missed    int64   `json:"missed"`
	Errors    int64   `json:"errors"`
	CPUmsPer1 num     `json:"proxy_cpu_us_per_req"`
}

func newResults(h *harness, cs []contender) *Results {
	r := &Results{Started: h.start, Command: h.opt.Command, Machine: machineInfo(), Versions: versions(h.bin),
		Settings: h.opt, Summary: map[string]*Summary{}}
	for _, c := range cs {
		about := c.about
		if strings.Contains(about, "%d") {
			about = fmt.Sprintf(about, h.opt.shards())
		}
		if c.name == "direct" && h.opt.shape() == lab.TwoArmed {
			about = directTwoArmed
		}
		r.Contenders = append(r.Contenders, ContenderInfo{c.name, about})
	}
	return r
}

func median(xs []float64) num {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return nan
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return num(v[len(v)/2])
	}
	return num((v[len(v)/2-1] + v[len(v)/2]) / 2)
}

func (res *Results) summarize() {
	for _, c := range res.Contenders {
		s := &Summary{}
		res.Summary[c.Name] = s
		runs := func(w string) []Run {
			var out []Run
			for _, r := range res.Runs {
				if r.Contender == c.Name && r.Workload == w && r.Error == "" {
					out = append(out, r)
				}
			}
			return out
		}
		collect := func(w string, f func(Run) float64) num {
			var xs []float64
			for _, r := range runs(w) {
				xs = append(xs, f(r))
			}
			return median(xs)
		}
		perK := func(cpu num, n int64) float64 {
			if n == 0 {
				return math.NaN()
			}
			return float64(cpu) * 1e3 / float64(n) * 1e3
		}
		cr := runs("connrate")
		s.Rounds = len(cr)
		s.ConnPerSec = collect("connrate", func(r Run) float64 { return r.ConnRate.PerSecond })
		s.ConnP99Us = collect("connrate", func(r Run) float64 { return r.ConnRate.Latency.P99Us })
		for _, r := range cr {
			s.ConnErrors += r.ConnRate.Errors
		}
		s.CPUmsPer1kConn = collect("connrate", func(r Run) float64 { return perK(r.ProxyCPU, r.ConnRate.AllConns) })
		s.MachineMsPer1k = collect("connrate", func(r Run) float64 { return perK(num(r.MachineCPU), r.ConnRate.AllConns) })
		rates := append(slices.Clone(res.Settings.Rates), 0)
		for _, rate := range rates {
			w := "rr-max"
			if rate > 0 {
				w = rrName(rate)
			}
			rs := RRSummary{Offered: rate,
				Achieved: collect(w, func(r Run) float64 { return r.RR.Achieved }),
				P50Us:    collect(w, func(r Run) float64 { return r.RR.Latency.P50Us }),
				P90Us:    collect(w, func(r Run) float64 { return r.RR.Latency.P90Us }),
				P99Us:    collect(w, func(r Run) float64 { return r.RR.Latency.P99Us }),
				P999Us:   collect(w, func(r Run) float64 { return r.RR.Latency.P999Us }),
				CPUmsPer1: collect(w, func(r Run) float64 {
					// µs of proxy CPU per request (all requests of the run, warm-up included, estimated from the rate).
					n := r.RR.Achieved * (res.Settings.Duration + res.Settings.Warmup).Seconds()
					if n == 0 {
						return math.NaN()
					}
					return float64(r.ProxyCPU) * 1e6 / n
				}),
			}
			for _, r := range runs(w) {
				rs.Missed += r.RR.Missed
				rs.Errors += r.RR.Errors
			}
			s.RR = append(s.RR, rs)
		}
		gib := func(r Run) float64 { return float64(r.Bulk.AllBytes) / (1 << 30) }
		s.Bulk1Gbps = collect("bulk1", func(r Run) float64 { return r.Bulk.Gbps })
		s.Bulk8Gbps = collect("bulk8", func(r Run) float64 { return r.Bulk.Gbps })
		s.BulkUpGbps = collect("bulk1-up", func(r Run) float64 { return r.Bulk.Gbps })
		s.CPUsPerGiB1 = collect("bulk1", func(r Run) float64 { return float64(r.ProxyCPU) / gib(r) })
		s.CPUsPerGiB8 = collect("bulk8", func(r Run) float64 { return float64(r.ProxyCPU) / gib(r) })
		s.MachineSPerGiB8 = collect("bulk8", func(r Run) float64 { return r.MachineCPU / gib(r) })
		s.IdleConns = collect("idle", func(r Run) float64 { return float64(r.Idle.Open) })
		s.IdleRSSMiBPer10k = collect("idle", func(r Run) float64 { return float64(r.Idle.RSSPer10kMiB) })
		s.IdleSlabMiBPer10k = collect("idle", func(r Run) float64 {
			return float64(r.Idle.SlabDeltaKiB) / 1024 * 10000 / float64(max(1, r.Idle.Open))
		})
	}
	res.summarizeFrames()
	res.summarizeMarginal()
}

// resultFiles are the names of a run's output files in -out.
type resultFiles struct{ JSON, Markdown, SVG string }

// outputFiles names the output files of a run in the given shape: the
// one-armed run keeps the names it always had (latest.json, latest.md,
// latency.svg); any other shape puts its name in them
// (latest-two-armed.json, latest-two-armed.md, latency-two-armed.svg), so
// that runs of different shapes do not overwrite each other.
func outputFiles(shape lab.Shape) resultFiles {
	if shape == lab.OneArmed {
		return resultFiles{"latest.json", "latest.md", "latency.svg"}
	}
	return resultFiles{"latest-" + shape.String() + ".json", "latest-" + shape.String() + ".md", "latency-" + shape.String() + ".svg"}
}

func (res *Results) write(dir, md string) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	names := outputFiles(res.Settings.shape())
	files := map[string][]byte{
		names.JSON:     append(b, '\n'),
		names.Markdown: []byte(md),
		names.SVG:      []byte(res.svg()),
	}
	return writeFiles(dir, files)
}

// writeFiles writes each file into dir (made if missing), each whole or
// not at all (a temporary file renamed).
func writeFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, data := range files {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// ---- Markdown ----

func f0(n num) string {
	if math.IsNaN(float64(n)) {
		return "–"
	}
	return commas(math.Round(float64(n)))
}

func fN(n num, prec int) string {
	if math.IsNaN(float64(n)) {
		return "–"
	}
	return fmt.Sprintf("%.*f", prec, float64(n))
}

func commas(x float64) string {
	s := fmt.Sprintf("%.0f", math.Abs(x))
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if x < 0 {
		return "-" + b.String()
	}
	return b.String()
}

// ratio is a/b as "1.23×".
func ratio(a, b num) string {
	if math.IsNaN(float64(a)) || math.IsNaN(float64(b)) || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", float64(a/b))
}

func (res *Results) markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	st := res.Settings
	w("# xdproxy side by side, %s\n\n", st.shape())
	w("Machine: %s, %d cores, %d MiB, Linux %s, %s. Run %s, %.0f s.\n\n", res.Machine.CPU, res.Machine.Cores, res.Machine.MemMiB, res.Machine.Kernel, res.Machine.Go, res.Started.UTC().Format("2006-01-02 15:04 UTC"), res.Seconds)
	w("Command: `%s` (as root; `make bench` runs it).\n\n", res.Command)
	switch st.shape() {
	case lab.TwoArmed:
		w("Lab, two-armed: client — router — (veth p0, %d queues) proxy (veth p1, %d queues) — backends (Go servers, 10.10.3.2/.3, on-link behind p1; the router has no route to them). XDP on both of the proxy's veths for xdproxy only, whose config lists both; the kernel proxies reach the backends through p1 by the kernel's route. ", st.Queues, st.backQueues())
	default:
		w("Lab, one-armed: client — router — proxy (veth p0, %d queues; XDP there for xdproxy only) — backends (Go servers, 10.10.2.2/.3, behind the router). ", st.Queues)
	}
	if st.MTU != 0 {
		w("Every link's MTU: %d (xdproxy on 4 KiB AF_XDP frames above 2026). ", st.MTU)
	}
	w("Every contender is started afresh in each of %d rounds, in an order rotated per round; each figure is the median over rounds. ", st.Rounds)
	w("Windows of %v after a %v warm-up. Versions: ", st.Duration, st.Warmup)
	var vs []string
	for _, k := range []string{"xdproxy", "haproxy", "nginx", "wrk", "iperf3"} {
		if v, ok := res.Versions[k]; ok {
			vs = append(vs, v)
		}
	}
	w("%s.\n\n", strings.Join(vs, "; "))
	w("Contenders:\n\n")
	for _, c := range res.Contenders {
		w("- **%s**: %s\n", c.Name, c.About)
	}
	w("\n")
	sum := func(name string) *Summary {
		if s, ok := res.Summary[name]; ok {
			return s
		}
		return &Summary{ConnPerSec: nan}
	}
	hap, dir := sum("haproxy"), sum("direct")
	names := func() []string {
		var n []string
		for _, c := range res.Contenders {
			n = append(n, c.Name)
		}
		return n
	}()

	w("## Connection rate\n\nConnect, 64-byte request, 64-byte reply, close; %d parallel clients. CPU: the proxy's own utime+stime (all its processes) per 1,000 connections; machine: everything on the box (load generator, backends, softirq) per 1,000.\n\n", st.ConnClients)
	w("Added: the machine's CPU per connection minus the direct path's in the same round (median over rounds; see the section on what each proxy adds).\n\n")
	w("| contender | conn/s | ×HAProxy | ×direct | p99 µs | errors | proxy CPU ms/1k conn | ×HAProxy | machine CPU ms/1k conn | added µs/conn | ×HAProxy | frames in / out per conn |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	hapConn := hap.marginalOf("connrate")
	for _, n := range names {
		s := sum(n)
		m := s.marginalOf("connrate")
		added, vsHAProxy, frames := "–", "–", "–"
		if n != "direct" {
			added, vsHAProxy = fN(m.Added, 1), ratio(m.Added, hapConn.Added)
		}
		if !math.IsNaN(float64(m.FramesIn)) {
			frames = fN(m.FramesIn, 2) + " / " + fN(m.FramesOut, 2)
		}
		w("| %s | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", n, f0(s.ConnPerSec), ratio(s.ConnPerSec, hap.ConnPerSec), ratio(s.ConnPerSec, dir.ConnPerSec),
			f0(s.ConnP99Us), s.ConnErrors, fN(s.CPUmsPer1kConn, 1), ratio(s.CPUmsPer1kConn, hap.CPUmsPer1kConn), fN(s.MachineMsPer1k, 1), added, vsHAProxy, frames)
	}

	w("\n## Request/response latency, open loop\n\n64-byte echo over %d kept-alive connections at fixed offered rates; latency from each request's scheduled send time (coordinated omission counted), HDR histogram. ×HAProxy and ×direct compare p99.\n\n", st.RRConns)
	for i, rate := range st.Rates {
		w("### %s req/s offered\n\n", commas(rate))
		w("| contender | achieved req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | p99 ×HAProxy | p99 ×direct | proxy CPU µs/req | missed/errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, n := range names {
			s := sum(n)
			if i >= len(s.RR) {
				continue
			}
			r := s.RR[i]
			var hr, dr num = nan, nan
			if i < len(hap.RR) {
				hr = hap.RR[i].P99Us
			}
			if i < len(dir.RR) {
				dr = dir.RR[i].P99Us
			}
			w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d/%d |\n", n, f0(r.Achieved), f0(r.P50Us), f0(r.P90Us), f0(r.P99Us), f0(r.P999Us), ratio(r.P99Us, hr), ratio(r.P99Us, dr), fN(r.CPUmsPer1, 1), r.Missed, r.Errors)
		}
		w("\n")
	}
	mx := len(st.Rates)
	w("## Request/response, maximum rate (closed loop)\n\n%d connections, each ping-ponging 64 bytes as fast as it can.\n\n", st.RRConns)
	w("| contender | req/s | ×HAProxy | ×direct | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/req |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, n := range names {
		s := sum(n)
		if mx >= len(s.RR) {
			continue
		}
		r := s.RR[mx]
		var ha, da num = nan, nan
		if mx < len(hap.RR) {
			ha = hap.RR[mx].Achieved
		}
		if mx < len(dir.RR) {
			da = dir.RR[mx].Achieved
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %s |\n", n, f0(r.Achieved), ratio(r.Achieved, ha), ratio(r.Achieved, da), f0(r.P50Us), f0(r.P99Us), f0(r.P999Us), fN(r.CPUmsPer1, 1))
	}

	w("\n## Bulk throughput (download: backend → client)\n\nGbit/s at the client. CPU: the proxy's own seconds per GiB moved (warm-up included).\n\n")
	w("| contender | 1 stream Gbit/s | ×HAProxy | ×direct | 8 streams Gbit/s | ×HAProxy | ×direct | proxy CPU s/GiB (1) | proxy CPU s/GiB (8) | ×HAProxy (8) | machine CPU s/GiB (8) |")
	if st.Upload {
		w(" upload 1 stream Gbit/s |")
	}
	w("\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	if st.Upload {
		w("---:|")
	}
	w("\n")
	for _, n := range names {
		s := sum(n)
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |", n, fN(s.Bulk1Gbps, 2), ratio(s.Bulk1Gbps, hap.Bulk1Gbps), ratio(s.Bulk1Gbps, dir.Bulk1Gbps),
			fN(s.Bulk8Gbps, 2), ratio(s.Bulk8Gbps, hap.Bulk8Gbps), ratio(s.Bulk8Gbps, dir.Bulk8Gbps), fN(s.CPUsPerGiB1, 2), fN(s.CPUsPerGiB8, 2), ratio(s.CPUsPerGiB8, hap.CPUsPerGiB8), fN(s.MachineSPerGiB8, 2))
		if st.Upload {
			w(" %s |", fN(s.BulkUpGbps, 2))
		}
		w("\n")
	}

	res.marginalMarkdown(w, names, sum)
	res.framesMarkdown(w, names)

	if st.Idle > 0 {
		w("\n## Memory per 10,000 idle connections\n\nThe proxy's RSS growth (all its processes, VmRSS) with the connections of the `open` column held open through it (up to %s; each after one 64-byte round trip), scaled to 10,000. Kernel socket memory is not in any RSS: the machine's slab growth (client, backend and kernel-proxy sockets and pipes together) is beside it.\n\n", commas(float64(st.Idle)))
		w("| contender | open | proxy RSS MiB per 10k | ×HAProxy | machine slab MiB per 10k |\n|---|---:|---:|---:|---:|\n")
		for _, n := range names {
			s := sum(n)
			w("| %s | %s | %s | %s | %s |\n", n, f0(s.IdleConns), fN(s.IdleRSSMiBPer10k, 1), ratio(s.IdleRSSMiBPer10k, hap.IdleRSSMiBPer10k), fN(s.IdleSlabMiBPer10k, 1))
		}
	}

	w("\n## Cross-checks\n\n")
	if len(res.CrossChecks) == 0 {
		w("Not run (-crosscheck none).\n")
	} else {
		w("The load generator beside an independent tool, same contender, same service, first round.\n\n| contender | what | tool | tool | loadgen | loadgen/tool | detail |\n|---|---|---|---:|---:|---:|---|\n")
		for _, c := range res.CrossChecks {
			detail := c.Detail
			if c.Error != "" {
				detail = strings.TrimSpace(detail + " ERROR: " + c.Error)
			}
			prec := 0
			if c.Unit == "Gbit/s" {
				prec = 2
			}
			w("| %s | %s | %s | %s %s | %s | %s | %s |\n", c.Contender, c.What, c.Tool, fN(c.ToolValue, prec), c.Unit, fN(c.Loadgen, prec), fN(c.Ratio, 2), detail)
		}
	}

	w("\n## Targets (xdproxy dial: xdp against HAProxy, this run)\n\n| target | measured | |\n|---|---|---|\n")
	x := sum("xdproxy-xdp")
	target := func(what string, v num, ok bool) {
		mark := "missed"
		if math.IsNaN(float64(v)) {
			mark = "not measured"
		} else if ok {
			mark = "met"
		}
		w("| %s | %s | %s |\n", what, fN(v, 2)+"×", mark)
	}
	cr := x.ConnPerSec / hap.ConnPerSec
	target("connection rate ≥ 1.5× HAProxy", cr, cr >= 1.5)
	for i, rate := range st.Rates {
		if i < len(x.RR) && i < len(hap.RR) {
			v := x.RR[i].P99Us / hap.RR[i].P99Us
			target(fmt.Sprintf("p99 at %s req/s ≤ HAProxy's", commas(rate)), v, v <= 1)
		}
	}
	b1 := x.Bulk1Gbps / hap.Bulk1Gbps
	target("bulk (1 stream) ≥ 0.8× HAProxy", b1, b1 >= 0.8)
	b8 := x.Bulk8Gbps / hap.Bulk8Gbps
	target("bulk (8 streams) ≥ 0.8× HAProxy", b8, b8 >= 0.8)
	cc := x.CPUmsPer1kConn / hap.CPUmsPer1kConn
	target("proxy CPU per connection ≤ 0.5× HAProxy", cc, cc <= 0.5)
	ac := x.marginalOf("connrate").Added / hap.marginalOf("connrate").Added
	target("machine CPU added per connection (minus direct) ≤ 0.5× HAProxy's", ac, ac <= 0.5)
	ag := x.marginalOf("bulk1").Added / hap.marginalOf("bulk1").Added
	target("machine CPU added per GiB, 1 stream ≤ HAProxy's", ag, ag <= 1)
	if f, ok := busiestFrames(x); ok && !math.IsNaN(float64(f.RXOfRaw+f.TXOfRaw)) {
		w("| kernel-bypass path shown as a fraction of the raw XSK frame rate (no threshold) | RX %s, TX %s of raw (%s, its busiest workload) | shown |\n", percent(f.RXOfRaw), percent(f.TXOfRaw), workloadLabel(f.Workload))
	} else {
		w("| kernel-bypass path shown as a fraction of the raw XSK frame rate (no threshold) | – | not measured |\n")
	}

	w("\n## Notes\n\n")
	for _, n := range res.notes() {
		w("- %s\n", n)
	}
	return b.String()
}

// notes are the caveats every reader of the tables needs, and the run's
// own incidents.
func (res *Results) notes() []string {
	n := []string{
		"All processes share the same 2 cores: the load generator (a child process in the client namespace), the backends (goroutines of the harness) and the proxy compete for CPU, so absolute rates are lower than on separate machines; ratios between contenders measured in the same run mean more.",
		"Proxy CPU is utime+stime from /proc/<pid>/stat of the proxy's process tree. Packet work that the kernel does in softirq on behalf of a socket is often charged to whichever task is running on that CPU (or not at all, with IRQ time accounting): for the kernel proxies part of their TCP cost and for xdproxy the XDP program and the copy into the UMEM (veth runs AF_XDP in copy mode, in the sender's softirq) are not in their figure. The machine-wide column includes it.",
		"xdproxy on veth: AF_XDP copy mode (no zero-copy on veth), one 2 KiB frame per segment, no GSO/GRO and no TSO: every 1448-byte segment is a frame through the XSK rings and the userspace engine, while the kernel proxies move 64 KiB GSO/GRO super-segments (and HAProxy/gocopy/nginx can splice). Bulk throughput is bounded by frames per second, not bytes.",
		"xdproxy's shards busy-poll for 5µs (interfaces[].busy_poll) after their last work, then sleep in poll(2): at low request rates a request often finds the shard asleep and pays a wake-up (visible in p50/p99 at the lowest offered rate), and the busy-polling is charged to its CPU.",
		"Sysctls in the client and proxy namespaces, the same for every contender: ip_local_port_range 1024-65535, tcp_tw_reuse=1 (connection-rate runs would otherwise exhaust ports on TIME_WAIT). HAProxy, nginx and the Go proxy run with default buffer settings (no splice options for HAProxy).",
		"Open-loop pacing uses a timerfd per connection; when the generator itself woke late for a free connection, that lateness is excluded from the latency and reported as pacing_late in latest.json.",
	}
	if res.Settings.shape() == lab.TwoArmed {
		n = append(n,
			"Two-armed: the direct path here crosses two kernel forwarding hops (the router, then the proxy namespace from p0 to p1), one more than one-armed's direct path (the router alone); it is the ceiling of these links, not the one-armed figure.",
			"Two-armed: the raw XSK rate is of the front veth p0 alone (the back veth p1 has the same kind of link); xdproxy's frames are summed over the XSKs of both interfaces, and with dial: xdp each interface carries one leg, so each link moves about half of them.",
		)
	}
	return append(n, res.Notes...)
}

// ---- SVG ----

var palette = []string{"#333333", "#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"}

// svg draws, for each offered rate and the closed loop, the latency
// percentiles (p50, p90, p99, p99.9; log scale) of every contender.
func (res *Results) svg() string {
	type panel struct {
		title string
		idx   int
	}
	var panels []panel
	for i, r := range res.Settings.Rates {
		panels = append(panels, panel{commas(r) + " req/s offered", i})
	}
	panels = append(panels, panel{"max rate (closed loop)", len(res.Settings.Rates)})
	const pw, ph, left, top, bottom, gap = 260.0, 300.0, 60.0, 50.0, 40.0, 30.0
	width := left + float64(len(panels))*(pw+gap) + 150
	height := top + ph + bottom + 30
	// Scale: log10 of µs over all values.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range res.Summary {
		for _, r := range s.RR {
			for _, v := range []num{r.P50Us, r.P90Us, r.P99Us, r.P999Us} {
				if f := float64(v); f > 0 && !math.IsNaN(f) {
					lo, hi = math.Min(lo, f), math.Max(hi, f)
				}
			}
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 10, 1000
	}
	lmin, lmax := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if lmax <= lmin {
		lmax = lmin + 1
	}
	y := func(v float64) float64 { return top + ph - (math.Log10(v)-lmin)/(lmax-lmin)*ph }
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, height)
	w(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	w(`<text x="%.0f" y="22" font-size="15" font-weight="bold">Request/response latency percentiles (µs, log scale; median of %d rounds; 64-byte echo, %d connections)</text>`+"\n", left, res.Settings.Rounds, res.Settings.RRConns)
	pcts := []string{"p50", "p90", "p99", "p99.9"}
	for pi, p := range panels {
		x0 := left + float64(pi)*(pw+gap)
		w(`<text x="%.0f" y="%.0f" text-anchor="middle" font-weight="bold">%s</text>`+"\n", x0+pw/2, top-10, p.title)
		w(`<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", x0, top, pw, ph)
		for e := lmin; e <= lmax; e++ {
			for _, m := range []float64{1, 2, 5} {
				v := m * math.Pow(10, e)
				if math.Log10(v) > lmax+1e-9 {
					continue
				}
				yy := y(v)
				stroke := "#eee"
				if m == 1 {
					stroke = "#ccc"
				}
				w(`<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x0, x0+pw, yy, yy, stroke)
				if pi == 0 {
					w(`<text x="%.0f" y="%.1f" text-anchor="end" dy="4">%s</text>`+"\n", x0-5, yy, commas(v))
				}
			}
		}
		xs := func(i int) float64 { return x0 + pw*(float64(i)+0.5)/float64(len(pcts)) }
		for i, name := range pcts {
			w(`<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", xs(i), top+ph+18, name)
		}
		for ci, c := range res.Contenders {
			s := res.Summary[c.Name]
			if s == nil || p.idx >= len(s.RR) {
				continue
			}
			r := s.RR[p.idx]
			color := palette[ci%len(palette)]
			var pts []string
			for i, v := range []num{r.P50Us, r.P90Us, r.P99Us, r.P999Us} {
				f := float64(v)
				if math.IsNaN(f) || f <= 0 {
					continue
				}
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", xs(i), y(f)))
				w(`<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s %s: %.0f µs</title></circle>`+"\n", xs(i), y(f), color, c.Name, pcts[i], f)
			}
			if len(pts) > 1 {
				dash := ""
				if c.Name == "direct" {
					dash = ` stroke-dasharray="4,3"`
				}
				w(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), color, dash)
			}
		}
	}
	lx := left + float64(len(panels))*(pw+gap)
	for ci, c := range res.Contenders {
		yy := top + 10 + float64(ci)*20
		w(`<line x1="%.0f" x2="%.0f" y1="%.0f" y2="%.0f" stroke="%s" stroke-width="3"/>`+"\n", lx, lx+20, yy, yy, palette[ci%len(palette)])
		w(`<text x="%.0f" y="%.0f" dy="4">%s</text>`+"\n", lx+26, yy, c.Name)
	}
	w("</svg>\n")
	return b.String()
}
