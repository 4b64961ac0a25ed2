package admin

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdproxy/xdproxy/internal/config"
	"github.com/xdproxy/xdproxy/proxy/dataplane"
)

// /capture?host=&port=&listener=&count=&duration= streams pcapng
// (application/x-pcapng) of the frames the shards receive from and send to
// their AF_XDP sockets, which tcpdump on the interface does not see:
//
//	host      an IPv4 or IPv6 address: source or destination (ARP: sender or target)
//	port      1-65535: TCP or UDP source or destination port
//	listener  a listener's name (or an address:port): its address and port on either side
//	count     stop after this many frames (default: no limit)
//	duration  stop after this long, Go syntax (default: until the client goes away)
//	buffer    each shard's capture ring, 64KiB to 64MiB (default 4MiB): room for
//	          bursts the writer has not caught up with yet
//
// The filters are ANDed. The file has a section header, one interface
// description block per configured interface (its name, Ethernet, the
// filter, nanosecond timestamps), an enhanced packet block per frame (its
// interface, a nanosecond timestamp, the direction in the epb_flags option
// — inbound: received by the shard, outbound: sent — and the AF_XDP queue
// in epb_queue), and interface statistics blocks (isb_ifrecv: frames that
// matched, isb_ifdrop: of those, dropped from the capture because the
// shard's ring was full) every second while they change and at the end.
// The stream is flushed whenever the reader has caught up and at least
// every 100 ms, so a reader following it sees frames as they come. The
// capture ends with its last frames and statistics also when the client
// shuts down its sending side (xdproxy capture does on Ctrl-C, and reads
// on to the end), and is cut off when the client reads nothing for 30 s.
//
// One capture runs at a time (each one copies frames on the shards): a
// second one gets 409. Bad parameters get 400 naming the parameter, a
// listener that does not exist too; a proxy without a data plane 503.

// CaptureSource is implemented by a Source that can capture frames
// (*proxy.Proxy). The server asks for it with a type assertion, so a
// Source without frames (the tests' fakes) needs nothing.
type CaptureSource interface {
	// StartCapture starts a capture. Its errors wrap ErrUnknownListener
	// (q.Listener names no listener) or dataplane.ErrCaptureBusy.
	StartCapture(q CaptureQuery) (CaptureStream, error)
}

// CaptureQuery is /capture's filter.
type CaptureQuery struct {
	Host     netip.Addr // invalid: any
	Port     uint16     // 0: any
	Listener string     // a listener's name, or ADDRESS:PORT; "": any

	RingBytes int // each shard's capture ring (0: dataplane.DefaultCaptureRing)
}

// CaptureStream is a running capture (a *dataplane.Capture with the names
// of its interfaces).
type CaptureStream interface {
	// Interfaces are the interfaces' names, indexed by CapturedFrame.Iface.
	Interfaces() []string
	// Description is the filter for people ("" for none).
	Description() string
	// Read hands fn what is queued now, oldest first, at most max frames
	// (<= 0: all); a frame's Data is valid until fn returns.
	Read(max int, fn func(*dataplane.CapturedFrame)) int
	// Counts are the counters per interface.
	Counts() []dataplane.CaptureCounts
	// Close stops the capture.
	Close()
}

// Capture limits and rhythm.
const (
	captureMaxDuration  = 24 * time.Hour
	captureMinRing      = 64 << 10
	captureMaxRing      = 64 << 20
	capturePoll         = 5 * time.Millisecond       // how often an idle writer looks at the rings
	captureFlushEvery   = 100 * time.Millisecond     // the longest a written frame waits in the buffer
	captureStatsEvery   = time.Second                // interface statistics while they change
	captureBuffer       = 256 << 10                  // the writer's buffer
	captureWriteTimeout = 30 * time.Second           // a client that reads nothing this long is cut off
	captureFinalTimeout = 5 * time.Second            // for the last blocks, after the end
	captureMIME         = "application/x-pcapng"     // as Wireshark registers it
	captureApplication  = "xdproxy (AF_XDP capture)" // the section header's shb_userappl
)

// captureLimits are /capture's stop conditions.
type captureLimits struct {
	count    int           // 0: none
	duration time.Duration // 0: none
}

