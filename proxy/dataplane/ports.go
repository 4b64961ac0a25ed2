package dataplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
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

// reservedPortsPath is the sysctl the data plane changes on the host.
const reservedPortsPath = "/proc/sys/net/ipv4/ip_local_reserved_ports"

// portsRecord is what a running data plane wrote into the state directory
// before it reserved its ports: who it is and which ranges it added, so
// that after a crash (SIGKILL: no restore ran) the next start takes back
// exactly those — never the leaked value for the original.
type portsRecord struct {
	PID    int    `json:"pid"`
	Before string `json:"before"` // the value found, for the operator
	Added  string `json:"added"`  // the ranges this data plane added (not already there)
}

// portReservation is what the data plane holds of
// net.ipv4.ip_local_reserved_ports (which also covers IPv6) of the network
// namespace it runs in: the ranges it added, so that it takes back exactly
// those (whatever else changed meanwhile stays). The sysctl file stays
// open, so later writes reach that namespace from whichever thread makes
// them.
type portReservation struct {
	f      *os.File
	record string   // the record in state_dir ("" when none is kept)
	added  *portSet // the ranges this data plane added (not there before)
	log    *slog.Logger
}

// reservePorts adds rs to ip_local_reserved_ports of the calling thread's
// network namespace, so kernel sockets never pick a port whose return
// traffic XDP would steer to the engine. With stateDir set, what it adds is
// recorded there first (one record per network namespace), and a record
// left by a data plane that died without restoring is applied before
// anything else.
func reservePorts(stateDir string, rs [][2]uint16, log *slog.Logger) (*portReservation, error) {
	f, err := os.OpenFile(reservedPortsPath, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("dataplane: reserve ports: %w", err)
	}
	r := &portReservation{f: f, added: new(portSet), log: log}
	cur, err := r.read()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("dataplane: reserve ports: %w", err)
	}
	if stateDir != "" {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err == nil {
			r.record = filepath.Join(stateDir, fmt.Sprintf("reserved-ports.netns-%d.json", st.Ino))
		}
	}
	if r.record != "" {
		if data, err := os.ReadFile(r.record); err == nil {
			var old portsRecord
			switch {
			case json.Unmarshal(data, &old) != nil:
				log.Warn("ignoring an unreadable record of reserved ports", "file", r.record)
			case old.PID != os.Getpid() && processAlive(old.PID):
				log.Warn("another xdproxy in this network namespace holds reserved ports; not recording ours", "pid", old.PID, "file", r.record)
				r.record = ""
			default:
				added, err := parsePorts(old.Added)
				if err == nil {
					cur.remove(added)
					err = r.write(cur)
				}
				if err != nil {
					f.Close()
					return nil, fmt.Errorf("dataplane: taking back the reserved ports a crashed run left (%s): %w", r.record, err)
				}
				log.Warn("took back the reserved ports a previous run left behind (it did not exit cleanly)",
					"pid", old.PID, "removed", old.Added, "ip_local_reserved_ports", cur.String())
				os.Remove(r.record)
			}
		}
	}
	if err := r.add(rs); err != nil {
		f.Close()
		if r.record != "" {
			os.Remove(r.record)
		}
		return nil, err
	}
	return r, nil
}

func (r *portReservation) read() (*portSet, error) {
	buf := make([]byte, 64<<10)
	n, err := r.f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return parsePorts(string(buf[:n]))
}

func (r *portReservation) write(p *portSet) error {
	_, err := r.f.WriteAt([]byte(p.String()+"\n"), 0)
	return err
}

