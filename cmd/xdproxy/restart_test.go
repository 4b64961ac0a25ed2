package main

// Restarts under load. The backend closes first (HTTP with Connection:
// close), so its kernel keeps each 4-tuple the proxy used in TIME_WAIT; a
// restarted daemon dials the same 4-tuples again (its port choice is keyed
// like its ISNs). With its keys in state_dir and the boot-time clock, its
// SYNs are newer than the old connections and the backend reopens them at
// once; a proxy that came before it with other keys (HAProxy, on kernel
// sockets) costs one round trip per collision (RST, SYN again), not the
// 1 s SYN timeout.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/internal/lab"
)

// connRate runs workers doing GET / on new connections for d and returns
// the completed requests per second and the failures.
func connRate(ns *lab.NS, url string, workers int, d time.Duration) (float64, int64) {
	hc := httpClient(ns, 3*time.Second)
	var ok, failed atomic.Int64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for time.Now().Before(end) {
				resp, err := hc.Get(url)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return float64(ok.Load()) / d.Seconds(), failed.Load()
}

const restartWindow = 3 * time.Second

func TestRestartUnderLoad(t *testing.T) {
	topo := newTopology(t, e2eQueues)
	startHTTP(t, topo.Backends, backend1+":8080", "b1")
	state := filepath.Join(t.TempDir(), "state")
	cfg := daemonConfig(topo, "1s", listenerYAML("web", listenerIP+":80", "round_robin", "", backend1+":8080")) +
		"state_dir: " + state + "\n"
	url := "http://" + listenerIP + "/"

	d := startDaemon(t, topo, cfg)
	fresh, failed := connRate(topo.Client, url, 16, restartWindow)
	t.Logf("fresh daemon: %.0f conn/s (%d failed)", fresh, failed)
	if fresh < 100 || failed > 0 {
		t.Fatalf("fresh daemon: %.0f conn/s, %d failed", fresh, failed)
	}
	if st, err := os.Stat(filepath.Join(state, "keys")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state_dir/keys: %v %v", st, err)
	}
	var rates []float64
	for i := range 5 {
		if _, err := d.stop(); err != nil {
			t.Fatal(err)
		}
		d = startDaemon(t, topo, cfg)
		rate, failed := connRate(topo.Client, url, 16, restartWindow)
		m := d.fullMetrics()
		// The same daemon's rate in the window after: what this box gives
		// right now (other test packages run beside this one, and the fresh
		// rate of a minute ago is no yardstick under changing load).
		steady, failed2 := connRate(topo.Client, url, 16, restartWindow)
		failed += failed2
		t.Logf("restart %d: %.0f conn/s (%.2fx the %.0f of the window after, %.2fx fresh, %d failed), syn_retransmits %v, syn_tw_collisions %v, tx_resets %v",
			i+1, rate, rate/steady, steady, rate/fresh, failed,
			gaugeWith(m, "xdproxy_tcp_events_total", "counter", "syn_retransmits"),
			gaugeWith(m, "xdproxy_tcp_events_total", "counter", "syn_tw_collisions"),
			gaugeWith(m, "xdproxy_tcp_events_total", "counter", "tx_resets"))
		// A stall (the backend answering SYNs with its TIME_WAIT ACK, 1 s
		// SYN timeouts) took this to 0.01x; the rest is this machine's noise.
		if rxt := gaugeWith(m, "xdproxy_tcp_events_total", "counter", "syn_retransmits"); rxt > rate*restartWindow.Seconds()/100 {
			t.Errorf("restart %d: %v SYNs retransmitted", i+1, rxt)
		}
		if rate < 0.5*steady || failed > 0 {
			t.Errorf("restart %d: %.0f conn/s in the first %v, %.2fx the %.0f after, %d failed", i+1, rate, restartWindow, rate/steady, steady, failed)
		}
		rates = append(rates, rate/steady)
	}
	sort.Float64s(rates)
	t.Logf("after a restart: median %.2fx the rate of the window after (min %.2fx)", rates[len(rates)/2], rates[0])
	if rates[len(rates)/2] < 0.8 {
		t.Errorf("median rate in the first %v after a restart: %.2fx the rate of the window after, want >= 0.8x", restartWindow, rates[len(rates)/2])
	}
}

// TestReplaceHAProxy: HAProxy served the backend (kernel sockets, the
// kernel's keys); xdproxy takes over the same address and backend at once.
func TestReplaceHAProxy(t *testing.T) {
	if err := lab.EnsureTools("haproxy"); err != nil {
		t.Fatal(err)
	}
	topo := newTopology(t, e2eQueues)
	startHTTP(t, topo.Backends, backend1+":8080", "b1")
	url := "http://" + listenerIP + "/"
	dir := t.TempDir()
	hcfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(hcfg, []byte(fmt.Sprintf(`global
    maxconn 4096
defaults
    mode tcp
    timeout connect 3s
    timeout client 30s
    timeout server 30s
frontend web
    bind %s:80
    default_backend b
backend b
    server b1 %s:8080
`, listenerIP, backend1)), 0o644); err != nil {
		t.Fatal(err)
	}
	hp, err := topo.Proxy.Start(context.Background(), "haproxy", "-db", "-f", hcfg)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	before, failed := connRate(topo.Client, url, 16, restartWindow)
	t.Logf("HAProxy: %.0f conn/s (%d failed)", before, failed)
	if before < 100 {
		t.Fatalf("HAProxy served %.0f conn/s (%d failed):\n%s", before, failed, hp.Output())
	}
	hp.Stop(2 * time.Second)

	cfg := daemonConfig(topo, "1s", listenerYAML("web", listenerIP+":80", "round_robin", "", backend1+":8080")) +
		"state_dir: " + filepath.Join(dir, "state") + "\n"
	d := startDaemon(t, topo, cfg)
	rate, failed := connRate(topo.Client, url, 16, restartWindow)
	m := d.fullMetrics()
	t.Logf("xdproxy right after HAProxy: %.0f conn/s (%.2fx, %d failed), syn_tw_collisions %v, syn_retransmits %v", rate, rate/before, failed,
		gaugeWith(m, "xdproxy_tcp_events_total", "counter", "syn_tw_collisions"),
		gaugeWith(m, "xdproxy_tcp_events_total", "counter", "syn_retransmits"))
	fresh, _ := connRate(topo.Client, url, 16, restartWindow)
	t.Logf("xdproxy 3 s later: %.0f conn/s", fresh)
	// The stall this guards against is a 1 s SYN timeout per collision
	// (0.01x-0.42x measured before): every collision answered at once
	// leaves no SYN retransmitted. The rates are this shared box's noise.
	synRxt := gaugeWith(m, "xdproxy_tcp_events_total", "counter", "syn_retransmits")
	accepted := gaugeWith(m, "xdproxy_accepted_total", "", "")
	if synRxt > accepted/100 {
		t.Errorf("right after HAProxy: %v SYNs retransmitted for %v sessions (collisions waiting for the SYN timeout)", synRxt, accepted)
	}
	if rate < 0.5*max(fresh, before) || failed > 0 {
		t.Errorf("right after HAProxy: %.0f conn/s, %.2fx xdproxy's own later rate %.0f (want >= 0.5x), %d failed", rate, rate/fresh, fresh, failed)
	}
}

// TestSIGKILLThenCleanRun: a daemon killed with SIGKILL restores nothing;
// the next one takes back what it left (from its record in state_dir) and,
// stopped cleanly, leaves ip_local_reserved_ports as it was before the
// first start, XDP detached.
func TestSIGKILLThenCleanRun(t *testing.T) {
	topo := newTopology(t, 1)
	startHTTP(t, topo.Backends, backend1+":8080", "b1")
	before := reservedPorts(t, topo.Proxy)
	cfg := daemonConfig(topo, "1s", listenerYAML("web", listenerIP+":80", "round_robin", "", backend1+":8080")) +
		"state_dir: " + filepath.Join(t.TempDir(), "state") + "\n"
	d := startDaemon(t, topo, cfg)
	running := reservedPorts(t, topo.Proxy)
	if running == before {
		t.Fatalf("ip_local_reserved_ports unchanged while running: %q", running)
	}
	d.proc.Signal(syscall.SIGKILL)
	<-d.proc.Done()
	d.mu.Lock()
	d.exited = true
	d.mu.Unlock()
	if got := reservedPorts(t, topo.Proxy); got != running {
		t.Fatalf("after SIGKILL: %q, want the running value %q left behind", got, running)
	}

	d = startDaemon(t, topo, cfg)
	if !strings.Contains(d.output(), "took back the reserved ports") {
		t.Errorf("the second run did not say it took back the leaked ports:\n%s", tail(d.output(), 3000))
	}
	if _, err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if got := reservedPorts(t, topo.Proxy); got != before {
		t.Errorf("after a clean stop: %q, want %q (the value before the first start)", got, before)
	}
	if on, out := xdpAttached(t, topo.Proxy, topo.ProxyIf); on {
		t.Errorf("XDP still attached after a clean stop:\n%s", out)
	}
}
