package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
	"time"
)

// Authentication (CONFIG.md): when the server listens on an address that
// is not loopback, every path but /healthz and /metrics (the runtime API,
// /connections with the clients' addresses, pprof) needs
//
//	Authorization: Bearer TOKEN
//
// with TOKEN the content of admin.token_file. Requests without it, or with
// another token, get 401 and are counted (xdproxy_admin_unauthorized_total).
// On a loopback address the token is not asked for (a token sent anyway is
// not checked).
//
// The token is compared in constant time: the server keeps only its
// SHA-256 and compares the SHA-256 of what a request presents with
// subtle.ConstantTimeCompare, so neither the position of the first wrong
// byte nor the token's length shows in the time an answer takes.

// openPaths are the paths that never need the token: probes and scrapers
// (which know no secrets) read them, and they reveal no client addresses.
var openPaths = map[string]bool{"/healthz": true, "/metrics": true}

// SetToken sets the bearer token ("" for none). Call it before Start.
func (a *Admin) SetToken(token string) {
	if token == "" {
		a.tokenSum.Store(nil)
		return
	}
	sum := sha256.Sum256([]byte(token))
	a.tokenSum.Store(&sum)
}

// Protect makes every path but /healthz and /metrics need the token
// whatever the address (Start does it when the address is not loopback).
func (a *Admin) Protect() { a.protected.Store(true) }

// Protected reports whether the token is required.
func (a *Admin) Protected() bool { return a.protected.Load() }

// Unauthorized counts the requests answered 401.
func (a *Admin) Unauthorized() uint64 { return a.unauthorized.Load() }

// isLoopback reports whether the server bound to a loopback address (an
// unspecified one, 0.0.0.0 or [::], is every address: not loopback).
func isLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// guard lets a request through to next when it needs no token or has the
// right one, and answers 401 otherwise.
func (a *Admin) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.protected.Load() || openPaths[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		token, found := bearer(r)
		if found && a.tokenMatches(token) {
			next.ServeHTTP(w, r)
			return
		}
		n := a.unauthorized.Add(1)
		reason := "no Authorization: Bearer header"
		if found {
			reason = "wrong token"
		}
		a.logDenied(r, reason, n)
		w.Header().Set("WWW-Authenticate", `Bearer realm="xdproxy admin"`)
		writeError(w, http.StatusUnauthorized, "unauthorized: %s; this admin address is not loopback, so %s needs Authorization: Bearer TOKEN (the content of admin.token_file)", reason, r.URL.Path)
	})
}

// bearer is the token of the request's Authorization header (RFC 6750
// section 2.1; the scheme's case does not matter, RFC 9110 section 11.1).
func bearer(r *http.Request) (string, bool) {
	const scheme = "bearer "
	h := r.Header.Get("Authorization")
	if len(h) < len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	return strings.TrimSpace(h[len(scheme):]), true
}

// tokenMatches compares token with the configured one in constant time.
func (a *Admin) tokenMatches(token string) bool {
	want := a.tokenSum.Load()
	if want == nil {
		return false
	}
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// denyLogEvery spaces the log lines about refused requests: a scanner
// must not flood the log (the counter has them all).
const denyLogEvery = 10 * time.Second

func (a *Admin) logDenied(r *http.Request, reason string, total uint64) {
	now := time.Now().UnixNano()
	last := a.lastDenyLog.Load()
	if last != 0 && now-last < int64(denyLogEvery) || !a.lastDenyLog.CompareAndSwap(last, now) {
		return
	}
	a.log.Warn("admin request refused: unauthorized", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path,
		"reason", reason, "unauthorized_total", total)
}
