package dataplane

// TCP-SCENARIOS.md's (wire) items against the Linux kernel as the peer,
// checked from the kernel's side: its socket states (ss -tan) and a capture
// on its veth, read back with gopacket.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/xdproxy/xdproxy/internal/lab"
	"github.com/xdproxy/xdproxy/stack"
)

// manualApp hands accepted connections to the test, which then drives them
// through Shard.Do; events are recorded per connection.
type manualApp struct {
	accepted chan *stack.Conn
	events   chan connEvent
}

type connEvent struct {
	c  *stack.Conn
	ev stack.Events
}

func (a *manualApp) Acceptable(l *stack.Listener) {
	for c := l.Accept(); c != nil; c = l.Accept() {
		a.accepted <- c
	}
}

func (a *manualApp) ConnEvent(c *stack.Conn, ev stack.Events) {
	if fn, ok := c.User.(connFunc); ok {
		fn(c, ev)
		return
	}
	select {
	case a.events <- connEvent{c, ev}:
	default:
	}
}

// waitEvent waits for ev on c.
func (a *manualApp) waitEvent(t *testing.T, c *stack.Conn, ev stack.Events) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e := <-a.events:
			if e.c == c && e.ev&ev != 0 {
				return
			}
		case <-deadline:
			t.Fatalf("no %v event", ev)
		}
	}
}

// ssState returns the kernel's state for its connection from local port lport.
func ssState(t *testing.T, ns *lab.NS, local net.Addr) string {
	t.Helper()
	out, err := ns.SS()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && f[3] == local.String() {
			return f[0]
		}
	}
	return "(none)"
}

// waitSS polls ss until the kernel's socket is in want.
func waitSS(t *testing.T, ns *lab.NS, local net.Addr, want string) {
	t.Helper()
	var got string
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if got = ssState(t, ns, local); got == want {
			return
		}
	}
	t.Fatalf("kernel socket %v is %s, want %s", local, got, want)
}

type capSeg struct {
	fromClient bool
	tcp        layers.TCP
	payload    int
}

// readCapture returns the TCP segments of the capture, in order.
func readCapture(t *testing.T, file string) []capSeg {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var segs []capSeg
	src := gopacket.NewPacketSource(r, layers.LinkTypeEthernet)
	for p := range src.Packets() {
		ip4, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ip4 == nil || tcp == nil {
			continue
		}
		segs = append(segs, capSeg{fromClient: ip4.SrcIP.Equal(clientPrefix.Addr().AsSlice()), tcp: *tcp, payload: len(tcp.Payload)})
	}
	return segs
}