// parseCaptureQuery reads /capture's parameters; an error names the parameter.
func parseCaptureQuery(v url.Values) (CaptureQuery, captureLimits, error) {
	var q CaptureQuery
	var lim captureLimits
	for name, vals := range v {
		switch name {
		case "host", "port", "listener", "count", "duration", "buffer":
		default:
			return q, lim, fmt.Errorf("%s: unknown parameter (want host, port, listener, count, duration, buffer)", name)
		}
		if len(vals) > 1 {
			return q, lim, fmt.Errorf("%s: given %d times", name, len(vals))
		}
	}
	if s := v.Get("host"); s != "" {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return q, lim, fmt.Errorf("host %q: not an IP address", s)
		}
		q.Host = a
	}
	if s := v.Get("port"); s != "" {
		p, err := strconv.ParseUint(s, 10, 16)
		if err != nil || p == 0 {
			return q, lim, fmt.Errorf("port %q: want a port, 1 to 65535", s)
		}
		q.Port = uint16(p)
	}
	q.Listener = v.Get("listener")
	if s := v.Get("count"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return q, lim, fmt.Errorf("count %q: want a number of frames, at least 1", s)
		}
		lim.count = n
	}
	if s := v.Get("duration"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d > captureMaxDuration {
			return q, lim, fmt.Errorf("duration %q: want a Go duration above 0 and at most %v (e.g. 30s, 5m)", s, captureMaxDuration)
		}
		lim.duration = d
	}
	if s := v.Get("buffer"); s != "" {
		n, err := config.ParseSize(s)
		if err != nil || n < captureMinRing || n > captureMaxRing {
			return q, lim, fmt.Errorf("buffer %q: want each shard's ring size, 64KiB to 64MiB (e.g. 16MiB)", s)
		}
		q.RingBytes = int(n)
	}
	return q, lim, nil
}

func (a *Admin) handleCapture(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	q, lim, err := parseCaptureQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	cs, ok := a.source().(CaptureSource)
	if !ok {
		writeError(w, http.StatusServiceUnavailable, "no data plane to capture from (yet)")
		return
	}
	stream, err := cs.StartCapture(q)
	switch {
	case errors.Is(err, ErrUnknownListener):
		writeError(w, http.StatusBadRequest, "listener %q: no such listener (give a listener's name or ADDRESS:PORT)", q.Listener)
		return
	case errors.Is(err, dataplane.ErrCaptureBusy):
		writeError(w, http.StatusConflict, "%v; try again when it ends", err)
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, "capture: %v", err)
		return
	}
	defer stream.Close()
	a.captures.started.Add(1)
	a.log.Info("capture started", "remote", r.RemoteAddr, "filter", stream.Description(), "count", lim.count, "duration", lim.duration)
	h := w.Header()
	h.Set("Content-Type", captureMIME)
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Disposition", `attachment; filename="xdproxy.pcapng"`)
	cw := &captureWriter{stream: stream, rc: http.NewResponseController(w), metrics: &a.captures, start: time.Now()}
	written, why, err := cw.run(w, r, lim, a.closing)
	a.log.Info("capture ended", "remote", r.RemoteAddr, "frames", written, "dropped", cw.dropped, "why", why, "err", err)
}

// captureWriter writes one capture's pcapng stream.
type captureWriter struct {
	stream  CaptureStream
	rc      *http.ResponseController
	ng      *pcapgo.NgWriter
	metrics *captureMetrics
	start   time.Time

	written   int
	dirty     bool   // written since the last flush
	dropped   uint64 // as last counted into the metrics
	lastStats []dataplane.CaptureCounts
	err       error // the first write error: the client is gone
}

// run streams until a limit, the client leaving or the server closing
// (closing), and returns the frames written, why it ended and a write error.
func (cw *captureWriter) run(w http.ResponseWriter, r *http.Request, lim captureLimits, closing <-chan struct{}) (int, string, error) {
	if err := cw.header(w); err != nil {
		return 0, "write", err
	}
	var deadline <-chan time.Time
	if lim.duration > 0 {
		t := time.NewTimer(lim.duration)
		defer t.Stop()
		deadline = t.C
	}
	poll := time.NewTicker(capturePoll)
	defer poll.Stop()
	lastFlush, lastStats, lastDeadline := time.Now(), time.Now(), time.Time{}
	why := ""
	for why == "" {
		if time.Since(lastDeadline) >= time.Second {
			// A client that stops reading (its window shut) is cut off
			// rather than holding the one capture for ever.
			lastDeadline = time.Now()
			cw.rc.SetWriteDeadline(lastDeadline.Add(captureWriteTimeout))
		}
		max := 0
		if lim.count > 0 {
			max = lim.count - cw.written
		}
		n := cw.stream.Read(max, cw.frame)
		if cw.err != nil {
			why = "client gone"
			break
		}
		if lim.count > 0 && cw.written >= lim.count {
			why = "count"
			break
		}
		if time.Since(lastStats) >= captureStatsEvery && cw.countsChanged() {
			cw.stats(false)
			lastStats = time.Now()
		}
		// Flush once the rings are drained, or while they never are, every
		// captureFlushEvery.
		if cw.dirty && (n == 0 || time.Since(lastFlush) >= captureFlushEvery) {
			cw.flush()
			lastFlush = time.Now()
		}
		wait := poll.C
		if n > 0 {
			wait = ready // more is likely queued: look again at once
		}
		select {
		case <-wait:
		case <-deadline:
			why = "duration"
		case <-r.Context().Done():
			why = "client gone"
		case <-closing:
			why = "server shutting down"
		}
	}
	if cw.err == nil {
		// Stop the taps, then write what they had queued (up to count)
		// and the final statistics — also when the request's context
		// ended: a client that only shut its sending side (xdproxy
		// capture on Ctrl-C) reads on to the end; one that is gone fails
		// the writes at once, or within the deadline.
		cw.rc.SetWriteDeadline(time.Now().Add(captureFinalTimeout))
		cw.stream.Close()
		if lim.count == 0 || cw.written < lim.count {
			max := 0
			if lim.count > 0 {
				max = lim.count - cw.written
			}
			cw.stream.Read(max, cw.frame)
		}
		cw.stats(true)
		cw.flush()
	}
	cw.countDrops()
	return cw.written, why, cw.err
}

