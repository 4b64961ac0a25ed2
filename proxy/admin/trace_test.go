package admin

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/proxy/trace"
	"github.com/xdproxy/xdproxy/stack"
)

// traceSource is a fakeSource that can be traced: sessions delivered to
// its hub's watches as a proxy's shards would.
type traceSource struct {
	*fakeSource
	hub    trace.Hub
	opened chan trace.Filter
}

func (s *traceSource) Trace(f trace.Filter) *trace.Watch {
	w := s.hub.Watch(f)
	s.opened <- f
	return w
}

func newTraceSource() *traceSource {
	return &traceSource{fakeSource: fullSource(), opened: make(chan trace.Filter, 4)}
}

// A bad parameter, an unknown listener, a source that cannot trace: 400s
// naming the parameter, and 503.
func TestTraceRefused(t *testing.T) {
	h := New(newTraceSource(), "", slog.Default()).Handler()
	for _, tc := range []struct{ query, param string }{
		{"count=0", "count"}, {"client=nowhere", "client"}, {"port=99999", "port"},
		{"format=pcap", "format"}, {"duration=forever", "duration"}, {"lisener=web", "lisener"},
		{"listener=nosuch", "listener"},
	} {
		res, body := get(t, h, "/trace?"+tc.query)
		var doc ErrorDoc
		if res.StatusCode != http.StatusBadRequest || json.Unmarshal([]byte(body), &doc) != nil || !strings.HasPrefix(doc.Error, tc.param+": ") {
			t.Errorf("/trace?%s: %d %s, want 400 naming %s", tc.query, res.StatusCode, body, tc.param)
		}
	}
	if res, body := get(t, New(fullSource(), "", slog.Default()).Handler(), "/trace"); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/trace of a source that cannot trace: %d %s", res.StatusCode, body)
	}
}

// /trace streams each session as it is delivered and ends after count.
func TestTraceStreams(t *testing.T) {
	src := newTraceSource()
	srv := httptest.NewServer(New(src, "", slog.Default()).Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/trace?listener=web&count=2&format=json")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("%d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if f := <-src.opened; f.Listener != "web" || f.Count != 2 {
		t.Fatalf("watch opened for %+v", f)
	}
	k := stack.FlowKey{LocalAddr: netip.MustParseAddr("10.0.1.1"), LocalPort: 80, RemoteAddr: netip.MustParseAddr("10.0.0.2"), RemotePort: 4000}
	rd := bufio.NewReader(res.Body)
	for i := uint64(1); i <= 2; i++ {
		w := src.hub.Select("web", k.Remote(), k.Local())
		if w == nil {
			t.Fatalf("session %d not selected", i)
		}
		w.Deliver(&trace.Session{ID: i, Listener: "web", Client: &stack.ConnTrace{Key: k, Done: true,
			Events: []stack.TraceEvent{{Kind: stack.TraceState, From: stack.Listen, To: stack.SynReceived}}}})
		line, err := rd.ReadString('\n') // each session arrives before the next is sent
		var d trace.SessionDoc
		if err != nil || json.Unmarshal([]byte(line), &d) != nil || d.ID != i || len(d.Events) != 1 {
			t.Fatalf("session %d: %q %v", i, line, err)
		}
	}
	if rest, _ := rd.ReadString('\n'); rest != "" {
		t.Fatalf("after 2 sessions: %q", rest)
	}
	deadline := time.Now().Add(2 * time.Second)
	for src.hub.Active() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if src.hub.Active() {
		t.Fatal("the watch stayed open after the stream ended")
	}
}

// When duration runs out first, the stream says so.
func TestTraceDuration(t *testing.T) {
	src := newTraceSource()
	res, body := get(t, New(src, "", slog.Default()).Handler(), "/trace?count=3&duration=20ms")
	if res.StatusCode != http.StatusOK || body != "# 0 of 3 sessions traced; stopped after 20ms\n" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
}
