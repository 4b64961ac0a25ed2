package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xdproxy/xdproxy/stack"
)

// Admin is the admin HTTP server (CONFIG.md, "Admin HTTP"):
//
//	/healthz       200 "ok" when ready and not draining; 503 "starting" or "draining"
//	/metrics       Prometheus text format, collected at scrape time
//	/connections   one line per engine connection and TIME_WAIT entry (?format=json)
//	/debug/pprof/  Go profiles
//
// It binds only its own mux (never http.DefaultServeMux).
type Admin struct {
	src   atomic.Pointer[sourceRef]
	addr  string
	log   *slog.Logger
	ready atomic.Bool

	// ShardTimeout bounds how long /metrics and /connections wait for a
	// shard to answer (default 2s); set it before Start.
	ShardTimeout time.Duration

	reg *prometheus.Registry
	mux *http.ServeMux

	mu    sync.Mutex
	srv   *http.Server
	ln    net.Listener
	serve chan struct{} // closed when Serve returns
}

// NewAdmin returns the admin server of p, to listen on addr ("host:port";
// port 0 picks one, see Addr). p may be nil while the proxy is starting
// (SetProxy supplies it later): /healthz then answers "starting" and
// /metrics has xdproxy_ready and the Go and process metrics only.
func NewAdmin(p *Proxy, addr string, log *slog.Logger) *Admin {
	var src adminSource
	if p != nil {
		src = p
	}
	return newAdmin(src, addr, log)
}

func newAdmin(src adminSource, addr string, log *slog.Logger) *Admin {
	if log == nil {
		log = slog.Default()
	}
	a := &Admin{addr: addr, log: log.With("component", "admin")}
	if src != nil {
		a.src.Store(&sourceRef{src})
	}
	a.reg = prometheus.NewRegistry()
	a.reg.MustRegister(
		&collector{source: a.source, ready: a.isReady, timeout: a.shardTimeout},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	a.mux = http.NewServeMux()
	a.mux.HandleFunc("/{$}", a.handleIndex)
	a.mux.HandleFunc("/healthz", a.handleHealthz)
	a.mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{
		ErrorLog:      slogPrintln{a.log},
		ErrorHandling: promhttp.ContinueOnError,
	}))
	a.mux.HandleFunc("/connections", a.handleConnections)
	a.mux.HandleFunc("/debug/pprof/", pprof.Index)
	a.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	a.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	a.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	a.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return a
}

// sourceRef boxes the source for an atomic pointer.
type sourceRef struct{ src adminSource }

// SetProxy sets the proxy the server reports on, for a daemon that starts
// the admin server before the proxy (so that /healthz says "starting"
// meanwhile).
func (a *Admin) SetProxy(p *Proxy) {
	if p == nil {
		a.src.Store(nil)
		return
	}
	a.src.Store(&sourceRef{p})
}

func (a *Admin) source() adminSource {
	if r := a.src.Load(); r != nil {
		return r.src
	}
	return nil
}

// SetReady marks the proxy ready (every shard of every listener serving):
// /healthz answers 200 from then on, unless the proxy is draining.
func (a *Admin) SetReady(ready bool) { a.ready.Store(ready) }

func (a *Admin) isReady() bool { return a.ready.Load() }

// Handler is the admin mux (for tests and for embedding).
func (a *Admin) Handler() http.Handler { return a.mux }

// Start listens on the address and serves in the background. Use Addr for
// the bound address.
func (a *Admin) Start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.srv != nil {
		return errors.New("admin: already started")
	}
	ln, err := net.Listen("tcp", a.addr)
	if err != nil {
		return fmt.Errorf("admin: listen on %s: %w", a.addr, err)
	}
	a.ln = ln
	a.srv = &http.Server{
		Handler:           a.mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	a.serve = make(chan struct{})
	srv, done := a.srv, a.serve
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin server stopped", "err", err)
		}
	}()
	a.log.Info("admin server listening", "address", ln.Addr().String())
	return nil
}

