// Package proxy will splice client connections to backend connections inside
// each shard: balancing, health checks, backpressure, the shard run loop and
// the admin server. Not built yet: see the README's Status section.
package proxy
