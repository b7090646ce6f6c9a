package nbd

import (
	"sync"
	"time"
)

// The buffers the pool lets go are garbage, but the Go runtime collects
// only when the heap grows again (or every two minutes), and returns freed
// pages to the OS gradually after that: after a burst of large requests,
// or clients that stalled holding buffers, the process would keep its peak
// memory for minutes. So once the pool has let go of trimThreshold bytes
// and the server then holds no payload bytes for trimDelay, the trimmer
// has the runtime collect and return the memory (debug.FreeOSMemory), at
// most once every trimMinInterval. A busy server is never trimmed: its
// buffers are about to be needed again.
const (
	trimThreshold   = 64 << 20
	trimDelay       = time.Second
	trimMinInterval = 10 * time.Second
)

// trimmer returns the memory of let-go payload buffers to the OS once the
// server is idle. Its methods are safe for concurrent use.
type trimmer struct {
	bufs *bufferPool
	idle func() bool // whether no request holds payload bytes
	free func()      // debug.FreeOSMemory; tests substitute a counter

	mu struct {
		sync.Mutex
		timer   *time.Timer // runs fire; nil until first armed
		armed   bool        // timer is pending
		last    time.Time   // when free last ran
		stopped bool        // set once by stop
	}
}

// becameIdle is called whenever the payload bytes held drop to zero. It
// arms the timer if enough was let go.
func (t *trimmer) becameIdle() {
	if t.bufs.dropped.Load() < trimThreshold {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.armed || t.mu.stopped {
		return
	}
	t.mu.armed = true
	delay := max(trimDelay, time.Until(t.mu.last.Add(trimMinInterval)))
	if t.mu.timer == nil {
		t.mu.timer = time.AfterFunc(delay, t.fire)
	} else {
		t.mu.timer.Reset(delay)
	}
}

// fire trims if the server is still idle; if not, the next becameIdle
// arms the timer again.
func (t *trimmer) fire() {
	t.mu.Lock()
	t.mu.armed = false
	if t.mu.stopped || !t.idle() {
		t.mu.Unlock()
		return
	}
	t.mu.last = time.Now()
	t.mu.Unlock()
	t.bufs.takeDropped()
	t.free()
}

// stop cancels a pending trim, for Shutdown.
func (t *trimmer) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mu.stopped = true
	if t.mu.timer != nil {
		t.mu.timer.Stop()
	}
}
