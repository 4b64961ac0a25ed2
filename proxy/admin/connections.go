package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/xdproxy/xdproxy/stack"
)

// /connections: an ss(8)-like listing of the engines' connections, their
// TIME_WAIT entries and the kernel sockets of dial: kernel backend legs.

// ConnDoc is one entry of /connections?format=json, which `xdproxy ss`
// reads. The ESTABLISHED-only fields are absent for other states.
type ConnDoc struct {
	Interface string  `json:"interface"`
	Shard     int     `json:"shard"`
	Queue     int     `json:"queue"`
	State     string  `json:"state"`
	Local     string  `json:"local"`
	Remote    string  `json:"remote"`
	Listener  string  `json:"listener,omitempty"`
	Leg       string  `json:"leg,omitempty"`
	Kernel    bool    `json:"kernel,omitempty"` // an OS socket, not an engine connection
	RTT       string  `json:"rtt,omitempty"`    // smoothed RTT, Go duration syntax
	RTTMicros *int64  `json:"rtt_us,omitempty"` // the same in microseconds
	Cwnd      *int    `json:"cwnd,omitempty"`   // congestion window, bytes
	BytesIn   *uint64 `json:"in,omitempty"`     // bytes received from the remote (read by the proxy)
	BytesOut  *uint64 `json:"out,omitempty"`    // bytes written toward the remote
	TCP       *TCPDoc `json:"tcp,omitempty"`    // ss -i's details (not for TIME_WAIT entries)
	Other     string  `json:"other,omitempty"`  // the session's other leg, local->remote
}

// TCPDoc is what `xdproxy ss` prints beyond the listing's fields.
type TCPDoc struct {
	RTTVarMicros int64  `json:"rttvar_us"`
	RTOMillis    int64  `json:"rto_ms"`
	MSS          int    `json:"mss"`
	Ssthresh     int    `json:"ssthresh"`
	Retransmits  uint64 `json:"retrans"`
	SendQueue    int    `json:"send_q"`
	RecvQueue    int    `json:"recv_q"`
	SendWindow   uint32 `json:"snd_wnd"`
	RecvWindow   uint32 `json:"rcv_wnd"`
	Congestion   string `json:"cc,omitempty"`                // cubic, newreno, bbr
	PacingRate   uint64 `json:"pacing_rate_bps,omitempty"`   // bits/s, when paced
	DeliveryRate uint64 `json:"delivery_rate_bps,omitempty"` // bits/s: BBR's bandwidth estimate (the kernel's last sample for kernel legs)
	MinRTTMicros int64  `json:"min_rtt_us,omitempty"`
}

func (e *ConnEntry) json() ConnDoc {
	j := ConnDoc{
		Interface: e.Interface, Shard: e.Shard, Queue: e.Queue, State: e.State.String(),
		Local: e.Local.String(), Remote: e.Remote.String(), Listener: e.Listener, Leg: e.Leg, Kernel: e.Kernel,
	}
	if e.State == stack.Established {
		rtt := e.SRTT.Round(time.Microsecond)
		us := e.SRTT.Microseconds()
		cwnd, in, out := e.Cwnd, e.BytesIn, e.BytesOut
		j.RTT, j.RTTMicros, j.Cwnd, j.BytesIn, j.BytesOut = rtt.String(), &us, &cwnd, &in, &out
	}
	if d := e.TCP; d != nil {
		j.TCP = &TCPDoc{RTTVarMicros: d.RTTVar.Microseconds(), RTOMillis: d.RTO.Milliseconds(), MSS: d.MSS, Ssthresh: d.Ssthresh,
			Retransmits: d.Retransmits, SendQueue: d.SendQueue, RecvQueue: d.RecvQueue, SendWindow: d.SendWindow, RecvWindow: d.RecvWindow,
			Congestion: d.Congestion, PacingRate: uint64(d.PacingRate * 8), DeliveryRate: uint64(d.DeliveryRate * 8), MinRTTMicros: d.MinRTT.Microseconds()}
	}
	j.Other = e.Other
	return j
}

