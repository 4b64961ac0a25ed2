package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// RRConfig is the request/response workload over kept-alive connections.
type RRConfig struct {
	Addrs    []string      `json:"addrs"` // connection i goes to Addrs[i % len]
	Conns    int           `json:"conns"`
	Rate     float64       `json:"rate"` // offered requests/s over all connections; 0: closed loop
	Warmup   time.Duration `json:"warmup"`
	Duration time.Duration `json:"duration"`
	// Req is the request (default 64 bytes); RespSize the reply's size
	// (default len(Req)). With Echo the reply must equal the request.
	Req      []byte   `json:"req,omitempty"`
	RespSize int      `json:"resp_size,omitempty"`
	Echo     bool     `json:"echo"`
	Dial     DialFunc `json:"-"`
}

// RRResult is what RR measured, in the window.
type RRResult struct {
	Offered  float64 `json:"offered"`  // requests/s (0: closed loop)
	Achieved float64 `json:"achieved"` // replies/s
	Requests int64   `json:"requests"` // replies received for requests in the window
	// Missed counts open-loop slots in the window whose request was never
	// sent (the connection was still behind when the run ended): a sign of
	// saturation, as are Achieved < Offered and growing latencies.
	Missed       int64    `json:"missed"`
	Errors       int64    `json:"errors"`
	ErrorSamples []string `json:"error_samples,omitempty"`
	Latency      Latency  `json:"latency"`
	// PacingLate is, in open loop, how late the generator sent requests
	// whose connection was free at the slot (its own timer lateness, not
	// counted in Latency).
	PacingLate Latency `json:"pacing_late"`
}

// RR runs the request/response workload. The connections are opened before
// the timeline starts and closed after.
func RR(ctx context.Context, cfg RRConfig) (RRResult, error) {
	if err := check(cfg.Addrs, "RR", cfg.Conns); err != nil {
		return RRResult{}, err
	}
	if len(cfg.Req) == 0 {
		cfg.Req = payload(64)
	}
	if cfg.RespSize <= 0 {
		cfg.RespSize = len(cfg.Req)
	}
	conns := make([]net.Conn, cfg.Conns)
	defer closeAll(conns)
	for i := range conns {
		c, err := dialOne(ctx, cfg.Dial, cfg.Addrs[i%len(cfg.Addrs)])
		if err != nil {
			return RRResult{}, fmt.Errorf("loadgen: RR: connection %d: %w", i, err)
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		conns[i] = c
	}
	var (
		mu       sync.Mutex
		hist     = newHist()
		late     = newHist()
		counted  atomic.Int64
		missed   atomic.Int64
		e        errs
		wg       sync.WaitGroup
		t0       = time.Now().Add(20 * time.Millisecond)
		winStart = t0.Add(cfg.Warmup)
		winEnd   = winStart.Add(cfg.Duration)
		hardEnd  = winEnd.Add(2 * time.Second)
	)
	for i, c := range conns {
		wg.Go(func() {
			h, lh := newHist(), newHist()
			defer func() {
				mergeInto(&mu, hist, h)
				mergeInto(&mu, late, lh)
			}()
			c.SetDeadline(hardEnd)
			resp := make([]byte, cfg.RespSize)
			do := func() error {
				if _, err := c.Write(cfg.Req); err != nil {
					return fmt.Errorf("write: %w", err)
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					return fmt.Errorf("read: %w", err)
				}
				if cfg.Echo && !bytes.Equal(resp, cfg.Req) {
					return errors.New("reply differs from the request")
				}
				return nil
			}
			if cfg.Rate <= 0 { // closed loop
				if err := sleepUntil(ctx, nil, t0); err != nil {
					return
				}
				for ctx.Err() == nil {
					s := time.Now()
					if !s.Before(winEnd) {
						return
					}
					if err := do(); err != nil {
						e.add(err)
						return
					}
					if !s.Before(winStart) {
						record(h, time.Since(s))
						counted.Add(1)
					}
				}
				return
			}
			p, err := newPacer()
			if err != nil {
				e.add(err)
				return
			}
			defer p.close()
			interval := float64(time.Second) * float64(cfg.Conns) / cfg.Rate
			offset := float64(time.Second) * float64(i) / cfg.Rate
			var prevDone time.Time
			for k := 0; ; k++ {
				slot := t0.Add(time.Duration(offset + float64(k)*interval))
				if !slot.Before(winEnd) {
					return
				}
				now := time.Now()
				if now.After(hardEnd.Add(-time.Second)) {
					// Hopelessly behind: the rest of the window's slots are missed.
					for ; slot.Before(winEnd); slot = t0.Add(time.Duration(offset + float64(k)*interval)) {
						if !slot.Before(winStart) {
							missed.Add(1)
						}
						k++
					}
					return
				}
				if err := sleepUntil(ctx, p, slot); err != nil {
					return
				}
				sent := time.Now()
				start := sent // the connection was free at its slot: our lateness is not the proxy's
				if prevDone.After(slot) {
					start = slot // the previous reply held this request back: count from the slot
				}
				if err := do(); err != nil {
					e.add(err)
					return
				}
				prevDone = time.Now()
				if !slot.Before(winStart) {
					record(h, prevDone.Sub(start))
					if start == sent {
						record(lh, sent.Sub(slot))
					}
					counted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return RRResult{}, err
	}
	r := RRResult{Offered: cfg.Rate, Requests: counted.Load(), Missed: missed.Load()}
	r.Achieved = float64(r.Requests) / cfg.Duration.Seconds()
	r.Errors, r.ErrorSamples = e.result()
	r.Latency = Summarize(hist)
	if cfg.Rate > 0 {
		r.PacingLate = Summarize(late)
	}
	return r, nil
}
