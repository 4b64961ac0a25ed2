package adminclient

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/xdproxy/xdproxy/proxy/admin"
)

// Connections lists the engine's connections (GET /connections as JSON);
// state, when not empty, is a comma list of TCP states the server filters by.
func (c *Client) Connections(ctx context.Context, state string) ([]admin.ConnDoc, error) {
	q := url.Values{"format": {"json"}}
	if state != "" {
		q.Set("state", state)
	}
	var out []admin.ConnDoc
	err := c.do(ctx, http.MethodGet, "/connections?"+q.Encode(), nil, &out)
	return out, err
}

// SSFilter is the part of ss(8)'s filter language `xdproxy ss` takes:
// "state S" (repeatable; ss's names: established, syn-sent, time-wait, ...),
// "sport = :P", "dport = :P", "src A", "dst A" (A an address or prefix,
// optionally :P), joined by spaces (an implicit "and").
type SSFilter struct {
	States       []string
	SPort, DPort int // 0: any
	Src, Dst     netip.Prefix
	SrcPort      int
	DstPort      int
}

// ParseSSFilter reads the filter words after `xdproxy ss`.
func ParseSSFilter(args []string) (SSFilter, error) {
	var f SSFilter
	words := strings.Fields(strings.Join(args, " "))
	next := func(i int, what string) (string, error) {
		if i >= len(words) {
			return "", fmt.Errorf("%s: a value is missing", what)
		}
		return words[i], nil
	}
	for i := 0; i < len(words); i++ {
		switch w := strings.ToLower(words[i]); w {
		case "state":
			v, err := next(i+1, "state")
			if err != nil {
				return f, err
			}
			f.States = append(f.States, v)
			i++
		case "sport", "dport":
			op, err := next(i+1, w)
			if err != nil {
				return f, err
			}
			v, err := next(i+2, w)
			if err != nil {
				return f, err
			}
			if op != "=" && op != "==" && op != "eq" {
				return f, fmt.Errorf("%s %s: only = is supported", w, op)
			}
			p, err := strconv.Atoi(strings.TrimPrefix(v, ":"))
			if err != nil || p <= 0 || p > 65535 {
				return f, fmt.Errorf("%s = %s: want :PORT", w, v)
			}
			if w == "sport" {
				f.SPort = p
			} else {
				f.DPort = p
			}
			i += 2
		case "src", "dst":
			v, err := next(i+1, w)
			if err != nil {
				return f, err
			}
			pfx, port, err := parseHostFilter(v)
			if err != nil {
				return f, fmt.Errorf("%s %s: %v", w, v, err)
			}
			if w == "src" {
				f.Src, f.SrcPort = pfx, port
			} else {
				f.Dst, f.DstPort = pfx, port
			}
			i++
		default:
			return f, fmt.Errorf("unknown filter word %q (want state, sport, dport, src or dst)", words[i])
		}
	}
	return f, nil
}

// parseHostFilter reads A, A/len, A:P or [A6]:P.
func parseHostFilter(v string) (netip.Prefix, int, error) {
	if ap, err := netip.ParseAddrPort(v); err == nil {
		return netip.PrefixFrom(ap.Addr(), ap.Addr().BitLen()), int(ap.Port()), nil
	}
	if p, err := netip.ParsePrefix(v); err == nil {
		return p.Masked(), 0, nil
	}
	a, err := netip.ParseAddr(strings.Trim(v, "[]"))
	if err != nil {
		return netip.Prefix{}, 0, fmt.Errorf("want an address, a prefix or address:port")
	}
	return netip.PrefixFrom(a, a.BitLen()), 0, nil
}

// StateParam is the states for the server's ?state= (ss names accepted).
func (f SSFilter) StateParam() string {
	out := make([]string, len(f.States))
	for i, s := range f.States {
		switch strings.ToLower(s) {
		case "established":
			s = "ESTABLISHED"
		case "syn-recv":
			s = "SYN_RECV"
		}
		out[i] = s
	}
	return strings.Join(out, ",")
}

