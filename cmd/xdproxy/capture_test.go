package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/xdproxy/xdproxy/internal/lab"
)

// frameDropCounters are the data plane's counters of traffic frames lost
// (not of bad input): a capture must leave them where they were.
var frameDropCounters = []string{
	"xdproxy_shard_handoff_drops_total", "xdproxy_shard_tx_handoff_drops_total",
	"xdproxy_xsk_rx_dropped_total", "xdproxy_xsk_rx_ring_full_total",
	"xdproxy_xsk_tx_no_frame_total", "xdproxy_xsk_tx_ring_full_total",
}

func frameDrops(m string) map[string]float64 {
	out := map[string]float64{}
	for _, n := range frameDropCounters {
		out[n] = sumMetric(m, n)
	}
	return out
}

// startCapture runs `xdproxy capture` in the proxy namespace and waits
// until the daemon has started the capture.
func startCapture(t *testing.T, d *daemon, args ...string) *lab.Proc {
	t.Helper()
	p, err := d.topo.Proxy.Start(context.Background(), xdproxyBin, append([]string{"capture", "--admin", d.adminAddr}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(2 * time.Second) })
	deadline := time.After(10 * time.Second)
	for !strings.Contains(p.Output(), "capturing to ") {
		select {
		case <-p.Done():
			t.Fatalf("xdproxy capture exited: %v\n%s", p.Wait(), p.Output())
		case <-deadline:
			t.Fatalf("xdproxy capture did not start within 10s:\n%s", p.Output())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return p
}

// stopCapture interrupts the capture as Ctrl-C would; it must exit 0 and
// say what it captured.
func stopCapture(t *testing.T, p *lab.Proc) (frames, dropped int) {
	t.Helper()
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("xdproxy capture did not exit within 10s of SIGINT:\n%s", p.Output())
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("xdproxy capture: %v\n%s", err, p.Output())
	}
	m := regexp.MustCompile(`(\d+) frames captured; \S+: \d+ matched, (\d+) dropped from the capture\n`).FindStringSubmatch(p.Output())
	if m == nil { // a summary "cut short" does not match: the daemon must have sent its final statistics
		t.Fatalf("xdproxy capture's summary: %q", p.Output())
	}
	frames, _ = strconv.Atoi(m[1])
	dropped, _ = strconv.Atoi(m[2])
	return frames, dropped
}

// tshark runs tshark on a capture file.
func tshark(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "tshark", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("tshark %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// capturedSegment is one TCP frame of a capture as tshark reads it.
type capturedSegment struct {
	iface    string
	dir      uint64 // epb_flags direction: 1 inbound, 2 outbound
	queue    string
	time     time.Time
	src, dst string // address:port
	flags    uint64
	length   int
	stream   int
}

func readSegments(t *testing.T, file string) []capturedSegment {
	t.Helper()
	out := tshark(t, "-r", file, "-Y", "tcp", "-T", "fields", "-E", "separator=|",
		"-e", "frame.interface_name", "-e", "frame.packet_flags_direction", "-e", "frame.interface_queue", "-e", "frame.time_epoch",
		"-e", "ip.src", "-e", "tcp.srcport", "-e", "ip.dst", "-e", "tcp.dstport", "-e", "tcp.flags", "-e", "tcp.len", "-e", "tcp.stream")
	var segs []capturedSegment
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 11 {
			t.Fatalf("tshark line %q", line)
		}
		var s capturedSegment
		s.iface, s.queue = f[0], f[2]
		s.dir, _ = strconv.ParseUint(f[1], 0, 32)
		secs, _ := strconv.ParseFloat(f[3], 64)
		s.time = time.Unix(0, int64(secs*1e9))
		s.src, s.dst = f[4]+":"+f[5], f[6]+":"+f[7]
		s.flags, _ = strconv.ParseUint(f[8], 0, 16)
		s.length, _ = strconv.Atoi(f[9])
		s.stream, _ = strconv.Atoi(f[10])
		segs = append(segs, s)
	}
	return segs
}

// followServer is the payload the server side (node 1) of a TCP stream
// sent, reassembled by tshark.
func followServer(t *testing.T, file string, stream int) []byte {
	t.Helper()
	out := tshark(t, "-r", file, "-q", "-z", fmt.Sprintf("follow,tcp,raw,%d", stream))
	var payload []byte
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "\t") {
			continue // node 0's data, or the header
		}
		b, err := hex.DecodeString(strings.TrimSpace(line))
		if err != nil {
			t.Fatalf("tshark follow: %q: %v", tail(line, 80), err)
		}
		payload = append(payload, b...)
	}
	return payload
}

