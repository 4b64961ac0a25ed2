package admin

import (
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/xdproxy/xdproxy/proxy/balance"
)

var backendV6 = netip.MustParseAddrPort("[fd00::2]:8080")

// runtimeSource has listener web (two IPv4 backends, with health checks)
// and listener db (one IPv6 backend, none).
func runtimeSource() *fakeSource {
	src := fullSource()
	src.ls = append(src.ls[:1:1], ListenerView{Name: "db", Balance: "maglev", Backends: []BackendView{
		{Addr: backendV6, Up: true, Weight: 3, ConfiguredWeight: 3},
	}})
	src.ls[0].Backends = src.ls[0].Backends[:2]
	return src
}

func do(t *testing.T, h http.Handler, method, url, body string, header ...string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, url, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	h.ServeHTTP(rec, req)
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// jsonEqual compares two JSON texts as values.
func jsonEqual(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("answer is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Fatalf("JSON\n got %s\nwant %s", gb, wb)
	}
}

func TestBackendsList(t *testing.T) {
	h := New(runtimeSource(), "127.0.0.1:0", nil).Handler()
	res, body := get(t, h, "/backends")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /backends: %d %s\n%s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	jsonEqual(t, body, `{"listeners": [
	  {"name": "web", "balance": "round_robin", "backends": [
	    {"address": "10.0.2.2:8080", "state": "ready", "weight": 1, "configured_weight": 1, "health": "up",
	     "checks": {"ok": 7, "failed": 0}, "active_sessions": 2, "sessions_total": 3, "failures_total": 0},
	    {"address": "10.0.2.3:8080", "state": "drain", "weight": 2, "configured_weight": 1, "health": "down",
	     "checks": {"ok": 1, "failed": 3}, "active_sessions": 0, "sessions_total": 0, "failures_total": 4}]},
	  {"name": "db", "balance": "maglev", "backends": [
	    {"address": "[fd00::2]:8080", "state": "ready", "weight": 3, "configured_weight": 3, "health": "up",
	     "active_sessions": 0, "sessions_total": 0, "failures_total": 0}]}]}`)

	// Without a proxy yet: 503, JSON.
	res, body = get(t, New(nil, "", nil).Handler(), "/backends")
	if res.StatusCode != 503 || !strings.Contains(body, `"error"`) {
		t.Fatalf("GET /backends without a source: %d %s", res.StatusCode, body)
	}
}

func TestSetBackend(t *testing.T) {
	src := runtimeSource()
	h := New(src, "127.0.0.1:0", nil).Handler()
	res, body := do(t, h, "POST", "/backends/web/10.0.2.2:8080", `{"state": "drain"}`)
	if res.StatusCode != 200 {
		t.Fatalf("drain: %d %s", res.StatusCode, body)
	}
	jsonEqual(t, body, `{"listener": "web", "backend": {"address": "10.0.2.2:8080", "state": "drain", "weight": 1,
	  "configured_weight": 1, "health": "up", "checks": {"ok": 7, "failed": 0}, "active_sessions": 2,
	  "sessions_total": 3, "failures_total": 0}}`)
	c := src.changes[len(src.changes)-1]
	if c.State == nil || *c.State != balance.Drain || c.Weight != nil || !strings.HasPrefix(c.Origin, "admin ") {
		t.Fatalf("change %+v", c)
	}

	res, body = do(t, h, "POST", "/backends/web/10.0.2.2:8080", `{"state": "maint", "weight": 0}`)
	if res.StatusCode != 200 || !strings.Contains(body, `"state": "maint"`) || !strings.Contains(body, `"weight": 0`) {
		t.Fatalf("maint, weight 0: %d %s", res.StatusCode, body)
	}
	res, body = do(t, h, "POST", "/backends/web/10.0.2.2:8080", `{"weight": 65535}`)
	if c := src.changes[len(src.changes)-1]; res.StatusCode != 200 || c.State != nil || c.Weight == nil || *c.Weight != 65535 {
		t.Fatalf("weight only: %d %s, change %+v", res.StatusCode, body, c)
	}

	// An IPv6 backend: brackets as they are, escaped, or another spelling.
	for _, path := range []string{
		"/backends/db/[fd00::2]:8080",
		"/backends/db/%5Bfd00::2%5D:8080",
		"/backends/db/%5bfd00%3a%3a2%5d%3a8080",
		"/backends/db/[fd00:0:0::2]:8080",
	} {
		res, body := do(t, h, "POST", path, `{"state": "ready"}`)
		if res.StatusCode != 200 || !strings.Contains(body, `"address": "[fd00::2]:8080"`) {
			t.Errorf("POST %s: %d %s", path, res.StatusCode, body)
		}
	}
	// An IPv4 backend written as IPv4-mapped IPv6.
	if res, body := do(t, h, "POST", "/backends/web/[::ffff:10.0.2.3]:8080", `{"state": "ready"}`); res.StatusCode != 200 {
		t.Errorf("IPv4-mapped: %d %s", res.StatusCode, body)
	}
}

func TestSetBackendErrors(t *testing.T) {
	src := runtimeSource()
	h := New(src, "127.0.0.1:0", nil).Handler()
	for _, c := range []struct {
		method, path, body string
		code               int
		msg                string // in the error
	}{
		{"POST", "/backends/nope/10.0.2.2:8080", `{"state": "drain"}`, 404, `unknown listener \"nope\"`},
		{"POST", "/backends/web/10.0.2.9:8080", `{"state": "drain"}`, 404, "unknown backend 10.0.2.9:8080 in listener web"},
		{"POST", "/backends/web/10.0.2.2", `{"state": "drain"}`, 400, `backend \"10.0.2.2\" is not IPv4:port or [IPv6]:port`},
		{"POST", "/backends/web/fd00::2:8080", `{"state": "drain"}`, 400, "is not IPv4:port"},
		{"POST", "/backends/web/10.0.2.2:8080", `{"state": "down"}`, 400, `state: unknown state \"down\"; expected one of: ready, drain, maint`},
		{"POST", "/backends/web/10.0.2.2:8080", `{"state": 1}`, 400, "state must be a string"},
		{"POST", "/backends/web/10.0.2.2:8080", `{"weight": -1}`, 400, "weight must be a whole number from 0 to 65535 (got -1)"},
		{"POST", "/backends/web/10.0.2.2:8080", `{"weight": 65536}`, 400, "(got 65536)"},
		{"POST", "/backends/web/10.0.2.2:8080", `{"weight": 1.5}`, 400, "weight must be a whole number from 0 to 65535"},
		{"POST", "/backends/web/10.0.2.2:8080", `{"weight": "2"}`, 400, "weight must be a whole number"},
		{"POST", "/backends/web/10.0.2.2:8080", `{"state": "drain", "mode": "x"}`, 400, `unknown field \"mode\"`},
		{"POST", "/backends/web/10.0.2.2:8080", ``, 400, "empty body"},
		{"POST", "/backends/web/10.0.2.2:8080", `{}`, 400, "nothing to change"},
		{"POST", "/backends/web/10.0.2.2:8080", `{"weight": null}`, 400, "nothing to change"},
		{"POST", "/backends/web/10.0.2.2:8080", `{"state": "drain"} {"state": "ready"}`, 400, "more than one JSON value"},
		{"POST", "/backends/web/10.0.2.2:8080", `state=drain`, 400, "not a JSON object"},
		{"GET", "/backends/web/10.0.2.2:8080", ``, 405, "method not allowed; use POST"},
		{"PUT", "/backends/web/10.0.2.2:8080", `{"state": "drain"}`, 405, "use POST"},
		{"DELETE", "/backends/web/10.0.2.2:8080", ``, 405, "use POST"},
		{"POST", "/backends", `{"state": "drain"}`, 405, "use GET or HEAD"},
		{"POST", "/backends/web", `{"state": "drain"}`, 404, "use GET /backends or POST /backends/LISTENER/BACKEND"},
		{"POST", "/backends/web/10.0.2.2:8080/x", `{"state": "drain"}`, 404, "no such path"},
	} {
		before := len(src.changes)
		res, body := do(t, h, c.method, c.path, c.body)
		if res.StatusCode != c.code || res.Header.Get("Content-Type") != "application/json" || !strings.Contains(body, c.msg) {
			t.Errorf("%s %s %s: %d %s\n  want %d with %q", c.method, c.path, c.body, res.StatusCode, body, c.code, c.msg)
			continue
		}
		var doc ErrorDoc
		if err := json.Unmarshal([]byte(body), &doc); err != nil || doc.Error == "" {
			t.Errorf("%s %s: error answer %q is not {\"error\": ...}", c.method, c.path, body)
		}
		if c.code == 405 {
			if allow := res.Header.Get("Allow"); allow == "" {
				t.Errorf("%s %s: 405 without Allow", c.method, c.path)
			}
		}
		// Only requests that reached the proxy may have asked it anything;
		// none of these changed a backend.
		if c.code != 404 || !strings.Contains(c.msg, "unknown") {
			if len(src.changes) != before {
				t.Errorf("%s %s %s reached the proxy", c.method, c.path, c.body)
			}
		}
	}
	for _, b := range src.Listeners()[0].Backends {
		if b.State != balance.Ready && b.Addr == backendA {
			t.Errorf("a refused change changed %v to %v", b.Addr, b.State)
		}
	}
}

// TestAuth: on a protected server every path but /healthz and /metrics
// needs the bearer token; without it, or with another, 401 (JSON, with
// WWW-Authenticate) and the counter goes up.
func TestAuth(t *testing.T) {
	a := New(runtimeSource(), "10.0.0.1:9100", slog.Default())
	a.SetReady(true)
	a.SetToken("s3cret-token")
	a.Protect()
	h := a.Handler()
	for _, path := range []string{"/healthz", "/metrics"} {
		if res, body := get(t, h, path); res.StatusCode != 200 {
			t.Errorf("GET %s without a token: %d %s", path, res.StatusCode, body)
		}
	}
	denied := 0
	protected := []struct{ method, path, body string }{
		{"GET", "/connections", ""},
		{"GET", "/connections?format=json", ""},
		{"GET", "/backends", ""},
		{"POST", "/backends/web/10.0.2.2:8080", `{"state": "drain"}`},
		{"GET", "/debug/pprof/", ""},
		{"GET", "/debug/pprof/cmdline", ""},
		{"GET", "/", ""},
		{"GET", "/nope", ""},
		{"GET", "/healthz/../connections", ""},
	}
	for _, auth := range []string{"", "Bearer wrong", "Bearer s3cret-token-and-more", "Bearer s3cret", "Basic czNjcmV0LXRva2Vu", "s3cret-token", "Bearer"} {
		for _, p := range protected {
			var hdr []string
			if auth != "" {
				hdr = []string{"Authorization", auth}
			}
			res, body := do(t, h, p.method, p.path, p.body, hdr...)
			denied++
			if res.StatusCode != 401 || !strings.Contains(body, `"error": "unauthorized`) ||
				!strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s with %q: %d %s", p.method, p.path, auth, res.StatusCode, body)
			}
		}
	}
	if n := a.Unauthorized(); n != uint64(denied) {
		t.Errorf("%d requests counted unauthorized, want %d", n, denied)
	}
	_, metrics := get(t, h, "/metrics")
	if want := "xdproxy_admin_unauthorized_total " + strconv.Itoa(denied); !strings.Contains(metrics, want+"\n") {
		t.Errorf("/metrics lacks %q", want)
	}
	for _, auth := range []string{"Bearer s3cret-token", "bearer s3cret-token", "BEARER  s3cret-token "} {
		for _, p := range protected {
			res, body := do(t, h, p.method, p.path, p.body, "Authorization", auth)
			if res.StatusCode == 401 {
				t.Errorf("%s %s with %q: 401 %s", p.method, p.path, auth, body)
			}
		}
	}
	if n := a.Unauthorized(); n != uint64(denied) {
		t.Errorf("requests with the token counted unauthorized: %d, want %d", n, denied)
	}

	// Not protected (loopback): no token asked, one sent is not checked.
	open := New(runtimeSource(), "127.0.0.1:0", nil)
	open.SetToken("s3cret-token")
	for _, auth := range []string{"", "Bearer wrong"} {
		if res, body := do(t, open.Handler(), "GET", "/backends", "", "Authorization", auth); res.StatusCode != 200 {
			t.Errorf("loopback, %q: %d %s", auth, res.StatusCode, body)
		}
	}
}

