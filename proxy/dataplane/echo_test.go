package dataplane

import (
	"errors"
	"io"

	"github.com/xdproxy/xdproxy/stack"
)

// echoApp is an echo server running inside a shard, on the engine: what it
// reads it writes back, honouring backpressure (it reads only as much as the
// send buffer can take, and resumes on EventWritable), and it half-closes
// after the peer does, once everything is echoed.
type echoApp struct {
	buf [64 << 10]byte
}

func (a *echoApp) Acceptable(l *stack.Listener) {
	for c := l.Accept(); c != nil; c = l.Accept() {
		a.pump(c)
	}
}

// connFunc, stored in a dialed connection's User field, takes that
// connection's events instead of the echo logic.
type connFunc func(c *stack.Conn, ev stack.Events)

func (a *echoApp) ConnEvent(c *stack.Conn, ev stack.Events) {
	if fn, ok := c.User.(connFunc); ok {
		fn(c, ev)
		return
	}
	if ev&(stack.EventReset|stack.EventTimedOut) != 0 {
		c.Close()
		return
	}
	if ev&stack.EventClosed != 0 {
		c.Close()
		return
	}
	a.pump(c)
}

func (a *echoApp) pump(c *stack.Conn) {
	for {
		space := c.WriteSpace()
		if space == 0 {
			return // EventWritable resumes us
		}
		n, err := c.Read(a.buf[:min(space, len(a.buf))])
		if n > 0 {
			c.Write(a.buf[:n])
		}
		if errors.Is(err, io.EOF) {
			c.CloseWrite()
			return
		}
		if err != nil || n == 0 {
			return
		}
	}
}
