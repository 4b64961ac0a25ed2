// Package proxy splices client connections to backend connections inside
// each shard of the data plane (proxy/dataplane): listeners and their
// backend pools, balancing (round robin, least connections, Maglev), active
// and passive health checks, backpressure, half-close and reset
// propagation, timeouts, the PROXY protocol, drain, and the admin server
// with its metrics.
package proxy
