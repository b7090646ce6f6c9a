package uring

import (
	"runtime"
	"testing"
	"time"

	"blockcache/internal/poller"
)

// TestArrivedShowsWaitingCompletions: a ring made with Options.Pollers
// registers Arrived, which reports a completion that has reached the
// completion ring while the completion goroutine, parked in the netpoller,
// cannot run (one scheduler slot, held by the test without yielding), and
// no longer once it has been delivered. Close removes it, and Arrived after
// Close, on the unmapped rings, reports nothing.
func TestArrivedShowsWaitingCompletions(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var set poller.Set
	r, err := New(4, Options{Pollers: &set})
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 1 {
		t.Fatalf("%d checks registered by a new ring, want 1", set.Len())
	}
	if set.Poll() {
		t.Error("an idle ring reports completions waiting")
	}

	// The completion goroutine needs the one scheduler slot, which the
	// loop below keeps (the runtime preempts it only after 10 ms). A try
	// can still miss: the slot is handed to another thread while this one
	// is stuck in the pipe write on a busy machine. One try in twenty
	// must see it.
	rd, wr := testPipe(t)
	seen := false
	for try := 0; try < 20 && !seen; try++ {
		done := pipeRead(r, rd)
		waitFor(t, "the read to take a slot", func() bool { return len(r.free) == r.depth-1 })
		time.Sleep(10 * time.Millisecond) // and to reach the kernel
		writeByte(t, wr)
		for start := time.Now(); time.Since(start) < 5*time.Millisecond; {
			if set.Poll() {
				seen = true
				break
			}
		}
		if err := <-done; err != nil {
			t.Fatalf("pipe read: %v", err)
		}
	}
	if !seen {
		t.Error("the completion of a pipe read was never reported waiting, in 20 tries")
	}
	if r.Arrived() {
		t.Error("Arrived after the completion was delivered")
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if set.Len() != 0 {
		t.Errorf("%d checks left after Close, want 0", set.Len())
	}
	if r.Arrived() {
		t.Error("Arrived after Close")
	}
}
