package dataplane

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRawPpollYieldsToTheGC: a shard sleeps in ppoll without telling the
// scheduler (rawPpoll). A garbage collection must still stop the world
// promptly — its preemption signal interrupts the sleep — and the sleep
// must still end on readiness and on its timeout.
func TestRawPpollYieldsToTheGC(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])

	// A goroutine that, like a shard, never yields: it sleeps in rawPpoll
	// (a long timeout) until the pipe becomes readable.
	done := make(chan int, 1)
	started := make(chan struct{})
	go func() {
		fds := []unix.PollFd{{Fd: int32(p[0]), Events: unix.POLLIN}}
		ts := new(unix.Timespec)
		close(started)
		wakes := 0
		for {
			*ts = unix.NsecToTimespec(int64(10 * time.Second))
			if rawPpoll(fds, ts) > 0 {
				done <- wakes
				return
			}
			wakes++ // EINTR: a preemption signal
		}
	}()
	<-started
	time.Sleep(50 * time.Millisecond) // into the ppoll
	// A collection stops the world twice; each waits for the sleeper to
	// notice a signal (re-sent every 100 µs) and reach a preemption point.
	// Had the sleep held the world, a pause would last the whole 10 s.
	const gcs = 5
	for range gcs {
		runtime.GC()
	}
	var st debug.GCStats
	debug.ReadGCStats(&st)
	var worst time.Duration
	for _, p := range st.Pause[:gcs] {
		worst = max(worst, p)
	}
	if worst > 50*time.Millisecond {
		t.Errorf("a stop-the-world pause of %v with a goroutine asleep in rawPpoll: the sleep held the world", worst)
	}
	t0 := time.Now()
	if _, err := unix.Write(p[1], []byte{1}); err != nil {
		t.Fatal(err)
	}
	select {
	case wakes := <-done:
		t.Logf("stop-the-world pauses with the sleeper in rawPpoll: at most %v; woken by data after %v (%d interrupted sleeps)", worst, time.Since(t0), wakes)
	case <-time.After(5 * time.Second):
		t.Fatal("rawPpoll did not return when its descriptor became readable")
	}

	// The timeout ends a sleep with nothing ready.
	fds := []unix.PollFd{{Fd: int32(p[0]), Events: unix.POLLIN}}
	var b [8]byte
	unix.Read(p[0], b[:])
	ts := unix.NsecToTimespec(int64(20 * time.Millisecond))
	t0 = time.Now()
	for rawPpoll(fds, &ts) == 0 && time.Since(t0) < 15*time.Millisecond {
	}
	if el := time.Since(t0); el > 2*time.Second {
		t.Errorf("a 20 ms rawPpoll returned after %v", el)
	}
}