// add reserves rs too: the ranges not reserved already are recorded (when
// a record is kept) and then written.
func (r *portReservation) add(rs [][2]uint16) error {
	cur, err := r.read()
	if err != nil {
		return fmt.Errorf("dataplane: reserve ports: %w", err)
	}
	added := r.added.union(newPortSet(rs).minus(cur))
	if r.record != "" {
		data, _ := json.Marshal(portsRecord{PID: os.Getpid(), Before: cur.minus(r.added).String(), Added: added.String()})
		if err := writeFileAtomic(r.record, data); err != nil {
			return fmt.Errorf("dataplane: recording the reserved ports in state_dir: %w", err)
		}
	}
	if err := r.write(cur.union(newPortSet(rs))); err != nil {
		return fmt.Errorf("dataplane: reserve ports %s: %w", portList(rs), err)
	}
	r.added = added
	return nil
}

// release takes back the ports of rs that this data plane added, except
// those in keep (still needed).
func (r *portReservation) release(rs [][2]uint16, keep [][2]uint16) error {
	drop := newPortSet(rs).minus(newPortSet(keep))
	for i := range drop {
		drop[i] &= r.added[i]
	}
	cur, err := r.read()
	if err != nil {
		return err
	}
	cur.remove(drop)
	if err := r.write(cur); err != nil {
		return err
	}
	r.added.remove(drop)
	if r.record != "" {
		data, _ := json.Marshal(portsRecord{PID: os.Getpid(), Before: cur.minus(r.added).String(), Added: r.added.String()})
		return writeFileAtomic(r.record, data)
	}
	return nil
}

// undo takes back every range this data plane added and forgets the record.
func (r *portReservation) undo() {
	defer r.f.Close()
	now, err := r.read()
	if err == nil {
		now.remove(r.added)
		err = r.write(now)
	}
	if err != nil {
		r.log.Error("restoring ip_local_reserved_ports", "err", err)
		return // the record stays: the next start takes them back
	}
	if r.record != "" {
		os.Remove(r.record)
	}
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// writeFileAtomic writes data to a temporary file beside path, then renames it.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := errors.Join(tmp.Sync(), tmp.Close()); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// portSet is a set of ports, as ip_local_reserved_ports holds one.
type portSet [1 << 10]uint64

func newPortSet(rs [][2]uint16) *portSet {
	p := new(portSet)
	for _, r := range rs {
		for q := int(r[0]); q <= int(r[1]); q++ {
			p[q>>6] |= 1 << (q & 63)
		}
	}
	return p
}

// parsePorts reads "7000,20000-59999" (commas or spaces; empty: none).
func parsePorts(s string) (*portSet, error) {
	var rs [][2]uint16
	for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		a, b, isRange := strings.Cut(part, "-")
		lo, err := strconv.ParseUint(a, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("port range %q: %w", part, err)
		}
		hi := lo
		if isRange {
			if hi, err = strconv.ParseUint(b, 10, 16); err != nil || hi < lo {
				return nil, fmt.Errorf("port range %q: not lo-hi", part)
			}
		}
		rs = append(rs, [2]uint16{uint16(lo), uint16(hi)})
	}
	return newPortSet(rs), nil
}

func (p *portSet) has(q int) bool { return p[q>>6]&(1<<(q&63)) != 0 }

func (p *portSet) union(o *portSet) *portSet {
	out := *p
	for i := range out {
		out[i] |= o[i]
	}
	return &out
}

func (p *portSet) minus(o *portSet) *portSet {
	out := *p
	for i := range out {
		out[i] &^= o[i]
	}
	return &out
}

func (p *portSet) remove(o *portSet) {
	for i := range p {
		p[i] &^= o[i]
	}
}

// String is the set as ip_local_reserved_ports writes it: "7000-7004,20000".
func (p *portSet) String() string {
	var rs [][2]uint16
	for q := 0; q < 1<<16; q++ {
		if !p.has(q) {
			continue
		}
		if n := len(rs); n > 0 && int(rs[n-1][1])+1 == q {
			rs[n-1][1] = uint16(q)
		} else {
			rs = append(rs, [2]uint16{uint16(q), uint16(q)})
		}
	}
	return portList(rs)
}