// Addr is the address the server is bound to ("" before Start).
func (a *Admin) Addr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ln == nil {
		return ""
	}
	return a.ln.Addr().String()
}

// Shutdown stops accepting, waits for the requests in progress (until ctx
// ends; then it closes them) and returns once the server is down.
func (a *Admin) Shutdown(ctx context.Context) error {
	a.mu.Lock()
	srv, done := a.srv, a.serve
	a.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		srv.Close()
	}
	<-done
	return err
}

func (a *Admin) shardTimeout() time.Duration {
	if a.ShardTimeout > 0 {
		return a.ShardTimeout
	}
	return 2 * time.Second
}

// slogPrintln adapts a slog.Logger to promhttp's ErrorLog.
type slogPrintln struct{ log *slog.Logger }

func (l slogPrintln) Println(v ...any) {
	l.log.Warn("metrics: " + strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

// --- handlers ---

func (a *Admin) handleIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, "xdproxy admin\n\n/healthz\n/metrics\n/connections  (?format=json, ?state=ESTABLISHED,TIME_WAIT, ?listener=NAME, ?limit=N, ?time_wait=0)\n/debug/pprof/\n")
}

func (a *Admin) handleHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	status, body := http.StatusOK, "ok"
	src := a.source()
	switch {
	case src != nil && src.Draining():
		status, body = http.StatusServiceUnavailable, "draining"
	case !a.ready.Load() || src == nil:
		status, body = http.StatusServiceUnavailable, "starting"
	}
	w.WriteHeader(status)
	fmt.Fprint(w, body)
}

// connJSON is one entry of /connections?format=json. The ESTABLISHED-only
// fields are absent for other states.
type connJSON struct {
	Interface string  `json:"interface"`
	Shard     int     `json:"shard"`
	Queue     int     `json:"queue"`
	State     string  `json:"state"`
	Local     string  `json:"local"`
	Remote    string  `json:"remote"`
	Listener  string  `json:"listener,omitempty"`
	Leg       string  `json:"leg,omitempty"`
	Kernel    bool    `json:"kernel,omitempty"` // an OS socket, not an engine connection
	RTT       string  `json:"rtt,omitempty"`    // smoothed RTT, Go duration syntax
	RTTMicros *int64  `json:"rtt_us,omitempty"` // the same in microseconds
	Cwnd      *int    `json:"cwnd,omitempty"`   // congestion window, bytes
	BytesIn   *uint64 `json:"in,omitempty"`     // bytes received from the remote (read by the proxy)
	BytesOut  *uint64 `json:"out,omitempty"`    // bytes written toward the remote
}

func (e *connEntry) json() connJSON {
	j := connJSON{
		Interface: e.Interface, Shard: e.Shard, Queue: e.Queue, State: e.State.String(),
		Local: e.Local.String(), Remote: e.Remote.String(), Listener: e.Listener, Leg: e.Leg, Kernel: e.Kernel,
	}
	if e.State == stack.Established {
		rtt := e.SRTT.Round(time.Microsecond)
		us := e.SRTT.Microseconds()
		cwnd, in, out := e.Cwnd, e.BytesIn, e.BytesOut
		j.RTT, j.RTTMicros, j.Cwnd, j.BytesIn, j.BytesOut = rtt.String(), &us, &cwnd, &in, &out
	}
	return j
}

