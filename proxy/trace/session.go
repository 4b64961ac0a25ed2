package trace

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xdproxy/xdproxy/stack"
)

// Session is one proxied session's trace: its client leg and, when the
// backend leg ran on the engine, its backend leg.
type Session struct {
	ID       uint64
	Listener string
	Shard    int
	Client   *stack.ConnTrace
	Backend  *stack.ConnTrace // nil: no backend leg on the engine
	// BackendNote says why Backend is nil ("dial: kernel", "no backend").
	BackendNote string
}

// Limits of a watch.
const (
	MaxCount        = 1000
	DefaultDuration = 10 * time.Minute
	MaxDuration     = 24 * time.Hour
	// WatchBuffer is how many finished session traces wait for a slow
	// reader before more are dropped.
	WatchBuffer = 16
)

// Filter chooses sessions: all the given conditions hold. Count is how
// many (the next Count matching sessions).
type Filter struct {
	Listener string       // "" any
	Client   netip.Prefix // invalid: any; a single address is a /32 or /128
	Port     uint16       // 0: any; the client's port or the listener's
	Count    int
	Duration time.Duration // how long a reader waits for Count sessions
	// TimeWait follows a leg that ends in TIME_WAIT to its expiry (the
	// session is delivered 2MSL later, time_wait in the configuration).
	TimeWait bool
}

// ParamError is a bad query parameter, named.
type ParamError struct {
	Param string
	Msg   string
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Msg }

// Format is a rendering.
type Format string

const (
	FormatText Format = "text"
	FormatJSON Format = "json"
)

// ParseQuery reads /trace's parameters: listener, client (A or A/len),
// port, count (default 1), duration (Go syntax, default 10m), time_wait
// (1 or true: follow TIME_WAIT to its expiry) and format (text | json).
// Errors are *ParamError naming the parameter.
func ParseQuery(q url.Values) (Filter, Format, error) {
	f := Filter{Count: 1, Duration: DefaultDuration}
	format := FormatText
	for name, vs := range q {
		if len(vs) != 1 {
			return f, format, &ParamError{name, "given more than once"}
		}
		v := vs[0]
		var err error
		switch name {
		case "listener":
			f.Listener = v
		case "client":
			f.Client, err = ParseClient(v)
		case "port":
			var n uint64
			if n, err = strconv.ParseUint(v, 10, 16); err == nil && n == 0 {
				err = fmt.Errorf("0 is no port")
			}
			f.Port = uint16(n)
			if err != nil {
				err = fmt.Errorf("%q is not a port (1-65535)", v)
			}
		case "count":
			f.Count, err = strconv.Atoi(v)
			if err != nil || f.Count < 1 || f.Count > MaxCount {
				err = fmt.Errorf("%q is not a number of sessions from 1 to %d", v, MaxCount)
			}
		case "duration":
			f.Duration, err = time.ParseDuration(v)
			if err != nil || f.Duration <= 0 || f.Duration > MaxDuration {
				err = fmt.Errorf("%q is not a duration above 0 and at most %v (Go syntax: 30s, 5m)", v, MaxDuration)
			}
		case "time_wait":
			if f.TimeWait, err = strconv.ParseBool(v); err != nil {
				err = fmt.Errorf("%q is not 1, 0, true or false", v)
			}
		case "format":
			format = Format(v)
			if format != FormatText && format != FormatJSON {
				err = fmt.Errorf("%q is not text or json", v)
			}
		default:
			err = fmt.Errorf("unknown parameter (listener, client, port, count, duration, time_wait, format)")
		}
		if err != nil {
			return f, format, &ParamError{name, err.Error()}
		}
	}
	return f, format, nil
}

