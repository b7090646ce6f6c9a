package ocf

import "math/bits"

// sectorMask has one bit per sector of a cache line; bit i is sector i.
type sectorMask [2]uint64

// rangeMask returns the mask of sectors [from, to), 0 <= from <= to <= 128.
func rangeMask(from, to int) sectorMask {
	return sectorMask{
		wordMask(min(from, 64), min(to, 64)),
		wordMask(max(from-64, 0), max(to-64, 0)),
	}
}

// wordMask returns the bits [lo, hi) of a word, 0 <= lo, hi <= 64.
func wordMask(lo, hi int) uint64 {
	if lo >= hi {
		return 0
	}
	return ^uint64(0) << uint(lo) & (^uint64(0) >> uint(64-hi))
}

func (m sectorMask) and(o sectorMask) sectorMask    { return sectorMask{m[0] & o[0], m[1] & o[1]} }
func (m sectorMask) or(o sectorMask) sectorMask     { return sectorMask{m[0] | o[0], m[1] | o[1]} }
func (m sectorMask) andNot(o sectorMask) sectorMask { return sectorMask{m[0] &^ o[0], m[1] &^ o[1]} }
func (m sectorMask) empty() bool                    { return m[0]|m[1] == 0 }
func (m sectorMask) count() int                     { return bits.OnesCount64(m[0]) + bits.OnesCount64(m[1]) }
func (m sectorMask) has(i int) bool                 { return m[i>>6]&(1<<(i&63)) != 0 }

// contains reports whether every sector of o is in m.
func (m sectorMask) contains(o sectorMask) bool { return o.andNot(m).empty() }

// nextRun returns the first run [start, end) of set sectors at or after from,
// or start == -1 when there is none below limit.
func (m sectorMask) nextRun(from, limit int) (start, end int) {
	start = m.nextSet(from, true)
	if start >= limit {
		return -1, -1
	}
	return start, min(m.nextSet(start, false), limit)
}

// nextSet returns the first sector at or after from whose bit equals set, or
// 128 if there is none.
func (m sectorMask) nextSet(from int, set bool) int {
	for w := from >> 6; w < len(m); w++ {
		word := m[w]
		if !set {
			word = ^word
		}
		if w == from>>6 {
			word &= ^uint64(0) << (from & 63)
		}
		if word != 0 {
			return w<<6 + bits.TrailingZeros64(word)
		}
	}
	return 128
}
