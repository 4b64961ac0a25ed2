package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// ConnRateConfig is the connection-rate workload.
type ConnRateConfig struct {
	Addrs       []string      `json:"addrs"`       // targets, used in turn (the backends echo)
	Concurrency int           `json:"concurrency"` // parallel clients
	Warmup      time.Duration `json:"warmup"`
	Duration    time.Duration `json:"duration"` // measured window
	ReqSize     int           `json:"req_size"` // request = reply size, default 64
	Dial        DialFunc      `json:"-"`
}

// ConnRateResult is what ConnRate measured. Conns and PerSecond count the
// connections completed (connect, request, full reply, close) inside the
// window; AllConns also those of the warm-up and of the tail (for costs per
// connection measured over the whole run).
type ConnRateResult struct {
	Conns        int64    `json:"conns"`
	AllConns     int64    `json:"all_conns"`
	Seconds      float64  `json:"seconds"`
	PerSecond    float64  `json:"per_second"`
	Errors       int64    `json:"errors"`
	ErrorSamples []string `json:"error_samples,omitempty"`
	Latency      Latency  `json:"latency"` // connect to reply, per connection, in the window
}

// ConnRate runs the connection-rate workload.
func ConnRate(ctx context.Context, cfg ConnRateConfig) (ConnRateResult, error) {
	if err := check(cfg.Addrs, "ConnRate", cfg.Concurrency); err != nil {
		return ConnRateResult{}, err
	}
	if cfg.ReqSize <= 0 {
		cfg.ReqSize = 64
	}
	dial := cfg.Dial
	if dial == nil {
		dial = DefaultDial
	}
	req := payload(cfg.ReqSize)
	var (
		next     atomic.Uint64
		all      atomic.Int64
		counted  atomic.Int64
		e        errs
		mu       sync.Mutex
		hist     = newHist()
		wg       sync.WaitGroup
		start    = time.Now()
		winStart = start.Add(cfg.Warmup)
		winEnd   = winStart.Add(cfg.Duration)
	)
	rctx, cancel := context.WithDeadline(ctx, winEnd)
	defer cancel()
	for range cfg.Concurrency {
		wg.Go(func() {
			h := newHist()
			resp := make([]byte, cfg.ReqSize)
			for rctx.Err() == nil {
				addr := cfg.Addrs[next.Add(1)%uint64(len(cfg.Addrs))]
				t0 := time.Now()
				err := oneConn(rctx, dial, addr, req, resp)
				t1 := time.Now()
				if err != nil {
					if rctx.Err() != nil || !t1.Before(winEnd) {
						break // cut short by the end of the window
					}
					e.add(err)
					time.Sleep(time.Millisecond) // no hot loop on a refusing proxy
					continue
				}
				all.Add(1)
				if !t0.Before(winStart) && !t1.After(winEnd) {
					counted.Add(1)
					record(h, t1.Sub(t0))
				}
			}
			mu.Lock()
			hist.Merge(h)
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return ConnRateResult{}, err
	}
	r := ConnRateResult{Conns: counted.Load(), AllConns: all.Load(), Seconds: cfg.Duration.Seconds()}
	r.PerSecond = float64(r.Conns) / r.Seconds
	r.Errors, r.ErrorSamples = e.result()
	r.Latency = Summarize(hist)
	return r, nil
}

// oneConn connects, writes req, reads len(req) bytes into resp, checks
// them and closes.
func oneConn(ctx context.Context, dial DialFunc, addr string, req, resp []byte) error {
	c, err := dial(ctx, addr)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl.Add(2 * time.Second))
	}
	if _, err := c.Write(req); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if _, err := io.ReadFull(c, resp); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(req, resp) {
		return fmt.Errorf("reply differs from the request")
	}
	return nil
}

// mergeInto merges h into dst under mu.
func mergeInto(mu *sync.Mutex, dst, h *hdrhistogram.Histogram) {
	mu.Lock()
	dst.Merge(h)
	mu.Unlock()
}
