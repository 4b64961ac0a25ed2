package proxy

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/xdproxy/xdproxy/proxy/admin"
	"github.com/xdproxy/xdproxy/proxy/dataplane"
)

// StartCapture starts a packet capture on the data plane for the admin
// server's /capture (admin.CaptureSource). A listener is named as in the
// configuration, or given as ADDRESS:PORT; the capture keeps its address
// and port on either side, wherever a reload moves it afterwards.
func (p *Proxy) StartCapture(q admin.CaptureQuery) (admin.CaptureStream, error) {
	if p.dp == nil {
		return nil, errors.New("no data plane")
	}
	f := dataplane.CaptureFilter{Host: q.Host, Port: q.Port}
	desc := ""
	if q.Listener != "" {
		if l := p.listenerNamed(q.Listener); l != nil {
			f.Listener = l.Spec.Addr
			desc = fmt.Sprintf(" (listener %s)", l.Spec.Name)
		} else if ap, err := netip.ParseAddrPort(q.Listener); err == nil {
			f.Listener = ap
		} else {
			return nil, fmt.Errorf("%w %q", admin.ErrUnknownListener, q.Listener)
		}
	}
	c, err := p.dp.StartCapture(f, q.RingBytes)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, ifc := range p.dp.Interfaces() {
		names = append(names, ifc.Name())
	}
	return &captureStream{Capture: c, names: names, desc: f.String() + desc}, nil
}

// captureStream is a data-plane capture as the admin server reads it.
type captureStream struct {
	*dataplane.Capture
	names []string
	desc  string
}

func (c *captureStream) Interfaces() []string { return c.names }
func (c *captureStream) Description() string  { return c.desc }

var _ admin.CaptureSource = (*Proxy)(nil)
