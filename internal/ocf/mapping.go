package ocf

import (
	"math/bits"
	"sync/atomic"
)

// mapping is the hash table from (core, core line) to cache line: a bucket
// array of chain heads, chained through line.hashNext. It has one bucket per
// line rounded up to a power of two, so chains stay short and memory is
// 4 bytes per line. Changed under Cache.mu only; the heads and links are
// atomics so that the hit path can look up without it (see hit.go).
type mapping struct {
	buckets []atomic.Int32 // lineIdx of each chain's head
	shift   uint8          // 64 - log2(len(buckets))
}

func newMapping(numLines int) mapping {
	n := 1
	for n < numLines {
		n <<= 1
	}
	m := mapping{buckets: make([]atomic.Int32, n), shift: uint8(64 - bits.TrailingZeros(uint(n)))}
	for i := range m.buckets {
		m.buckets[i].Store(int32(noLine))
	}
	return m
}

func (m *mapping) bucket(key uint64) int {
	if len(m.buckets) == 1 {
		return 0
	}
	return int((key * 0x9E3779B97F4A7C15) >> m.shift)
}

// lookup returns the cache line mapping (core, coreLine), or noLine.
//
// It is safe without Cache.mu for a caller that holds the stripe of
// (core, coreLine), shared or exclusive: no one can then map or unmap that
// key but readers of the same stripe, and the chains are only relinked
// by atomic stores, so the walk either finds the line that maps the key or
// misses it (a race with a concurrent change of another key's chain), and
// a line it finds with the key is that key's line.
func (m *mapping) lookup(lines []line, core CoreID, coreLine uint32) lineIdx {
	want := lineKey(core, coreLine)
	for i := lineIdx(m.buckets[m.bucket(want)].Load()); i != noLine; i = lineIdx(lines[i].hashNext.Load()) {
		if lines[i].key.Load()&keyIDMask == want {
			return i
		}
	}
	return noLine
}

// insert maps line i, whose core and coreLine are set, into the table.
func (m *mapping) insert(lines []line, i lineIdx) {
	b := &m.buckets[m.bucket(lines[i].key.Load()&keyIDMask)]
	lines[i].hashNext.Store(b.Load())
	b.Store(int32(i))
}

// remove unmaps line i from the table. The line's link is left as it is, so
// that a lock-free walk standing on it goes on along its old chain.
func (m *mapping) remove(lines []line, i lineIdx) {
	p := &m.buckets[m.bucket(lines[i].key.Load()&keyIDMask)]
	for j := lineIdx(p.Load()); j != noLine; j = lineIdx(p.Load()) {
		if j == i {
			p.Store(lines[i].hashNext.Load())
			return
		}
		p = &lines[j].hashNext
	}
}
