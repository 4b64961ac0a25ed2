// Package proxy splices client connections to backend connections inside
// each shard of the data plane: listeners and their backend pools,
// backpressure, half-close and reset propagation, timeouts, the PROXY
// protocol, drain, and what the admin server reports on.
//
// Its parts that can be read alone live in sub-packages, which never
// import this one:
//
//   - proxy/dataplane: shards across interfaces, hand-offs, routes and
//     neighbours; it runs the application this package gives each shard.
//   - proxy/balance: the balancers (round robin, least connections,
//     Maglev), backend health (rise and fall, passive marking), the
//     scheduling of active checks and backends' run-time settings (ready,
//     drain, maint, weight). This package decides what feeds them: which
//     connect failures count, which shard runs the engine checks, when a
//     Maglev table is rebuilt, and how the runtime API's changes apply
//     (runtime.go).
//   - proxy/admin: the admin HTTP server, the Prometheus metrics, the
//     /connections listing and the runtime API. It reads the proxy through admin.Source, which
//     Proxy implements (view.go): the walk of each shard's sessions and
//     kernel legs, which names every connection's listener and leg, stays
//     here because it reads sessions.
package proxy
