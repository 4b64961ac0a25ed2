package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
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
	topo := newTopology(t, e2eQueues)
	// The backend's kernel ACKs at once (its routes' quickack): its
	// delayed ACK of xdproxy's FIN would otherwise race the engine's own
	// delayed ACK of the client's FIN, 40 ms each.
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
	d := startDaemon(t, topo, daemonConfig(topo, "1s", listenerYAML("web", listenerIP+":7100", "round_robin", "", backend1+":7100")))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := topo.Proxy.Command(ctx, xdproxyBin, "trace", "--admin", d.adminAddr, "--listener", "web", "--count", "1")
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
	var errs strings.Builder
	if !sc.Scan() || !strings.Contains(sc.Text(), "waiting for 1 session") {
		t.Fatalf("xdproxy trace did not start: %q", sc.Text())
	}
	go func() {
		for sc.Scan() {
			errs.WriteString(sc.Text() + "\n")
		}
	}()

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
	if err := cmd.Wait(); err != nil {
		t.Fatalf("xdproxy trace: %v; stderr: %s", err, errs.String())
	}
	got := normaliseLadder(out.String())
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

// normaliseLadder replaces what changes from run to run in a ladder's
// header: the session number, the shard and the ephemeral ports.
func normaliseLadder(s string) string {
	s = regexp.MustCompile(`(?m)^session \d+, (.*), shard \d+$`).ReplaceAllString(s, "session N, $1, shard N")
	return regexp.MustCompile(`(?m)^(  \w+ leg: [0-9.]+):\d+ ->`).ReplaceAllString(s, "$1:PORT ->")
}
