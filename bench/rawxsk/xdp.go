package rawxsk

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/xdproxy/xdproxy/internal/lab"
)

const (
	xdpDrop = 1
	xdpPass = 2
)

// NewXSKMap creates an XSKMAP with one slot per queue, for RedirectAll.
func NewXSKMap(queues int) (*ebpf.Map, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: uint32(queues)})
	if err != nil {
		return nil, fmt.Errorf("creating the XSKMAP: %w", err)
	}
	return m, nil
}

// RedirectAll loads an XDP program that redirects every frame to the
// AF_XDP socket in xsks at the frame's RX queue, and passes it to the
// kernel when that slot is empty:
//
//	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
func RedirectAll(xsks *ebpf.Map) (*ebpf.Program, error) {
	const rxQueueIndex = 16 // offsetof(struct xdp_md, rx_queue_index)
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "bench_redirect",
		Type: ebpf.XDP,
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, rxQueueIndex, asm.Word),
			asm.LoadMapPtr(asm.R1, xsks.FD()),
			asm.Mov.Imm(asm.R3, int32(xdpPass)),
			asm.FnRedirectMap.Call(),
			asm.Return(),
		},
		License: "GPL",
	})
	if err != nil {
		return nil, fmt.Errorf("loading the redirect-all XDP program: %w", err)
	}
	return p, nil
}

// NewCounter creates the frame counter of CountDrop: slot 0 of a per-CPU
// array of uint64.
func NewCounter() (*ebpf.Map, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("creating the frame counter: %w", err)
	}
	return m, nil
}

// CountDrop loads an XDP program that counts every frame in counter (see
// NewCounter) and drops it: the cheapest possible receiver, so that a
// transmit measurement measures the sender, and a count of what actually
// crossed the veth.
func CountDrop(counter *ebpf.Map) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "bench_count",
		Type: ebpf.XDP,
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word), // key = 0
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, counter.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "drop"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord), // per-CPU slot: no atomics needed
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("drop"),
			asm.Return(),
		},
		License: "GPL",
	})
	if err != nil {
		return nil, fmt.Errorf("loading the count-and-drop XDP program: %w", err)
	}
	return p, nil
}

// Count reads a counter of CountDrop (the sum over CPUs).
func Count(counter *ebpf.Map) (uint64, error) {
	var vals []uint64
	if err := counter.Lookup(uint32(0), &vals); err != nil {
		return 0, fmt.Errorf("reading the frame counter: %w", err)
	}
	var sum uint64
	for _, v := range vals {
		sum += v
	}
	return sum, nil
}

// Settle reads counter until it has counted want frames since it read
// before, or its count stops moving (5 reads 1ms apart, 200ms at most): the
// peer's NAPI may still hold a ring's worth when the sender returns. It
// returns the frames counted since before.
func Settle(counter *ebpf.Map, before, want uint64) (uint64, error) {
	n, err := Count(counter)
	delivered := n - before
	for stable, deadline := 0, time.Now().Add(200*time.Millisecond); err == nil && stable < 5 && time.Now().Before(deadline) && delivered < want; {
		time.Sleep(time.Millisecond)
		if n, err = Count(counter); n-before != delivered {
			delivered, stable = n-before, 0
		} else {
			stable++
		}
	}
	return delivered, err
}

// AttachXDP attaches prog in driver (native) mode to ifindex in ns. Close
// the link to detach.
func AttachXDP(ns *lab.NS, prog *ebpf.Program, ifindex int) (link.Link, error) {
	var lk link.Link
	err := ns.Do(func() (err error) {
		lk, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: attaching XDP to ifindex %d: %w", ns.Name, ifindex, err)
	}
	return lk, nil
}
