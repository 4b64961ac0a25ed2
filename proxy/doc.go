// Package proxy splices client connections to backend connections inside
// each shard of the data plane: listeners and their backend pools,
// backpressure, half-close and reset propagation, timeouts, the PROXY
// protocol, drain, and the admin server with its metrics.
//
// Its parts that can be read alone live in sub-packages, which never
// import this one:
//
//   - proxy/dataplane: shards across interfaces, hand-offs, routes and
//     neighbours; it runs the application this package gives each shard.
//   - proxy/balance: the balancers (round robin, least connections,
//     Maglev), backend health (rise and fall, passive marking) and the
//     scheduling of active checks. This package decides what feeds them:
//     which connect failures count, which shard runs the engine checks,
//     when a Maglev table is rebuilt.
package proxy
