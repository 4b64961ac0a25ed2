package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"

	"github.com/xdproxy/xdproxy/proxy/balance"
)

// The runtime API (HAProxy's `show servers state` and `set server` are the
// model):
//
//	GET  /backends                    every listener's backends (BackendsDoc)
//	POST /backends/LISTENER/BACKEND   {"state": "ready|drain|maint", "weight": N}
//	                                  (either field may be left out; the answer
//	                                  is SetBackendDoc)
//
// BACKEND is the backend's address as the configuration has it,
// 10.10.2.2:8080 or [fd00::2]:8080, as one path segment: the brackets may
// be sent as they are or escaped (%5B, %5D), as url.PathEscape does, and
// any spelling of the same address and port matches (fd00:0::2, an
// IPv4-mapped IPv6 form of an IPv4 address). Errors are JSON (ErrorDoc):
// 404 for an unknown listener or backend, 400 for a bad body, state or
// weight, 405 (with Allow) for another method.

// BackendsDoc is the answer to GET /backends.
type BackendsDoc struct {
	Listeners []ListenerBackendsDoc `json:"listeners"`
}

// ListenerBackendsDoc is one listener of BackendsDoc.
type ListenerBackendsDoc struct {
	Name     string       `json:"name"`
	Balance  string       `json:"balance"`
	Backends []BackendDoc `json:"backends"`
}

// BackendDoc is one backend.
type BackendDoc struct {
	Address          string        `json:"address"`
	State            balance.State `json:"state"`             // ready | drain | maint
	Weight           int           `json:"weight"`            // current
	ConfiguredWeight int           `json:"configured_weight"` // as in the configuration
	Health           string        `json:"health"`            // up | down (in maint: as it was when its checks stopped)
	Checks           *ChecksDoc    `json:"checks,omitempty"`  // active health checks; absent when the listener has none
	ActiveSessions   int64         `json:"active_sessions"`
	SessionsTotal    uint64        `json:"sessions_total"`
	FailuresTotal    uint64        `json:"failures_total"` // connect failures and timeouts
}

// ChecksDoc counts a backend's active health check results.
type ChecksDoc struct {
	OK     uint64 `json:"ok"`
	Failed uint64 `json:"failed"`
}

// BackendChangeDoc is the body of POST /backends/LISTENER/BACKEND.
type BackendChangeDoc struct {
	State  *string `json:"state,omitempty"`  // ready | drain | maint
	Weight *int    `json:"weight,omitempty"` // 0 to 65535
}

// SetBackendDoc is the answer to a change: the backend after it.
type SetBackendDoc struct {
	Listener string     `json:"listener"`
	Backend  BackendDoc `json:"backend"`
}

// ErrorDoc is every error answer of the runtime API (and the 401 of any
// protected path).
type ErrorDoc struct {
	Error string `json:"error"`
}

// NewBackendDoc renders a backend view.
func NewBackendDoc(b BackendView) BackendDoc {
	d := BackendDoc{
		Address: b.Addr.String(), State: b.State,
		Weight: b.Weight, ConfiguredWeight: b.ConfiguredWeight,
		Health:         "down",
		ActiveSessions: b.Active, SessionsTotal: b.Sessions, FailuresTotal: b.Failures,
	}
	if b.Up {
		d.Health = "up"
	}
	if b.Checked {
		d.Checks = &ChecksDoc{OK: b.ChecksOK, Failed: b.ChecksFailed}
	}
	return d
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, ErrorDoc{Error: fmt.Sprintf(format, args...)})
}

// allow answers 405 unless the request's method is one of methods.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, "%s %s: method not allowed; use %s", r.Method, r.URL.Path, strings.Join(methods, " or "))
	return false
}

func (a *Admin) handleBackends(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	src := a.source()
	if src == nil {
		writeError(w, http.StatusServiceUnavailable, "starting: no listeners yet")
		return
	}
	doc := BackendsDoc{Listeners: []ListenerBackendsDoc{}}
	for _, l := range src.Listeners() {
		ld := ListenerBackendsDoc{Name: l.Name, Balance: l.Balance, Backends: make([]BackendDoc, len(l.Backends))}
		for i, b := range l.Backends {
			ld.Backends[i] = NewBackendDoc(b)
		}
		doc.Listeners = append(doc.Listeners, ld)
	}
	writeJSON(w, http.StatusOK, doc)
}

// handleBackendsOther answers paths under /backends/ that name no backend.
func (a *Admin) handleBackendsOther(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, "%s: no such path; use GET /backends or POST /backends/LISTENER/BACKEND", r.URL.Path)
}

// maxChangeBody bounds the body of a change.
const maxChangeBody = 4 << 10

func (a *Admin) handleSetBackend(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodPost) {
		return
	}
	listener, backend := r.PathValue("listener"), r.PathValue("backend")
	addr, err := ParseBackend(backend)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	change, err := decodeChange(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	change.Origin = "admin " + r.RemoteAddr
	src := a.source()
	if src == nil {
		writeError(w, http.StatusServiceUnavailable, "starting: no listeners yet")
		return
	}
	view, err := src.SetBackend(listener, addr, change)
	switch {
	case errors.Is(err, ErrUnknownListener), errors.Is(err, ErrUnknownBackend):
		writeError(w, http.StatusNotFound, "%v", err)
	case errors.Is(err, ErrInvalidChange):
		writeError(w, http.StatusBadRequest, "%v", err)
	case err != nil:
		writeError(w, http.StatusInternalServerError, "%v", err)
	default:
		writeJSON(w, http.StatusOK, SetBackendDoc{Listener: listener, Backend: NewBackendDoc(view)})
	}
}

// ParseBackend reads a backend address as the runtime API and the CLI take
// it: IPv4:port or [IPv6]:port (a zone is dropped; an IPv4-mapped IPv6
// address is its IPv4 address).
func ParseBackend(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("backend %q is not IPv4:port or [IPv6]:port, as in the configuration", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), nil
}

// decodeChange reads a change's JSON body strictly: one object, known
// fields only, at least one of them.
func decodeChange(body io.Reader) (BackendChange, error) {
	var doc BackendChangeDoc
	dec := json.NewDecoder(io.LimitReader(body, maxChangeBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(&doc)
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return BackendChange{}, errors.New(`empty body; send {"state": "ready|drain|maint", "weight": N} (either field)`)
	case errors.As(err, &typeErr) && typeErr.Field == "weight":
		return BackendChange{}, fmt.Errorf("weight must be a whole number from 0 to %d (got a JSON %s)", balance.MaxWeight, typeErr.Value)
	case errors.As(err, &typeErr) && typeErr.Field == "state":
		return BackendChange{}, fmt.Errorf("state must be a string: ready, drain or maint (got a JSON %s)", typeErr.Value)
	case err != nil:
		return BackendChange{}, fmt.Errorf("body is not a JSON object with state and/or weight: %v", err)
	}
	if dec.More() {
		return BackendChange{}, errors.New("body holds more than one JSON value")
	}
	var c BackendChange
	if doc.State == nil && doc.Weight == nil {
		return c, errors.New(`nothing to change; send {"state": "ready|drain|maint", "weight": N} (either field)`)
	}
	if doc.State != nil {
		st, err := balance.ParseState(*doc.State)
		if err != nil {
			return c, fmt.Errorf("state: %v", err)
		}
		c.State = &st
	}
	if doc.Weight != nil {
		if w := *doc.Weight; w < 0 || w > balance.MaxWeight {
			return c, fmt.Errorf("weight must be a whole number from 0 to %d (got %d)", balance.MaxWeight, w)
		}
		c.Weight = doc.Weight
	}
	return c, nil
}
