package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/xdproxy/xdproxy/proxy/dataplane"
)

// captureFake is a Source that can capture: its streams hand out canned
// frames.
type captureFake struct {
	*fakeSource
	mu      sync.Mutex
	frames  []dataplane.CapturedFrame
	counts  []dataplane.CaptureCounts
	running *fakeStream
	asked   []CaptureQuery
}

func (f *captureFake) StartCapture(q CaptureQuery) (CaptureStream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, q)
	if q.Listener != "" && q.Listener != "web" {
		return nil, fmt.Errorf("%w %q", ErrUnknownListener, q.Listener)
	}
	if f.running != nil && !f.running.isClosed() {
		return nil, dataplane.ErrCaptureBusy
	}
	f.running = &fakeStream{frames: f.frames, counts: f.counts, closed: make(chan struct{})}
	return f.running, nil
}

type fakeStream struct {
	mu     sync.Mutex
	frames []dataplane.CapturedFrame
	counts []dataplane.CaptureCounts
	closed chan struct{}
	once   sync.Once
}

func (s *fakeStream) Interfaces() []string { return []string{"eth0", "eth1"} }
func (s *fakeStream) Description() string  { return "port 80" }

func (s *fakeStream) Read(max int, fn func(*dataplane.CapturedFrame)) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for len(s.frames) > 0 && (max <= 0 || n < max) {
		f := s.frames[0]
		s.frames = s.frames[1:]
		fn(&f)
		n++
	}
	return n
}

func (s *fakeStream) Counts() []dataplane.CaptureCounts { return s.counts }
func (s *fakeStream) Close()                            { s.once.Do(func() { close(s.closed) }) }

func (s *fakeStream) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

var captureT0 = time.Date(2026, 12, 2, 8, 0, 0, 123456789, time.UTC)

func cannedFrames() []dataplane.CapturedFrame {
	var out []dataplane.CapturedFrame
	for i := range 5 {
		out = append(out, dataplane.CapturedFrame{
			Time: captureT0.Add(time.Duration(i) * time.Microsecond).UnixNano(), Iface: i % 2, Queue: i % 3, Out: i%2 == 1,
			Data: bytes.Repeat([]byte{byte(i)}, 60+i),
		})
	}
	return out
}

func TestCaptureBadParameters(t *testing.T) {
	a := New(&captureFake{fakeSource: fullSource()}, "127.0.0.1:0", slog.Default())
	for _, tc := range []struct{ query, param string }{
		{"host=10.0.0", "host"},
		{"host=example.com", "host"},
		{"port=0", "port"},
		{"port=65536", "port"},
		{"port=http", "port"},
		{"count=0", "count"},
		{"count=-3", "count"},
		{"count=many", "count"},
		{"duration=-1s", "duration"},
		{"duration=0s", "duration"},
		{"duration=10", "duration"},
		{"duration=25h", "duration"},
		{"port=80&port=81", "port"},
		{"hots=10.0.0.1", "hots"},
		{"listener=nope", "listener"},
		{"buffer=1KiB", "buffer"},
		{"buffer=65MiB", "buffer"},
		{"buffer=lots", "buffer"},
	} {
		res, body := get(t, a.Handler(), "/capture?"+tc.query)
		var doc ErrorDoc
		if res.StatusCode != http.StatusBadRequest || json.Unmarshal([]byte(body), &doc) != nil || !strings.HasPrefix(doc.Error, tc.param+" ") && !strings.HasPrefix(doc.Error, tc.param+":") {
			t.Errorf("/capture?%s: %d %q; want 400 naming %s", tc.query, res.StatusCode, body, tc.param)
		}
	}
	if res, _ := get(t, New(fullSource(), "", nil).Handler(), "/capture"); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/capture from a source that cannot capture: %d, want 503", res.StatusCode)
	}
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/capture", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /capture: %d, want 405", rec.Code)
	}
}

// readNg reads a pcapng stream: its interfaces, packets (with options) and
// the last statistics block of each interface.
func readNg(t *testing.T, b []byte) (ifaces []pcapgo.NgInterface, pkts []ngPacket, stats map[int]pcapgo.NgInterfaceStatistics) {
	t.Helper()
	stats = map[int]pcapgo.NgInterfaceStatistics{}
	r, err := pcapgo.NewNgReader(bytes.NewReader(b), pcapgo.NgReaderOptions{
		StatisticsCallback: func(i int, s pcapgo.NgInterfaceStatistics) { stats[i] = s },
	})
	if err != nil {
		t.Fatal(err)
	}
	for {
		data, ci, opts, err := r.ReadPacketDataWithOptions()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, ngPacket{data: data, time: ci.Timestamp, iface: ci.InterfaceIndex, opts: opts})
	}
	for i := range r.NInterfaces() {
		ifc, _ := r.Interface(i)
		ifaces = append(ifaces, ifc)
	}
	return ifaces, pkts, stats
}

type ngPacket struct {
	data  []byte
	time  time.Time
	iface int
	opts  pcapgo.NgPacketOptions
}

