package ocf

import (
	"slices"
	"sync"
	"sync/atomic"
)

// stripes are the data-path locks. Core line l of core c is guarded by
// stripe (l + c*coreSkew) mod n, so consecutive core lines map to consecutive
// stripes and a request locks a contiguous, wrapping range of them.
//
// A stripe has two locks (stripeLock): an order lock and an RW lock. Readers
// take the RW lock shared and never the order lock. Everyone who takes a
// stripe exclusively (writers, discards, cleaning, eviction and claims,
// tidy, drains) takes its order lock first, then its RW lock exclusively. A
// write that must write the core lets go of the RW locks across that write
// and keeps the order locks, so readers go on while the order locks keep
// every other exclusive holder out (io.go, writeCore).
//
// Lock order: the order locks of a request's stripes, in ascending index
// order; then their RW locks, in ascending index order; then Cache.mu. A
// holder of a stripe's RW lock never waits for an order lock, and TryLock
// (taken under Cache.mu) never waits at all, so the locks cannot deadlock.
// Cache.mu is never held while waiting for a stripe. A stripe's absorbMu
// (absorb.go) is a leaf: held only to change its list, taking nothing else.
type stripes struct {
	locks []stripeLock
	mask  uint64
	// absorbed counts the writes superseded by a later write of the same
	// range (absorb.go).
	absorbed atomic.Uint64
}

// stripeLock is a stripe's locks alone on a 64-byte CPU cache line, so that
// requests on neighbouring stripes from different CPUs do not contend on it.
//
// Besides the locks it keeps a sequence count, odd while an exclusive holder
// has the RW lock, that the hit path reads instead of taking the lock: a
// read that finds the count even and unchanged around its work ran while no
// one held the RW lock exclusively (see hit.go). Every exclusive lock and
// unlock of the RW lock goes through the methods below, which keep the
// count. Holding the order lock alone does not make the count odd: that is
// the point of it.
//
// absorbMu and waiting are the stripe's registry of writes waiting for
// their order locks (absorb.go), for the writes whose first core line the
// stripe guards.
type stripeLock struct {
	order    sync.Mutex
	mu       sync.RWMutex
	seq      atomic.Uint32
	absorbMu sync.Mutex
	waiting  *absorber // guarded by absorbMu
	_        [64 - 56]byte
}

func (l *stripeLock) RLock()         { l.mu.RLock() }
func (l *stripeLock) TryRLock() bool { return l.mu.TryRLock() }
func (l *stripeLock) RUnlock()       { l.mu.RUnlock() }

// Lock takes the stripe exclusively: its order lock, then its RW lock.
func (l *stripeLock) Lock() {
	l.order.Lock()
	l.lockRW()
}

// TryLock takes the stripe exclusively if no one holds either lock.
func (l *stripeLock) TryLock() bool {
	if !l.order.TryLock() {
		return false
	}
	if !l.mu.TryLock() {
		l.order.Unlock()
		return false
	}
	l.seq.Add(1)
	return true
}

// Unlock lets go of a stripe taken by Lock or TryLock.
func (l *stripeLock) Unlock() {
	l.unlockRW()
	l.order.Unlock()
}

func (l *stripeLock) lockOrder()   { l.order.Lock() }
func (l *stripeLock) unlockOrder() { l.order.Unlock() }

// lockRW takes the RW lock exclusively. The caller holds the order lock.
func (l *stripeLock) lockRW() {
	l.mu.Lock()
	l.seq.Add(1)
}

func (l *stripeLock) unlockRW() {
	l.seq.Add(1)
	l.mu.Unlock()
}

// readBegin returns the sequence count to pass to readValid, and false if
// an exclusive holder has the stripe now.
func (l *stripeLock) readBegin() (uint32, bool) {
	s := l.seq.Load()
	return s, s&1 == 0
}

// readValid reports whether no exclusive holder took the stripe since
// readBegin returned seq.
func (l *stripeLock) readValid(seq uint32) bool { return l.seq.Load() == seq }

const coreSkew = 0x9E37

// maxStripes bounds the stripes of a cache (256 KiB of locks). A request
// holding its stripes' RW locks across core IO (a discard, a cleaning
// batch, a dirty eviction) makes the hits on other core lines of those
// stripes wait too, and a write holding their order locks across its core
// write makes the other writes to them wait; with 16 requests in flight
// about one request in maxStripes/16 meets one (docs/engine.md,
// Concurrency). 16384
// would make that four times rarer, but a cache of 2^18 lines would then
// spend more than its budget of 64 bytes of memory a line
// (TestMetadataBudget).
const maxStripes = 4096

func newStripes(numLines int) stripes {
	n := stripeCount(int64(numLines))
	return stripes{locks: make([]stripeLock, n), mask: uint64(n - 1)}
}

