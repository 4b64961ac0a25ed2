package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Admin is the admin HTTP server (CONFIG.md, "Admin HTTP"):
//
//	/healthz       200 "ok" when ready and not draining; 503 "starting" or "draining"
//	/metrics       Prometheus text format, collected at scrape time
//	/connections   one line per engine connection and TIME_WAIT entry (?format=json)
//	/bgp           the BGP speaker's sessions and routes (bgp.go)
//	/backends      the runtime API (backends.go): GET lists, POST /backends/L/B changes
//	/trace         ladder traces of the next matching sessions, streamed (trace.go)
//	/capture       pcapng of the frames the shards receive and send (capture.go)
//	/debug/pprof/  Go profiles
//
// On an address that is not loopback every path but /healthz and /metrics
// needs the bearer token (auth.go). It binds only its own mux (never
// http.DefaultServeMux).
type Admin struct {
	src      atomic.Pointer[sourceRef]
	reloader atomic.Pointer[reloaderRef]
	bgpSrc   atomic.Pointer[bgpRef]
	addr     string
	log      *slog.Logger
	ready    atomic.Bool

	tokenSum     atomic.Pointer[[32]byte] // SHA-256 of the bearer token (nil: none)
	protected    atomic.Bool              // the token is required
	unauthorized atomic.Uint64            // requests answered 401
	lastDenyLog  atomic.Int64             // unix nanoseconds of the last 401 logged

	// ShardTimeout bounds how long /metrics and /connections wait for a
	// shard to answer (default 2s); set it before Start.
	ShardTimeout time.Duration

	reg     *prometheus.Registry
	mux     *http.ServeMux
	handler http.Handler // mux behind the token check

	captures  captureMetrics
	closing   chan struct{} // closed by Shutdown: streams (/capture) end
	closeOnce sync.Once

	mu    sync.Mutex
	srv   *http.Server
	ln    net.Listener
	serve chan struct{} // closed when Serve returns
}

// New returns the admin server of src, to listen on addr ("host:port";
// port 0 picks one, see Addr). src may be nil (an untyped nil) while the
// proxy is starting (SetSource supplies it later): /healthz then answers
// "starting" and /metrics has xdproxy_ready and the Go and process metrics
// only.
func New(src Source, addr string, log *slog.Logger) *Admin {
	if log == nil {
		log = slog.Default()
	}
	a := &Admin{addr: addr, log: log.With("component", "admin"), closing: make(chan struct{})}
	if src != nil {
		a.src.Store(&sourceRef{src})
	}
	a.reg = prometheus.NewRegistry()
	a.reg.MustRegister(
		&collector{source: a.source, ready: a.isReady, timeout: a.shardTimeout, unauthorized: a.Unauthorized, reloader: a.currentReloader},
		&a.captures,
		&bgpCollector{source: a.currentBGP},
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
	a.mux.HandleFunc("/reload", a.handleReload)
	a.mux.HandleFunc("/bgp", a.handleBGP)
	a.mux.HandleFunc("/backends", a.handleBackends)
	a.mux.HandleFunc("/backends/", a.handleBackendsOther)
	a.mux.HandleFunc("/backends/{listener}/{backend}", a.handleSetBackend)
	a.mux.HandleFunc("/trace", a.handleTrace)
	a.mux.HandleFunc("/capture", a.handleCapture)
	a.mux.HandleFunc("/debug/pprof/", pprof.Index)
	a.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	a.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	a.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	a.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	a.handler = a.guard(a.mux)
	return a
}

// sourceRef boxes the source for an atomic pointer.
type sourceRef struct{ src Source }

// SetSource sets what the server reports on (nil: nothing yet), for a
// daemon that starts the admin server before the proxy (so that /healthz
// says "starting" meanwhile).
func (a *Admin) SetSource(src Source) {
	if src == nil {
		a.src.Store(nil)
		return
	}
	a.src.Store(&sourceRef{src})
}

func (a *Admin) source() Source {
	if r := a.src.Load(); r != nil {
		return r.src
	}
	return nil
}

// SetReady marks the proxy ready (every shard of every listener serving):
// /healthz answers 200 from then on, unless the proxy is draining.
func (a *Admin) SetReady(ready bool) { a.ready.Store(ready) }

func (a *Admin) isReady() bool { return a.ready.Load() }

// Handler is the admin mux behind the token check (for tests and for
// embedding).
func (a *Admin) Handler() http.Handler { return a.handler }

// Start listens on the address and serves in the background. Use Addr for
// the bound address. When that address is not loopback the server is
// protected (Protect), and Start fails without a token (SetToken).
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
	if !isLoopback(ln.Addr()) {
		if a.tokenSum.Load() == nil {
			ln.Close()
			return fmt.Errorf("admin: %s is not a loopback address: a token (admin.token_file) is required", ln.Addr())
		}
		a.Protect()
	}
	a.ln = ln
	a.srv = &http.Server{
		Handler:           a.handler,
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
	a.log.Info("admin server listening", "address", ln.Addr().String(), "token_required", a.Protected())
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
	a.closeOnce.Do(func() { close(a.closing) }) // streams end and write their last blocks
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
	fmt.Fprint(w, "xdproxy admin\n\n/healthz\n/metrics\n/connections  (?format=json, ?state=ESTABLISHED,TIME_WAIT, ?listener=NAME, ?limit=N, ?time_wait=0)\n/backends  (GET; POST /backends/LISTENER/BACKEND {\"state\": \"ready|drain|maint\", \"weight\": N})\n/trace  (?listener=NAME, ?client=A[/len], ?port=P, ?count=N, ?duration=D, ?time_wait=1, ?format=text|json)\n/capture  (pcapng; ?host=A, ?port=P, ?listener=NAME, ?count=N, ?duration=D)\n/debug/pprof/\n")
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
