package dataplane

import (
	"bytes"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func TestHandoffOrderAndBound(t *testing.T) {
	h := newHandoff(4, 2048)
	for i := 0; i < 4; i++ {
		if !h.push(0, []byte{byte(i), 1, 2}) {
			t.Fatalf("push %d refused with room left", i)
		}
	}
	if h.push(0, []byte{9}) {
		t.Fatal("push into a full ring accepted")
	}
	var got []byte
	if n := h.drain(func(_ int, f []byte) { got = append(got, f[0]) }); n != 4 {
		t.Fatalf("drained %d, want 4", n)
	}
	if !bytes.Equal(got, []byte{0, 1, 2, 3}) {
		t.Fatalf("order %v", got)
	}
	if !h.empty() || h.push(0, make([]byte, 2049)) {
		t.Fatal("empty after drain; oversize frames refused")
	}
}

// A 4096-byte frame ring carries full 4 KiB frames intact, slot by slot.
func TestHandoffLargeFrames(t *testing.T) {
	h := newHandoff(2, 4096)
	a, b := bytes.Repeat([]byte{0xaa}, 4096), bytes.Repeat([]byte{0xbb}, 3000)
	if !h.push(0, a) || !h.push(0, b) || h.push(0, make([]byte, 1)) {
		t.Fatal("push of frames up to the slot size refused, or a third accepted")
	}
	var got [][]byte
	h.drain(func(_ int, f []byte) { got = append(got, bytes.Clone(f)) })
	if len(got) != 2 || !bytes.Equal(got[0], a) || !bytes.Equal(got[1], b) {
		t.Fatalf("frames came out changed: lengths %d", len(got))
	}
	if h.push(0, make([]byte, 4097)) {
		t.Fatal("a frame over the slot size accepted")
	}
}

func TestFrameSizeFor(t *testing.T) {
	for _, c := range []struct {
		mtu, cfg, want, packet int
		err                    string
	}{
		{1500, 0, 2048, 0, ""},
		{2026, 0, 2048, 0, ""},
		{2027, 0, 4096, 0, ""},
		{3500, 0, 4096, 0, ""},
		{4074, 0, 4096, 0, ""},
		{1500, 4096, 4096, 0, ""},
		// Beyond one frame: multi-buffer chains.
		{4075, 0, 4096, 4097, ""},
		{9000, 0, 4096, 9022, ""},
		{9000, 4096, 4096, 9022, ""},
		{3000, 2048, 2048, 3022, ""},
		{9000, 2048, 2048, 9022, ""},
		{40000, 2048, 0, 0, `interface "p0": MTU 40000 does not fit 17 AF_XDP frames of 2048 bytes`},
		{1500, 1024, 0, 0, `interface "p0": frame size 1024`},
	} {
		got, packet, err := frameSizeFor("p0", c.mtu, c.cfg)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("MTU %d, frame size %d: error %v, want one containing %q", c.mtu, c.cfg, err, c.err)
		case c.err == "" && (err != nil || got != c.want || packet != c.packet):
			t.Errorf("MTU %d, frame size %d: got %d, %d, %v; want %d, %d", c.mtu, c.cfg, got, packet, err, c.want, c.packet)
		}
	}
}

// TestHandoffConcurrent runs one producer and one consumer goroutine (run
// with -race): every frame arrives once, in order, intact.
func TestHandoffConcurrent(t *testing.T) {
	h := newHandoff(64, 2048)
	const n = 20000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 100)
		for i := 0; i < n; {
			buf[0], buf[1], buf[2] = byte(i), byte(i>>8), byte(i>>16)
			buf[99] = byte(i * 7)
			if h.push(0, buf[:100]) {
				i++
			} else {
				runtime.Gosched()
			}
		}
	}()
	next := 0
	for next < n {
		if h.empty() {
			runtime.Gosched()
		}
		h.drain(func(_ int, f []byte) {
			v := int(f[0]) | int(f[1])<<8 | int(f[2])<<16
			if v != next || f[99] != byte(next*7) || len(f) != 100 {
				t.Errorf("frame %d arrived as %d (len %d)", next, v, len(f))
			}
			next++
		})
	}
	wg.Wait()
}
