package dataplane

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// reservedPorts are the local ports whose return traffic the XDP program
// steers to the engine, as sorted, disjoint ranges: the engine's source
// ports and every listener's port. The program decides by destination
// address:port alone (for a listener on the unspecified address, by port),
// so a kernel socket that autobinds one of them — a dial: kernel backend
// leg, a kernel health check — loses its replies to the engine: with a
// listener on 10.10.1.1:7002, a leg from 10.10.1.1:7002 never sees the
// backend's SYN-ACK, and its client is reset at connect_timeout.
func reservedPorts(cfg Config) [][2]uint16 {
	rs := [][2]uint16{cfg.SourcePorts}
	for _, ap := range cfg.Listeners {
		rs = append(rs, [2]uint16{ap.Port(), ap.Port()})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i][0] < rs[j][0] })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if int(r[0]) <= int(last[1])+1 {
			last[1] = max(last[1], r[1])
		} else {
			out = append(out, r)
		}
	}
	return out
}

// portList formats ranges as ip_local_reserved_ports takes them: "7000-7004,20000-59999".
func portList(rs [][2]uint16) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(',')
		}
		if r[0] == r[1] {
			fmt.Fprintf(&b, "%d", r[0])
		} else {
			fmt.Fprintf(&b, "%d-%d", r[0], r[1])
		}
	}
	return b.String()
}

// reservePorts adds rs to net.ipv4.ip_local_reserved_ports (which also
// covers IPv6), so kernel sockets never pick a port whose return traffic XDP
// would steer to the engine; the returned func restores the old value.
func reservePorts(rs [][2]uint16) (func(), error) {
	const path = "/proc/sys/net/ipv4/ip_local_reserved_ports"
	old, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dataplane: reserve ports: %w", err)
	}
	cur := strings.TrimSpace(string(old))
	ours := portList(rs)
	val := ours
	if cur != "" {
		val = cur + "," + ours
	}
	if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
		return nil, fmt.Errorf("dataplane: reserve ports %s: %w", ours, err)
	}
	return func() { os.WriteFile(path, []byte(cur+"\n"), 0o644) }, nil
}
