package lab

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// Direction selects the netfilter chains Loss drops packets in.
type Direction int

const (
	// In drops packets received on the interface for this namespace
	// (INPUT, -i).
	In Direction = 1 << iota
	// Out drops packets this namespace sends out of the interface (OUTPUT,
	// -o).
	Out
	// ForwardIn drops forwarded packets that arrived on the interface
	// (FORWARD, -i), for a router namespace.
	ForwardIn
	// ForwardOut drops forwarded packets leaving through the interface
	// (FORWARD, -o).
	ForwardOut
	// Both is In|Out.
	Both = In | Out
)

func (d Direction) String() string {
	s := ""
	for _, x := range []struct {
		d    Direction
		name string
	}{{In, "in"}, {Out, "out"}, {ForwardIn, "forward-in"}, {ForwardOut, "forward-out"}} {
		if d&x.d != 0 {
			if s != "" {
				s += "|"
			}
			s += x.name
		}
	}
	if s == "" {
		return "none"
	}
	return s
}

// Loss drops percent (0 < percent ≤ 100) of the IPv4 and IPv6 packets on
// iface (full or short name; "" for every interface) in the chosen
// directions, at random, with iptables' statistic match (`-m statistic
// --mode random --probability p -j DROP`; a plain DROP at 100%). Installs
// iptables if missing (EnsureTools). undo removes the rules (idempotent);
// the lab removes them at cleanup otherwise.
func (n *NS) Loss(iface string, percent float64, dir Direction) (undo func() error, err error) {
	if !(percent > 0 && percent <= 100) {
		return nil, fmt.Errorf("lab: Loss: percent %v not in (0, 100]", percent)
	}
	if dir == 0 || dir&^(In|Out|ForwardIn|ForwardOut) != 0 {
		return nil, fmt.Errorf("lab: Loss: bad direction %d", int(dir))
	}
	if err := EnsureTools("iptables", "ip6tables"); err != nil {
		return nil, err
	}
	name := ""
	if iface != "" {
		if name, err = n.ifname(iface); err != nil {
			return nil, err
		}
	}
	match := []string{"-j", "DROP"}
	if percent < 100 {
		p := strconv.FormatFloat(percent/100, 'f', -1, 64)
		match = []string{"-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"}
	}
	type rule struct {
		tool  string
		spec  []string // after the chain
		chain string
	}
	var rules []rule
	for _, c := range []struct {
		d     Direction
		chain string
		flag  string
	}{{In, "INPUT", "-i"}, {Out, "OUTPUT", "-o"}, {ForwardIn, "FORWARD", "-i"}, {ForwardOut, "FORWARD", "-o"}} {
		if dir&c.d == 0 {
			continue
		}
		spec := []string{}
		if name != "" {
			spec = append(spec, c.flag, name)
		}
		spec = append(spec, match...)
		for _, tool := range []string{"iptables", "ip6tables"} {
			rules = append(rules, rule{tool, spec, c.chain})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ipt := func(ctx context.Context, r rule, op string) error {
		_, err := n.Run(ctx, r.tool, append([]string{"-w", "5", op, r.chain}, r.spec...)...)
		return err
	}
	var added []rule
	del := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var first error
		for i := len(added) - 1; i >= 0; i-- {
			if err := ipt(ctx, added[i], "-D"); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	for _, r := range rules {
		if err := ipt(ctx, r, "-I"); err != nil {
			if derr := del(); derr != nil {
				return nil, fmt.Errorf("%w (and undoing: %v)", err, derr)
			}
			return nil, err
		}
		added = append(added, r)
	}

	l := n.lab
	e := &undoEntry{what: fmt.Sprintf("%v%% loss on %s/%s (%v)", percent, n.Name, name, dir)}
	var once sync.Once
	var uerr error
	e.fn = func() error {
		once.Do(func() {
			if n.open() == nil {
				uerr = del()
			}
		})
		return uerr
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	l.undos[e] = struct{}{}
	l.mu.Unlock()
	return func() error {
		err := e.fn()
		l.mu.Lock()
		if l.undos != nil {
			delete(l.undos, e)
		}
		l.mu.Unlock()
		return err
	}, nil
}