// Match reports whether the connection passes the address filters (the
// local end is ss's src, the remote its dst).
func (f SSFilter) Match(c admin.ConnDoc) bool {
	local, err1 := netip.ParseAddrPort(c.Local)
	remote, err2 := netip.ParseAddrPort(c.Remote)
	if err1 != nil || err2 != nil {
		return false
	}
	switch {
	case f.SPort != 0 && int(local.Port()) != f.SPort,
		f.DPort != 0 && int(remote.Port()) != f.DPort,
		f.Src.IsValid() && !f.Src.Contains(local.Addr()),
		f.Dst.IsValid() && !f.Dst.Contains(remote.Addr()),
		f.SrcPort != 0 && int(local.Port()) != f.SrcPort,
		f.DstPort != 0 && int(remote.Port()) != f.DstPort:
		return false
	}
	return true
}

// ssState is ss's short name of a state.
var ssState = map[string]string{
	"ESTABLISHED": "ESTAB", "SYN_SENT": "SYN-SENT", "SYN_RCVD": "SYN-RECV", "FIN_WAIT_1": "FIN-WAIT-1",
	"FIN_WAIT_2": "FIN-WAIT-2", "TIME_WAIT": "TIME-WAIT", "CLOSE_WAIT": "CLOSE-WAIT", "LAST_ACK": "LAST-ACK",
	"CLOSING": "CLOSING", "LISTEN": "LISTEN", "CLOSED": "UNCONN",
}

// WriteSS prints connections the way `ss -tni` prints the kernel's: a
// line per connection (state, queues, local and peer address, the proxy's
// labels), then an indented line of TCP details.
func WriteSS(w io.Writer, conns []admin.ConnDoc) error {
	const row = "%-11s %-6v %-6v %-41s %-41s %s\n"
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, row, "State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port", "Process")
	for _, c := range conns {
		st := ssState[c.State]
		if st == "" {
			st = c.State
		}
		rq, sq := 0, 0
		if c.TCP != nil {
			rq, sq = c.TCP.RecvQueue, c.TCP.SendQueue
		}
		labels := fmt.Sprintf("shard=%d", c.Shard)
		if c.Interface != "" {
			labels += " if=" + c.Interface
		}
		if c.Listener != "" {
			labels += " listener=" + c.Listener
		}
		if c.Leg != "" {
			labels += " leg=" + c.Leg
		}
		if c.Kernel {
			labels += " kernel"
		}
		fmt.Fprintf(bw, row, st, rq, sq, c.Local, c.Remote, labels)
		if c.TCP == nil {
			continue
		}
		d := c.TCP
		var b strings.Builder
		b.WriteString("\t")
		if d.Congestion != "" {
			fmt.Fprintf(&b, " %s", d.Congestion) // first, as ss -i puts it
		}
		if c.RTTMicros != nil {
			fmt.Fprintf(&b, " rtt:%.3f/%.3f", float64(*c.RTTMicros)/1000, float64(d.RTTVarMicros)/1000)
		}
		fmt.Fprintf(&b, " rto:%d mss:%d", d.RTOMillis, d.MSS)
		if c.Cwnd != nil {
			fmt.Fprintf(&b, " cwnd:%d", *c.Cwnd)
		}
		fmt.Fprintf(&b, " ssthresh:%d snd_wnd:%d rcv_wnd:%d", d.Ssthresh, d.SendWindow, d.RecvWindow)
		if c.BytesOut != nil && c.BytesIn != nil {
			fmt.Fprintf(&b, " bytes_sent:%d bytes_received:%d", *c.BytesOut, *c.BytesIn)
		}
		if d.PacingRate > 0 {
			fmt.Fprintf(&b, " pacing_rate %s", bitRate(d.PacingRate))
		}
		if d.DeliveryRate > 0 {
			fmt.Fprintf(&b, " delivery_rate %s", bitRate(d.DeliveryRate))
		}
		if d.MinRTTMicros > 0 {
			fmt.Fprintf(&b, " minrtt:%.3f", float64(d.MinRTTMicros)/1000)
		}
		fmt.Fprintf(&b, " retrans:%d", d.Retransmits)
		if c.Other != "" {
			fmt.Fprintf(&b, " other_leg:%s", c.Other)
		}
		fmt.Fprintln(bw, b.String())
	}
	return bw.Flush()
}

// bitRate writes bits/s as ss does: 12.3Mbps.
func bitRate(bps uint64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.1fGbps", float64(bps)/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.1fMbps", float64(bps)/1e6)
	case bps >= 1e3:
		return fmt.Sprintf("%.1fKbps", float64(bps)/1e3)
	}
	return fmt.Sprintf("%dbps", bps)
}
