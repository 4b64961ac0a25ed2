package proxy

import (
	"bytes"
	"runtime"
	"sync"
	"testing"
)

func TestHandoffOrderAndBound(t *testing.T) {
	h := newHandoff(4)
	for i := 0; i < 4; i++ {
		if !h.push([]byte{byte(i), 1, 2}) {
			t.Fatalf("push %d refused with room left", i)
		}
	}
	if h.push([]byte{9}) {
		t.Fatal("push into a full ring accepted")
	}
	var got []byte
	if n := h.drain(func(f []byte) { got = append(got, f[0]) }); n != 4 {
		t.Fatalf("drained %d, want 4", n)
	}
	if !bytes.Equal(got, []byte{0, 1, 2, 3}) {
		t.Fatalf("order %v", got)
	}
	if !h.empty() || h.push(make([]byte, handoffFrameSize+1)) {
		t.Fatal("empty after drain; oversize frames refused")
	}
}

// TestHandoffConcurrent runs one producer and one consumer goroutine (run
// with -race): every frame arrives once, in order, intact.
func TestHandoffConcurrent(t *testing.T) {
	h := newHandoff(64)
	const n = 20000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 100)
		for i := 0; i < n; {
			buf[0], buf[1], buf[2] = byte(i), byte(i>>8), byte(i>>16)
			buf[99] = byte(i * 7)
			if h.push(buf[:100]) {
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
		h.drain(func(f []byte) {
			v := int(f[0]) | int(f[1])<<8 | int(f[2])<<16
			if v != next || f[99] != byte(next*7) || len(f) != 100 {
				t.Errorf("frame %d arrived as %d (len %d)", next, v, len(f))
			}
			next++
		})
	}
	wg.Wait()
}
