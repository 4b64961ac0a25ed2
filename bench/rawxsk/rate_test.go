package rawxsk

import (
	"runtime"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/internal/lab"
)

// TestMeasureRates runs both raw measurements briefly, twice, on the lab
// topology's proxy veth, as the side-by-side harness does: each counts
// frames, and each leaves the XDP hooks empty and the queues to be let go
// of for the next (which attaches and binds again).
func TestMeasureRates(t *testing.T) {
	lab.RequireRoot(t)
	l, err := lab.New(t)
	if err != nil {
		t.Fatal(err)
	}
	topo, err := l.NewTopology(2)
	if err != nil {
		t.Fatal(err)
	}
	p0, rp := topo.ProxyLink.A, topo.ProxyLink.B
	const d = 200 * time.Millisecond
	for range 2 {
		tx, err := MeasureTX(p0, rp, 2, d)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TX %+v", tx)
		// The count may include a frame or two of p0's own kernel
		// (IPv6 router solicitations).
		if tx.Frames == 0 || tx.Frames > tx.Sent+10 || tx.PerSecond <= 0 || tx.Seconds < d.Seconds() {
			t.Errorf("TX: %+v", tx)
		}
		rx, err := MeasureRX(p0, rp, 2, d)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("RX %+v", rx)
		if rx.Frames == 0 || rx.Frames > rx.Sent || rx.PerSecond <= 0 || len(rx.PerQueue) != 2 {
			t.Errorf("RX: %+v", rx)
		}
		if runtime.NumCPU() >= 2 && (rx.PerQueue[0] == 0 || rx.PerQueue[1] == 0) {
			t.Errorf("RX: the pinned senders left a queue without frames: %v", rx.PerQueue)
		}
	}
}
