// Package loadgen is xdproxy's TCP load generator: the workloads the
// side-by-side harness (bench/cmd/sidebyside) runs against every proxy.
//
//   - ConnRate: connection rate. Each of Concurrency workers loops: connect,
//     write a request, read the reply in full (checked byte for byte against
//     the request: the backends echo), close. Connections per second over a
//     fixed window.
//   - RR: request/response over kept-alive connections. Open loop (Rate >
//     0): every request has a slot on a timeline fixed in advance (request k
//     of connection c at t0 + (c + k·Conns)/Rate); a connection sends a
//     request at its slot or, if the previous reply is late, as soon as it
//     arrives, and its latency counts from the slot, so a stalled proxy
//     shows up in the percentiles instead of silently lowering the offered
//     load (coordinated omission, as wrk2 handles it). Closed loop (Rate ==
//     0): every connection ping-pongs as fast as it can; the maximum rate.
//     Latencies go into HDR histograms (github.com/HdrHistogram/hdrhistogram-go,
//     nanoseconds, 3 significant digits).
//   - Bulk: Streams connections reading (download) or writing (upload)
//     as fast as they can; bytes moved in the window.
//   - OpenIdle: N connections, each with one round trip (so a proxy's
//     backend leg exists too), held open and idle until closed.
//
// Every workload has a warm-up (run, not counted) before its measured
// window. Sleeps to a slot use a timerfd, which the Go netpoller wakes
// within tens of microseconds; time.Sleep can oversleep by a millisecond.
// When the connection was free at its slot but the pacer woke late, the
// latency counts from the actual send (the generator's own lateness is not
// the proxy's) and the lateness is reported separately (RRResult.PacingLate).
//
// The package only opens sockets with the Dial it is given (default: a
// net.Dialer); to load a network namespace, run it in a process inside that
// namespace (the harness re-executes itself under `ip netns exec`).
package loadgen

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// DialFunc opens a TCP connection to addr.
type DialFunc func(ctx context.Context, addr string) (net.Conn, error)

// DefaultDial connects with a net.Dialer (3-second timeout, no Happy
// Eyeballs).
func DefaultDial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 3 * time.Second, FallbackDelay: -1}
	return d.DialContext(ctx, "tcp", addr)
}

// Latency summarizes a histogram of latencies, in microseconds.
type Latency struct {
	Count  int64   `json:"count"`
	MeanUs float64 `json:"mean_us"`
	P50Us  float64 `json:"p50_us"`
	P90Us  float64 `json:"p90_us"`
	P99Us  float64 `json:"p99_us"`
	P999Us float64 `json:"p999_us"`
	MaxUs  float64 `json:"max_us"`
}

// newHist is a latency histogram in nanoseconds, 100ns to 100s.
func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(100, 100e9, 3) }

func record(h *hdrhistogram.Histogram, d time.Duration) {
	v := int64(d)
	if v < 100 {
		v = 100
	}
	if v > h.HighestTrackableValue() {
		v = h.HighestTrackableValue()
	}
	_ = h.RecordValue(v)
}

// Summarize turns a nanosecond histogram into a Latency.
func Summarize(h *hdrhistogram.Histogram) Latency {
	us := func(v int64) float64 { return float64(v) / 1e3 }
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count:  h.TotalCount(),
		MeanUs: h.Mean() / 1e3,
		P50Us:  us(h.ValueAtQuantile(50)),
		P90Us:  us(h.ValueAtQuantile(90)),
		P99Us:  us(h.ValueAtQuantile(99)),
		P999Us: us(h.ValueAtQuantile(99.9)),
		MaxUs:  us(h.Max()),
	}
}

// errs counts errors and keeps a few distinct messages.
type errs struct {
	mu      sync.Mutex
	n       int64
	samples []string
}

func (e *errs) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	msg := err.Error()
	for _, s := range e.samples {
		if s == msg {
			return
		}
	}
	if len(e.samples) < 5 {
		e.samples = append(e.samples, msg)
	}
}

func (e *errs) result() (int64, []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n, append([]string(nil), e.samples...)
}

// payload is a request of n bytes with a recognizable pattern.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

func check(addrs []string, what string, n int) error {
	if len(addrs) == 0 {
		return fmt.Errorf("loadgen: %s: no addresses", what)
	}
	if n <= 0 {
		return fmt.Errorf("loadgen: %s: count must be > 0", what)
	}
	return nil
}

// sleepUntil waits until t with the pacer p (nil: time.Sleep) or until ctx
// is done.
func sleepUntil(ctx context.Context, p *pacer, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	if p != nil {
		return p.sleep(ctx, d)
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dialOne dials addr with dial (DefaultDial when nil), bounded to 5 s.
func dialOne(ctx context.Context, dial DialFunc, addr string) (net.Conn, error) {
	if dial == nil {
		dial = DefaultDial
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return dial(dctx, addr)
}

// closeAll closes every non-nil connection.
func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}