// TestCapture: `xdproxy capture --listener web` during a curl download
// through the daemon, read back with tshark: the client leg's handshake,
// both directions on the proxy's interface with their queues and sane
// nanosecond timestamps, nothing of the backend leg, and the server's side
// of the stream reassembled to exactly the body curl received. Then a
// capture of everything under heavier load: traffic loses no frame to it
// (the data plane's drop counters stay where they were), whatever the
// capture itself has to drop.
func TestCapture(t *testing.T) {
	if err := lab.EnsureTools("curl:curl", "tshark:tshark"); err != nil {
		t.Fatal(err)
	}
	topo := newTopology(t, e2eQueues)
	startHTTP(t, topo.Backends, backend1+":8080", "b1")
	startHTTP(t, topo.Backends, backend2+":8080", "b2")
	d := startDaemon(t, topo, webConfig(topo, ""))

	// Refused filters: the parameter named, no file left.
	bad := filepath.Join(t.TempDir(), "bad.pcapng")
	if code, _, errs := inNS(t, topo.Proxy, "capture", "--admin", d.adminAddr, "-w", bad, "--host", "10.0.0"); code != 1 || !strings.Contains(errs, `host "10.0.0": not an IP address`) {
		t.Errorf("--host 10.0.0: exit %d, %q", code, errs)
	}
	if code, _, errs := inNS(t, topo.Proxy, "capture", "--admin", d.adminAddr, "-w", bad, "--listener", "nope"); code != 1 || !strings.Contains(errs, `listener "nope"`) {
		t.Errorf("--listener nope: exit %d, %q", code, errs)
	}

	// To stdout, until a count: the health checks' frames are enough.
	code, stdout, errs := inNS(t, topo.Proxy, "capture", "--admin", d.adminAddr, "-w", "-", "--count", "3")
	if code != 0 || !strings.Contains(errs, "3 frames captured") {
		t.Fatalf("capture -w - --count 3: exit %d, %q", code, errs)
	}
	r, err := pcapgo.NewNgReader(strings.NewReader(stdout), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatalf("capture -w -: %v", err)
	}
	for i := range 4 {
		if _, _, err := r.ReadPacketData(); (err == nil) != (i < 3) {
			t.Fatalf("capture -w - --count 3: packet %d: %v", i+1, err)
		}
	}

	const size = 4 << 20
	file := filepath.Join(t.TempDir(), "web.pcapng")
	before := time.Now()
	// A ring that holds the whole download: the writer may get no CPU for
	// a while on a loaded box, and this capture must be complete.
	p := startCapture(t, d, "-w", file, "--listener", "web", "--duration", "2m", "--buffer", "32MiB")
	be, took := download(t, topo, size, 60*time.Second)
	time.Sleep(200 * time.Millisecond) // the last ACKs and FINs
	frames, dropped := stopCapture(t, p)
	after := time.Now()
	t.Logf("captured a %d MiB download from %s (%s): %d frames, %d dropped from the capture", size>>20, be, took, frames, dropped)
	if dropped != 0 {
		t.Fatalf("%d frames dropped from the capture of one download", dropped)
	}

	segs := readSegments(t, file)
	if len(segs) != frames {
		t.Errorf("tshark read %d TCP frames, the capture wrote %d", len(segs), frames)
	}
	listener := listenerIP + ":80"
	var in, out int
	streams := map[int]int{} // payload bytes from the listener, per stream
	for i, s := range segs {
		if s.iface != topo.ProxyIf || s.queue == "" || s.time.Before(before.Add(-time.Second)) || s.time.After(after.Add(time.Second)) {
			t.Fatalf("frame %d: interface %q, queue %q, time %v (capture from %v to %v)", i, s.iface, s.queue, s.time, before, after)
		}
		switch {
		case s.dir == 1 && s.dst == listener:
			in++
		case s.dir == 2 && s.src == listener:
			out++
			streams[s.stream] += s.length
		default:
			t.Fatalf("frame %d: direction %d from %s to %s: not the listener's client leg", i, s.dir, s.src, s.dst)
		}
	}
	if in == 0 || out == 0 {
		t.Fatalf("%d inbound and %d outbound frames: want both", in, out)
	}
	stream, most := -1, 0
	for st, n := range streams {
		if n > most {
			stream, most = st, n
		}
	}
	// The three-way handshake opens the download's stream.
	var hs []capturedSegment
	for _, s := range segs {
		if s.stream == stream && len(hs) < 3 {
			hs = append(hs, s)
		}
	}
	if len(hs) != 3 || hs[0].flags&0x3f != 0x02 || hs[0].dir != 1 || hs[1].flags&0x3f != 0x12 || hs[1].dir != 2 ||
		hs[2].flags&0x3f != 0x10 || hs[2].dir != 1 || hs[1].dst != hs[0].src {
		t.Fatalf("stream %d does not open with SYN, SYN-ACK, ACK: %+v", stream, hs)
	}
	payload := followServer(t, file, stream)
	_, body, ok := bytes.Cut(payload, []byte("\r\n\r\n"))
	sum := sha256.Sum256(body)
	if !ok || len(body) != size || hex.EncodeToString(sum[:]) != blobSum(size) {
		t.Fatalf("reassembled server side of stream %d: %d bytes, body %d bytes, sha256 %x; want %d bytes, %s",
			stream, len(payload), len(body), sum, size, blobSum(size))
	}
	t.Logf("tshark: %d frames (%d in, %d out), stream %d's body %d bytes, sha256 equal to the download's", len(segs), in, out, stream, len(body))

	// Everything, under load: three downloads at once.
	m := d.fullMetrics()
	dropsBefore := frameDrops(m)
	written0, capDropped0 := gaugeWith(m, "xdproxy_capture_frames_total", "result", "written"), gaugeWith(m, "xdproxy_capture_frames_total", "result", "dropped")
	all := filepath.Join(t.TempDir(), "all.pcapng")
	p = startCapture(t, d, "-w", all)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			download(t, topo, 16<<20, 60*time.Second)
		}()
	}
	wg.Wait()
	frames, dropped = stopCapture(t, p)
	m = d.fullMetrics()
	dropsAfter := frameDrops(m)
	written, capDropped := gaugeWith(m, "xdproxy_capture_frames_total", "result", "written")-written0, gaugeWith(m, "xdproxy_capture_frames_total", "result", "dropped")-capDropped0
	t.Logf("capture of everything during three 16 MiB downloads: %d frames written, %d dropped from the capture (ring full)", frames, dropped)
	if written != float64(frames) || capDropped != float64(dropped) {
		t.Errorf("xdproxy_capture_frames_total: %v written, %v dropped; the file has %d frames and says %d dropped", written, capDropped, frames, dropped)
	}
	for _, n := range frameDropCounters {
		t.Logf("%s: %v before, %v after", n, dropsBefore[n], dropsAfter[n])
		if dropsAfter[n] != dropsBefore[n] {
			t.Errorf("%s went from %v to %v during the capture: traffic lost frames", n, dropsBefore[n], dropsAfter[n])
		}
	}
	if frames == 0 {
		t.Error("the capture of everything wrote no frame")
	}
}
