package dataplane

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdproxy/xdproxy/internal/lab"
)

func TestReservedPorts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		listeners []string
		want      string
	}{
		{"no listeners", nil, "20000-59999"},
		// Five listeners on one address (the bench's 7000-7004), in any order.
		{"adjacent", []string{"10.10.1.1:7003", "10.10.1.1:7000", "10.10.1.1:7001", "10.10.1.1:7004", "10.10.1.1:7002"}, "7000-7004,20000-59999"},
		// One port on several addresses, the unspecified ones included.
		{"same port", []string{"10.0.0.1:443", "0.0.0.0:443", "[::]:443", "[2001:db8::1]:80"}, "80,443,20000-59999"},
		{"inside and next to the source ports", []string{"10.0.0.1:30000", "10.0.0.1:60000", "10.0.0.1:65535"}, "20000-60000,65535"},
	} {
		cfg := Config{SourcePorts: [2]uint16{20000, 59999}}
		for _, l := range tc.listeners {
			cfg.Listeners = append(cfg.Listeners, netip.MustParseAddrPort(l))
		}
		if got := portList(reservedPorts(cfg)); got != tc.want {
			t.Errorf("%s: reserved %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestPortSet(t *testing.T) {
	p, err := parsePorts(" 80,1000-1010\t20000-20002,1005 ")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.String(); got != "80,1000-1010,20000-20002" {
		t.Fatalf("parse/String: %q", got)
	}
	q, _ := parsePorts("1009-1012,80")
	if got := p.minus(q).String(); got != "1000-1008,20000-20002" {
		t.Errorf("minus: %q", got)
	}
	if got := p.union(q).String(); got != "80,1000-1012,20000-20002" {
		t.Errorf("union: %q", got)
	}
	if e, _ := parsePorts(""); e.String() != "" {
		t.Errorf("empty: %q", e.String())
	}
	for _, bad := range []string{"x", "10-5", "70000", "1-"} {
		if _, err := parsePorts(bad); err == nil {
			t.Errorf("parsePorts(%q): no error", bad)
		}
	}
}

// TestLabReservedPortsAfterACrash: a run that dies without restoring
// (SIGKILL) leaves its ports reserved and its record in state_dir; the
// next start takes back exactly those (an operator's change made meanwhile
// stays) and its clean exit leaves the value from before the first start.
func TestLabReservedPortsAfterACrash(t *testing.T) {
	lab.RequireRoot(t)
	l, err := lab.New(t)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := l.NS("host")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	ours := [][2]uint16{{80, 80}, {20000, 59999}}
	read := func() string {
		b, err := os.ReadFile(reservedPortsPath)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	err = ns.Do(func() error {
		if err := os.WriteFile(reservedPortsPath, []byte("1000-1010"), 0o644); err != nil {
			return err
		}
		if _, err := reservePorts(dir, ours, log); err != nil { // the run that will "crash": its undo never runs
			return err
		}
		if got := read(); got != "80,1000-1010,20000-59999" {
			t.Errorf("while running: %q", got)
		}
		recs, _ := filepath.Glob(filepath.Join(dir, "reserved-ports.*.json"))
		if len(recs) != 1 {
			t.Fatalf("records in state_dir: %v", recs)
		}
		// It dies: a pid that is not running.
		data, _ := os.ReadFile(recs[0])
		os.WriteFile(recs[0], []byte(strings.Replace(string(data), fmt.Sprintf(`"pid":%d`, os.Getpid()), `"pid":2147483646`, 1)), 0o600)
		// Meanwhile the operator reserves another port.
		os.WriteFile(reservedPortsPath, []byte(read()+",3000"), 0o644)

		res, err := reservePorts(dir, ours, log)
		if err != nil {
			return err
		}
		if got := read(); got != "80,1000-1010,3000,20000-59999" {
			t.Errorf("second run: %q", got)
		}
		// A listener added and removed at run time: its port comes and goes;
		// one inside the source ports stays reserved.
		if err := res.add([][2]uint16{{8000, 8000}, {30000, 30000}}); err != nil {
			return err
		}
		if got := read(); got != "80,1000-1010,3000,8000,20000-59999" {
			t.Errorf("with a listener on 8000 added: %q", got)
		}
		if err := res.release([][2]uint16{{8000, 8000}, {30000, 30000}, {3000, 3000}}, ours); err != nil {
			return err
		}
		if got := read(); got != "80,1000-1010,3000,20000-59999" {
			t.Errorf("after releasing 8000 (and 30000, 3000, which are not its own to release): %q", got)
		}
		res.undo()
		if got := read(); got != "1000-1010,3000" {
			t.Errorf("after the clean exit: %q, want the value from before the first run plus the operator's 3000", got)
		}
		if recs, _ := filepath.Glob(filepath.Join(dir, "reserved-ports.*.json")); len(recs) != 0 {
			t.Errorf("records left: %v", recs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
