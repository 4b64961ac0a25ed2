package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/internal/lab"
	"github.com/xdproxy/xdproxy/proxy/trace"
)

var updateTraceGolden = flag.Bool("update-trace", false, "rewrite testdata/trace-ladder.golden")

// TestTraceLadder: the textbook exchange through the daemon — the client
// sends 99 bytes, the backend answers 119, the client closes — traced with
// `xdproxy trace` and compared byte for byte with the golden ladder: both
// legs' three-way handshakes, ack numbers 100 and 120, both four-way
// closes, TIME_WAIT on the side that closed first (the client on its leg,
// xdproxy on the backend leg). The peers pause between steps (100 ms
// before the request, the response and the client's close; 300 ms before
// the backend's close) so that every ACK goes out on its own, whether Linux
// or the engine delays it: the ladder does not depend on timing. Only the
// ephemeral ports, the shard and the session number are normalised.
func TestTraceLadder(t *testing.T) {
	topo := textbookLab(t)
	d := startDaemon(t, topo, daemonConfig(topo, "1s", listenerYAML("web", listenerIP+":7100", "round_robin", "", backend1+":7100")))
	out := traceAround(t, topo, func(ctx context.Context) { textbookExchange(t, ctx, topo) },
		"--admin", d.adminAddr, "--listener", "web", "--count", "1")
	got := normaliseLadder(out)
	golden := filepath.Join("testdata", "trace-ladder.golden")
	if *updateTraceGolden {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("ladder differs from %s (-update-trace rewrites it):\n%s\nwant:\n%s", golden, got, want)
	}
}

// TestTraceTimeWait: with --time-wait the backend leg's trace follows its
// TIME_WAIT entry to the expiry (tcp.time_wait 1s here), and the session
// arrives after it, as JSON.
func TestTraceTimeWait(t *testing.T) {
	topo := textbookLab(t)
	cfg := daemonConfig(topo, "1s", listenerYAML("web", listenerIP+":7100", "round_robin", "", backend1+":7100")) + "tcp:\n  time_wait: 1s\n"
	d := startDaemon(t, topo, cfg)
	out := traceAround(t, topo, func(ctx context.Context) { textbookExchange(t, ctx, topo) },
		"--admin", d.adminAddr, "--count", "1", "--time-wait", "--json")
	var doc trace.SessionDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	var backend []trace.EventDoc
	for _, e := range doc.Events {
		if e.Leg == "backend" {
			backend = append(backend, e)
		}
	}
	n := len(backend)
	if n < 3 || backend[n-2].Timer != "TIME_WAIT expiry" || backend[n-1].From != "TIME_WAIT" || backend[n-1].To != "CLOSED" ||
		backend[n-1].T-backend[n-3].T < int64(time.Second) {
		t.Fatalf("the backend leg does not end in TIME_WAIT's expiry 1s later: %+v", backend[max(0, n-3):])
	}
}

// textbookLab is the lab with a backend on backend1:7100 that reads 99
// bytes, answers 119 after 100 ms, and closes 300 ms after the client's
// FIN. Its kernel ACKs at once (its routes' quickack): its delayed ACK of
// xdproxy's FIN would otherwise race the engine's own delayed ACK of the
// client's FIN, 40 ms each.
func textbookLab(t *testing.T) *lab.Topology {
	t.Helper()
	topo := newTopology(t, e2eQueues)
	routes, err := topo.Backends.Run(context.Background(), "ip", "-4", "route", "show")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range strings.Split(strings.TrimSpace(routes), "\n") {
		args := append([]string{"route", "change"}, strings.Fields(r)...)
		if _, err := topo.Backends.Run(context.Background(), "ip", append(args, "quickack", "1")...); err != nil {
			t.Fatalf("ip %s quickack 1: %v", strings.Join(args, " "), err)
		}
	}
	ln, err := topo.Backends.ListenTCP(backend1 + ":7100")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.ReadFull(c, make([]byte, 99)); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond) // its ACK of the request first
				c.Write(bytes.Repeat([]byte{'b'}, 119))
				io.Copy(io.Discard, c) // until the client's FIN, passed on by xdproxy
				time.Sleep(300 * time.Millisecond)
			}()
		}
	}()
	return topo
}

// textbookExchange: the client sends 99 bytes, reads 119, closes.
func textbookExchange(t *testing.T, ctx context.Context, topo *lab.Topology) {
	c, err := topo.Client.DialTCP(ctx, listenerIP+":7100")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the backend leg's handshake first
	if _, err := c.Write(bytes.Repeat([]byte{'c'}, 99)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 119)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // its ACK of the response first, delayed or not
	c.Close()
}

// traceAround runs `xdproxy trace ARGS` in the proxy namespace, runs
// traffic once it is waiting, and returns what it printed.
func traceAround(t *testing.T, topo *lab.Topology, traffic func(context.Context), args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := topo.Proxy.Command(ctx, xdproxyBin, append([]string{"trace"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout = &out
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(errPipe)
	if !sc.Scan() || !strings.Contains(sc.Text(), "waiting for 1 session") {
		cmd.Wait()
		t.Fatalf("xdproxy trace did not start: %q", sc.Text())
	}
	var errs strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		for sc.Scan() {
			errs.WriteString(sc.Text() + "\n")
		}
	}()
	traffic(ctx)
	err = cmd.Wait()
	<-done
	if err != nil {
		t.Fatalf("xdproxy trace: %v; stderr: %s", err, errs.String())
	}
	return out.String()
}

// normaliseLadder replaces what changes from run to run in a ladder's
// header: the session number, the shard and the ephemeral ports.
func normaliseLadder(s string) string {
	s = regexp.MustCompile(`(?m)^session \d+, (.*), shard \d+$`).ReplaceAllString(s, "session N, $1, shard N")
	return regexp.MustCompile(`(?m)^(  \w+ leg: [0-9.]+):\d+ ->`).ReplaceAllString(s, "$1:PORT ->")
}
