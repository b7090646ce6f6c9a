package nbd

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"blockcache/internal/invariants"
)

// Per-connection bounds on requests in flight, so that a client cannot make
// the server hold unbounded goroutines or memory. When a bound is reached
// the connection stops reading requests until one finishes; TCP flow
// control then pushes back on the client.
const (
	maxInflightRequests = 128
	// maxInflightBytes bounds READ and WRITE payloads held at once. A single
	// request larger than the budget is still admitted when nothing else is
	// in flight, so every valid request can make progress.
	maxInflightBytes = 64 << 20
)

// inflightLimiter counts the requests of one connection that have been read
// but not yet answered. acquire is called only by the connection's reader;
// release by the goroutines that answer.
type inflightLimiter struct {
	mu    sync.Mutex
	cond  sync.Cond // signalled on release; L is &mu
	count int       // requests in flight
	bytes int64     // payload bytes held by them
}

func (l *inflightLimiter) init() { l.cond.L = &l.mu }

func (l *inflightLimiter) acquire(payload int64) {
	l.mu.Lock()
	for l.full(payload) {
		l.cond.Wait()
	}
	l.count++
	l.bytes += payload
	l.mu.Unlock()
}

// tryAcquire is acquire if it would not wait; it reports whether it did.
func (l *inflightLimiter) tryAcquire(payload int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.full(payload) {
		return false
	}
	l.count++
	l.bytes += payload
	return true
}

// full reports whether a request of payload bytes must wait. l.mu is held.
func (l *inflightLimiter) full(payload int64) bool {
	return l.count >= maxInflightRequests || (l.count > 0 && l.bytes+payload > maxInflightBytes)
}

func (l *inflightLimiter) release(payload int64) {
	l.mu.Lock()
	l.count--
	l.bytes -= payload
	l.cond.Signal()
	l.mu.Unlock()
}

// budget bounds the payload bytes held by the requests of all the server's
// connections together (Options.MaxInflightBytes). A connection's reader
// acquires a request's bytes before reading its payload and waits, holding
// the reading turn, while they do not fit: the connection then reads
// nothing more and TCP flow control pushes back on its client. Waiters are
// served in arrival order, and newcomers queue behind them, so that a large
// request is not starved by a stream of small ones.
//
// With nobody waiting and room left, acquire is one CAS on used.
type budget struct {
	limit int64 // immutable

	used    atomic.Int64 // bytes granted and not released; at most limit
	peak    atomic.Int64 // the highest used has been
	waiting atomic.Int32 // waiters registered, at least len(mu.queue)

	mu struct {
		sync.Mutex
		queue []*budgetWaiter // in arrival order
	}
}

// budgetWaiter is a request waiting in budget.acquire.
type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed once its bytes are granted
}

func newBudget(limit int64) *budget { return &budget{limit: limit} }

// tryAcquire is acquire if it would not wait; it reports whether it did.
func (b *budget) tryAcquire(n int64) bool { return b.waiting.Load() == 0 && b.take(n) }

// acquire grants n bytes (0 < n <= limit), waiting for its turn. If cancel
// is closed first it returns false, holding nothing.
func (b *budget) acquire(n int64, cancel <-chan struct{}) bool {
	if b.tryAcquire(n) {
		return true
	}
	b.mu.Lock()
	// Registered before looking at used: a release that lowers used after
	// this look sees the waiter and grants under mu, after it is queued.
	b.waiting.Add(1)
	if len(b.mu.queue) == 0 && b.take(n) {
		b.waiting.Add(-1)
		b.mu.Unlock()
		return true
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.mu.queue = append(b.mu.queue, w)
	b.mu.Unlock()

	select {
	case <-w.ready:
		return true
	case <-cancel:
	}
	b.mu.Lock()
	if i := slices.Index(b.mu.queue, w); i >= 0 {
		b.mu.queue = slices.Delete(b.mu.queue, i, i+1)
		b.waiting.Add(-1)
		b.grantLocked() // if w was first, those behind it may fit
		b.mu.Unlock()
		return false
	}
	b.mu.Unlock()
	b.release(n) // granted meanwhile
	return false
}

// take adds n to used if the sum fits the limit.
func (b *budget) take(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			for p := b.peak.Load(); u+n > p && !b.peak.CompareAndSwap(p, u+n); p = b.peak.Load() {
			}
			return true
		}
	}
}

// grantLocked grants the waiters at the head of the queue whose bytes fit.
// b.mu is held.
func (b *budget) grantLocked() {
	for len(b.mu.queue) > 0 {
		w := b.mu.queue[0]
		if !b.take(w.n) {
			return
		}
		b.mu.queue = slices.Delete(b.mu.queue, 0, 1)
		b.waiting.Add(-1)
		close(w.ready)
	}
}

// release returns n bytes granted by acquire, passing them on to waiters,
// and returns the bytes still granted.
func (b *budget) release(n int64) int64 {
	u := b.used.Add(-n)
	if invariants.Enabled && u < 0 {
		panic(fmt.Errorf("nbd: budget released %d bytes more than were granted", -u))
	}
	if b.waiting.Load() > 0 {
		b.mu.Lock()
		b.grantLocked()
		b.mu.Unlock()
		u = b.used.Load()
	}
	return u
}
