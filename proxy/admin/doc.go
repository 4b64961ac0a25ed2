// Package admin is xdproxy's admin HTTP server (CONFIG.md, "Admin HTTP"):
// /healthz, the Prometheus /metrics, the ss(8)-like /connections listing
// of the engines' connections (text or JSON, with filters), the runtime
// API (/backends: list backends, set one's state and weight; backends.go),
// packet capture (/capture: pcapng of the frames the shards receive and
// send, through the optional CaptureSource; capture.go), and pprof. On an address that is not loopback every path but /healthz
// and /metrics needs the bearer token of admin.token_file (auth.go).
//
// It reads the proxy only through Source, a snapshot interface that
// *proxy.Proxy implements: the listeners' counters (ListenerView) and a
// view of the data plane (PlaneView: interfaces, AF_XDP sockets, shards,
// and the connections a walk of each shard found, as ConnQuery asked);
// its one way to change the proxy is Source.SetBackend.
// Walking the sessions, which only the proxy can read and only on their
// shard, stays in package proxy; what the numbers are called and how the
// listing looks lives here. So the metric names, labels and help texts
// and the formats of every path are pinned by this package's tests
// against canned views, without a proxy, root or a network, and the
// server cannot reach into the proxy's internals.
//
// The server binds only its own mux (never http.DefaultServeMux). A scrape
// or a listing waits for the shards at most ShardTimeout; a shard that did
// not answer in time is reported (xdproxy_shard_up 0, the header
// X-Xdproxy-Partial) rather than waited for.
package admin