// stripeCount is how many stripes a cache of numLines lines has: the
// power of two from 64 to maxStripes nearest above numLines.
func stripeCount(numLines int64) int64 {
	n := int64(64)
	for n < numLines && n < maxStripes {
		n <<= 1
	}
	return n
}

func (s *stripes) index(core CoreID, coreLine uint64) int {
	return int((coreLine + uint64(core)*coreSkew) & s.mask)
}

// span returns the stripes of core lines [first, first+n) as at most two
// ascending index ranges [a0, a1) and [b0, b1).
func (s *stripes) span(core CoreID, first, n uint64) (a0, a1, b0, b1 int) {
	total := len(s.locks)
	if n >= uint64(total) {
		return 0, total, 0, 0
	}
	start := s.index(core, first)
	end := start + int(n)
	if end <= total {
		return start, end, 0, 0
	}
	return 0, end - total, start, total
}

// each calls f on the stripes of core lines [first, first+n), in ascending
// index order.
func (s *stripes) each(core CoreID, first, n uint64, f func(*stripeLock)) {
	a0, a1, b0, b1 := s.span(core, first, n)
	for i := a0; i < a1; i++ {
		f(&s.locks[i])
	}
	for i := b0; i < b1; i++ {
		f(&s.locks[i])
	}
}

// lockRange locks the stripes of core lines [first, first+n): shared, or
// exclusively (every order lock, then every RW lock).
func (s *stripes) lockRange(core CoreID, first, n uint64, exclusive bool) {
	if !exclusive {
		s.each(core, first, n, (*stripeLock).RLock)
		return
	}
	s.lockOrderRange(core, first, n)
	s.resumeRange(core, first, n)
}

// unlockRange releases what lockRange took.
func (s *stripes) unlockRange(core CoreID, first, n uint64, exclusive bool) {
	if !exclusive {
		s.each(core, first, n, (*stripeLock).RUnlock)
		return
	}
	s.each(core, first, n, (*stripeLock).unlockRW)
	s.each(core, first, n, (*stripeLock).unlockOrder)
}

// lockOrderRange takes the order locks of core lines [first, first+n) in
// ascending order; resumeRange then takes their RW locks.
func (s *stripes) lockOrderRange(core CoreID, first, n uint64) {
	s.each(core, first, n, (*stripeLock).lockOrder)
}

// tryLockOrderRange takes the order locks of core lines [first, first+n)
// if no one holds any of them, and reports whether it did; it takes none
// otherwise.
func (s *stripes) tryLockOrderRange(core CoreID, first, n uint64) bool {
	a0, a1, b0, b1 := s.span(core, first, n)
	for i := a0; i < a1; i++ {
		if !s.locks[i].order.TryLock() {
			s.unlockOrderIdx(a0, i)
			return false
		}
	}
	for i := b0; i < b1; i++ {
		if !s.locks[i].order.TryLock() {
			s.unlockOrderIdx(a0, a1)
			s.unlockOrderIdx(b0, i)
			return false
		}
	}
	return true
}

func (s *stripes) unlockOrderIdx(from, to int) {
	for i := from; i < to; i++ {
		s.locks[i].unlockOrder()
	}
}

// unlockOrderRange lets go of the order locks lockOrderRange took.
func (s *stripes) unlockOrderRange(core CoreID, first, n uint64) {
	s.each(core, first, n, (*stripeLock).unlockOrder)
}

// yieldRange lets go of the RW locks of core lines [first, first+n), held
// exclusively by lockRange, and keeps their order locks: readers may use
// the stripes, no one else may take them exclusively. resumeRange takes
// the RW locks back, or takes them after lockOrderRange.
func (s *stripes) yieldRange(core CoreID, first, n uint64) {
	s.each(core, first, n, (*stripeLock).unlockRW)
}

func (s *stripes) resumeRange(core CoreID, first, n uint64) {
	s.each(core, first, n, (*stripeLock).lockRW)
}

// lockAll exclusively locks every stripe: every order lock, then every RW
// lock, in ascending order.
func (s *stripes) lockAll() {
	for i := range s.locks {
		s.locks[i].lockOrder()
	}
	for i := range s.locks {
		s.locks[i].lockRW()
	}
}

func (s *stripes) unlockAll() {
	for i := range s.locks {
		s.locks[i].Unlock()
	}
}

// lockSet exclusively locks an arbitrary set of stripe indices (every order
// lock, then every RW lock, in ascending order), dropping duplicates; it
// returns the sorted set for unlockSet.
func (s *stripes) lockSet(idx []int) []int {
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		s.locks[i].lockOrder()
	}
	for _, i := range idx {
		s.locks[i].lockRW()
	}
	return idx
}

func (s *stripes) unlockSet(idx []int) {
	for _, i := range idx {
		s.locks[i].Unlock()
	}
}
