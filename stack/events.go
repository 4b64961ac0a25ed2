package stack

import (
	"errors"
	"strings"
)

// Events is a set of things that happened to a connection, reported to the
// Handler after the engine finishes the input that caused them.
type Events uint16

const (
	EventReadable      Events = 1 << iota // Read would return data (or EOF)
	EventWritable                         // send buffer space freed after a short Write
	EventPeerClosed                       // the peer's FIN arrived: Read returns io.EOF once drained
	EventConnected                        // an active open reached ESTABLISHED
	EventConnectFailed                    // an active open failed: Err says why (refused, timed out, no route)
	EventReset                            // the peer reset the connection (Err is ErrReset), or the engine did under memory pressure (ErrMemoryPressure)
	EventTimedOut                         // retransmissions or keepalive probes went unanswered (Err is ErrTimeout)
	EventClosed                           // the engine is done with the connection (CLOSED or TIME_WAIT)
)

var eventNames = []string{"readable", "writable", "peer_closed", "connected", "connect_failed", "reset", "timed_out", "closed"}

func (ev Events) String() string {
	var b strings.Builder
	for i, n := range eventNames {
		if ev&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(n)
		}
	}
	return b.String()
}

// Errors a connection can end with (Conn.Err).
var (
	ErrReset          = errors.New("connection reset by peer")
	ErrRefused        = errors.New("connection refused")
	ErrTimeout        = errors.New("connection timed out")
	ErrNoRoute        = errors.New("no route to host: no route, or the next hop never answered")
	ErrAborted        = errors.New("connection aborted")
	ErrMemoryPressure = errors.New("connection reset under memory pressure: it had made no progress for longest")
	ErrClosed         = errors.New("use of closed connection")
	ErrWriteClosed    = errors.New("write after close-write")
	ErrNotEstablished = errors.New("connection not yet established")
	ErrNoPorts        = errors.New("no free ephemeral port for this destination")
	ErrAddrInUse      = errors.New("address already in use")
	ErrNotOwned       = errors.New("address not owned by this engine")
)
