package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"
)

// TestLabKernelLegAvoidsListenerPorts: the XDP program steers segments for
// a listener's address:port to the engine, so a dial: kernel backend leg
// that autobinds the listener's port never sees the backend's SYN-ACK; its
// client is reset at connect_timeout. The proxy namespace's ephemeral range
// here is the listener's port and one more: Linux tries the port of the
// range's low parity first, the listener's, unless it is reserved. Each
// session goes to its own backend port, so the legs can share the one free
// local port (and its TIME_WAIT entries do not collide).
func TestLabKernelLegAvoidsListenerPorts(t *testing.T) {
	el := newLabLink(t, 1)
	const sessions = 8
	listener := netip.AddrPortFrom(proxyPrefix.Addr(), 7000)
	spec := ListenerSpec{
		Name: "echo", Addr: listener, Balance: "round_robin", DialKernel: true,
		ConnectTimeout: time.Second, SndBuffer: 64 << 10,
	}
	for i := range sessions {
		be := netip.AddrPortFrom(clientPrefix.Addr(), uint16(9000+i))
		el.client.EchoTCP(t, be.String())
		spec.Backends = append(spec.Backends, BackendSpec{Addr: be, Weight: 1})
	}
	var p *Proxy
	err := el.proxy.Do(func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("7000 7001"), 0o644); err != nil {
			return err
		}
		var err error
		p, err = Start(Config{Interfaces: []InterfaceSpec{{Name: el.veth.B.Name}}, Listeners: []ListenerSpec{spec}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })

	for i := range sessions {
		// Within connect_timeout plus a SYN retransmission.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := el.client.DialTCP(ctx, listener.String())
		cancel()
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		err = echoExchange(c, []byte(fmt.Sprintf("session %d", i)))
		c.Close()
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
	}
	st := &p.lis()[0].Stats
	if n := st.ConnectTimeouts.Load() + st.ConnectFailed.Load(); n != 0 {
		t.Errorf("%d backend connects failed or timed out, want 0", n)
	}
}
