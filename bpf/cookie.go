package bpf

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// SYN cookies answered in XDP (syncookie.h). The program computes the
// engine's cookie (stack/syncookie.go) from what the data plane puts here:
// the engine's parameters once (SetCookieResponder), the secrets of the
// epochs around now as they come (SetCookieSecret), and the mode
// (SetSYNCookies, SetCookieLearning).

// CookieKeySlots is how many epochs' secrets the program holds at once: the
// secret of epoch e lives in slot e % CookieKeySlots, so the previous, the
// current and the next epoch's fit together.
const CookieKeySlots = 4

// CookieResponder is what the program needs to answer a SYN as the engine
// would (stack.CookieResponder, stack.CookieMSS, stack.Keys).
type CookieResponder struct {
	// Lifetime is the cookie secret's lifetime (stack.Config.CookieSecretLifetime):
	// the program's epoch is CLOCK_BOOTTIME / Lifetime, the engine's clock.
	Lifetime   time.Duration
	TSKey      [2]uint64 // the key of the timestamp offsets (stack.Keys.Timestamp)
	MSSTable   [8]uint16 // the MSS values a cookie carries (stack.CookieMSS)
	MSS4, MSS6 uint16    // our MSS option to IPv4 and IPv6 clients
	Window     uint16    // the SYN-ACK's window field
	WScale     uint8     // our window scale
}

// Cookie-related errors.
var errNoLifetime = errors.New("cookie secret lifetime must be positive")

// SetCookieResponder writes the parameters of the program's cookie SYN-ACKs.
// Until it is called the program answers no SYN (they go to the engine).
func (p *Program) SetCookieResponder(r CookieResponder) error {
	if r.Lifetime <= 0 {
		return fmt.Errorf("set cookie responder: %w", errNoLifetime)
	}
	v := xdpCookieSettings{
		LifetimeNs: uint64(r.Lifetime),
		TsK0:       r.TSKey[0],
		TsK1:       r.TSKey[1],
		MssTable:   r.MSSTable,
		Mss4:       r.MSS4,
		Mss6:       r.MSS6,
		Window:     r.Window,
		Wscale:     r.WScale,
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("set cookie responder: %w", ErrClosed)
	}
	if err := p.objs.SynCookie.Update(uint32(0), &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set cookie responder: %w", err)
	}
	return nil
}

// SetCookieSecret installs the SipHash key of epoch's cookie secret
// (stack.Keys.CookieSecret) in slot epoch % CookieKeySlots.
func (p *Program) SetCookieSecret(epoch uint64, key [2]uint64) error {
	v := xdpCookieKey{Epoch: epoch, K0: key[0], K1: key[1], Valid: 1}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("set cookie secret of epoch %d: %w", epoch, ErrClosed)
	}
	if err := p.objs.CookieKeys.Update(uint32(epoch%CookieKeySlots), &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set cookie secret of epoch %d: %w", epoch, err)
	}
	return nil
}

// SetSYNCookies turns cookies in XDP on or off. While on, a SYN to a
// listener is answered with a cookie SYN-ACK (XDP_TX, TxSYNCookie) and an
// ACK to a listener reaches the engine only if its flow is known or its
// cookie valid (CookieACK); the others are dropped (DropBadCookie). Known
// flows: those whose cookie the program validated, and, with
// SetCookieLearning, those whose SYN it steered to the engine.
func (p *Program) SetSYNCookies(on bool) error {
	return p.setFlag("set xdp syn cookies", settingCookies, on)
}

// SetCookieLearning makes the program remember the flow of every SYN it
// steers to a listener while cookies are off (confirmed by the flow's first
// ACK), so that turning cookies on later does not cut the engine's own
// handshakes and connections.
func (p *Program) SetCookieLearning(on bool) error {
	return p.setFlag("set xdp cookie learning", settingCookieLearn, on)
}

// SendByXDPTX hands frame to the driver of interface ifindex (in the
// calling thread's network namespace) as XDP_TX would: a program that
// returns XDP_TX runs once on it under BPF_PROG_TEST_RUN with live frames
// (Linux 5.18), which turns the verdict into the driver's ndo_xdp_xmit. It
// tells whether XDP_TX reaches the wire there when the caller sees the
// driver count the frame (veth: tx_queue_N_xdp_xmit in ethtool -S; a veth
// whose peer has no NAPI refuses it). frame must be a whole Ethernet frame
// that the link may carry (the peer receives it if it works).
func SendByXDPTX(ifindex int, frame []byte) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "xdp_tx_probe", Type: ebpf.XDP, License: "Dual MIT/GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, xdpTXAction),
			asm.Return(),
		},
	})
	if err != nil {
		return fmt.Errorf("xdp_tx probe: %w", err)
	}
	defer prog.Close()
	ctx := xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex)}
	if _, err := prog.Run(&ebpf.RunOptions{Data: frame, Repeat: 1, Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES, Context: ctx}); err != nil {
		return fmt.Errorf("xdp_tx probe on ifindex %d: %w", ifindex, err)
	}
	return nil
}

// xdpTXAction is XDP_TX (linux/bpf.h).
const xdpTXAction = 3

// xdpMD is struct xdp_md, the context of an XDP test run.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}
