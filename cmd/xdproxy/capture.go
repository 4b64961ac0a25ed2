package main

// `xdproxy capture`: pcapng of the frames the shards receive and send,
// from the admin server's /capture, into a file (or stdout).

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/xdproxy/xdproxy/internal/adminclient"
)

// captureStopWait is how long the command waits, after Ctrl-C, for the
// daemon to send the rest of the capture.
const captureStopWait = 10 * time.Second

func captureCmd(args []string, stdout, stderr io.Writer) int {
	fs, af := newAdminFlagSet("capture", stderr)
	file := fs.String("w", "", "write the capture (pcapng) to FILE; - for stdout")
	var p adminclient.CaptureParams
	fs.StringVar(&p.Host, "host", "", "only frames from or to this address")
	fs.IntVar(&p.Port, "port", 0, "only frames from or to this TCP/UDP port")
	fs.StringVar(&p.Listener, "listener", "", "only the frames of this listener (its name, or ADDRESS:PORT)")
	fs.IntVar(&p.Count, "count", 0, "stop after this many frames")
	fs.DurationVar(&p.Duration, "duration", 0, "stop after this long (e.g. 30s)")
	fs.StringVar(&p.Buffer, "buffer", "", "each shard's capture ring, 64KiB to 64MiB (default 4MiB): frames beyond what it holds while the writer catches up are dropped from the capture")
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "xdproxy capture: unexpected argument %q\n%s\n", rest[0], usage)
		return 2
	}
	if *file == "" {
		fmt.Fprintf(stderr, "xdproxy capture: -w FILE is required (- for stdout)\n%s\n", usage)
		return 2
	}
	c, err := af.client()
	if err != nil {
		fmt.Fprintf(stderr, "xdproxy capture: %v\n", err)
		return 1
	}
	out, where := stdout, "stdout"
	if *file != "-" {
		f, err := os.OpenFile(*file, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600) // frames carry payloads
		if err != nil {
			fmt.Fprintf(stderr, "xdproxy capture: %v\n", err)
			return 1
		}
		defer f.Close()
		out, where = f, *file
	}
	// Ctrl-C (or SIGTERM) ends the capture: the daemon sends what it still
	// has and the final statistics. A second one, or no end within
	// captureStopWait, stops at once; the file keeps every whole block.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
		case <-ctx.Done():
			return
		}
		close(stop)
		select {
		case <-sigs:
		case <-time.After(captureStopWait):
		case <-ctx.Done():
		}
		cancel()
	}()
	started := false
	sum, err := c.Capture(ctx, p, out, func() {
		started = true
		fmt.Fprintf(stderr, "capturing to %s from %s; Ctrl-C stops\n", where, c.Addr)
	}, stop)
	if err != nil {
		fmt.Fprintf(stderr, "xdproxy capture: %v\n", err)
		if !started && *file != "-" {
			os.Remove(*file) // refused: no empty file left behind
		}
		return 1
	}
	if f, ok := out.(*os.File); ok && f != os.Stdout {
		if err := f.Close(); err != nil {
			fmt.Fprintf(stderr, "xdproxy capture: %v\n", err)
			return 1
		}
	}
	fmt.Fprintln(stderr, formatCaptureSummary(sum))
	return 0
}

// formatCaptureSummary is the closing line, as tcpdump's: frames written,
// then per interface what matched and what the capture lost (the shard's
// ring was full; traffic was not dropped). Without a final statistics
// block (interrupted) the counts are the last ones the server sent.
func formatCaptureSummary(s adminclient.CaptureSummary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d frames captured", s.Frames)
	for i, name := range s.Interfaces {
		st := s.Stats[i]
		fmt.Fprintf(&b, "; %s: %d matched, %d dropped from the capture", name, st.Matched, st.Dropped)
	}
	if !s.Final && len(s.Interfaces) > 0 {
		b.WriteString(" (cut short: as of the last statistics, up to a second old)")
	}
	return b.String()
}
