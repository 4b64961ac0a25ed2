package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/xdproxy/xdproxy/bench/loadgen"
)

// CrossCheck puts a number of the load generator beside the same
// measurement by an independent tool.
type CrossCheck struct {
	Contender string `json:"contender"`
	What      string `json:"what"`
	Unit      string `json:"unit"`
	Tool      string `json:"tool"`
	ToolValue num    `json:"tool_value"`
	Loadgen   num    `json:"loadgen_value"`
	Ratio     num    `json:"ratio"` // loadgen / tool
	Detail    string `json:"detail,omitempty"`
	Error     string `json:"error,omitempty"`
}

// crossCheck runs, against one contender: wrk (closed loop, keep-alive,
// HTTP) beside the loadgen's closed-loop RR on the same HTTP service with
// the same connections and the same request bytes; and iperf3 -R (one
// stream, download) beside the loadgen's one-stream download measured
// right before it.
func (h *harness) crossCheck(ctx context.Context, cname string, in *instance) {
	o := h.opt
	secs := max(1, int(math.Round(o.Duration.Seconds())))
	addr := in.addrs["http"][0]

	wrk := CrossCheck{Contender: cname, What: fmt.Sprintf("HTTP request/response, closed loop, %d connections", o.RRConns), Unit: "req/s", Tool: "wrk",
		ToolValue: num(math.NaN()), Loadgen: num(math.NaN()), Ratio: num(math.NaN())}
	out, err := h.topo.Client.Run(ctx, "wrk", "-t2", fmt.Sprintf("-c%d", o.RRConns), fmt.Sprintf("-d%ds", secs), "--latency", "http://"+addr+"/")
	if err != nil {
		wrk.Error = firstLine(err.Error())
	} else if rps, p50, p99, perr := parseWrk(out); perr != nil {
		wrk.Error = perr.Error()
	} else {
		wrk.ToolValue = num(rps)
		wrk.Detail = fmt.Sprintf("wrk p50 %.0fµs p99 %.0fµs", p50, p99)
	}
	var rr loadgen.RRResult
	err = h.runLoadgen(ctx, "rr", loadgen.RRConfig{
		Addrs: []string{addr}, Conns: o.RRConns, Warmup: o.Warmup, Duration: time.Duration(secs) * time.Second,
		Req: []byte("GET / HTTP/1.1\r\nHost: " + addr + "\r\n\r\n"), RespSize: len(httpResponse),
	}, &rr)
	if err != nil {
		wrk.Error = strings.TrimSpace(wrk.Error + "; loadgen: " + firstLine(err.Error()))
	} else {
		wrk.Loadgen = num(rr.Achieved)
		wrk.Detail = strings.TrimSpace(fmt.Sprintf("%s; loadgen p50 %.0fµs p99 %.0fµs", wrk.Detail, rr.Latency.P50Us, rr.Latency.P99Us))
	}
	if wrk.ToolValue > 0 && !math.IsNaN(float64(wrk.Loadgen)) {
		wrk.Ratio = wrk.Loadgen / wrk.ToolValue
	}
	h.res.CrossChecks = append(h.res.CrossChecks, wrk)
	logf("  cross-check %s: wrk %.0f req/s, loadgen %.0f req/s %s", cname, float64(wrk.ToolValue), float64(wrk.Loadgen), wrk.Error)

	ip := CrossCheck{Contender: cname, What: "bulk download, 1 stream", Unit: "Gbit/s", Tool: "iperf3 -R",
		ToolValue: num(math.NaN()), Loadgen: num(math.NaN()), Ratio: num(math.NaN())}
	host, port, _ := strings.Cut(in.addrs["iperf"][0], ":")
	out, err = h.topo.Client.Run(ctx, "iperf3", "-c", host, "-p", port, "-R", "-J", "-O", "1", "-t", strconv.Itoa(secs))
	if err != nil {
		ip.Error = firstLine(err.Error())
	} else {
		var j struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal([]byte(out), &j); err != nil || j.Error != "" {
			ip.Error = fmt.Sprintf("iperf3 output: %v %s", err, j.Error)
		} else {
			ip.ToolValue = num(j.End.SumReceived.BitsPerSecond / 1e9)
		}
	}
	for i := len(h.res.Runs) - 1; i >= 0; i-- {
		r := h.res.Runs[i]
		if r.Contender == cname && r.Workload == "bulk1" && r.Bulk != nil {
			ip.Loadgen = num(r.Bulk.Gbps)
			break
		}
	}
	if ip.ToolValue > 0 && !math.IsNaN(float64(ip.Loadgen)) {
		ip.Ratio = ip.Loadgen / ip.ToolValue
	}
	h.res.CrossChecks = append(h.res.CrossChecks, ip)
	logf("  cross-check %s: iperf3 %.2f Gbit/s, loadgen %.2f Gbit/s %s", cname, float64(ip.ToolValue), float64(ip.Loadgen), ip.Error)
}

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
)

// parseWrk reads wrk's requests/s and its p50 and p99 latencies (µs).
func parseWrk(out string) (rps, p50, p99 float64, err error) {
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, 0, fmt.Errorf("no Requests/sec in wrk's output: %s", tail(out, 500))
	}
	rps, _ = strconv.ParseFloat(m[1], 64)
	for _, p := range wrkPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		switch p[3] {
		case "ms":
			v *= 1e3
		case "s":
			v *= 1e6
		}
		if p[1] == "50" {
			p50 = v
		} else {
			p99 = v
		}
	}
	if strings.Contains(out, "Socket errors") || strings.Contains(out, "Non-2xx") {
		err = fmt.Errorf("wrk reported errors: %s", tail(out, 300))
	}
	return rps, p50, p99, err
}