// ParseClient reads A or A/len (IPv4 or IPv6) as a prefix.
func ParseClient(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return p, fmt.Errorf("%q is not an address or prefix (A or A/len)", v)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or prefix (A or A/len)", v)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Query is f as /trace's parameters (format added when not text).
func (f Filter) Query(format Format) url.Values {
	q := url.Values{}
	if f.Listener != "" {
		q.Set("listener", f.Listener)
	}
	if f.Client.IsValid() {
		q.Set("client", f.Client.String())
	}
	if f.Port != 0 {
		q.Set("port", strconv.Itoa(int(f.Port)))
	}
	if f.Count > 0 {
		q.Set("count", strconv.Itoa(f.Count))
	}
	if f.Duration > 0 && f.Duration != DefaultDuration {
		q.Set("duration", f.Duration.String())
	}
	if f.TimeWait {
		q.Set("time_wait", "1")
	}
	if format != "" && format != FormatText {
		q.Set("format", string(format))
	}
	return q
}

// Match reports whether a client connection from client to local on
// listener matches f.
func (f *Filter) Match(listener string, client, local netip.AddrPort) bool {
	if f.Listener != "" && f.Listener != listener {
		return false
	}
	if f.Client.IsValid() && !f.Client.Contains(client.Addr().Unmap()) {
		return false
	}
	if f.Port != 0 && f.Port != client.Port() && f.Port != local.Port() {
		return false
	}
	return true
}

// Hub holds the watches readers have open; shards consult it for every new
// client connection (one atomic load when there is none).
type Hub struct {
	mu      sync.Mutex
	watches atomic.Pointer[[]*Watch]
	ids     atomic.Uint64
}

// Watch is one reader's request: a filter, how many sessions are still to
// be chosen, and the channel they arrive on.
type Watch struct {
	Filter   Filter
	C        <-chan *Session
	c        chan *Session
	hub      *Hub
	selected atomic.Int64
	dropped  atomic.Uint64
	closed   atomic.Bool
}

// Watch opens a watch for f.
func (h *Hub) Watch(f Filter) *Watch {
	c := make(chan *Session, WatchBuffer)
	w := &Watch{Filter: f, C: c, c: c, hub: h}
	h.mu.Lock()
	defer h.mu.Unlock()
	var ws []*Watch
	if p := h.watches.Load(); p != nil {
		ws = append(ws, *p...)
	}
	ws = append(ws, w)
	h.watches.Store(&ws)
	return w
}

// Close ends the watch: nothing more is chosen for it, and sessions still
// being traced for it are dropped when they end.
func (w *Watch) Close() {
	if w.closed.Swap(true) {
		return
	}
	h := w.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	var ws []*Watch
	for _, x := range *h.watches.Load() {
		if x != w {
			ws = append(ws, x)
		}
	}
	if len(ws) == 0 {
		h.watches.Store(nil)
		return
	}
	h.watches.Store(&ws)
}

// Dropped is how many of the watch's sessions were dropped because its
// reader did not keep up.
func (w *Watch) Dropped() uint64 { return w.dropped.Load() }

// Active reports whether any watch is open.
func (h *Hub) Active() bool { return h.watches.Load() != nil }

// Select returns the first open watch that matches the client connection
// and still wants a session, counting the session against it; nil if none.
func (h *Hub) Select(listener string, client, local netip.AddrPort) *Watch {
	p := h.watches.Load()
	if p == nil {
		return nil
	}
	for _, w := range *p {
		if w.closed.Load() || !w.Filter.Match(listener, client, local) {
			continue
		}
		for {
			n := w.selected.Load()
			if n >= int64(w.Filter.Count) {
				break
			}
			if w.selected.CompareAndSwap(n, n+1) {
				return w
			}
		}
	}
	return nil
}

// NextID numbers a session trace.
func (h *Hub) NextID() uint64 { return h.ids.Add(1) }

// Deliver hands s to the watch's reader without waiting: when its buffer
// is full (or the watch is closed) s is dropped and counted.
func (w *Watch) Deliver(s *Session) {
	if w.closed.Load() {
		return
	}
	select {
	case w.c <- s:
	default:
		w.dropped.Add(1)
	}
}