// TestAuthFromAddress: Start protects a server bound to an address that
// is not loopback (0.0.0.0 is every address), and refuses one without a
// token; on 127.0.0.1 nothing is asked.
func TestAuthFromAddress(t *testing.T) {
	a := New(runtimeSource(), "0.0.0.0:0", nil)
	if err := a.Start(); err == nil || !strings.Contains(err.Error(), "admin.token_file") {
		a.Shutdown(context.Background())
		t.Fatalf("Start on 0.0.0.0 without a token: %v", err)
	}
	a = New(runtimeSource(), "0.0.0.0:0", nil)
	a.SetToken("t0k3n")
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	if !a.Protected() {
		t.Fatal("bound to 0.0.0.0 and not protected")
	}
	_, port, _ := strings.Cut(a.Addr(), "]:")
	if port == "" {
		_, port, _ = strings.Cut(a.Addr(), ":")
	}
	url := "http://127.0.0.1:" + port
	for _, c := range []struct {
		path, token string
		code        int
	}{
		{"/healthz", "", 503}, // not ready, but not 401
		{"/metrics", "", 200},
		{"/backends", "", 401},
		{"/backends", "t0k3n", 200},
		{"/debug/pprof/", "", 401},
		{"/debug/pprof/", "t0k3n", 200},
	} {
		req, _ := http.NewRequest("GET", url+c.path, nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != c.code {
			t.Errorf("GET %s (token %q): %d, want %d", c.path, c.token, res.StatusCode, c.code)
		}
	}
	// The raw-bracket IPv6 path through a real server and client.
	req, _ := http.NewRequest("POST", url+"/backends/db/[fd00::2]:8080", strings.NewReader(`{"weight": 2}`))
	req.Header.Set("Authorization", "Bearer t0k3n")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), `"weight": 2`) {
		t.Errorf("POST with raw brackets: %d %s", res.StatusCode, body)
	}

	b := New(runtimeSource(), "127.0.0.1:0", nil)
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(context.Background())
	if b.Protected() {
		t.Fatal("bound to 127.0.0.1 and protected")
	}
}

