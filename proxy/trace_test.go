package proxy

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/xdproxy/xdproxy/proxy/dataplane"
	"github.com/xdproxy/xdproxy/proxy/trace"
	"github.com/xdproxy/xdproxy/stack"
)

// The shards' side of /trace: a client connection a watch wants is traced,
// the next Dial joins its session, dials of untraced sessions and health
// checks are not traced, and the session trace is delivered once every
// traced leg is done.
func TestTraceSelection(t *testing.T) {
	p := newEnginePair(t)
	dp := dataplane.Detached([]string{"test0"}, [][]int{{4}}, []*stack.Engine{p.a})
	t.Cleanup(func() { dp.Stop() })
	prx := newTestProxy([]*Listener{p.web}, dp, slog.Default())
	a := &shardApp{sh: dp.Shards()[0], p: prx, listeners: map[netip.AddrPort]*shardListener{webAP: newShardListener(p.web)}}
	client := stack.FlowKey{LocalAddr: ipA, LocalPort: 80, RemoteAddr: ipB, RemotePort: 40000}
	backend := stack.FlowKey{LocalAddr: ipA, LocalPort: 20000, RemoteAddr: netip.MustParseAddr("10.0.2.2"), RemotePort: 8080}

	if a.TraceConn(backend, nil) != nil || a.TraceConn(client, p.listenerA) != nil {
		t.Fatal("traced with no watch open")
	}
	w := prx.Trace(trace.Filter{Listener: "web", Client: netip.PrefixFrom(ipB, 32), Count: 1})
	defer w.Close()
	ct := a.TraceConn(client, p.listenerA)
	if ct == nil {
		t.Fatal("a matching client connection was not traced")
	}
	if a.TraceConn(client, p.listenerA) != nil {
		t.Fatal("a watch for one session traced two")
	}
	if a.TraceConn(backend, nil) != nil {
		t.Fatal("a dial outside a traced session was traced")
	}
	a.dialTrace = ct
	bt := a.TraceConn(backend, nil)
	if bt == nil || bt == ct || a.dialTrace != nil {
		t.Fatal("the traced session's backend leg did not get a trace of its own")
	}
	a.TraceDone(ct)
	select {
	case <-w.C:
		t.Fatal("delivered before the backend leg was done")
	default:
	}
	a.TraceDone(bt)
	s := <-w.C
	if s.Client != ct || s.Backend != bt || s.Listener != "web" || s.ID == 0 {
		t.Fatalf("session trace %+v", s)
	}

	// A backend leg the engine did not trace (its cap) is said so.
	w2 := prx.Trace(trace.Filter{Count: 1})
	defer w2.Close()
	ct = a.TraceConn(client, p.listenerA)
	a.dialTrace = ct
	a.dialDone(true) // Dial returned a connection without asking TraceConn
	a.TraceDone(ct)
	if s := <-w2.C; s.Backend != nil || !strings.Contains(s.BackendNote, "not traced") {
		t.Fatalf("session trace %+v", s)
	}
}
