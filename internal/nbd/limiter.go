package nbd

import "sync"

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
