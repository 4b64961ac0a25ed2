package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/xdproxy/xdproxy/internal/lab"
)

var (
	clientPrefix = netip.MustParsePrefix("10.77.0.1/24")
	proxyPrefix  = netip.MustParsePrefix("10.77.0.2/24")
)

// labLink is a client namespace and a proxy namespace joined by a veth
// (c0 10.77.0.1 ⇄ p0 10.77.0.2; full checksums from the client's kernel).
type labLink struct {
	client, proxy *lab.NS
	veth          *lab.Veth
}

func newLabLink(t *testing.T, queues int) *labLink {
	t.Helper()
	lab.RequireRoot(t)
	l, err := lab.New(t)
	if err != nil {
		t.Fatal(err)
	}
	el := &labLink{}
	if el.client, el.proxy, el.veth, err = l.Pair("client", "c0", "proxy", "p0", lab.LinkOpts{
		Queues: queues, AAddrs: []netip.Prefix{clientPrefix}, BAddrs: []netip.Prefix{proxyPrefix}, DisableTxChecksum: true,
	}); err != nil {
		t.Fatal(err)
	}
	return el
}

// echoExchange writes msg, half-closes and expects msg back to EOF.
func echoExchange(c net.Conn, msg []byte) error {
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return fmt.Errorf("close-write: %w", err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo of %d bytes came back as %d bytes", len(msg), len(got))
	}
	return nil
}
