// Package balance chooses backends and keeps their health: the balancers
// (smooth weighted round robin, least connections, Maglev consistent
// hashing), the health state machine of a backend (rise and fall over
// active checks, passive marking from failed connects), the active checks
// themselves, and a backend's run-time setting (Runtime: ready, drain or
// maint, and its current weight).
//
// It is separate from package proxy so that how a backend is chosen and
// when it counts as up can be read, tested and benchmarked without
// sessions, shards or sockets: a balancer sees backend indices, weights
// and a healthy(i) function; Health sees results. The proxy owns the
// listeners and decides what to feed in (which failures count, when a
// Maglev table is rebuilt).
//
// # Active checks
//
// Backends of dial: xdp listeners are checked from the TCP engine, so that
// a check takes the path real backend legs take. Prober holds the
// scheduling (due times, timeouts, one check in flight per backend) and
// reaches the engine only through Dialer and the *Probe it sets as the
// connection's User; the shard that runs it (shard 0) calls Tick when Next
// is due and hands a probe connection's events to Probe.ConnEvent. What
// stays in package proxy is that wiring: which shard runs the prober and
// the dispatch of engine events by connection owner, both of which belong
// to the shard's application. Backends of dial: kernel listeners are
// checked with OS sockets (RunKernelChecks, one goroutine).
//
// # Run-time settings
//
// An operator sets a backend's state and weight while the proxy runs
// (the runtime API). A backend takes new connections only when it is
// healthy and its Runtime is Ready with a positive weight: the proxy's
// healthy(i) function says so. Drain and weight 0 keep health checks
// going; Maint stops them (Target.Runtime), so its health stays as it was
// until Health.Recheck on the way out. Round robin and least connections
// read the current weights on every Pick; Maglev's table is rebuilt with
// them (RebuildWeights), off the shards.
//
// # Thread-safety
//
// Health, Runtime and Maglev may be shared by every shard (atomics;
// Maglev's table is swapped whole). Round robin, least connections and
// Prober keep per-shard state and belong to one goroutine each.
package balance