func TestLabWireScenarios(t *testing.T) {
	app := &manualApp{accepted: make(chan *stack.Conn, 16), events: make(chan connEvent, 1024)}
	el := newEchoLab(t, 1, func(cfg *Config) {
		cfg.NewHandler = func(*Shard) stack.Handler { return app }
	})
	sh := el.dp.Shards()[0]
	pcap := filepath.Join(t.TempDir(), "client.pcap")
	stopCap, err := el.client.Capture(context.Background(), el.veth.A.Name, "tcp port 7", pcap)
	if err != nil {
		t.Fatal(err)
	}

	// Scenario 1 (passive handshake): the kernel's socket is ESTABLISHED, ours too.
	cc := el.dial(t)
	defer cc.Close()
	var c *stack.Conn
	select {
	case c = <-app.accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the engine accepted nothing")
	}
	waitSS(t, el.client, cc.LocalAddr(), "ESTAB")
	sh.Do(func(*Shard) {
		if c.State() != stack.Established {
			t.Errorf("engine side %v, want ESTABLISHED", c.State())
		}
	})

	// Scenario 6 (seq/ack arithmetic): 99 bytes from the client, 119 back.
	if _, err := cc.Write(make([]byte, 99)); err != nil {
		t.Fatal(err)
	}
	app.waitEvent(t, c, stack.EventReadable)
	sh.Do(func(*Shard) {
		buf := make([]byte, 200)
		if n, _ := c.Read(buf); n != 99 {
			t.Errorf("engine read %d bytes, want 99", n)
		}
		c.Write(make([]byte, 119))
	})
	cc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(cc, make([]byte, 119)); err != nil {
		t.Fatal(err)
	}

	// Scenario 12 (half-close): the client shuts down its write side; it
	// sits in FIN-WAIT-2 and still receives everything the engine sends.
	if err := cc.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	app.waitEvent(t, c, stack.EventPeerClosed)
	waitSS(t, el.client, cc.LocalAddr(), "FIN-WAIT-2")
	sh.Do(func(*Shard) {
		if c.State() != stack.CloseWait {
			t.Errorf("engine side %v, want CLOSE_WAIT", c.State())
		}
		c.Write(make([]byte, 10000))
	})
	if _, err := io.ReadFull(cc, make([]byte, 10000)); err != nil {
		t.Fatalf("half-closed client did not receive the engine's data: %v", err)
	}

	// Scenario 11/13 (passive close from the engine's side, the client
	// closed first): the engine's FIN; the kernel goes to TIME-WAIT.
	sh.Do(func(*Shard) { c.CloseWrite() })
	if n, err := cc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the engine's FIN: read %d, %v; want EOF", n, err)
	}
	waitSS(t, el.client, cc.LocalAddr(), "TIME-WAIT")

	// Scenario 10 (active close by the engine): the kernel goes to
	// CLOSE-WAIT; when it closes too, the engine holds the TIME_WAIT entry.
	cc2 := el.dial(t)
	defer cc2.Close()
	var c2 *stack.Conn
	select {
	case c2 = <-app.accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("second connection not accepted")
	}
	sh.Do(func(*Shard) { c2.CloseWrite() })
	waitSS(t, el.client, cc2.LocalAddr(), "CLOSE-WAIT")
	// The kernel's ACK of our FIN may still be on its way.
	var st stack.State
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if sh.Do(func(*Shard) { st = c2.State() }); st == stack.FinWait2 {
			break
		}
	}
	if st != stack.FinWait2 {
		t.Errorf("engine side %v, want FIN_WAIT_2", st)
	}
	cc2.Close()
	app.waitEvent(t, c2, stack.EventPeerClosed)
	var tw bool
	sh.Do(func(s *Shard) {
		k := c2.Key()
		s.Engine().TimeWaits(func(f stack.FlowKey, _ int) bool {
			tw = tw || f == k
			return true
		})
	})
	if !tw {
		t.Error("the engine closed first but holds no TIME_WAIT entry for the 4-tuple")
	}
	waitSS(t, el.client, cc2.LocalAddr(), "(none)")

	if err := stopCap(); err != nil {
		t.Fatal(err)
	}
	checkLadder(t, readCapture(t, pcap), cc.LocalAddr().(*net.TCPAddr).Port)
}

// checkLadder checks the first connection's segments on the wire: the
// handshake (a SYN takes one sequence number), 99 bytes at seq 1 acked with
// ack 100, 119 back at seq 1 acked with 120, FINs taking one number each.
func checkLadder(t *testing.T, segs []capSeg, clientPort int) {
	t.Helper()
	var flow []capSeg
	for _, s := range segs {
		if (s.fromClient && int(s.tcp.SrcPort) == clientPort) || (!s.fromClient && int(s.tcp.DstPort) == clientPort) {
			flow = append(flow, s)
		}
	}
	if len(flow) < 3 || !flow[0].tcp.SYN || flow[0].tcp.ACK || !flow[1].tcp.SYN || !flow[1].tcp.ACK {
		t.Fatalf("capture does not start with SYN, SYN-ACK: %d segments", len(flow))
	}
	x, y := flow[0].tcp.Seq, flow[1].tcp.Seq
	if flow[1].tcp.Ack != x+1 {
		t.Errorf("SYN-ACK ack=%d, want x+1=%d", flow[1].tcp.Ack-x, 1)
	}
	var sawReq, sawReqAck, sawResp, sawRespAck bool
	var lines []string
	for _, s := range flow {
		rel := func(v, base uint32) uint32 { return v - base }
		var seq, ack uint32
		if s.fromClient {
			seq, ack = rel(s.tcp.Seq, x), rel(s.tcp.Ack, y)
		} else {
			seq, ack = rel(s.tcp.Seq, y), rel(s.tcp.Ack, x)
		}
		dir := "client->engine"
		if !s.fromClient {
			dir = "engine->client"
		}
		lines = append(lines, fmt.Sprintf("%s seq=%d ack=%d len=%d syn=%v fin=%v", dir, seq, ack, s.payload, s.tcp.SYN, s.tcp.FIN))
		switch {
		case s.fromClient && s.payload == 99:
			sawReq = seq == 1
		case !s.fromClient && s.tcp.ACK && ack == 100:
			sawReqAck = true
			if s.payload == 119 {
				sawResp = seq == 1
			}
		case s.fromClient && ack == 120:
			sawRespAck = true
		}
	}
	if !sawReq || !sawReqAck || !sawResp || !sawRespAck {
		t.Errorf("seq/ack ladder not as in scenario 6 (req at 1: %v, acked 100: %v, resp at 1: %v, acked 120: %v):\n%s",
			sawReq, sawReqAck, sawResp, sawRespAck, strings.Join(lines, "\n"))
	}
}
