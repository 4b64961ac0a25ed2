package loadgen

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// IdleConfig opens N idle connections, Concurrency at a time, each after
// one echo round trip of a 64-byte request.
type IdleConfig struct {
	Addrs       []string `json:"addrs"`
	N           int      `json:"n"`
	Concurrency int      `json:"concurrency"`
	MaxErrors   int64    `json:"max_errors"` // give up after this many failed connections (0: never)
	Dial        DialFunc `json:"-"`
}

// IdleResult says how many connections are open.
type IdleResult struct {
	Open         int      `json:"open"`
	Seconds      float64  `json:"seconds"` // to open them
	Errors       int64    `json:"errors"`
	ErrorSamples []string `json:"error_samples,omitempty"`
}

// IdleSet holds the open connections.
type IdleSet struct{ conns []net.Conn }

// Close closes every connection.
func (s *IdleSet) Close() {
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

// OpenIdle opens the connections. A connection that fails is counted in
// Errors and not retried; after MaxErrors failures it stops opening more.
func OpenIdle(ctx context.Context, cfg IdleConfig) (*IdleSet, IdleResult, error) {
	if err := check(cfg.Addrs, "OpenIdle", cfg.N); err != nil {
		return nil, IdleResult{}, err
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	dial := cfg.Dial
	if dial == nil {
		dial = DefaultDial
	}
	req := payload(64)
	set := &IdleSet{}
	var (
		mu   sync.Mutex
		next atomic.Int64
		e    errs
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range cfg.Concurrency {
		wg.Go(func() {
			resp := make([]byte, len(req))
			for ctx.Err() == nil {
				if n, _ := e.result(); cfg.MaxErrors > 0 && n >= cfg.MaxErrors {
					return
				}
				i := next.Add(1) - 1
				if i >= int64(cfg.N) {
					return
				}
				dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				c, err := dial(dctx, cfg.Addrs[int(i)%len(cfg.Addrs)])
				cancel()
				if err != nil {
					e.add(err)
					continue
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				_, err = c.Write(req)
				if err == nil {
					_, err = readFull(c, resp)
				}
				c.SetDeadline(time.Time{})
				if err != nil {
					e.add(err)
					c.Close()
					continue
				}
				mu.Lock()
				set.conns = append(set.conns, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	r := IdleResult{Open: len(set.conns), Seconds: time.Since(start).Seconds()}
	r.Errors, r.ErrorSamples = e.result()
	if err := ctx.Err(); err != nil {
		set.Close()
		return nil, r, err
	}
	return set, r, nil
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
