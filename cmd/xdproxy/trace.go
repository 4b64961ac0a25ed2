package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/xdproxy/xdproxy/proxy/trace"
)

// traceCmd is `xdproxy trace`: the ladders of the next --count sessions
// that match, streamed from the admin server's /trace as they end.
// Ctrl-C stops it (exit 0).
func traceCmd(args []string, stdout, stderr io.Writer) int {
	fs, af := newAdminFlagSet("trace", stderr)
	listener := fs.String("listener", "", "only sessions of this listener")
	client := fs.String("client", "", "only clients from this address or prefix (A or A/len)")
	port := fs.Uint("port", 0, "only sessions whose client port or listener port is this")
	count := fs.Int("count", 1, fmt.Sprintf("how many sessions to trace (1-%d)", trace.MaxCount))
	duration := fs.Duration("duration", trace.DefaultDuration, "stop waiting for sessions after this long")
	timeWait := fs.Bool("time-wait", false, "follow legs in TIME_WAIT to its expiry (each session arrives time_wait later)")
	asJSON := fs.Bool("json", false, "one JSON object per session instead of the ladder")
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "xdproxy trace: unexpected argument %q\n%s\n", rest[0], usage)
		return 2
	}
	f := trace.Filter{Listener: *listener, Count: *count, Duration: *duration, Port: uint16(*port), TimeWait: *timeWait}
	if *client != "" {
		if f.Client, err = trace.ParseClient(*client); err != nil {
			fmt.Fprintf(stderr, "xdproxy trace: --client: %v\n", err)
			return 2
		}
	}
	if *port > 65535 {
		fmt.Fprintf(stderr, "xdproxy trace: --port: %d is not a port\n", *port)
		return 2
	}
	format := trace.FormatText
	if *asJSON {
		format = trace.FormatJSON
	}
	c, err := af.client()
	if err != nil {
		fmt.Fprintf(stderr, "xdproxy trace: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = c.Trace(ctx, f.Query(format), stdout, func() {
		fmt.Fprintf(stderr, "xdproxy trace: waiting for %d session(s)\n", f.Count)
	})
	switch {
	case errors.Is(err, context.Canceled):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "xdproxy trace: %v\n", err)
		return 1
	}
	return 0
}
