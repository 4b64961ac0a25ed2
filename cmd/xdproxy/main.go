// Command xdproxy runs the proxy (see CONFIG.md): `run --config FILE`,
// `check --config FILE`, `version`, and the commands that talk to a
// running daemon's admin server: `backends`, `backend set`, `reload`, `ss`
// (admin.go), `capture` (capture.go). It
// is wiring only: flags, config loading, logging, signals and exit codes;
// the work is in proxy/ and internal/adminclient.
//
// check and run both load the file (internal/config) and then hold it
// against this host's interfaces, addresses and routes in the current
// network namespace (internal/preflight: read only, nothing sent), so check
// belongs where the daemon runs. Every problem is one line, FILE:LINE:
// field.path: what is wrong; check prints them, run refuses to start with
// them, both exit 1. --no-preflight skips the host (check validates the
// file alone, e.g. on another machine; run starts regardless).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/xdproxy/xdproxy/internal/config"
	"github.com/xdproxy/xdproxy/internal/preflight"
	"github.com/xdproxy/xdproxy/internal/statedir"
	"github.com/xdproxy/xdproxy/proxy"
	"github.com/xdproxy/xdproxy/proxy/admin"
)

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: xdproxy run --config FILE [--no-preflight]
       xdproxy check --config FILE [--no-preflight]
       xdproxy version
       xdproxy reload [--admin ADDR] [--config FILE]
       xdproxy ss [--admin ADDR] [--config FILE] [state S] [sport = :P] [dport = :P] [src A] [dst A]
       xdproxy backends [--admin ADDR] [--config FILE] [--json]
       xdproxy trace [--admin ADDR] [--config FILE] [--listener L] [--client A[/len]] [--port P] [--count N] [--duration D] [--time-wait] [--json]
       xdproxy backend set LISTENER BACKEND [--state ready|drain|maint] [--weight N] [--admin ADDR] [--config FILE]
       xdproxy capture -w FILE|- [--host A] [--port P] [--listener L] [--count N] [--duration D] [--buffer SIZE] [--admin ADDR] [--config FILE]`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	switch args[0] {
	case "version":
		fmt.Fprintf(stdout, "xdproxy %s %s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" || s.Key == "vcs.time" || s.Key == "vcs.modified" {
					fmt.Fprintf(stdout, "%s %s\n", s.Key, s.Value)
				}
			}
		}
		return 0
	case "check", "run":
		fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", "", "configuration file (YAML)")
		noPreflight := fs.Bool("no-preflight", false, "do not check the file against this host's interfaces and routes")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		if *path == "" {
			fmt.Fprintf(stderr, "xdproxy %s: --config FILE is required\n", args[0])
			return 2
		}
		cfg, err := config.Load(*path)
		if err != nil {
			// One line per problem: FILE:LINE: field.path: what is wrong.
			fmt.Fprintln(stderr, err)
			return 1
		}
		if !*noPreflight {
			// The same shape: one line per problem (or why the host could not be read).
			if err := preflight.Check(*path, cfg, preflight.Host()); err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
		}
		if args[0] == "check" {
			fmt.Fprintln(stdout, "ok")
			return 0
		}
		return serve(cfg, *path, !*noPreflight, stderr)
	case "reload":
		return reloadCmd(args[1:], stdout, stderr)
	case "ss":
		return ssCmd(args[1:], stdout, stderr)
	case "capture":
		return captureCmd(args[1:], stdout, stderr)
	case "backends":
		return backendsCmd(args[1:], stdout, stderr)
	case "trace":
		return traceCmd(args[1:], stdout, stderr)
	case "backend":
		if len(args) < 2 || args[1] != "set" {
			fmt.Fprintf(stderr, "xdproxy backend: expected \"set\"\n%s\n", usage)
			return 2
		}
		return backendSetCmd(args[2:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "xdproxy: unknown command %q\n%s\n", args[0], usage)
		return 2
	}
}

func serve(cfg *config.Config, path string, withPreflight bool, stderr io.Writer) int {
	log := newLogger(cfg.Log, stderr)
	slog.SetDefault(log)
	pcfg, err := proxy.FromConfig(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "xdproxy: %v\n", err)
		return 1
	}
	// The Go runtime's soft limit follows the budget unless the
	// environment sets its own (GOMEMLIMIT).
	goLimit := "GOMEMLIMIT"
	if os.Getenv("GOMEMLIMIT") == "" && pcfg.MemoryLimit > 0 {
		n := proxy.GoMemoryLimit(pcfg.MemoryLimit)
		debug.SetMemoryLimit(n)
		goLimit = strconv.FormatInt(n, 10)
	}
	log.Info("memory budget", "tcp.memory_limit", pcfg.MemoryLimit, "go_memory_limit", goLimit)
	// The engine's keys outlive the process (see internal/statedir).
	state, err := statedir.Open(cfg.StateDir)
	if err == nil {
		pcfg.Engine.Keys, err = state.Keys()
	}
	if err != nil {
		fmt.Fprintf(stderr, "xdproxy: %v\n", err)
		return 1
	}
	// Read before the data plane changes anything on the host.
	var token string
	if cfg.Admin.Address != "" && cfg.Admin.TokenFile != "" {
		if token, err = config.ReadTokenFile(cfg.Admin.TokenFile); err != nil {
			fmt.Fprintf(stderr, "xdproxy: admin.token_file: %v\n", err)
			return 1
		}
	}
	data, err := os.ReadFile(path) // for the hash of the file in force
	if err != nil {
		fmt.Fprintf(stderr, "xdproxy: %v\n", err)
		return 1
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	p, err := proxy.Start(pcfg)
	if err != nil {
		fmt.Fprintf(stderr, "xdproxy: %v\n", err)
		return 1
	}
	reloader := proxy.NewFileReloader(p, path, cfg, data, withPreflight, log)
	var adminSrv *admin.Admin
	if cfg.Admin.Address != "" {
		adminSrv = admin.New(p, cfg.Admin.Address, log)
		adminSrv.SetReloader(reloader)
		adminSrv.SetToken(token)
		if err := adminSrv.Start(); err != nil {
			p.Stop()
			fmt.Fprintf(stderr, "xdproxy: admin server: %v\n", err)
			return 1
		}
		adminSrv.SetReady(true)
	}
	speaker, err := startBGP(p, cfg, reloader, adminSrv, log)
	if err != nil {
		p.Stop()
		fmt.Fprintf(stderr, "xdproxy: %v\n", err)
		return 1
	}
	log.Info("ready", "listeners", len(cfg.Listeners), "interfaces", len(cfg.Interfaces), "admin", cfg.Admin.Address)
	var sig os.Signal
	for sig == nil {
		select {
		case sig = <-sigs:
		case <-hups:
			reloader.Reload("SIGHUP")
		}
	}
	// /healthz answers 503 "draining" from here on (it reads p.Draining).
	withdrawBeforeDrain(speaker, sigs, log)
	log.Info("draining", "signal", sig.String(), "drain_timeout", cfg.DrainTimeout)
	reset := p.Drain(cfg.DrainTimeout)
	speaker.Stop()
	if adminSrv != nil {
		// Before the data plane goes: a scrape must not race its teardown.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := adminSrv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			log.Warn("admin server shutdown", "err", err)
		}
		cancel()
	}
	code := 0
	if err := p.Stop(); err != nil {
		log.Error("stopping the data plane", "err", err)
		code = 1
	}
	log.Info("stopped", "sessions_reset", reset)
	return code
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