// appendText renders e as one /connections line:
//
//	SHARD STATE LOCAL REMOTE [rtt=… cwnd=… in=… out=…] [listener=… leg=…] [kernel] if=IFACE
//
// kernel marks a backend leg that is an OS socket (dial: kernel).
func (e *connEntry) appendText(b []byte) []byte {
	b = strconv.AppendInt(b, int64(e.Shard), 10)
	b = append(b, ' ')
	b = append(b, e.State.String()...)
	b = append(b, ' ')
	b = e.Local.AppendTo(b)
	b = append(b, ' ')
	b = e.Remote.AppendTo(b)
	if e.State == stack.Established {
		b = append(b, " rtt="...)
		b = append(b, e.SRTT.Round(time.Microsecond).String()...)
		b = append(b, " cwnd="...)
		b = strconv.AppendInt(b, int64(e.Cwnd), 10)
		b = append(b, " in="...)
		b = strconv.AppendUint(b, e.BytesIn, 10)
		b = append(b, " out="...)
		b = strconv.AppendUint(b, e.BytesOut, 10)
	}
	if e.Listener != "" {
		b = append(b, " listener="...)
		b = append(b, e.Listener...)
	}
	if e.Leg != "" {
		b = append(b, " leg="...)
		b = append(b, e.Leg...)
	}
	if e.Kernel {
		b = append(b, " kernel"...)
	}
	if e.Interface != "" {
		b = append(b, " if="...)
		b = append(b, e.Interface...)
	}
	return append(b, '\n')
}

// parseConnQuery reads /connections' parameters.
func parseConnQuery(r *http.Request) (connQuery, string, error) {
	q := connQuery{list: true, timeWaits: true}
	v := r.URL.Query()
	format := v.Get("format")
	switch format {
	case "", "text":
		format = "text"
	case "json":
	default:
		return q, "", fmt.Errorf("format %q: want text or json", format)
	}
	if s := v.Get("state"); s != "" {
		q.states = map[stack.State]bool{}
		for _, name := range strings.Split(s, ",") {
			st, ok := stateByName(name)
			if !ok {
				return q, "", fmt.Errorf("state %q: not a TCP state", name)
			}
			q.states[st] = true
		}
	}
	q.listener = v.Get("listener")
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, "", fmt.Errorf("limit %q: want a count", s)
		}
		q.limit = n
	}
	if s := v.Get("time_wait"); s != "" {
		tw, err := strconv.ParseBool(s)
		if err != nil {
			return q, "", fmt.Errorf("time_wait %q: want true or false", s)
		}
		q.timeWaits = tw
	}
	return q, format, nil
}

// stateByName accepts ss(8)/netstat names, any case, '-' for '_', and
// SYN_RECV for SYN_RCVD.
func stateByName(name string) (stack.State, bool) {
	n := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(name), "-", "_"))
	if n == "SYN_RECV" {
		n = "SYN_RCVD"
	}
	for st := range stack.NumStates {
		if stack.State(st).String() == n {
			return stack.State(st), true
		}
	}
	return 0, false
}

// listConns gathers the listing, sorted, trimmed to q.limit overall.
func (a *Admin) listConns(ctx context.Context, q connQuery) (list []connEntry, truncated, partial bool) {
	src := a.source()
	if src == nil {
		return nil, false, false
	}
	ctx, cancel := context.WithTimeout(ctx, a.shardTimeout())
	defer cancel()
	pv := src.view(ctx, q)
	order := map[string]int{}
	for i, iv := range pv.Ifaces {
		order[iv.Name] = i
	}
	for _, sv := range pv.Shards {
		if !sv.Answered {
			partial = true
			continue
		}
		truncated = truncated || sv.Conns.truncated
		list = append(list, sv.Conns.list...)
	}
	sortConns(list, order)
	if q.limit > 0 && len(list) > q.limit {
		list, truncated = list[:q.limit], true
	}
	return list, truncated, partial
}

func (a *Admin) handleConnections(w http.ResponseWriter, r *http.Request) {
	q, format, err := parseConnQuery(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	list, truncated, partial := a.listConns(r.Context(), q)
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if truncated {
		h.Set("X-Xdproxy-Truncated", "true")
	}
	if partial {
		// Some shard did not answer in time (or has stopped): its
		// connections are missing.
		h.Set("X-Xdproxy-Partial", "true")
	}
	if format == "json" {
		h.Set("Content-Type", "application/json")
		out := make([]connJSON, len(list))
		for i := range list {
			out[i] = list[i].json()
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(out)
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	bw := bufio.NewWriterSize(w, 32<<10)
	var line []byte
	for i := range list {
		line = list[i].appendText(line[:0])
		bw.Write(line)
	}
	bw.Flush()
}
