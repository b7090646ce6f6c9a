package ocf

import (
	"sync"
	"sync/atomic"
)

// Write absorption. A write that writes the core holds its stripes' order
// locks across the core write (io.go, writeCore), so writes to one hot line
// go to the core one at a time. When a write W2 arrives for exactly the
// range (core, offset, length) of a write W1 that still waits for its order
// locks, W1 is superseded: it writes nothing, and returns W2's result once
// W2 (or whoever superseded W2) has finished. Neither was acknowledged, so
// "W1 then W2" is a valid order, and no reader can see W1's data, which
// never reaches the cache or the core. W2 carries W1's FUA. See engine.md,
// Concurrency.
//
// Only writes that will write the core take part: a write whose mode is
// wb or wo when it starts never registers (it does no core IO under its
// order locks, and must not allocate). A write registers only if it
// cannot take its order locks at once, so an uncontended write allocates
// nothing either. A write that has taken its order locks can no longer be
// superseded.

// absorber is one write waiting for its order locks, on the registry of
// the stripe of its first core line.
type absorber struct {
	core     CoreID
	off, len int64

	// Guarded by the stripe's absorbMu until the write takes its order
	// locks and leaves the registry; then read by its own writer only.
	fua  bool      // the write's FUA, or-ed with those it superseded
	next *absorber // the registry's list
	succ *absorber // the write that superseded this one, or nil

	// err is the write's result, set before done is marked done; a write
	// that superseded this one reads it after waiting on done, and with it
	// how the write was counted (class and ptWhy, if counted), to count
	// itself the same way: it was served as that write was.
	done    sync.WaitGroup
	err     error
	counted bool
	class   reqClass
	ptWhy   PTReason
}

// takeWriteOrder takes the order locks of write r. If the write may absorb
// or be absorbed and has to wait for them, it registers first and returns
// its absorber, with fua as or-ed in by the writes it superseded; if it was
// superseded meanwhile it returns holding no lock, and the caller waits for
// the absorber's successor (absorbed). With a nil absorber, r holds its
// order locks and fua is unchanged.
func (c *Cache) takeWriteOrder(r *request, fua bool) (*absorber, bool) {
	s := &c.stripes
	co := r.co
	if c.writeMode(co).writesBack() {
		s.lockOrderRange(co.id, r.first, r.n)
		return nil, fua
	}
	if s.tryLockOrderRange(co.id, r.first, r.n) {
		return nil, fua
	}
	a := &absorber{core: co.id, off: r.off, len: r.len, fua: fua}
	a.done.Add(1)
	reg := &s.locks[s.index(co.id, r.first)]
	reg.register(a, &s.absorbed)
	s.lockOrderRange(co.id, r.first, r.n)
	reg.absorbMu.Lock()
	reg.unlink(a)
	reg.absorbMu.Unlock()
	if a.succ != nil {
		s.unlockOrderRange(co.id, r.first, r.n)
	}
	return a, a.fua
}

// register adds a to the stripe's waiting writes, superseding the waiting
// write of the same range if there is one; absorbed counts it.
func (l *stripeLock) register(a *absorber, absorbed *atomic.Uint64) {
	l.absorbMu.Lock()
	defer l.absorbMu.Unlock()
	for p := l.waiting; p != nil; p = p.next {
		if p.core == a.core && p.off == a.off && p.len == a.len {
			p.succ = a
			a.fua = a.fua || p.fua
			l.unlink(p)
			absorbed.Add(1)
			break
		}
	}
	a.next = l.waiting
	l.waiting = a
}

// unlink takes a off the stripe's waiting writes, if it is there. The
// caller holds absorbMu.
func (l *stripeLock) unlink(a *absorber) {
	for pp := &l.waiting; *pp != nil; pp = &(*pp).next {
		if *pp == a {
			*pp = a.next
			a.next = nil
			return
		}
	}
}

// superseded reports whether a's write was superseded. It may be called on
// a nil absorber (a write that never registered).
func (a *absorber) superseded() bool { return a != nil && a.succ != nil }

// absorbed waits for the write that superseded r's (whose absorber a is),
// counts r as that write was counted and returns its result as r's, which
// a's own predecessor, if any, then takes.
func (a *absorber) absorbed(r *request) error {
	s := a.succ
	s.done.Wait()
	if s.counted {
		r.ptWhy = s.ptWhy
		r.countWrite(s.class)
	}
	a.finish(s.err, r)
	return a.err
}

// finish records err as the result of r's write, whose absorber a is, with
// how r was counted, and wakes the write a superseded, if any. It does
// nothing on a nil absorber.
func (a *absorber) finish(err error, r *request) {
	if a == nil {
		return
	}
	a.err = err
	a.counted, a.class, a.ptWhy = r.counted, r.class, r.ptWhy
	a.done.Done()
}

// AbsorbedWrites is the number of writes superseded by a later write of the
// same range since the cache started.
func (c *Cache) AbsorbedWrites() uint64 { return c.stripes.absorbed.Load() }
