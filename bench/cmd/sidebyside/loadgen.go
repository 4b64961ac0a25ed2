package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/xdproxy/xdproxy/bench/loadgen"
)

// The load generator runs as a child process inside the client namespace
// (`ip netns exec <client> sidebyside loadgen KIND JSON`), so it dials with
// plain sockets: no setns per connection, its file descriptors and CPU apart
// from the harness's (which serves the backends). It prints its result as
// one line "RESULT <json>". For "idle" it prints "IDLE-READY <json>" once
// the connections are open and holds them until SIGTERM or SIGINT.
func loadgenMain(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: sidebyside loadgen connrate|rr|bulk|idle JSON")
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	var res any
	var err error
	switch args[0] {
	case "connrate":
		var c loadgen.ConnRateConfig
		if err = json.Unmarshal([]byte(args[1]), &c); err == nil {
			res, err = loadgen.ConnRate(ctx, c)
		}
	case "rr":
		var c loadgen.RRConfig
		if err = json.Unmarshal([]byte(args[1]), &c); err == nil {
			res, err = loadgen.RR(ctx, c)
		}
	case "bulk":
		var c loadgen.BulkConfig
		if err = json.Unmarshal([]byte(args[1]), &c); err == nil {
			res, err = loadgen.Bulk(ctx, c)
		}
	case "idle":
		var c loadgen.IdleConfig
		if err = json.Unmarshal([]byte(args[1]), &c); err == nil {
			var set *loadgen.IdleSet
			var r loadgen.IdleResult
			set, r, err = loadgen.OpenIdle(ctx, c)
			if err == nil {
				b, _ := json.Marshal(r)
				fmt.Printf("IDLE-READY %s\n", b)
				<-ctx.Done()
				set.Close()
				return 0
			}
		}
	default:
		err = fmt.Errorf("unknown workload %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	b, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", b)
	return 0
}

// runLoadgen runs a workload in the client namespace and decodes its result.
func (h *harness) runLoadgen(ctx context.Context, kind string, cfg, out any) error {
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	text, err := h.topo.Client.Run(ctx, h.self, "loadgen", kind, string(b))
	if err != nil {
		return err
	}
	return resultLine(text, "RESULT ", out)
}

func resultLine(text, prefix string, out any) error {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var last string
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			last = s
		}
	}
	if last == "" {
		return fmt.Errorf("no %q line in the load generator's output:\n%s", strings.TrimSpace(prefix), tail(text, 2000))
	}
	return json.Unmarshal([]byte(last), out)
}

// waitSignal blocks until SIGTERM or SIGINT.
func waitSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
}

// waitLine waits until the process's output holds a line starting with
// prefix and returns the rest of it.
func waitLine(ctx context.Context, out func() string, done <-chan struct{}, prefix string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		for _, line := range strings.Split(out(), "\n") {
			if s, ok := strings.CutPrefix(line, prefix); ok {
				return s, nil
			}
		}
		select {
		case <-done:
			return "", fmt.Errorf("exited before %q:\n%s", prefix, tail(out(), 2000))
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no %q within %v", prefix, timeout)
		}
	}
}
