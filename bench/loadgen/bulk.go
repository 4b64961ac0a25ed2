package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// BulkConfig is the bulk-throughput workload: Streams connections to a
// source (Upload false: the client reads) or a sink (Upload true: the client
// writes).
type BulkConfig struct {
	Addrs    []string      `json:"addrs"`
	Streams  int           `json:"streams"`
	Upload   bool          `json:"upload"`
	Warmup   time.Duration `json:"warmup"`
	Duration time.Duration `json:"duration"`
	Dial     DialFunc      `json:"-"`
}

// BulkResult is what Bulk measured. Bytes are counted at the client: read
// (download) or accepted by write (upload; at most a socket buffer more than
// what arrived).
type BulkResult struct {
	Streams      int      `json:"streams"`
	Bytes        int64    `json:"bytes"`     // in the window
	AllBytes     int64    `json:"all_bytes"` // warm-up included
	Seconds      float64  `json:"seconds"`
	Gbps         float64  `json:"gbps"` // 10^9 bit/s
	Errors       int64    `json:"errors"`
	ErrorSamples []string `json:"error_samples,omitempty"`
}

// Bulk runs the bulk-throughput workload.
func Bulk(ctx context.Context, cfg BulkConfig) (BulkResult, error) {
	if err := check(cfg.Addrs, "Bulk", cfg.Streams); err != nil {
		return BulkResult{}, err
	}
	conns := make([]net.Conn, cfg.Streams)
	defer closeAll(conns)
	for i := range conns {
		c, err := dialOne(ctx, cfg.Dial, cfg.Addrs[i%len(cfg.Addrs)])
		if err != nil {
			return BulkResult{}, fmt.Errorf("loadgen: Bulk: stream %d: %w", i, err)
		}
		conns[i] = c
	}
	var (
		total atomic.Int64
		e     errs
		wg    sync.WaitGroup
		stop  atomic.Bool
	)
	for _, c := range conns {
		wg.Go(func() {
			buf := make([]byte, 256<<10)
			for !stop.Load() {
				var n int
				var err error
				if cfg.Upload {
					n, err = c.Write(buf)
				} else {
					n, err = c.Read(buf)
				}
				total.Add(int64(n))
				if err != nil {
					if !stop.Load() && !errors.Is(err, os.ErrDeadlineExceeded) {
						e.add(err)
					}
					return
				}
			}
		})
	}
	start := time.Now()
	winStart := start.Add(cfg.Warmup)
	sleep := func(t time.Time) bool {
		select {
		case <-time.After(time.Until(t)):
			return true
		case <-ctx.Done():
			return false
		}
	}
	ok := sleep(winStart)
	b0, t0 := total.Load(), time.Now()
	ok = ok && sleep(t0.Add(cfg.Duration))
	b1, t1 := total.Load(), time.Now()
	stop.Store(true)
	for _, c := range conns {
		c.SetDeadline(time.Now())
	}
	wg.Wait()
	if !ok {
		return BulkResult{}, ctx.Err()
	}
	r := BulkResult{Streams: cfg.Streams, Bytes: b1 - b0, AllBytes: total.Load(), Seconds: t1.Sub(t0).Seconds()}
	r.Gbps = float64(r.Bytes) * 8 / r.Seconds / 1e9
	r.Errors, r.ErrorSamples = e.result()
	return r, nil
}
