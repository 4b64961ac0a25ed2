package main

// `xdproxy backends` and `xdproxy backend set` against a canned admin
// server: the requests they make (address, token, path, body) and what
// they print. No root, no network namespaces; the daemon's side is
// TestRuntimeAPI.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// cannedAdmin answers GET /backends with two backends and POST
// /backends/L/B with the backend after the change (404 for listener
// "nope"); with a token set, everything else than that token gets 401.
type cannedAdmin struct {
	token string

	mu   sync.Mutex
	reqs []cannedRequest
}

type cannedRequest struct {
	method, escapedPath, listener, backend, auth, body string
}

func (a *cannedAdmin) last() cannedRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reqs[len(a.reqs)-1]
}

func (a *cannedAdmin) handler() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, code int, body string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
	mux.HandleFunc("GET /backends", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, `{"listeners": [{"name": "web", "balance": "round_robin", "backends": [
		  {"address": "10.10.2.2:8080", "state": "drain", "weight": 1, "configured_weight": 1, "health": "up",
		   "checks": {"ok": 52, "failed": 0}, "active_sessions": 3, "sessions_total": 120, "failures_total": 0},
		  {"address": "[fd00::3]:8080", "state": "ready", "weight": 0, "configured_weight": 2, "health": "down",
		   "active_sessions": 0, "sessions_total": 118, "failures_total": 4}]}]}`)
	})
	mux.HandleFunc("POST /backends/{listener}/{backend}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("listener") == "nope" {
			reply(w, 404, `{"error": "unknown listener \"nope\" (listeners: web)"}`)
			return
		}
		var change struct {
			State  *string
			Weight *int
		}
		json.NewDecoder(r.Body).Decode(&change)
		state, weight := "ready", 1
		if change.State != nil {
			state = *change.State
		}
		if change.Weight != nil {
			weight = *change.Weight
		}
		reply(w, 200, fmt.Sprintf(`{"listener": %q, "backend": {"address": %q, "state": %q, "weight": %d,
		  "configured_weight": 1, "health": "up", "active_sessions": 2, "sessions_total": 9, "failures_total": 0}}`,
			r.PathValue("listener"), r.PathValue("backend"), state, weight))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		a.mu.Lock()
		a.reqs = append(a.reqs, cannedRequest{method: r.Method, escapedPath: r.URL.EscapedPath(), auth: r.Header.Get("Authorization"), body: string(body)})
		a.mu.Unlock()
		if a.token != "" && r.Header.Get("Authorization") != "Bearer "+a.token {
			reply(w, 401, `{"error": "unauthorized: no Authorization: Bearer header"}`)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func startCanned(t *testing.T, token string) (*cannedAdmin, string) {
	a := &cannedAdmin{token: token}
	srv := httptest.NewServer(a.handler())
	t.Cleanup(srv.Close)
	return a, strings.TrimPrefix(srv.URL, "http://")
}

// adminConfig writes a configuration whose admin block is admin.
func adminConfig(t *testing.T, admin string) string {
	path := filepath.Join(t.TempDir(), "xdproxy.yaml")
	cfg := strings.Replace(goodConfig, "admin:\n  address: 127.0.0.1:9100\n", admin, 1)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeToken(t *testing.T, token string, mode os.FileMode) string {
	path := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(path, []byte(token+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBackendsCommand(t *testing.T) {
	srv, addr := startCanned(t, "")
	code, out, errs := runMain(t, "backends", "--admin", addr)
	want := `LISTENER  BACKEND         STATE  WEIGHT        HEALTH  ACTIVE  SESSIONS  FAILURES  CHECKS
web       10.10.2.2:8080  drain  1             up      3       120       0         52/0
web       [fd00::3]:8080  ready  0 (config 2)  down    0       118       4         -
`
	if code != 0 || out != want || errs != "" {
		t.Fatalf("backends: exit %d\n%s\nwant\n%s\nstderr %q", code, out, want, errs)
	}
	if r := srv.last(); r.method != "GET" || r.escapedPath != "/backends" || r.auth != "" {
		t.Fatalf("request %+v", r)
	}
	code, out, _ = runMain(t, "backends", "--json", "--admin", addr)
	var doc struct {
		Listeners []struct{ Backends []map[string]any }
	}
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || len(doc.Listeners) != 1 || doc.Listeners[0].Backends[1]["configured_weight"] != 2.0 {
		t.Fatalf("backends --json: exit %d\n%s", code, out)
	}
}

func TestBackendSetCommand(t *testing.T) {
	srv, addr := startCanned(t, "")
	// Flags after the positional arguments; an IPv6 backend escaped in the path.
	code, out, errs := runMain(t, "backend", "set", "web", "[fd00::3]:8080", "--state", "drain", "--weight", "0", "--admin", addr)
	if code != 0 || errs != "" || out != "web [fd00::3]:8080: state drain, weight 0 (config 1), health up, 2 active sessions\n" {
		t.Fatalf("backend set: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	r := srv.last()
	if r.method != "POST" || r.escapedPath != "/backends/web/%5Bfd00::3%5D:8080" {
		t.Fatalf("request %s %s", r.method, r.escapedPath)
	}
	jsonEqual(t, r.body, `{"state": "drain", "weight": 0}`)

	// Only the flags given are sent.
	code, _, _ = runMain(t, "backend", "set", "--admin", addr, "--weight", "3", "web", "10.10.2.2:8080")
	if r := srv.last(); code != 0 || r.escapedPath != "/backends/web/10.10.2.2:8080" {
		t.Fatalf("exit %d, request %+v", code, r)
	} else {
		jsonEqual(t, r.body, `{"weight": 3}`)
	}

	// The daemon's refusal: exit 1, its message on one line.
	code, out, errs = runMain(t, "backend", "set", "nope", "10.10.2.2:8080", "--state", "maint", "--admin", addr)
	if code != 1 || out != "" || errs != "xdproxy backend set: POST /backends/nope/10.10.2.2:8080: 404 Not Found: unknown listener \"nope\" (listeners: web)\n" {
		t.Fatalf("unknown listener: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	// Usage: exit 2.
	for _, args := range [][]string{
		{"backend", "set", "web", "10.10.2.2:8080"},
		{"backend", "set", "web", "--state", "drain"},
		{"backend", "set", "web", "10.10.2.2:8080", "extra", "--state", "drain"},
		{"backend", "set", "web", "10.10.2.2:8080", "--color", "red"},
		{"backend", "show"},
		{"backend"},
		{"backends", "web"},
	} {
		if code, _, errs := runMain(t, args...); code != 2 || errs == "" {
			t.Errorf("xdproxy %s: exit %d, stderr %q; want 2 and a usage line", strings.Join(args, " "), code, errs)
		}
	}
}

// TestAdminCommandsAddressAndToken: --admin wins over the config's
// admin.address; the config's admin.token_file is sent; without it a 401
// says how to send it; an unreachable daemon is one clear line.
func TestAdminCommandsAddressAndToken(t *testing.T) {
	srv, addr := startCanned(t, "s3cret")
	token := writeToken(t, "s3cret", 0o600)
	cfg := adminConfig(t, fmt.Sprintf("admin:\n  address: %s\n  token_file: %s\n", addr, token))
	code, out, errs := runMain(t, "backends", "--config", cfg)
	if code != 0 || !strings.HasPrefix(out, "LISTENER") || srv.last().auth != "Bearer s3cret" {
		t.Fatalf("with the config's token: exit %d, stdout %q, stderr %q, auth %q", code, out, errs, srv.last().auth)
	}
	code, _, errs = runMain(t, "backend", "set", "web", "10.10.2.2:8080", "--state", "ready", "--config", cfg)
	if code != 0 || srv.last().auth != "Bearer s3cret" {
		t.Fatalf("backend set with the config's token: exit %d, %q", code, errs)
	}

	code, _, errs = runMain(t, "backends", "--admin", addr)
	if code != 1 || !strings.Contains(errs, "401 Unauthorized: unauthorized: no Authorization: Bearer header (pass --config FILE to send the token from its admin.token_file)") {
		t.Fatalf("without a token: exit %d, stderr %q", code, errs)
	}

	// --admin wins over the config's address.
	other := adminConfig(t, fmt.Sprintf("admin:\n  address: 127.0.0.1:1\n  token_file: %s\n", token))
	if code, _, errs := runMain(t, "backends", "--config", other, "--admin", addr); code != 0 {
		t.Fatalf("--admin over the config: exit %d, %q", code, errs)
	}
	code, _, errs = runMain(t, "backends", "--config", other)
	if code != 1 || !strings.Contains(errs, "cannot reach the admin server at 127.0.0.1:1: connection refused") || strings.Count(errs, "\n") != 1 {
		t.Fatalf("unreachable: exit %d, stderr %q", code, errs)
	}

	// A token file open to others is refused, as the daemon's check does.
	loose := adminConfig(t, fmt.Sprintf("admin:\n  address: %s\n  token_file: %s\n", addr, writeToken(t, "s3cret", 0o644)))
	if code, _, errs := runMain(t, "backends", "--config", loose); code != 1 || !strings.Contains(errs, "admin.token_file: ") || !strings.Contains(errs, "chmod 600") {
		t.Fatalf("token file 0644: exit %d, stderr %q", code, errs)
	}
	// A config without an admin server.
	off := adminConfig(t, "admin:\n  address: \"\"\n")
	if code, _, errs := runMain(t, "backends", "--config", off); code != 1 || !strings.Contains(errs, "disables the admin server") {
		t.Fatalf("admin off: exit %d, stderr %q", code, errs)
	}
}

func jsonEqual(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("not JSON: %q: %v", got, err)
	}
	json.Unmarshal([]byte(want), &w)
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Fatalf("JSON %s, want %s", gb, wb)
	}
}
