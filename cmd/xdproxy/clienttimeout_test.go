package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// TestClientTimeout: a client that asks for a large response and stops
// reading is reset after client_timeout (both legs; counted), while a slow
// client that keeps reading a little is not, nor is an idle one.
func TestClientTimeout(t *testing.T) {
	topo := newTopology(t, e2eQueues)
	startHTTP(t, topo.Backends, backend1+":8080", "b1")
	cfg := daemonConfig(topo, "1s", listenerYAML("web", listenerIP+":80", "round_robin", "", backend1+":8080")) + "client_timeout: 2s\n"
	d := startDaemon(t, topo, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	request := fmt.Sprintf("GET /blob?size=%d HTTP/1.1\r\nHost: x\r\n\r\n", 64<<20)

	stuck, err := topo.Client.DialTCP(ctx, listenerIP+":80")
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	slow, err := topo.Client.DialTCP(ctx, listenerIP+":80")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	idle, err := topo.Client.DialTCP(ctx, listenerIP+":80")
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	for _, c := range []io.Writer{stuck, slow} {
		if _, err := io.WriteString(c, request); err != nil {
			t.Fatal(err)
		}
	}
	// slow reads 16 KiB every 300 ms; stuck reads nothing.
	buf := make([]byte, 16<<10)
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		slow.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadFull(slow, buf); err != nil {
			t.Fatalf("the slow reader, %v in: %v", time.Since(start).Round(time.Millisecond), err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	m := d.fullMetrics()
	if n := gaugeWith(m, "xdproxy_client_timeouts_total", "", ""); n != 1 {
		t.Fatalf("client_timeouts_total = %v after 5 s, want 1 (the stuck reader only)", n)
	}
	if n := gaugeWith(m, "xdproxy_active_sessions", "", ""); n != 2 {
		t.Errorf("active sessions %v, want 2 (the slow reader and the idle one)", n)
	}
	// The stuck reader finds its connection reset once it reads.
	stuck.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, stuck)
	if err == nil || !(isReset(err) || strings.Contains(err.Error(), "reset")) {
		t.Errorf("the stuck reader's connection: %v, want a reset", err)
	}
}
