package ocf

import (
	"slices"
	"sync"
	"sync/atomic"
)

// stripes are the data-path locks. Core line l of core c is guarded by
// stripe (l + c*coreSkew) mod n, so consecutive core lines map to consecutive
// stripes and a request locks a contiguous, wrapping range of them. Every
// holder of several stripes takes them in ascending index order, so the
// locks cannot deadlock. Readers take them shared, writers, discards and the
// cleaner exclusively. Cache.mu is never held while waiting for a stripe.
type stripes struct {
	locks []stripeLock
	mask  uint64
}

// stripeLock is a stripe's lock alone on a 64-byte CPU cache line, so that
// requests on neighbouring stripes from different CPUs do not contend on it.
//
// Besides the lock it keeps a sequence count, odd while an exclusive holder
// has it, that the hit path reads instead of taking the lock: a read that
// finds the count even and unchanged around its work ran while no one held
// the stripe exclusively (see hit.go). Every exclusive lock and unlock goes
// through Lock, TryLock and Unlock below, which keep the count.
type stripeLock struct {
	mu  sync.RWMutex
	seq atomic.Uint32
	_   [64 - 28]byte
}

func (l *stripeLock) RLock()         { l.mu.RLock() }
func (l *stripeLock) TryRLock() bool { return l.mu.TryRLock() }
func (l *stripeLock) RUnlock()       { l.mu.RUnlock() }

func (l *stripeLock) Lock() {
	l.mu.Lock()
	l.seq.Add(1)
}

func (l *stripeLock) TryLock() bool {
	if !l.mu.TryLock() {
		return false
	}
	l.seq.Add(1)
	return true
}

func (l *stripeLock) Unlock() {
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
// holding its stripes across a core write makes the hits on other core
// lines of those stripes wait too; with 16 requests in flight about one
// hit in maxStripes/16 meets one (docs/engine.md, Concurrency). 16384
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

// lockRange locks the stripes of core lines [first, first+n).
func (s *stripes) lockRange(core CoreID, first, n uint64, exclusive bool) {
	a0, a1, b0, b1 := s.span(core, first, n)
	for _, r := range [2][2]int{{a0, a1}, {b0, b1}} {
		for i := r[0]; i < r[1]; i++ {
			if exclusive {
				s.locks[i].Lock()
			} else {
				s.locks[i].RLock()
			}
		}
	}
}

// unlockRange releases what lockRange took.
func (s *stripes) unlockRange(core CoreID, first, n uint64, exclusive bool) {
	a0, a1, b0, b1 := s.span(core, first, n)
	for _, r := range [2][2]int{{a0, a1}, {b0, b1}} {
		for i := r[0]; i < r[1]; i++ {
			if exclusive {
				s.locks[i].Unlock()
			} else {
				s.locks[i].RUnlock()
			}
		}
	}
}

// lockAll exclusively locks every stripe, in ascending order.
func (s *stripes) lockAll() {
	for i := range s.locks {
		s.locks[i].Lock()
	}
}

func (s *stripes) unlockAll() {
	for i := range s.locks {
		s.locks[i].Unlock()
	}
}

// lockSet exclusively locks an arbitrary set of stripe indices in ascending
// order, dropping duplicates; it returns the sorted set for unlockSet.
func (s *stripes) lockSet(idx []int) []int {
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		s.locks[i].Lock()
	}
	return idx
}

func (s *stripes) unlockSet(idx []int) {
	for _, i := range idx {
		s.locks[i].Unlock()
	}
}
