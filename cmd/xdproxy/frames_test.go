package main

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"
)

// TestFramesPerConnection counts the frames xdproxy (dial: xdp) moves
// through its AF_XDP sockets per short connection, `make bench`'s
// connection-rate exchange one at a time: connect, 64-byte request,
// 64-byte echo, the client closes, the backend closes on EOF. Linux on
// both ends sends 10 of them (client: SYN, ACK, request, ACK of the reply,
// FIN, ACK of our FIN; backend: SYN-ACK, ACK of the request, reply, FIN).
// xdproxy sends 7 or 8: SYN-ACK, reply with the request's ACK, FIN with the
// ACK of the client's FIN; SYN, the request (with the third ACK when it
// came in time, else after a bare one), FIN with the ACK of the reply, ACK
// of the backend's FIN. With ACKs at once (quick-ACK mode), a bare third
// ACK and the FIN after the data it followed, it sent 9.70 (fe07a15; 7.55
// since).
func TestFramesPerConnection(t *testing.T) {
	topo := newTopology(t, e2eQueues)
	// The backend echoes the request, then closes after the client.
	topo.Backends.EchoTCP(t, backend1+":7100")
	d := startDaemon(t, topo, daemonConfig(topo, "1s", listenerYAML("web", listenerIP+":7100", "round_robin", "", backend1+":7100")))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exchange := func() {
		t.Helper()
		c, err := topo.Client.DialTCP(ctx, listenerIP+":7100")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		req := bytes.Repeat([]byte{'c'}, 64)
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 64)
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, req) {
			t.Fatalf("echo: %q, %v", got, err)
		}
	}
	// settled waits until the frame counters stop moving (the closes'
	// last segments) and returns them.
	settled := func() (rx, tx float64) {
		t.Helper()
		for range 50 {
			time.Sleep(100 * time.Millisecond)
			resp, err := d.admin.Get("http://" + d.adminAddr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			r, x := sumMetric(string(b), "xdproxy_xsk_rx_frames_total"), sumMetric(string(b), "xdproxy_xsk_tx_frames_total")
			if r == rx && x == tx {
				return rx, tx
			}
			rx, tx = r, x
		}
		t.Fatal("the frame counters did not settle")
		return
	}
	exchange() // the neighbours resolved, the listener warm
	rx0, tx0 := settled()
	const n = 40
	for range n {
		exchange()
	}
	rx1, tx1 := settled()
	in, out := (rx1-rx0)/n, (tx1-tx0)/n
	t.Logf("per connection: %.2f frames in, %.2f out", in, out)
	if in < 9.5 || in > 10.5 {
		t.Errorf("%.2f frames in per connection, want Linux's 10", in)
	}
	if out > 8.5 {
		t.Errorf("%.2f frames out per connection, want at most 8 (7 when the request beats the backend's SYN-ACK)\n%s", out, d.metrics())
	}
}