// appendText renders e as one /connections line:
//
//	SHARD STATE LOCAL REMOTE [rtt=… cwnd=… in=… out=…] [listener=… leg=…] [kernel] if=IFACE
//
// kernel marks a backend leg that is an OS socket (dial: kernel).
func (e *ConnEntry) appendText(b []byte) []byte {
	b = strconv.AppendInt(b, int64(e.Shard), 10)
	b = append(b, ' ')
	b = append(b, e.State.String()...)
	b = append(b, ' ')
	b = e.Local.AppendTo(b)
	b = append(b, ' ')
	b = e.Remote.AppendTo(b)
	if e.State == stack.Established {
		b = append(b, " rtt="...)
		b = append(b, e.SRTT.Round(time.Microsecond).String()...)
		b = append(b, " cwnd="...)
		b = strconv.AppendInt(b, int64(e.Cwnd), 10)
		b = append(b, " in="...)
		b = strconv.AppendUint(b, e.BytesIn, 10)
		b = append(b, " out="...)
		b = strconv.AppendUint(b, e.BytesOut, 10)
	}
	if e.Listener != "" {
		b = append(b, " listener="...)
		b = append(b, e.Listener...)
	}
	if e.Leg != "" {
		b = append(b, " leg="...)
		b = append(b, e.Leg...)
	}
	if e.Kernel {
		b = append(b, " kernel"...)
	}
	if e.Interface != "" {
		b = append(b, " if="...)
		b = append(b, e.Interface...)
	}
	return append(b, '\n')
}

// parseConnQuery reads /connections' parameters.
func parseConnQuery(r *http.Request) (ConnQuery, string, error) {
	q := ConnQuery{List: true, TimeWaits: true}
	v := r.URL.Query()
	format := v.Get("format")
	switch format {
	case "", "text":
		format = "text"
	case "json":
	default:
		return q, "", fmt.Errorf("format %q: want text or json", format)
	}
	if s := v.Get("state"); s != "" {
		q.States = map[stack.State]bool{}
		for _, name := range strings.Split(s, ",") {
			st, ok := stateByName(name)
			if !ok {
				return q, "", fmt.Errorf("state %q: not a TCP state", name)
			}
			q.States[st] = true
		}
	}
	q.Listener = v.Get("listener")
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, "", fmt.Errorf("limit %q: want a count", s)
		}
		q.Limit = n
	}
	if s := v.Get("time_wait"); s != "" {
		tw, err := strconv.ParseBool(s)
		if err != nil {
			return q, "", fmt.Errorf("time_wait %q: want true or false", s)
		}
		q.TimeWaits = tw
	}
	return q, format, nil
}

// stateByName accepts ss(8)/netstat names, any case, '-' for '_', and
// SYN_RECV for SYN_RCVD.
func stateByName(name string) (stack.State, bool) {
	n := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(name), "-", "_"))
	if n == "SYN_RECV" {
		n = "SYN_RCVD"
	}
	for st := range stack.NumStates {
		if stack.State(st).String() == n {
			return stack.State(st), true
		}
	}
	return 0, false
}

// listConns gathers the listing, sorted, trimmed to q.Limit overall.
func (a *Admin) listConns(ctx context.Context, q ConnQuery) (list []ConnEntry, truncated, partial bool) {
	src := a.source()
	if src == nil {
		return nil, false, false
	}
	ctx, cancel := context.WithTimeout(ctx, a.shardTimeout())
	defer cancel()
	pv := src.View(ctx, q)
	order := map[string]int{}
	for i, iv := range pv.Ifaces {
		order[iv.Name] = i
	}
	for _, sv := range pv.Shards {
		if !sv.Answered {
			partial = true
			continue
		}
		truncated = truncated || sv.Conns.Truncated
		list = append(list, sv.Conns.List...)
	}
	sortConns(list, order)
	if q.Limit > 0 && len(list) > q.Limit {
		list, truncated = list[:q.Limit], true
	}
	return list, truncated, partial
}

func (a *Admin) handleConnections(w http.ResponseWriter, r *http.Request) {
	q, format, err := parseConnQuery(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	list, truncated, partial := a.listConns(r.Context(), q)
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if truncated {
		h.Set("X-Xdproxy-Truncated", "true")
	}
	if partial {
		// Some shard did not answer in time (or has stopped): its
		// connections are missing.
		h.Set("X-Xdproxy-Partial", "true")
	}
	if format == "json" {
		h.Set("Content-Type", "application/json")
		out := make([]ConnDoc, len(list))
		for i := range list {
			out[i] = list[i].json()
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(out)
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	bw := bufio.NewWriterSize(w, 32<<10)
	var line []byte
	for i := range list {
		line = list[i].appendText(line[:0])
		bw.Write(line)
	}
	bw.Flush()
}

// sortConns orders a listing: by interface (in view order), shard, live
// connections before TIME_WAIT entries, then local and remote address.
func sortConns(list []ConnEntry, ifOrder map[string]int) {
	sort.SliceStable(list, func(i, j int) bool {
		a, b := &list[i], &list[j]
		if a.Interface != b.Interface {
			return ifOrder[a.Interface] < ifOrder[b.Interface]
		}
		if a.Shard != b.Shard {
			return a.Shard < b.Shard
		}
		if at, bt := a.State == stack.TimeWait, b.State == stack.TimeWait; at != bt {
			return bt
		}
		if c := a.Local.Compare(b.Local); c != 0 {
			return c < 0
		}
		return a.Remote.Compare(b.Remote) < 0
	})
}
