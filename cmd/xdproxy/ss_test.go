package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestSS: `xdproxy ss` lists a session's two legs as ss -tni lists the
// kernel's, each with its TCP details and the other leg, and filters them.
func TestSS(t *testing.T) {
	topo := newTopology(t, e2eQueues)
	startRaw(t, topo.Backends, backend1+":7000", "b1")
	d := startDaemon(t, topo, daemonConfig(topo, "1s", listenerYAML("raw", listenerIP+":7000", "round_robin", "", backend1+":7000")))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, name, err := dialRaw(ctx, topo.Client, listenerIP+":7000")
	if err != nil || name != "b1" {
		t.Fatalf("dial: %q %v", name, err)
	}
	defer c.Close()
	client := c.LocalAddr().String()

	code, out, errs := inNS(t, topo.Proxy, "ss", "--admin", d.adminAddr, "state", "established", "dport", "=", ":7000")
	if code != 0 {
		t.Fatalf("xdproxy ss: exit %d, %q", code, errs)
	}
	// Only the backend leg (its peer's port is 7000), with the client leg as its other.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "State") ||
		!regexp.MustCompile(`^ESTAB\s+0\s+0\s+10\.10\.1\.1:\d+\s+10\.10\.2\.2:7000\s+shard=\d if=\S+ listener=raw leg=backend$`).MatchString(lines[1]) ||
		!regexp.MustCompile(`^\t cubic rtt:\d+\.\d{3}/\d+\.\d{3} rto:\d+ mss:\d+ cwnd:\d+ ssthresh:\d+ .* other_leg:10\.10\.1\.1:7000->`+regexp.QuoteMeta(client)+`$`).MatchString(lines[2]) {
		t.Fatalf("xdproxy ss state established dport = :7000:\n%s\nstderr: %s", out, errs)
	}
	code, out, _ = inNS(t, topo.Proxy, "ss", "--admin", d.adminAddr, "sport", "=", ":7000", "dst", client)
	if code != 0 || !strings.Contains(out, "leg=client") || strings.Contains(out, "leg=backend") {
		t.Fatalf("xdproxy ss sport = :7000 dst %s:\n%s", client, out)
	}
	if code, _, errs := inNS(t, topo.Proxy, "ss", "--admin", d.adminAddr, "bogus"); code != 2 || !strings.Contains(errs, "unknown filter word") {
		t.Errorf("a bad filter: exit %d, %q", code, errs)
	}
}