// TestTokenComparedInConstantTime pins how the token is compared: through
// subtle.ConstantTimeCompare of SHA-256 sums (equal lengths whatever is
// sent), with no other comparison of the token's bytes in tokenMatches.
func TestTokenComparedInConstantTime(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "auth.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var fn *ast.FuncDecl
	for _, d := range f.Decls {
		if d, ok := d.(*ast.FuncDecl); ok && d.Name.Name == "tokenMatches" {
			fn = d
		}
	}
	if fn == nil {
		t.Fatal("auth.go has no tokenMatches")
	}
	calls := map[string]bool{}
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			if sel, ok := n.Fun.(*ast.SelectorExpr); ok {
				if x, ok := sel.X.(*ast.Ident); ok {
					calls[x.Name+"."+sel.Sel.Name] = true
				}
			}
		case *ast.BinaryExpr:
			if n.Op != token.EQL && n.Op != token.NEQ {
				return true
			}
			// Allowed: x == nil, and the result of ConstantTimeCompare == 1.
			if id, ok := n.Y.(*ast.Ident); ok && id.Name == "nil" {
				return true
			}
			if call, ok := n.X.(*ast.CallExpr); ok {
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "ConstantTimeCompare" {
					return true
				}
			}
			t.Errorf("tokenMatches compares with %s at offset %d", n.Op, n.OpPos)
		}
		return true
	})
	for _, want := range []string{"subtle.ConstantTimeCompare", "sha256.Sum256"} {
		if !calls[want] {
			t.Errorf("tokenMatches does not call %s", want)
		}
	}
	for _, no := range []string{"bytes.Equal", "strings.EqualFold", "strings.Compare", "bytes.Compare"} {
		if calls[no] {
			t.Errorf("tokenMatches calls %s", no)
		}
	}
	// And it works: only the exact token matches.
	a := New(nil, "", nil)
	if a.tokenMatches("") || a.tokenMatches("x") {
		t.Fatal("a token matched with none set")
	}
	a.SetToken("abc")
	for tok, want := range map[string]bool{"abc": true, "ab": false, "abcd": false, "ABC": false, "": false} {
		if a.tokenMatches(tok) != want {
			t.Errorf("tokenMatches(%q) = %v", tok, !want)
		}
	}
}

// TestUnauthorizedLogSpaced: a burst of refused requests logs one line.
func TestUnauthorizedLogSpaced(t *testing.T) {
	var buf strings.Builder
	a := New(runtimeSource(), "", slog.New(slog.NewTextHandler(&buf, nil)))
	a.SetToken("x")
	a.Protect()
	for range 50 {
		do(t, a.Handler(), "GET", "/connections", "")
	}
	if n := strings.Count(buf.String(), "admin request refused"); n != 1 {
		t.Fatalf("%d log lines for 50 refused requests, want 1:\n%s", n, buf.String())
	}
	if a.Unauthorized() != 50 {
		t.Fatalf("%d counted, want 50", a.Unauthorized())
	}
}