// header writes the section header and one interface description block
// per interface.
func (cw *captureWriter) header(w http.ResponseWriter) error {
	names := cw.stream.Interfaces()
	if len(names) == 0 {
		return errors.New("no interfaces")
	}
	bw := bufio.NewWriterSize(w, captureBuffer) // NgWriter writes straight into it (bufio reuses a large enough Writer)
	desc := func(name string) pcapgo.NgInterface {
		return pcapgo.NgInterface{
			Name: name, LinkType: layers.LinkTypeEthernet, TimestampResolution: 9, OS: runtime.GOOS,
			Description: "xdproxy: frames of the AF_XDP sockets on " + name, Filter: cw.stream.Description(),
		}
	}
	ng, err := pcapgo.NewNgWriterInterface(bw, desc(names[0]), pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{
		Hardware: runtime.GOARCH, OS: runtime.GOOS, Application: captureApplication,
	}})
	if err != nil {
		return err
	}
	for _, name := range names[1:] {
		if _, err := ng.AddInterface(desc(name)); err != nil {
			return err
		}
	}
	cw.ng = ng
	cw.lastStats = make([]dataplane.CaptureCounts, len(names))
	cw.flush()
	return cw.err
}

var (
	epbInbound  = pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionInbound}
	epbOutbound = pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionOutbound}
)

// frame writes one enhanced packet block.
func (cw *captureWriter) frame(f *dataplane.CapturedFrame) {
	if cw.err != nil {
		return
	}
	flags := &epbInbound
	if f.Out {
		flags = &epbOutbound
	}
	queue := uint32(f.Queue)
	ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, f.Time), CaptureLength: len(f.Data), Length: len(f.Data), InterfaceIndex: f.Iface}
	if cw.err = cw.ng.WritePacketWithOptions(ci, f.Data, pcapgo.NgPacketOptions{Flags: flags, Queue: &queue}); cw.err == nil {
		cw.written++
		cw.dirty = true
		cw.metrics.written.Add(1)
	}
}

// countsChanged reports whether the counters moved since the last
// statistics blocks.
func (cw *captureWriter) countsChanged() bool {
	for i, c := range cw.stream.Counts() {
		if c != cw.lastStats[i] {
			return true
		}
	}
	return false
}

// stats writes an interface statistics block per interface (final: with
// the end time).
func (cw *captureWriter) stats(final bool) {
	if cw.err != nil {
		return
	}
	now := time.Now()
	counts := cw.stream.Counts()
	for i, c := range counts {
		st := pcapgo.NgInterfaceStatistics{LastUpdate: now, StartTime: cw.start, PacketsReceived: c.Captured + c.Dropped, PacketsDropped: c.Dropped}
		if final {
			st.EndTime = now
		}
		if cw.err = cw.ng.WriteInterfaceStats(i, st); cw.err != nil {
			return
		}
	}
	cw.dirty = true
	cw.lastStats = counts
	cw.countDrops()
}

// countDrops adds the drops counted since the last call to the metrics.
func (cw *captureWriter) countDrops() {
	var total uint64
	for _, c := range cw.stream.Counts() {
		total += c.Dropped
	}
	cw.metrics.dropped.Add(total - cw.dropped)
	cw.dropped = total
}

func (cw *captureWriter) flush() {
	if cw.err != nil {
		return
	}
	if cw.err = cw.ng.Flush(); cw.err == nil {
		cw.err = cw.rc.Flush()
	}
	cw.dirty = false
}

// ready is always ready: a select on it does not wait.
var ready = func() chan time.Time { c := make(chan time.Time); close(c); return c }()

// captureMetrics are the admin server's capture counters.
type captureMetrics struct {
	started, written, dropped atomic.Uint64
}

var (
	mCaptures      = desc("captures_total", "Packet captures started (/capture, xdproxy capture).")
	mCaptureFrames = desc("capture_frames_total", "Frames of packet captures: written to a capture, or dropped from it because the shard's capture ring was full (traffic is never dropped for a capture).", "result")
)

func (m *captureMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- mCaptures
	ch <- mCaptureFrames
}

func (m *captureMetrics) Collect(ch chan<- prometheus.Metric) {
	ch <- counter(mCaptures, m.started.Load())
	ch <- counter(mCaptureFrames, m.written.Load(), "written")
	ch <- counter(mCaptureFrames, m.dropped.Load(), "dropped")
}
