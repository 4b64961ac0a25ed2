package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/xdproxy/xdproxy/proxy/trace"
)

// /trace?listener=&client=&port=&count=&duration=&time_wait=&format=text|json streams
// the ladders of the next count sessions that match (CONFIG.md), each as
// soon as the engine is done with both its legs (with time_wait=1, a leg in
// TIME_WAIT is followed to its expiry): text ladders separated by
// a blank line, or one JSON object (trace.SessionDoc) a line. It ends when
// count sessions have been sent, when the reader goes away, or after
// duration (default 10m); a session the reader was too slow for is
// dropped, never waited for, and a last line says how many were
// ("# 1 of 3 sessions traced; 2 dropped (...)", or TraceEndDoc), as it
// does when the time ran out. A bad parameter is a 400
// naming it (ErrorDoc); a listener that does not exist is one too.

// TraceSource is what /trace needs of the source: *proxy.Proxy has it.
type TraceSource interface {
	Trace(f trace.Filter) *trace.Watch
}

// TraceEndDoc is the last line of a JSON trace stream when sessions were
// dropped or the time ran out before count sessions.
type TraceEndDoc struct {
	Sessions int    `json:"sessions"`
	Dropped  uint64 `json:"dropped"`
	TimedOut bool   `json:"timed_out,omitempty"`
}

func (a *Admin) handleTrace(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	f, format, err := trace.ParseQuery(r.URL.Query())
	var pe *trace.ParamError
	if errors.As(err, &pe) {
		writeError(w, http.StatusBadRequest, "%v", pe)
		return
	}
	src := a.source()
	ts, ok := src.(TraceSource)
	if !ok || src == nil {
		writeError(w, http.StatusServiceUnavailable, "the proxy is not serving yet")
		return
	}
	if f.Listener != "" && !hasListener(src, f.Listener) {
		writeError(w, http.StatusBadRequest, "listener: no listener named %q", f.Listener)
		return
	}
	watch := ts.Trace(f)
	defer watch.Close()
	if format == trace.FormatJSON {
		w.Header().Set("Content-Type", "application/x-ndjson")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flush := func() {
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
	}
	flush()
	timer := time.NewTimer(f.Duration)
	defer timer.Stop()
	sent, timedOut := 0, false
	for sent < f.Count && !timedOut {
		select {
		case s := <-watch.C:
			if format == trace.FormatJSON {
				err = trace.WriteJSON(w, s)
			} else {
				if sent > 0 {
					fmt.Fprintln(w)
				}
				err = trace.WriteText(w, s)
			}
			if err != nil {
				return // the reader went away
			}
			sent++
			flush()
		case <-timer.C:
			timedOut = true
		case <-r.Context().Done():
			return
		}
	}
	if d := watch.Dropped(); d > 0 || timedOut {
		if format == trace.FormatJSON {
			json.NewEncoder(w).Encode(TraceEndDoc{Sessions: sent, Dropped: d, TimedOut: timedOut})
		} else {
			fmt.Fprintf(w, "# %d of %d sessions traced", sent, f.Count)
			if d > 0 {
				fmt.Fprintf(w, "; %d dropped (the reader was too slow)", d)
			}
			if timedOut {
				fmt.Fprintf(w, "; stopped after %v", f.Duration)
			}
			fmt.Fprintln(w)
		}
	}
}

func hasListener(src Source, name string) bool {
	for _, l := range src.Listeners() {
		if l.Name == name {
			return true
		}
	}
	return false
}
