package delay

import (
	"math"
	"sync"
)

// queue admits at most limit IOs into the device at a time, as a disk's
// command queue does; the others wait in arrival order. A slot freed while
// IOs wait is handed to the first of them directly, so a newcomer never
// overtakes a waiter.
type queue struct {
	limit int // > 0, fixed at creation; math.MaxInt for no limit
	mu    struct {
		sync.Mutex
		admitted int             // IOs holding a slot, at most limit
		waiting  []chan struct{} // one per waiting IO, oldest first; closed to admit it
	}
}

// newQueue returns a queue admitting limit IOs at a time, or any number if
// limit is 0.
func newQueue(limit int) *queue {
	if limit == 0 {
		limit = math.MaxInt
	}
	return &queue{limit: limit}
}

// acquire returns once the caller holds a slot.
func (q *queue) acquire() {
	q.mu.Lock()
	if q.mu.admitted < q.limit {
		// Waiters exist only while every slot is held, so none is overtaken.
		q.mu.admitted++
		q.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	q.mu.waiting = append(q.mu.waiting, ch)
	q.mu.Unlock()
	<-ch
}

// release gives the caller's slot to the oldest waiter, or frees it.
func (q *queue) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.mu.waiting) == 0 {
		q.mu.admitted--
		return
	}
	next := q.mu.waiting[0]
	q.mu.waiting[0] = nil
	q.mu.waiting = q.mu.waiting[1:]
	close(next)
}

// counts returns the IOs holding a slot and those waiting for one.
func (q *queue) counts() (admitted, waiting int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.mu.admitted, len(q.mu.waiting)
}
