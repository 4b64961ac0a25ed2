package adminclient

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// CaptureParams are `xdproxy capture`'s filters and limits (zero: none).
type CaptureParams struct {
	Host     string
	Port     int
	Listener string
	Count    int
	Duration time.Duration
	Buffer   string // each shard's capture ring ("16MiB"; "": the daemon's default)
}

func (p CaptureParams) query() string {
	v := url.Values{}
	if p.Host != "" {
		v.Set("host", p.Host)
	}
	if p.Port != 0 {
		v.Set("port", strconv.Itoa(p.Port))
	}
	if p.Listener != "" {
		v.Set("listener", p.Listener)
	}
	if p.Count != 0 {
		v.Set("count", strconv.Itoa(p.Count))
	}
	if p.Duration != 0 {
		v.Set("duration", p.Duration.String())
	}
	if p.Buffer != "" {
		v.Set("buffer", p.Buffer)
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// CaptureSummary is what a capture stream said about itself.
type CaptureSummary struct {
	Frames     int             // enhanced packet blocks
	Interfaces []string        // from the interface description blocks
	Stats      []CaptureIfStat // per interface: the last statistics block
	Final      bool            // the server ended the stream (the last statistics have an end time)
}

// CaptureIfStat is an interface statistics block's counters.
type CaptureIfStat struct {
	Matched, Dropped uint64 // isb_ifrecv, isb_ifdrop
}

// Capture streams GET /capture into w until the server ends it: at its
// count or duration, or once stop is closed — then Capture shuts down its
// sending side of the connection, which the server takes as the end of
// the capture, and reads on to the last blocks (the final statistics). If
// ctx ends first, Capture stops at once (interrupted: not an error). It
// writes whole pcapng blocks only, so w holds a well-formed file however
// the stream stops. started, if not nil, is called once the server has
// started the capture (before the first block).
func (c *Client) Capture(ctx context.Context, p CaptureParams, w io.Writer, started func(), stop <-chan struct{}) (CaptureSummary, error) {
	var sum CaptureSummary
	path := "/capture" + p.query()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Addr+path, nil)
	if err != nil {
		return sum, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	// A connection of its own, to shut its sending side on stop; no
	// overall timeout: a stream lasts as long as the capture.
	var conn atomic.Pointer[net.TCPConn]
	hc := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			nc, err := d.DialContext(ctx, network, addr)
			if tc, ok := nc.(*net.TCPConn); ok {
				conn.Store(tc)
			}
			return nc, err
		},
	}}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-stop:
			if tc := conn.Load(); tc != nil {
				tc.CloseWrite()
			}
		case <-done:
		}
	}()
	res, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return sum, nil
		}
		return sum, c.unreachable(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		return sum, c.answerError(http.MethodGet, path, res, b)
	}
	if started != nil {
		started()
	}
	br := bufio.NewReaderSize(res.Body, 256<<10)
	var block []byte
	for {
		block, err = readBlock(br, block[:0])
		if err == io.EOF || err != nil && ctx.Err() != nil {
			return sum, nil // the end, or interrupted: w ends at the last whole block
		}
		if err != nil {
			return sum, fmt.Errorf("reading the capture from %s: %w", c.Addr, err)
		}
		if _, err := w.Write(block); err != nil {
			return sum, err
		}
		sum.note(block)
	}
}

// pcapng block types (draft-ietf-opsawg-pcapng) the summary reads.
const (
	ngSectionHeader   = 0x0a0d0d0a
	ngInterface       = 1
	ngInterfaceStats  = 5
	ngEnhancedPacket  = 6
	ngByteOrderMagic  = 0x1a2b3c4d
	ngMaxBlock        = 1 << 20
	ngOptIfName       = 2
	ngOptIsbEndTime   = 3
	ngOptIsbIfRecv    = 4
	ngOptIsbIfDrop    = 5
	ngIDBOptionsStart = 16
	ngISBOptionsStart = 20
)

// readBlock appends the next whole block of r to buf. The server writes
// little-endian sections (as pcapgo does); a big-endian one is refused.
// It returns io.EOF itself only at the end of the stream between blocks.
func readBlock(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [8]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if n == 0 && err == io.EOF {
			return buf, io.EOF
		}
		return buf, fmt.Errorf("a block cut short: %w", err)
	}
	typ := binary.LittleEndian.Uint32(hdr[0:])
	n := binary.LittleEndian.Uint32(hdr[4:])
	if n < 12 || n%4 != 0 || n > ngMaxBlock {
		return buf, fmt.Errorf("a block of %d bytes: not pcapng, or not little-endian", n)
	}
	buf = append(buf, hdr[:]...)
	buf = slices.Grow(buf, int(n)-8)[:n]
	if _, err := io.ReadFull(r, buf[8:]); err != nil {
		return buf, fmt.Errorf("a block cut short: %w", err)
	}
	if typ == ngSectionHeader && binary.LittleEndian.Uint32(buf[8:]) != ngByteOrderMagic {
		return buf, errors.New("a section that is not little-endian")
	}
	return buf, nil
}

// note counts what block says.
func (s *CaptureSummary) note(block []byte) {
	switch binary.LittleEndian.Uint32(block) {
	case ngEnhancedPacket:
		s.Frames++
	case ngInterface:
		name := ""
		ngOptions(block, ngIDBOptionsStart, func(code uint16, v []byte) {
			if code == ngOptIfName {
				name = string(v)
			}
		})
		s.Interfaces = append(s.Interfaces, name)
		s.Stats = append(s.Stats, CaptureIfStat{})
	case ngInterfaceStats:
		if len(block) < ngISBOptionsStart {
			return
		}
		id := int(binary.LittleEndian.Uint32(block[8:]))
		if id >= len(s.Stats) {
			return
		}
		ngOptions(block, ngISBOptionsStart, func(code uint16, v []byte) {
			switch {
			case code == ngOptIsbIfRecv && len(v) == 8:
				s.Stats[id].Matched = binary.LittleEndian.Uint64(v)
			case code == ngOptIsbIfDrop && len(v) == 8:
				s.Stats[id].Dropped = binary.LittleEndian.Uint64(v)
			case code == ngOptIsbEndTime:
				s.Final = true
			}
		})
	}
}

// ngOptions calls fn with each option of block from offset start (the
// options run to the trailing length word; code 0 ends them).
func ngOptions(block []byte, start int, fn func(code uint16, v []byte)) {
	end := len(block) - 4
	for off := start; off+4 <= end; {
		code := binary.LittleEndian.Uint16(block[off:])
		n := int(binary.LittleEndian.Uint16(block[off+2:]))
		if code == 0 || off+4+n > end {
			return
		}
		fn(code, block[off+4:off+4+n])
		off += 4 + (n+3)&^3
	}
}