func TestCaptureStream(t *testing.T) {
	src := &captureFake{fakeSource: fullSource(), frames: cannedFrames(), counts: []dataplane.CaptureCounts{{Captured: 3, Dropped: 2}, {Captured: 2}}}
	a := New(src, "127.0.0.1:0", slog.Default())
	res, body := get(t, a.Handler(), "/capture?count=4&listener=web&host=10.0.0.1&port=80&buffer=16MiB")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/x-pcapng" {
		t.Fatalf("/capture: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if q := src.asked[0]; q.Host != netip.MustParseAddr("10.0.0.1") || q.Port != 80 || q.Listener != "web" || q.RingBytes != 16<<20 {
		t.Errorf("asked %+v", q)
	}
	if !src.running.isClosed() {
		t.Error("the capture was not closed")
	}
	ifaces, pkts, stats := readNg(t, []byte(body))
	if len(ifaces) != 2 || ifaces[0].Name != "eth0" || ifaces[1].Name != "eth1" || ifaces[0].LinkType != layers.LinkTypeEthernet ||
		ifaces[1].LinkType != layers.LinkTypeEthernet || ifaces[0].TimestampResolution != 9 || ifaces[0].Filter != "port 80" {
		t.Fatalf("interfaces %+v", ifaces)
	}
	if len(pkts) != 4 {
		t.Fatalf("%d packets, want 4 (count)", len(pkts))
	}
	for i, p := range pkts {
		want := cannedFrames()[i]
		dir := pcapgo.NgEpbFlagDirectionInbound
		if want.Out {
			dir = pcapgo.NgEpbFlagDirectionOutbound
		}
		if !bytes.Equal(p.data, want.Data) || !p.time.Equal(time.Unix(0, want.Time)) || p.iface != want.Iface ||
			p.opts.Flags == nil || p.opts.Flags.Direction != dir || p.opts.Queue == nil || int(*p.opts.Queue) != want.Queue {
			t.Errorf("packet %d: %+v (time %v), want %+v", i, p, p.time, want)
		}
	}
	if s := stats[0]; s.PacketsReceived != 5 || s.PacketsDropped != 2 || s.EndTime.IsZero() {
		t.Errorf("eth0 statistics %+v, want 5 received, 2 dropped, an end time", s)
	}
	if s := stats[1]; s.PacketsReceived != 2 || s.PacketsDropped != 0 {
		t.Errorf("eth1 statistics %+v", s)
	}
	_, metrics := get(t, a.Handler(), "/metrics")
	for _, want := range []string{`xdproxy_capture_frames_total{result="written"} 4`, `xdproxy_capture_frames_total{result="dropped"} 2`, "xdproxy_captures_total 1"} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	lint(t, &a.captures)
}

// TestCaptureEnds: a capture ends at its duration, when its client goes
// away, and when the server shuts down, and only one runs at a time.
func TestCaptureEnds(t *testing.T) {
	src := &captureFake{fakeSource: fullSource(), counts: []dataplane.CaptureCounts{{}, {}}}
	a := New(src, "127.0.0.1:0", slog.Default())
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	base := "http://" + a.Addr() + "/capture"

	start := time.Now()
	res, err := http.Get(base + "?duration=200ms")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if el := time.Since(start); el < 200*time.Millisecond || el > 5*time.Second {
		t.Errorf("duration=200ms took %v", el)
	}
	if ifaces, pkts, stats := readNg(t, b); len(ifaces) != 2 || len(pkts) != 0 || stats[1].EndTime.IsZero() {
		t.Errorf("an empty capture: %d interfaces, %d packets, statistics %+v", len(ifaces), len(pkts), stats)
	}

	// The client goes away: the capture stops.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base, nil)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		t.Fatalf("capture: %s", res.Status)
	}
	// The header blocks arrive at once (flushed), before any frame.
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(res.Body, hdr); err != nil || !bytes.Equal(hdr, []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		t.Fatalf("first bytes % x, %v: want a section header block", hdr, err)
	}
	// A second capture meanwhile: 409.
	if res2, err := http.Get(base); err != nil || res2.StatusCode != http.StatusConflict {
		t.Fatalf("a second capture: %v %v, want 409", res2, err)
	} else {
		res2.Body.Close()
	}
	first := src.running
	cancel()
	res.Body.Close()
	select {
	case <-first.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the capture did not stop when its client went away")
	}

	// The server shuts down: the stream ends with complete blocks.
	res, err = http.Get(base)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		done <- b
	}()
	time.Sleep(50 * time.Millisecond)
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := a.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown with a capture running: %v", err)
	}
	if _, _, stats := readNg(t, <-done); stats[0].EndTime.IsZero() {
		t.Error("no final statistics after Shutdown")
	}
}

// BenchmarkCaptureWrite: the writer's cost per 1,514-byte frame (pcapgo's
// enhanced packet block with its options, into a discarding client).
func BenchmarkCaptureWrite(b *testing.B) {
	frames := make([]dataplane.CapturedFrame, 1024)
	for i := range frames {
		frames[i] = dataplane.CapturedFrame{Time: captureT0.UnixNano() + int64(i), Queue: i % 2, Out: i%2 == 0, Data: make([]byte, 1514)}
	}
	st := &fakeStream{counts: []dataplane.CaptureCounts{{}, {}}, closed: make(chan struct{})}
	cw := &captureWriter{stream: st, rc: http.NewResponseController(discardWriter{}), metrics: &captureMetrics{}}
	if err := cw.header(discardWriter{}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(1514)
	for i := 0; b.Loop(); i++ {
		cw.frame(&frames[i%len(frames)])
	}
}

type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}
func (discardWriter) Flush()                      {}
