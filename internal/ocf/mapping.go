package ocf

import "math/bits"

// mapping is the hash table from (core, core line) to cache line: a bucket
// array of chain heads, chained through line.hashNext. It has one bucket per
// line rounded up to a power of two, so chains stay short and memory is
// 4 bytes per line. Guarded by Cache.mu.
type mapping struct {
	buckets []lineIdx
	shift   uint8 // 64 - log2(len(buckets))
}

func newMapping(numLines int) mapping {
	n := 1
	for n < numLines {
		n <<= 1
	}
	m := mapping{buckets: make([]lineIdx, n), shift: uint8(64 - bits.TrailingZeros(uint(n)))}
	for i := range m.buckets {
		m.buckets[i] = noLine
	}
	return m
}

func (m *mapping) bucket(core CoreID, coreLine uint32) int {
	if len(m.buckets) == 1 {
		return 0
	}
	h := (uint64(coreLine) | uint64(core)<<32) * 0x9E3779B97F4A7C15
	return int(h >> m.shift)
}

// lookup returns the cache line mapping (core, coreLine), or noLine.
func (m *mapping) lookup(lines []line, core CoreID, coreLine uint32) lineIdx {
	for i := m.buckets[m.bucket(core, coreLine)]; i != noLine; i = lines[i].hashNext {
		if lines[i].coreLine == coreLine && lines[i].core == core {
			return i
		}
	}
	return noLine
}

// insert maps line i, whose core and coreLine are set, into the table.
func (m *mapping) insert(lines []line, i lineIdx) {
	b := m.bucket(lines[i].core, lines[i].coreLine)
	lines[i].hashNext = m.buckets[b]
	m.buckets[b] = i
}

// remove unmaps line i from the table.
func (m *mapping) remove(lines []line, i lineIdx) {
	b := m.bucket(lines[i].core, lines[i].coreLine)
	p := &m.buckets[b]
	for *p != noLine {
		if *p == i {
			*p = lines[i].hashNext
			lines[i].hashNext = noLine
			return
		}
		p = &lines[*p].hashNext
	}
}
