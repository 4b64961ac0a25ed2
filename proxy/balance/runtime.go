package balance

import (
	"fmt"
	"sync/atomic"
)

// State is a backend's administrative state, which the operator sets at
// run time (HAProxy's `set server ... state`). It is apart from health:
// a backend takes new sessions only when it is Ready, healthy and of a
// positive weight.
type State uint8

const (
	// Ready: the backend takes new sessions (when healthy and weighted).
	Ready State = iota
	// Drain: no new sessions; open ones continue; health checks go on.
	Drain
	// Maint: no new sessions; open ones continue; health checks stop, and
	// passive marking too, so the backend's health stays as it was.
	Maint
)

// States are the states in the order listings name them.
var States = []State{Ready, Drain, Maint}

var stateNames = [...]string{Ready: "ready", Drain: "drain", Maint: "maint"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// ParseState parses "ready", "drain" or "maint".
func ParseState(s string) (State, error) {
	for i, name := range stateNames {
		if s == name {
			return State(i), nil
		}
	}
	return 0, fmt.Errorf("unknown state %q; expected one of: ready, drain, maint", s)
}

// MarshalText writes the state's name (JSON strings).
func (s State) MarshalText() ([]byte, error) {
	if int(s) >= len(stateNames) {
		return nil, fmt.Errorf("unknown %v", s)
	}
	return []byte(s.String()), nil
}

// UnmarshalText parses a state's name (ParseState).
func (s *State) UnmarshalText(b []byte) error {
	st, err := ParseState(string(b))
	if err != nil {
		return err
	}
	*s = st
	return nil
}

// MaxWeight is the largest weight a backend may have (the configuration's
// limit too).
const MaxWeight = 65535

// Setting is a backend's run-time setting: its state and its current
// weight (0: no new sessions, as in Drain, but health checks go on and the
// backend shows as ready).
type Setting struct {
	State  State
	Weight int
}

// Valid reports what is wrong with the setting, or nil.
func (s Setting) Valid() error {
	if int(s.State) >= len(stateNames) {
		return fmt.Errorf("unknown %v", s.State)
	}
	if s.Weight < 0 || s.Weight > MaxWeight {
		return fmt.Errorf("weight %d is out of range; expected 0 to %d", s.Weight, MaxWeight)
	}
	return nil
}

// Accepts reports whether the setting lets the backend take new sessions
// (health aside): ready and of a positive weight.
func (s Setting) Accepts() bool { return s.State == Ready && s.Weight > 0 }

// Runtime holds a backend's Setting for every shard to read: one atomic
// word, so Pick reads state and weight together without a lock, and
// concurrent changes (two operators, an API call and a reload) never mix
// the fields of two settings.
//
// A Runtime belongs to a backend of a listener, not to a configuration:
// a reload that keeps the listener (by name) and the backend (by address)
// is meant to keep its Runtime, so that a drain or a weight set at run
// time survives it (a weight still equal to the old configured one can
// then follow the new file).
//
// The zero Runtime is Ready with weight 0; use Store (or NewRuntime) first.
type Runtime struct {
	v atomic.Uint64 // state << 32 | weight
}

// NewRuntime returns a Runtime that is Ready with the given weight.
func NewRuntime(weight int) *Runtime {
	r := &Runtime{}
	r.Store(Setting{State: Ready, Weight: weight})
	return r
}

func packSetting(s Setting) uint64 { return uint64(s.State)<<32 | uint64(uint32(s.Weight)) }

func unpackSetting(v uint64) Setting { return Setting{State: State(v >> 32), Weight: int(uint32(v))} }

// Load returns the current setting.
func (r *Runtime) Load() Setting { return unpackSetting(r.v.Load()) }

// Store sets the setting (which the caller has checked with Valid).
func (r *Runtime) Store(s Setting) { r.v.Store(packSetting(s)) }

// Update applies change to the current setting atomically (change may run
// more than once, against a newer setting each time) and returns the
// settings before and after.
func (r *Runtime) Update(change func(Setting) Setting) (before, after Setting) {
	for {
		old := r.v.Load()
		before = unpackSetting(old)
		after = change(before)
		if r.v.CompareAndSwap(old, packSetting(after)) {
			return before, after
		}
	}
}

// State is the current state.
func (r *Runtime) State() State { return r.Load().State }

// Weight is the current weight.
func (r *Runtime) Weight() int { return r.Load().Weight }

// Accepts reports whether the backend may take new sessions, health aside.
func (r *Runtime) Accepts() bool { return r.Load().Accepts() }

// Paused reports whether health checks of the backend are stopped (Maint).
func (r *Runtime) Paused() bool { return r != nil && r.State() == Maint }
